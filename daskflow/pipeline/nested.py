"""Task runs started outside a flow body: a lone task call, or a task's own submissions.

Prefect 3 makes every task call a task run, also at a script's top level and
inside another task's body. daskflow's engine lives in a flow run, so both cases
get an *implicit flow run*: a real, recorded flow run whose body only keeps the
engine open while the caller submits to it.

- A task called outside any flow gets one on ``SequentialTaskRunner``: the task
  runs in the calling thread (no cluster), with its retries, timeout, caching,
  hooks, state and logs, and the run is in history like any other.
- A task that calls, submits or maps tasks in its body gets one, started at its
  first such call and closed (its task runs waited for) when its attempt ends.
  On a Dask worker it runs on the same cluster and the parent's thread secedes
  from the worker's pool, so a 1-thread worker runs the children; elsewhere it
  runs them on an in-process ``ThreadPoolTaskRunner``.

Why a flow run of its own rather than task runs of the parent's flow run: the
parent's engine owns its run state in one thread of the driver, and a task on a
worker has no channel to submit through it; a run of its own records its task
runs correctly (states, attempts, logs, cache) with the machinery every flow
run already has. Its name starts with the parent task run's name.

The two runs are linked both ways: the nested run's record names the task run
and flow run that started it (``parent_task_run_id``/``_name``,
``parent_flow_run_id``/``_name``), and the parent's task run record lists its
nested runs (``nested_runs``; the attempt reports each one as it starts).

The nested run ends with its parent: when the driver cancels the parent task
run (the flow run is cancelled, interrupted, timed out, or its body failed) the
nested run cancels its waiting and running task runs and ends Cancelled. The
parent's runner says whether that happened (on Dask: the scheduler released the
parent's key, which the worker's state shows; in-process: the cancelled handle
is marked), and the nested run looks every ``WATCH_INTERVAL`` seconds. A parent
attempt that times out or is interrupted cancels its nested run the same way
instead of waiting for it. On a worker the nested run uses the worker's own
client, made once per worker process.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, Callable

from ..exceptions import CancelledRun
from ..runners.execute import TaskRunContext
from .context import FLOW_RUN_CONTEXT
from .runs import ParentTaskRun
from .states import State

if TYPE_CHECKING:
    from ..runners.base import TaskRunner
    from .engine import FlowRunEngine
    from .futures import TaskFuture
    from .task import Task

__all__ = ["WATCH_INTERVAL", "ImplicitRun", "lone_task_run", "nested_run"]

#: Seconds between two looks at whether the parent task run was cancelled.
WATCH_INTERVAL = 0.1


class ImplicitRun:
    """A flow run whose body waits, in a thread of its own, until :meth:`close`.

    Parameters
    ----------
    name
        The flow name of the run (its run name adds a short id).
    runner
        The task runner its task runs use.
    result_storage
        Its store (results and history); None: the configured one.
    started_by
        The task run whose body started it, recorded as its parent.
    cancelled
        Tells whether that task run was cancelled; the run then cancels its
        task runs and ends Cancelled.
    """

    def __init__(
        self,
        name: str,
        runner: TaskRunner,
        result_storage: Any = None,
        started_by: ParentTaskRun | None = None,
        cancelled: Callable[[], bool] | None = None,
    ) -> None:
        from .flow import Flow

        self.engine: FlowRunEngine | None = None
        self.flow_run: Any = None
        self.state: State | None = None
        self._started = threading.Event()
        self._closing = threading.Event()
        self._error: BaseException | None = None
        self._cancelled = cancelled
        self._reason: str | None = None  # set by cancel()
        self._cancel_sent = False
        self._started_by = started_by

        def body() -> None:
            context = FLOW_RUN_CONTEXT.get()
            if context is not None:
                self.engine, self.flow_run = context.engine, context.flow_run
            self._started.set()
            while not self._closing.wait(WATCH_INTERVAL if self._cancelled is not None else None):
                self._check()

        body.__name__ = body.__qualname__ = name
        self._flow = Flow(body, name=name, task_runner=runner, validate_parameters=False, result_storage=result_storage)
        self._thread = threading.Thread(target=self._run, name=f"daskflow-implicit-{name}", daemon=True)
        self._thread.start()
        self._started.wait()
        if self.engine is None:
            self._thread.join()
            error = self._error or (self.state.result(raise_on_failure=False) if self.state is not None else None)
            if isinstance(error, BaseException):
                raise error
            raise RuntimeError(f"the implicit flow run {name!r} could not start: {self.state}")

    def _run(self) -> None:
        from .flow import _FlowRunner

        try:
            self.state = _FlowRunner(self._flow, self._started_by).run((), {})
        except BaseException as exc:  # the thread's caller gets it from __init__
            self._error = exc
        finally:
            self._started.set()

    def _check(self) -> None:
        """Cancel the run's task runs once its parent is cancelled (or :meth:`cancel` said so)."""
        if self._cancel_sent or self.engine is None:
            return
        reason = self._reason
        if reason is None and self._cancelled is not None and self._cancelled():
            parent = self._started_by
            reason = f"the task run {parent.task_run_name!r} that started it was cancelled" if parent else "its parent was cancelled"
        if reason is not None:
            self._cancel_sent = True
            # From this thread: the engine takes its lock; running attempts are
            # left to end alone (on Dask their futures are cancelled too).
            self.engine.cancel(CancelledRun(reason))

    def submit_many(self, task: Task, calls: list[tuple[tuple[Any, ...], dict[str, Any]]], wait_for: Any = ()) -> list[TaskFuture[Any]]:
        """Submit task runs to this run's engine, from the caller's thread."""
        assert self.engine is not None
        return self.engine.submit_many(task, calls, wait_for)

    def cancel(self, reason: str) -> None:
        """End the run Cancelled, its waiting and running task runs too, at :meth:`close`."""
        self._reason = reason

    def close(self) -> State | None:
        """Let the body return; wait for the run's task runs and its final record.

        While it waits (task runs the body never waited for) it still watches
        the parent, so a cancelled parent does not leave it running.
        """
        self._closing.set()
        self._check()
        while self._thread.is_alive():
            self._thread.join(WATCH_INTERVAL if self._cancelled is not None else None)
            self._check()
        return self.state


