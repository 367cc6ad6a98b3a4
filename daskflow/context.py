"""The current run under Prefect 3's module name (``prefect.context``).

``get_run_context()`` returns a snapshot (frozen objects, copied values) of the run
the calling code belongs to. The engine owns the live run records and changes
them from its own thread; user code gets copies taken at the call, never the
records themselves.

Inside a task the snapshot is built from what the attempt was sent with (it
also works on a Dask worker, where the flow run's record does not exist).
"""

from __future__ import annotations

import datetime
import inspect
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ._absent import module_getattr
from .exceptions import MissingContextError
from .pipeline.context import FLOW_RUN_CONTEXT, lineage, tags
from .runners.execute import TASK_RUN_CONTEXT
from .runners.execute import TaskRunContext as _AttemptContext

__all__ = ["FlowRunContext", "FlowRunSnapshot", "TaskRunContext", "TaskRunSnapshot", "get_run_context", "tags"]


def _copy(mapping: Mapping[str, Any]) -> dict[str, Any]:
    # A copy, not a view: a plain dict like Prefect's (it pickles, so a task may
    # return it), and changing it cannot touch the engine's record.
    return dict(mapping)


def _when(timestamp: float | None) -> datetime.datetime | None:
    return None if timestamp is None else datetime.datetime.fromtimestamp(timestamp, datetime.timezone.utc)


@dataclass(frozen=True)
class FlowRunSnapshot:
    """A flow run as it was when asked (``get_run_context().flow_run``)."""

    id: str
    name: str | None
    flow_name: str | None = None
    flow_version: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)
    run_count: int = 1
    parent_flow_run_id: str | None = None
    deployment_id: str | None = None
    deployment_name: str | None = None
    scheduled_start_time: datetime.datetime | None = None
    start_time: datetime.datetime | None = None
    #: The top of the chain of parent flow runs (this run's id when it has no parent).
    root_flow_run_id: str | None = None
    #: The deployment of the parent flow run, if a deployment made that run.
    parent_deployment_id: str | None = None

    @classmethod
    def of_run(cls, run: Any) -> FlowRunSnapshot:
        """A snapshot of the engine's record ``run`` (a :class:`daskflow.FlowRun`)."""
        root_id, parent = lineage(run)
        return cls(
            id=run.id,
            name=run.name,
            flow_name=run.flow_name,
            flow_version=run.version,
            parameters=_copy(run.parameters),
            tags=list(run.tags),
            # Each attempt of a flow with retries adds one Running state.
            run_count=max(1, sum(1 for s in list(run.state_history) if s.is_running())),
            parent_flow_run_id=run.parent_flow_run_id,
            deployment_id=run.deployment_id,
            deployment_name=run.deployment_name,
            scheduled_start_time=_when(run.scheduled_time if run.scheduled_time is not None else run.start_time),
            start_time=_when(run.start_time),
            root_flow_run_id=root_id,
            parent_deployment_id=parent.deployment_id if parent is not None else None,
        )


@dataclass(frozen=True)
class TaskRunSnapshot:
    """A task run as it was when asked (``get_run_context().task_run``)."""

    id: str
    name: str
    task_name: str | None
    flow_run_id: str
    tags: list[str] = field(default_factory=list)
    run_count: int = 1


@dataclass(frozen=True)
class FlowRunContext:
    """What ``get_run_context()`` returns in a flow body.

    Attributes
    ----------
    flow : Flow
        The flow being run.
    flow_run : FlowRunSnapshot
        Its run: ``id``, ``name``, ``parameters``, ``tags``, ``run_count``, ...
    parameters : dict
        A copy of the run's parameters.
    """

    flow: Any
    flow_run: FlowRunSnapshot
    parameters: dict[str, Any]
    log_prints: bool = False

    @classmethod
    def get(cls) -> FlowRunContext | None:
        """The current flow run's context, or ``None`` outside a flow body."""
        return cls.of(FLOW_RUN_CONTEXT.get())

    @classmethod
    def of(cls, context: Any) -> FlowRunContext | None:
        """A snapshot of the engine's flow-run context ``context`` (``None`` for ``None``)."""
        if context is None:
            return None
        snapshot = FlowRunSnapshot.of_run(context.flow_run)
        return cls(context.flow, snapshot, snapshot.parameters, bool(getattr(context.flow, "log_prints", False)))


@dataclass(frozen=True)
class TaskRunContext:
    """What ``get_run_context()`` returns in a task.

    Attributes
    ----------
    task_run : TaskRunSnapshot
        ``id``, ``name``, ``task_name``, ``flow_run_id``, ``tags``, ``run_count``.
    parameters : dict
        A copy of this call's arguments by parameter name, defaults included.
    task : None
        Not sent to where the task runs; use ``task_run.task_name``.
    """

    task_run: TaskRunSnapshot
    parameters: dict[str, Any]
    log_prints: bool = False
    task: Any = None

    @classmethod
    def get(cls) -> TaskRunContext | None:
        """The current task run's context, or ``None`` outside a task."""
        context = TASK_RUN_CONTEXT.get()
        if context is None:
            return None
        spec = context.spec
        snapshot = TaskRunSnapshot(
            id=spec.task_run_id,
            name=spec.task_run_name,
            task_name=spec.task_name,
            flow_run_id=spec.flow_run_id,
            tags=list(spec.tags),
            run_count=spec.attempt,
        )
        return cls(snapshot, _copy(task_parameters(context)), spec.log_prints)


def task_parameters(context: _AttemptContext) -> dict[str, Any]:
    """The arguments of the running attempt by parameter name (``{}`` before they are loaded)."""
    if context.call is None:
        return {}
    fn, args, kwargs = context.call
    try:
        bound = inspect.signature(fn).bind_partial(*args, **kwargs)
    except (TypeError, ValueError):  # no signature (a builtin), or it does not fit
        return {**{str(i): a for i, a in enumerate(args)}, **kwargs}
    bound.apply_defaults()  # Prefect lists defaulted parameters too
    return dict(bound.arguments)


def get_run_context() -> TaskRunContext | FlowRunContext:
    """The context of the task run or flow run the calling code belongs to.

    Returns
    -------
    TaskRunContext or FlowRunContext
        A task's context inside a task (also a subflow's task), else the flow
        run's; both are read-only snapshots.

    Raises
    ------
    MissingContextError
        Outside any flow or task run.

    Examples
    --------
    >>> from daskflow import flow
    >>> from daskflow.context import get_run_context
    >>> @flow
    ... def report():
    ...     return get_run_context().flow_run.name
    """
    task_context = TASK_RUN_CONTEXT.get()
    flow_context = FLOW_RUN_CONTEXT.get()
    # A subflow called inside a task: the flow body is the code running now.
    if task_context is not None and (flow_context is None or flow_context.flow_run.id == task_context.spec.flow_run_id):
        return TaskRunContext.get()  # type: ignore[return-value]
    if flow_context is not None:
        return FlowRunContext.get()  # type: ignore[return-value]
    raise MissingContextError(
        "no run context: get_run_context() was called outside a flow or task run; call it inside a @flow or @task function"
    )


# Prefect names this module does not have raise the reason (daskflow._absent).
__getattr__ = module_getattr(__name__)
