"""The deployment that made the current flow run (``from daskflow.runtime import deployment``).

Attributes: ``id``, ``name``, ``parameters`` (the run's parameters, as the
deployment passed them), ``flow_run_id``, ``version`` (always ``None``: daskflow
deployments have none). ``None`` (``{}`` for ``parameters``) in a run that no
deployment made. Read in a task, they describe the task's flow run (on a Dask
worker, fetched once per process like ``runtime.flow_run.parameters``).
"""

from __future__ import annotations

import sys
from typing import Any

from ._env import outside_run, unknown
from .flow_run import current_flow_run

# The attributes are read by the module __getattr__ below, when accessed.
__all__ = ["flow_run_id", "id", "name", "parameters", "version"]  # noqa: F822

_DEFAULTS: dict[str, Any] = {"id": None, "name": None, "parameters": {}, "flow_run_id": None, "version": None}


def __getattr__(name: str) -> Any:
    if name not in _DEFAULTS:
        return unknown("deployment", name, _DEFAULTS, sys._getframe(1))
    run = current_flow_run()
    if run is not None and run.deployment_id is not None:
        values = {"id": run.deployment_id, "name": run.deployment_name, "parameters": dict(run.parameters), "flow_run_id": run.id, "version": None}
        return values[name]
    return outside_run("deployment", name, _DEFAULTS)


def __dir__() -> list[str]:
    return sorted(__all__)
