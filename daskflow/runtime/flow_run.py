"""The current flow run (``from daskflow.runtime import flow_run``; ``flow_run.name``).

Attributes: ``id``, ``name``, ``flow_name``, ``flow_version``, ``parameters``,
``tags``, ``run_count``, ``scheduled_start_time``, ``parent_flow_run_id``,
``parent_deployment_id``, ``root_flow_run_id``. In a task they describe the
task's flow run, also on a Dask worker process: ``id``, ``name``, ``flow_name``
and ``tags`` travel with the task; the first read of another one in a worker
process asks the run's driver for them once (nothing more travels with tasks
that do not read them; see :func:`daskflow.runners.dask.run_facts_on_worker`).
"""

from __future__ import annotations

import datetime
import sys
from typing import Any

from ..context import FlowRunSnapshot
from ..pipeline.context import FLOW_RUN_CONTEXT, LOCAL_FLOW_RUNS
from ..runners.execute import TASK_RUN_CONTEXT
from ._env import MISSING, outside_run, override, unknown

# The attributes are read by the module __getattr__ below, when accessed.
__all__ = [  # noqa: F822
    "flow_name",
    "flow_version",
    "id",
    "name",
    "parameters",
    "parent_deployment_id",
    "parent_flow_run_id",
    "root_flow_run_id",
    "run_count",
    "scheduled_start_time",
    "tags",
]

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
    "root_flow_run_id": None,
    "scheduled_start_time": None,
}

def current_flow_run(facts: bool = True) -> FlowRunSnapshot | None:
    """The flow run the calling code belongs to, as a snapshot, or ``None`` outside one.

    In the flow body, or a task in the driver's process, it is taken now from the
    run's record. In a task on another process (a Dask worker) it is fetched once per
    process from the run's driver, unless ``facts`` is false (then ``None``).
    """
    task_context = TASK_RUN_CONTEXT.get()
    flow_context = FLOW_RUN_CONTEXT.get()
    if task_context is not None and (flow_context is None or flow_context.flow_run.id != task_context.spec.flow_run_id):
        # A task: its flow run, if it runs in the driver's process (thread runners).
        flow_context = LOCAL_FLOW_RUNS.get(task_context.spec.flow_run_id)
    if flow_context is not None:
        return FlowRunSnapshot.of_run(flow_context.flow_run)
    if task_context is not None and facts:
        from ..runners.dask import run_facts_on_worker  # Dask is imported only where it runs

        return run_facts_on_worker(task_context.spec.flow_run_id)
    return None


def _value(name: str) -> Any:
    task_context = TASK_RUN_CONTEXT.get()
    local = current_flow_run(facts=False)
    if local is None and task_context is not None:
        # A task on another process: what it was sent with, else the run's facts.
        spec = task_context.spec
        known = {"id": spec.flow_run_id, "name": spec.flow_run_name, "flow_name": spec.flow_name, "tags": list(spec.flow_run_tags)}
        if name in known:
            return known[name]
        local = current_flow_run()
    if local is None:
        return _outside(name)
    return getattr(local, name)


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