def lone_task_run(task: Task, args: tuple[Any, ...], kwargs: dict[str, Any], wait_for: Any) -> State:
    """Run one task run outside any flow, in this thread, recorded in history."""
    from ..runners.local import SequentialTaskRunner

    run = ImplicitRun(task.name, SequentialTaskRunner())
    try:
        future = run.submit_many(task, [(args, kwargs)], wait_for)[0]
        return future.wait()
    finally:
        run.close()


def nested_run(context: TaskRunContext, inline: bool = False) -> ImplicitRun:
    """The implicit run of the task run ``context`` (started at its first nested call).

    ``inline``: a direct call (``t(x)``). On a Dask worker it goes to a run of
    its own on ``SequentialTaskRunner``, so it runs in the body's thread as
    Prefect 3 runs a task called inside a task, not on another worker slot
    through a new client; submits and maps go to the concurrent one. Elsewhere
    both share the in-process run.
    """
    from ..runners.dask import in_worker_task
    from ..runners.local import SequentialTaskRunner

    inline = inline and in_worker_task()

    run = context.nested_inline if inline else context.nested
    if run is None:
        spec = context.spec
        runner, on_close = (SequentialTaskRunner(), None) if inline else _nested_runner()
        parent = ParentTaskRun(spec.flow_run_id, spec.flow_run_name, spec.task_run_id, spec.task_run_name)
        try:
            run = ImplicitRun(spec.task_run_name, runner, context.store, started_by=parent, cancelled=context.cancelled)
        except BaseException:
            if on_close is not None:
                on_close()
            raise
        if inline:
            context.nested_inline = run
        else:
            context.nested = run
        context.on_end.append(lambda: _close(run, on_close, context))
        if run.flow_run is not None:
            context.announce_nested(run.flow_run.id, run.flow_run.name)
    return run


def _close(run: ImplicitRun, then: Callable[[], None] | None, context: TaskRunContext) -> None:
    try:
        if context.abandon is not None:
            run.cancel(context.abandon)
        run.close()
    finally:
        if then is not None:
            then()


def _nested_runner() -> tuple[TaskRunner, Callable[[], None] | None]:
    """The runner for a task's own submissions, and what to do when they end."""
    from ..runners.dask import DaskTaskRunner, ensure_seceded, in_worker_task
    from ..runners.local import ThreadPoolTaskRunner

    if not in_worker_task():
        return ThreadPoolTaskRunner(), None
    from distributed import get_client

    # The worker's own client, made once per worker process (a new Client per
    # parent cost a connection to the scheduler each). The children need worker
    # slots; the parent only waits for them (what distributed.worker_client does).
    client = get_client()
    seceded = ensure_seceded()
    return DaskTaskRunner.on_client(client), (_rejoin if seceded else None)


def _rejoin() -> None:
    from distributed import rejoin
    from distributed.worker import thread_state

    rejoin()
    thread_state.daskflow_seceded = None
