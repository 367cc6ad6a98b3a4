"""In-memory records of flow runs and task runs (persisted by later layers)."""

from __future__ import annotations

import bisect
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from .states import Pending, State

__all__ = ["FlowRun", "LogLine", "TaskRun"]


@dataclass(frozen=True, slots=True)
class LogLine:
    """One log line of a run; ``task_run_id`` is ``None`` for the flow body's own lines."""

    timestamp: float
    level: int
    message: str
    task_run_id: str | None = None
    task_run_name: str | None = None


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
    upstream_ids: list[str] = field(default_factory=list)
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

    def __post_init__(self) -> None:
        if not self.state_history:
            self.state_history.append(self.state)

    def set_state(self, state: State) -> None:
        _record_state(self, state)

    @property
    def duration(self) -> float | None:
        if self.start_time is None or self.end_time is None:
            return None
        return self.end_time - self.start_time


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
    #: The default store of this run's results.
    result_storage: str | None = None
    state: State = field(default_factory=Pending)
    state_history: list[State] = field(default_factory=list)
    start_time: float = field(default_factory=time.time)
    end_time: float | None = None
    task_runs: dict[str, TaskRun] = field(default_factory=dict)
    subflow_runs: list[FlowRun] = field(default_factory=list)
    logs: list[LogLine] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.state_history:
            self.state_history.append(self.state)

    def set_state(self, state: State) -> None:
        _record_state(self, state)

    def state_counts(self) -> dict[str, int]:
        """How many task runs are in each named state, e.g. ``{"Completed": 40, "Failed": 2}``."""
        return dict(Counter(tr.state.name for tr in self.task_runs.values()))

    def task_run(self, name: str) -> TaskRun:
        """The task run called ``name`` (e.g. ``"fit-3"``)."""
        for tr in self.task_runs.values():
            if tr.name == name:
                return tr
        raise KeyError(f"flow run {self.name!r} has no task run named {name!r}")

    def logs_of(self, task_run_name: str | None) -> list[str]:
        """Messages logged by one task run, or by the flow body with ``None``."""
        return [line.message for line in self.logs if line.task_run_name == task_run_name]
