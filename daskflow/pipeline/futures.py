"""Futures of task runs: ``TaskFuture``, ``wait``, ``as_completed``, ``unmapped``."""

from __future__ import annotations

import time
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Generic,
    Iterable,
    Iterator,
    NamedTuple,
    TypeVar,
)

from .states import State

if TYPE_CHECKING:
    from .engine import TaskNode
    from .runs import TaskRun

__all__ = ["DoneAndNotDoneFutures", "PrefectFuture", "TaskFuture", "TaskFutureList", "as_completed", "unmapped", "wait"]

R = TypeVar("R")


class TaskFuture(Generic[R]):
    """The handle of a submitted task run.

    Pass it to other tasks (also inside lists, tuples and dicts): the task waits
    for it and receives its value, moved worker to worker by Dask.

    Examples
    --------
    >>> @flow
    ... def pipeline():
    ...     f = double.submit(2)
    ...     return f.result()
    """

    __slots__ = ("_node",)

    def __init__(self, node: TaskNode) -> None:
        self._node = node

    @property
    def task_run_id(self) -> str:
        return self._node.record.id

    @property
    def task_run(self) -> TaskRun:
        """The run record: states, attempts, timings, worker."""
        return self._node.record

    @property
    def key(self) -> str | None:
        """The Dask key of the current attempt (``<task>-<run>-<n>-<try>``)."""
        keys = self._node.record.dask_keys
        return keys[-1] if keys else None

    @property
    def state(self) -> State:
        """The current state (not waiting)."""
        state = self._node.record.state
        if state.is_final():
            # The body has seen how the run ended: a failure is then its to handle
            # (the flow's final state no longer counts it, as in Prefect).
            self._node.observed = True
        return state

    def done(self) -> bool:
        return self._node.done.is_set()

    def wait(self, timeout: float | None = None) -> State:
        """Block until the task run has a final state, or ``timeout`` seconds pass.

        Returns the state (final or not), like Prefect's ``wait`` then ``.state``.
        Waiting alone is not looking: a failure is handled (for the flow's final
        state) once the body reads ``.state`` or ``result()``.
        """
        self._node.engine.wait_node(self._node, timeout)
        return self._node.record.state

    def result(self, timeout: float | None = None, raise_on_failure: bool = True) -> R:
        """The task's return value; raises its exception if it failed.

        Raises
        ------
        TimeoutError
            If the task run is not final within ``timeout`` seconds.
        """
        if not self._node.engine.wait_node(self._node, timeout):
            raise TimeoutError(f"task run {self._node.record.name!r} did not finish within {timeout} s")
        return self.state.result(raise_on_failure=raise_on_failure)

    def add_done_callback(self, fn: Callable[[TaskFuture[R]], None]) -> None:
        """Call ``fn(self)`` once the task run is final (from an engine thread)."""
        self._node.engine.add_done_callback(self._node, lambda: fn(self))

    def __repr__(self) -> str:
        return f"TaskFuture({self._node.record.name!r}, state={self._node.record.state.name})"


class TaskFutureList(list):  # type: ignore[type-arg]
    """The list ``Task.map`` returns, with ``wait`` and ``result`` over all items."""

    def wait(self, timeout: float | None = None) -> None:
        wait(self, timeout=timeout)

    def result(self, timeout: float | None = None, raise_on_failure: bool = True) -> list[Any]:
        deadline = None if timeout is None else time.monotonic() + timeout
        out = []
        for future in self:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            out.append(future.result(timeout=remaining, raise_on_failure=raise_on_failure))
        return out


class DoneAndNotDoneFutures(NamedTuple):
    done: set[TaskFuture[Any]]
    not_done: set[TaskFuture[Any]]


def wait(futures: Iterable[TaskFuture[Any]], timeout: float | None = None) -> DoneAndNotDoneFutures:
    """Wait for futures to reach final states; returns ``(done, not_done)``.

    Examples
    --------
    >>> done, not_done = wait(futures, timeout=60)
    """
    futures = list(futures)
    deadline = None if timeout is None else time.monotonic() + timeout
    for future in futures:
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        if not future._node.engine.wait_node(future._node, remaining):
            break
    done = {f for f in futures if f.done()}
    return DoneAndNotDoneFutures(done, set(futures) - done)


def as_completed(futures: Iterable[TaskFuture[Any]], timeout: float | None = None) -> Iterator[TaskFuture[Any]]:
    """Yield futures as their task runs reach final states.

    Raises
    ------
    TimeoutError
        If not all futures are final within ``timeout`` seconds.
    """
    pending = list(dict.fromkeys(futures))
    total = len(pending)
    deadline = None if timeout is None else time.monotonic() + timeout
    while pending:
        done = [f for f in pending if f.done()]
        if not done:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not pending[0]._node.engine.wait_for(lambda: any(f.done() for f in pending), remaining):
                raise TimeoutError(f"{len(pending)} of {total} futures did not finish within {timeout} s")
            continue
        for future in done:
            pending.remove(future)
            yield future


class unmapped:  # noqa: N801 - Prefect's name
    """Pass a value to every call of ``Task.map`` instead of iterating over it.

    Examples
    --------
    >>> score.map(models, unmapped(test_data))
    """

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


#: Prefect 3's name for :class:`TaskFuture` (``from prefect.futures import PrefectFuture``).
PrefectFuture = TaskFuture
