"""In-memory records of flow runs and task runs (persisted by later layers)."""

from __future__ import annotations

import bisect
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, NamedTuple

from .states import Pending, State

__all__ = ["Artifact", "FlowRun", "LogLine", "ParentTaskRun", "RunPlan", "TaskRun"]


@dataclass(frozen=True, slots=True)
class LogLine:
    """One log line of a run; ``task_run_id`` is ``None`` for the flow body's own lines."""

    timestamp: float
    level: int
    message: str
    task_run_id: str | None = None
    task_run_name: str | None = None


@dataclass(frozen=True, slots=True)
class Artifact:
    """A table, markdown text, link, progress or image attached to a run (``create_*_artifact``).

    ``data`` is JSON-ready: a table is ``{"columns": [...], "rows": [[...], ...]}``,
    markdown a string, a link ``{"url": ..., "text": ...}``, progress a number
    (0 to 100), an image ``{"url": ...}``. ``flow_run_id`` is set on artifacts
    read back with :meth:`get`.

    Examples
    --------
    >>> from daskflow.artifacts import Artifact
    >>> latest = Artifact.get("cv-scores")  # None if no run made one
    """

    id: str
    type: str
    key: str | None
    description: str | None
    data: Any
    created: float
    task_run_id: str | None = None
    task_run_name: str | None = None
    flow_run_id: str | None = None

    @classmethod
    def get(cls, key: str | None = None, storage: Any = None) -> Artifact | None:
        """The latest artifact with key ``key`` (any key if ``None``), or ``None``: Prefect's ``Artifact.get``.

        Read from the run history of ``storage`` (a :class:`~daskflow.Store` or URL;
        default: config ``daskflow.storage.url``), and from the runs going in this
        process, whose newest artifacts may not be in the history yet.

        Parameters
        ----------
        key
            The artifact key, as given to ``create_*_artifact(key=...)``.
        storage
            The store whose history to read: where the runs keep their results
            (a flow's ``result_storage``, or the configured one).
        """
        from .artifacts import latest_artifact  # the history reader lives above this record module

        return latest_artifact(key, storage)

    @classmethod
    async def aget(cls, key: str | None = None, storage: Any = None) -> Artifact | None:
        """:meth:`get` for async code (Prefect's ``Artifact.aget``)."""
        return cls.get(key, storage)

    def format(self) -> str:
        """The data as JSON text (Prefect's ``Artifact.format``)."""
        import json

        return json.dumps(self.data, default=str)


@dataclass(frozen=True)
class RunPlan:
    """The identity of a flow run created before it starts (a deployment's
    scheduled run): the run takes its id, name and history folder instead of
    making new ones, and keeps its earlier states (Scheduled, Late)."""

    id: str
    name: str
    created: float
    states: tuple[State, ...] = ()
    tags: tuple[str, ...] = ()
    deployment_id: str | None = None
    deployment_name: str | None = None
    scheduled_time: float | None = None
    work_queue: str | None = None
    #: Where the run's history goes (the deployment's store), whatever the flow's
    #: own result storage: the run's earlier records are there.
    history_store: Any = None


def _record_state(run: FlowRun | TaskRun, state: State) -> None:
    # Reports from workers can arrive after the driver has moved on; keep the
    # history in time order and only let the latest state be current.
    history = run.state_history
    if not history or state.timestamp >= history[-1].timestamp:
        history.append(state)
        run.state = state
    else:
        bisect.insort(history, state, key=lambda s: s.timestamp)


@dataclass(eq=False)
class TaskRun:
    """One call of a task inside a flow run, across all its attempts."""

    id: str
    name: str
    task_name: str
    flow_run_id: str
    index: int
    tags: tuple[str, ...] = ()
    #: Task runs whose futures are arguments (data edges) and ``wait_for`` ones.
    upstream_ids: list[str] = field(default_factory=list)
    wait_for_ids: list[str] = field(default_factory=list)
    #: Creation order within the flow run.
    seq: int = 0
    state: State = field(default_factory=Pending)
    state_history: list[State] = field(default_factory=list)
    attempts: int = 0
    dask_keys: list[str] = field(default_factory=list)
    worker: str | None = None
    start_time: float | None = None
    end_time: float | None = None
    error: str | None = None
    traceback: str | None = None
    #: The cache key (``None``: not cached) and whether this run reused a stored result.
    cache_key: str | None = None
    cache_hit: bool = False
    #: Where the result is stored (a URL of its manifest), once known.
    result_url: str | None = None
    #: Times an attempt loaded the committed result instead of running (after a
    #: worker holding it died, Dask's recompute becomes a load).
    reloads: int = 0
    #: Transient storage errors (timeouts, throttling, 5xx, resets) its attempts
    #: retried (config ``daskflow.storage.retries``).
    storage_retries: int = 0
    #: The flow runs of the task runs its body called, submitted or mapped
    #: (daskflow.pipeline.nested): ``[id, name]`` each.
    nested_runs: list[list[str]] = field(default_factory=list)
    #: Told of every state change (the run history records changed task runs).
    listener: Callable[[TaskRun], None] | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.state_history:
            self.state_history.append(self.state)

    def set_state(self, state: State) -> None:
        _record_state(self, state)
        if self.listener is not None:
            self.listener(self)

    @property
    def duration(self) -> float | None:
        if self.start_time is None or self.end_time is None:
            return None
        return self.end_time - self.start_time


