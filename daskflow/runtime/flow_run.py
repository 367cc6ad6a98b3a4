"""The current flow run (``from daskflow.runtime import flow_run``; ``flow_run.name``).

Attributes: ``id``, ``name``, ``flow_name``, ``flow_version``, ``parameters``,
``tags``, ``run_count``, ``scheduled_start_time``, ``parent_flow_run_id``,
``parent_deployment_id`` (always ``None``). In a task they describe the task's
flow run; in a task on a Dask worker process only its ``id`` and ``name`` are
known, the others read as outside a run.
"""

from __future__ import annotations

import datetime
import sys
from typing import Any

from ..context import FlowRunContext
from ..pipeline.context import FLOW_RUN_CONTEXT, LOCAL_FLOW_RUNS
from ..runners.execute import TASK_RUN_CONTEXT
from ._env import MISSING, outside_run, override, unknown

# The attributes are read by the module __getattr__ below, when accessed.
__all__ = ["flow_name", "flow_version", "id", "name", "parameters", "parent_deployment_id", "parent_flow_run_id", "run_count", "scheduled_start_time", "tags"]  # noqa: F822

_DEFAULTS: dict[str, Any] = {
    "id": None,
    "name": None,
    "flow_name": None,
    "flow_version": None,
    "parameters": {},
    "tags": [],
    "run_count": 0,
    "parent_flow_run_id": None,
    "parent_deployment_id": None,
    "scheduled_start_time": None,
}


def _value(name: str) -> Any:
    task_context = TASK_RUN_CONTEXT.get()
    flow_context = FLOW_RUN_CONTEXT.get()
    if task_context is not None and (flow_context is None or flow_context.flow_run.id != task_context.spec.flow_run_id):
        # A task: its flow run, if it runs in the driver's process (thread runners).
        flow_context = LOCAL_FLOW_RUNS.get(task_context.spec.flow_run_id)
    if flow_context is not None:
        if name == "parent_deployment_id":  # a subflow's parent keeps no deployment here
            return None
        value = getattr(FlowRunContext.of(flow_context).flow_run, name)  # type: ignore[union-attr]
        return dict(value) if name == "parameters" else value  # a plain dict, as Prefect's (and picklable)
    if task_context is not None:  # a task on a worker: what its attempt was sent with
        spec = task_context.spec
        known = {"id": spec.flow_run_id, "name": spec.flow_run_name, "flow_name": spec.flow_name}
        if name in known:
            return known[name]
    return _outside(name)


def _outside(name: str) -> Any:
    if name == "scheduled_start_time" and override("flow_run", name, None) is MISSING:  # Prefect: now, outside a run
        return datetime.datetime.now(datetime.timezone.utc)
    return outside_run("flow_run", name, _DEFAULTS)


def __getattr__(name: str) -> Any:
    if name not in _DEFAULTS:
        return unknown("flow_run", name, _DEFAULTS, sys._getframe(1))
    return _value(name)


def __dir__() -> list[str]:
    return sorted(__all__)
