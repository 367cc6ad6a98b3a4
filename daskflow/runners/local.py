"""In-process runners for debugging: one task at a time, or a thread pool."""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from typing import Any

from .._collections import find_instances, replace_instances
from ..exceptions import InvalidOptionError
from .base import AttemptCall, Outcome, ReportSink, TaskRunner
from .execute import execute_attempt

__all__ = ["ConcurrentTaskRunner", "SequentialTaskRunner", "ThreadPoolTaskRunner"]

#: Set on a running attempt's handle that the driver cancelled.
_CANCELLED = "daskflow_cancelled"


class _InProcessRunner(TaskRunner):
    """Shared machinery: handles are ``concurrent.futures.Future`` objects."""

    def __init__(self) -> None:
        self._sinks: dict[str, ReportSink] = {}

    def subscribe(self, flow_run_id: str, sink: ReportSink) -> None:
        self._sinks[flow_run_id] = sink

    def shares_memory(self) -> bool:
        return True

    def unsubscribe(self, flow_run_id: str) -> None:
        self._sinks.pop(flow_run_id, None)

    def _execute(self, call: AttemptCall, handle: Future) -> Any:
        """Resolve upstream handles, then run the attempt; an upstream error fails
        this attempt with the same error without running it (as Dask does)."""
        for upstream in find_instances((call.args, call.kwargs, call.wait_for), Future):
            error = upstream.exception()  # upstream is done: we only run once it is
            if error is not None:
                raise error
        args, kwargs = replace_instances((call.args, call.kwargs), Future, lambda f: f.result())
        sink = self._sinks.get(call.spec.flow_run_id)
        worker = f"local:{threading.current_thread().name}"

        def publish(message: dict[str, Any]) -> None:
            if sink is not None:
                sink({**message, "worker": worker})

        value, report = execute_attempt(call.fn, call.spec, args, kwargs, publish, call.key, lambda: getattr(handle, _CANCELLED, False))
        publish(report)
        return value

    def add_done_callback(self, handle: Future, callback: Callable[[Any], None]) -> None:
        handle.add_done_callback(callback)

    def outcome(self, handle: Future) -> Outcome:
        if handle.cancelled():
            return Outcome("cancelled")
        error = handle.exception()
        return Outcome("error", error) if error is not None else Outcome("finished")

    def outcome_known_failed(self, handle: Future) -> bool:
        return handle.done() and (handle.cancelled() or handle.exception() is not None)

    def result(self, handle: Future, timeout: float | None = None) -> Any:
        return handle.result(timeout)

    def cancel(self, handles: Sequence[Future]) -> None:
        for handle in handles:
            if not handle.cancel():
                # Running: its thread cannot be stopped, but the attempt sees the
                # mark and cancels the task runs its body started.
                setattr(handle, _CANCELLED, True)


class SequentialTaskRunner(_InProcessRunner):
    """Run every task in the flow's own thread, one after the other, at submission.

    For debugging: breakpoints and ``pdb`` work inside tasks. ``timeout_seconds``
    still applies (the task body runs in a helper thread then).

    Examples
    --------
    >>> from daskflow import flow, SequentialTaskRunner
    >>> @flow(task_runner=SequentialTaskRunner())
    ... def debug_me(): ...
    """

    name = "sequential"

    def __init__(self) -> None:
        super().__init__()
        self._queue: deque[tuple[AttemptCall, Future]] = deque()
        self._running = threading.Lock()

    def _settings(self) -> dict[str, Any]:
        return {}

    def start(self) -> None:
        pass

    def shutdown(self) -> None:
        pass

    def submit(self, calls: Sequence[AttemptCall]) -> list[Future]:
        # Queued, then run by run_pending() in the submitting thread once the
        # engine has released its lock (a long task must not block the engine).
        handles = []
        for call in calls:
            handle: Future = Future()
            self._queue.append((call, handle))
            handles.append(handle)
        return handles

    def run_pending(self) -> None:
        # One task at a time. A thread that finds another one running returns at
        # once: the running thread checks the queue again after releasing the lock.
        while self._queue:
            if not self._running.acquire(blocking=False):
                return
            try:
                while self._queue:
                    call, handle = self._queue.popleft()
                    if not handle.set_running_or_notify_cancel():
                        continue
                    try:
                        handle.set_result(self._execute(call, handle))
                    except BaseException as exc:
                        handle.set_exception(exc)
            finally:
                self._running.release()


class ConcurrentTaskRunner(_InProcessRunner):
    """Run tasks in a pool of threads in the flow's process.

    Parameters
    ----------
    max_workers : int, optional
        Size of the pool; default ``min(32, cpu_count + 4)`` as in
        :class:`concurrent.futures.ThreadPoolExecutor`.
    """

    name = "concurrent"

    def __init__(self, max_workers: int | None = None) -> None:
        if max_workers is not None and (not isinstance(max_workers, int) or max_workers < 1):
            raise InvalidOptionError(f"max_workers must be a positive integer, got {max_workers!r}")
        super().__init__()
        self.max_workers = max_workers
        self._pool: ThreadPoolExecutor | None = None

    def _settings(self) -> dict[str, Any]:
        return {"max_workers": self.max_workers}

    def start(self) -> None:
        workers = self.max_workers or min(32, (os.cpu_count() or 1) + 4)
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="daskflow-task")

    def shutdown(self) -> None:
        if self._pool is not None:
            # Runs are final by now; a thread still busy (a timed-out flow) is left to finish alone.
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def submit(self, calls: Sequence[AttemptCall]) -> list[Future]:
        return [self._submit_one(call) for call in calls]

    def _submit_one(self, call: AttemptCall) -> Future:
        handle: Future = Future()
        upstream = [u for u in find_instances((call.args, call.kwargs, call.wait_for), Future) if not u.done()]
        remaining = [len(upstream)]
        lock = threading.Lock()

        def launch() -> None:
            if not handle.set_running_or_notify_cancel():
                return  # cancelled while waiting for its inputs
            assert self._pool is not None
            try:
                inner = self._pool.submit(self._execute, call, handle)
            except RuntimeError as exc:  # pool shut down
                handle.set_exception(CancelledError(str(exc)))
                return
            inner.add_done_callback(lambda f: _copy_outcome(f, handle))

        def upstream_done(_: Future) -> None:
            with lock:
                remaining[0] -= 1
                ready = remaining[0] == 0
            if ready:
                launch()

        if not upstream:
            launch()
        for u in upstream:
            u.add_done_callback(upstream_done)
        return handle


#: Prefect 3's name for the thread pool runner.
ThreadPoolTaskRunner = ConcurrentTaskRunner


def _copy_outcome(source: Future, target: Future) -> None:
    if source.cancelled():
        target.set_exception(CancelledError())
    elif source.exception() is not None:
        target.set_exception(source.exception())
    else:
        target.set_result(source.result())