class ParentTaskRun(NamedTuple):
    """The task run whose body started a flow run, and its flow run."""

    flow_run_id: str
    flow_run_name: str | None
    task_run_id: str
    task_run_name: str


@dataclass(eq=False)
class FlowRun:
    """One call of a flow: its parameters, states, task runs and logs."""

    id: str
    name: str
    flow_name: str
    version: str | None
    parameters: dict[str, Any]
    tags: tuple[str, ...] = ()
    runner: str = ""
    parent_flow_run_id: str | None = None
    parent_flow_run_name: str | None = None
    #: The task run whose body started this run for its own task runs
    #: (daskflow.pipeline.nested). Its flow run is this run's parent in the
    #: record, but not a subflow's parent: ``runtime.flow_run.parent_flow_run_id``
    #: stays None in the nested run's tasks, on every runner.
    started_by: ParentTaskRun | None = None
    #: The default store of this run's results.
    result_storage: str | None = None
    state: State = field(default_factory=Pending)
    state_history: list[State] = field(default_factory=list)
    start_time: float = field(default_factory=time.time)
    end_time: float | None = None
    task_runs: dict[str, TaskRun] = field(default_factory=dict)
    subflow_runs: list[FlowRun] = field(default_factory=list)
    logs: list[LogLine] = field(default_factory=list)
    artifacts: list[Artifact] = field(default_factory=list)
    #: Told of every task run's state changes (the run history, the live status feed).
    task_listeners: list[Callable[[TaskRun], None]] = field(default_factory=list, repr=False)
    #: Where the run's history is (a URL of its folder), when recorded.
    history_url: str | None = None
    #: The Dask dashboard of the cluster the run used, if any.
    dashboard_link: str | None = None
    #: What the run waits for while no task run moves (``"starting the local Dask
    #: cluster"``), for a progress display; None otherwise.
    activity: str | None = None
    #: This run on the daskflow status page of that dashboard, if it has one.
    status_link: str | None = None
    #: When the run was created, if before it started (a deployment's scheduled
    #: run): its history folder is named by this time, not by its start.
    created: float | None = None
    #: The deployment that made this run, its scheduled slot and work queue.
    deployment_id: str | None = None
    deployment_name: str | None = None
    scheduled_time: float | None = None
    work_queue: str | None = None

    def __post_init__(self) -> None:
        if not self.state_history:
            self.state_history.append(self.state)

    def set_state(self, state: State) -> None:
        _record_state(self, state)

    def add_task_listener(self, listener: Callable[[TaskRun], None]) -> None:
        """Join ``task_listeners``, also for the task runs that exist already (each
        holds the listener it was made with). Call it in the thread that owns the run."""
        self.task_listeners.append(listener)
        told = self.task_listener()
        for task_run in list(self.task_runs.values()):
            task_run.listener = told

    def task_listener(self) -> Callable[[TaskRun], None] | None:
        """What a new task run calls on each state change (``None``: nobody listens)."""
        listeners = self.task_listeners
        if not listeners:
            return None
        if len(listeners) == 1:
            return listeners[0]

        def tell_all(task_run: TaskRun) -> None:
            for listener in listeners:
                listener(task_run)

        return tell_all

    def state_counts(self) -> dict[str, int]:
        """How many task runs are in each named state, e.g. ``{"Completed": 40, "Failed": 2}``."""
        return dict(Counter(tr.state.name for tr in list(self.task_runs.values())))

    def cache_hits(self) -> int:
        """How many task runs reused a stored result."""
        return sum(1 for tr in list(self.task_runs.values()) if tr.cache_hit)

    def task_run(self, name: str) -> TaskRun:
        """The task run called ``name`` (e.g. ``"fit-3"``)."""
        for tr in self.task_runs.values():
            if tr.name == name:
                return tr
        raise KeyError(f"flow run {self.name!r} has no task run named {name!r}")

    def logs_of(self, task_run_name: str | None) -> list[str]:
        """Messages logged by one task run, or by the flow body with ``None``."""
        return [line.message for line in self.logs if line.task_run_name == task_run_name]
