"""The driver side of one flow run: submits task attempts, follows them to final states.

The flow body runs in the caller's thread and submits tasks here; a single engine
thread per flow run handles everything that comes back (attempt outcomes,
reports, retry timers), so state changes happen in one place, in order.

How the pieces fit:

* A task run is submitted as soon as each of its upstream task runs has a live
  attempt (a runner handle that has not failed). Upstream handles go into the
  arguments, so on Dask the whole dynamic graph is on the scheduler and data
  moves worker to worker.
* When an attempt fails, Dask fails everything downstream of it at once. The
  engine reads whose code failed (``AttemptError.task_run_id`` or
  ``KilledWorker.task``): the failed task run retries or ends Failed; dependents
  that never ran go back to waiting and are resubmitted once the upstream
  succeeds on a retry, or end ``UpstreamFailed`` if it never does.
* Retries wait on the driver (a timer of the engine thread), never in a worker
  thread; each attempt gets a fresh Dask key ``<task>-<run>-<n>-<try>``.
* Caching: a task run's cache key is computed when it is submitted (upstream
  futures count as their keys). Keys are looked up in batches off the body's
  thread; a hit ends the run ``Cached`` without submitting anything, and its
  value is loaded from storage only where something needs it (a dependent's
  worker, or the body). An entry found unusable then is recomputed.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import queue
import re
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from .._collections import find_instances, replace_instances
from ..exceptions import (
    CancelledRun,
    CorruptedResultError,
    CrashedError,
    FailedRun,
    NoWorkersError,
    ReturnedStateError,
    RunnerError,
    StorageError,
    TaskTimeoutError,
    UpstreamFailedError,
)
from ..masking import mask
from ..runners.base import AttemptCall, TaskRunner
from ..runners.execute import (
    AttemptError,
    AttemptSpec,
    InputLoadError,
    ResultSpec,
    StoredRef,
)
from ..storage.store import Manifest
from .artifacts import merge_artifact
from .cache import CacheKeyContext, UpstreamKey, compute_key, token_memo
from .context import emit_line, run_tags
from .futures import TaskFuture
from .hooks import RunView
from .persistence import CacheLookups, RunStorage, TaskStorage, run_result_key
from .retries import retry_delay
from .run_names import call_parameters, task_run_name
from .runs import FlowRun, LogLine, TaskRun
from .states import (
    AwaitingRetry,
    Cached,
    Cancelled,
    Completed,
    Crashed,
    Failed,
    Retrying,
    Running,
    State,
    TimedOut,
    UpstreamFailed,
)

if TYPE_CHECKING:
    from .task import Task

__all__ = ["FlowRunEngine", "TaskNode"]

logger = logging.getLogger("daskflow.runs")

_STOP = object()


class TaskNode:
    """Engine-side bookkeeping of one task run (the record is what users see)."""

    __slots__ = (
        "args",
        "attempt",
        "callbacks",
        "dependents",
        "done",
        "engine",
        "final",
        "first_attempt",
        "handle",
        "kwargs",
        "last_end",
        "lookup",
        "observed",
        "parameters",
        "returned_message",
        "recompute_done",
        "recomputes",
        "recomputing",
        "record",
        "result_key",
        "retries_used",
        "running_on",
        "storage",
        "submission",
        "task",
        "upstream",
        "wait_for",
        "waiting",
    )

    def __init__(self, engine: FlowRunEngine, task: Task, record: TaskRun, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self.engine = engine
        self.task = task
        self.record = record
        self.args = args
        self.kwargs = kwargs
        self.upstream: list[TaskNode] = []
        self.wait_for: list[TaskNode] = []
        self.dependents: list[TaskNode] = []
        self.handle: Any = None
        self.submission = 0
        self.attempt = 1
        self.first_attempt = 1  # the attempt number its current submission started as
        self.retries_used = 0
        self.waiting = False
        self.final = False
        self.done = threading.Event()
        self.callbacks: list[Callable[[], None]] = []
        self.last_end: float | None = None
        # (worker, start time) of the execution seen starting and not yet ending.
        self.running_on: tuple[str | None, float] | None = None
        self.storage: TaskStorage | None = None
        self.result_key: str | None = None  # where the result is stored (its cache key, if cached)
        self.lookup = False  # waiting for its cache lookup
        self.recomputing = False  # a Cached run whose entry proved unusable, running again
        self.recomputes = 0
        self.recompute_done = threading.Event()
        # Bound arguments for hooks' task_run.parameters (kept only if the task has hooks).
        self.parameters: dict[str, Any] | None = None
        #: The flow body saw this run's final state (``return_state=True``, ``.state``,
        #: ``.result()``; not ``wait()`` alone): a failure it saw is one it handled.
        self.observed = False
        #: The message of a Completed state the task returned (``return Completed(message=...)``).
        self.returned_message: str | None = None


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.]+", "_", name)[:60] or "task"


class FlowRunEngine:
    """Orchestrates the task runs of one flow run on a started runner."""

    def __init__(
        self,
        flow_run: FlowRun,
        runner: TaskRunner,
        storage: RunStorage | None = None,
        *,
        log_level: int = logging.INFO,
        log_prints: bool = False,
        counters: Counter[str] | None = None,
        tag_limits: dict[str, int] | None = None,
    ) -> None:
        """``counters`` numbers task runs per task name; a flow retry passes the
        previous attempt's so names go on (``fit-7``, not ``fit-0`` again).
        ``tag_limits`` are the concurrency limits of task tags (``daskflow limits``)."""
        self.flow_run = flow_run
        self.runner = runner
        self.storage = storage if storage is not None else RunStorage(persist_result=False)
        self._lookups: CacheLookups | None = None
        self._work = threading.Event()  # set whenever something a waiter may want changed
        self.log_level = log_level
        self.log_prints = log_prints
        self._short = flow_run.id[:12]
        self._lock = threading.RLock()
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._timers: list[tuple[float, int, Callable[[], None]]] = []
        self._timer_seq = itertools.count()
        self._nodes: dict[str, TaskNode] = {}
        self._by_key: dict[str, tuple[TaskNode, int]] = {}
        self._fn_refs: dict[int, Any] = {}
        self._counters: Counter[str] = counters if counters is not None else Counter()
        self.tag_limits = tag_limits or {}
        self._outstanding = 0
        self._recheck: deque[TaskNode] = deque()
        self._abort: BaseException | None = None
        #: Workers their nanny restarted for exceeding the memory budget, with the rss it saw.
        self._memory_killed: dict[str, int] = {}
        #: Tasks whose CacheKeyWarning is in the run's logs already.
        self._uncached_tasks: set[str] = set()
        self._hook_pool: ThreadPoolExecutor | None = None
        self._thread: threading.Thread | None = None
        self._thread_error: BaseException | None = None
        self.closed = False

    # ----------------------------------------------------------------- lifecycle
    def start(self) -> None:
        self.runner.subscribe(self.flow_run.id, self._queue.put)
        self._thread = threading.Thread(target=self._loop, name=f"daskflow-engine-{self.flow_run.name}", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop the engine thread and wait for running hooks. Task runs still open
        are not touched: call :meth:`wait_all` or :meth:`cancel` first."""
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join()
            self._thread = None
        self.runner.unsubscribe(self.flow_run.id)
        if self._lookups is not None:
            self._lookups.close()
        if self._hook_pool is not None:
            self._hook_pool.shutdown(wait=True)
        self.closed = True

    # ------------------------------------------------------- called by the body
    def submit(self, task: Task, args: tuple[Any, ...], kwargs: dict[str, Any], wait_for: Iterable[Any] = ()) -> TaskFuture[Any]:
        return self.submit_many(task, [(args, kwargs)], wait_for)[0]

    def submit_many(self, task: Task, calls: list[tuple[tuple[Any, ...], dict[str, Any]]], wait_for: Iterable[Any] = ()) -> list[TaskFuture[Any]]:
        """Create one task run per ``(args, kwargs)`` and submit the ready ones in one batch."""
        self._check_alive()
        wait_for, blocking = _wait_for_items(wait_for)
        settings = self.storage.for_task(task, self.runner)  # probes a new store: may raise
        with self._lock, token_memo():
            nodes = [self._new_node(task, settings, args, kwargs, wait_for) for args, kwargs in calls]
            for node in nodes:
                if blocking is not None:
                    reason = f"a state it waits for (wait_for) is {blocking.name}" + (f": {blocking.message}" if blocking.message else "")
                    error = UpstreamFailedError(f"task run {node.record.name!r} did not run: {reason}")
                    self._finalize(node, UpstreamFailed(reason, data=error))
                elif node.lookup:
                    self._lookup_service().request(settings.store, node.record.cache_key, node)
                else:
                    self._recheck.append(node)
            self._drain()
        self.runner.run_pending()
        return [TaskFuture(node) for node in nodes]

    def wait_for(self, predicate: Callable[[], bool], timeout: float | None) -> bool:
        """Block until ``predicate()`` holds; False on timeout.

        The waiting thread also runs the attempts a runner queued for its
        caller (``SequentialTaskRunner`` runs tasks in the thread that waits).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            self._work.clear()  # before checking: a change after this wakes the wait below
            self.runner.run_pending()
            if predicate():
                return True
            remaining = 1.0 if deadline is None else min(1.0, deadline - time.monotonic())
            if remaining <= 0:
                return False
            self._work.wait(remaining)
            if self._thread_error is not None:
                raise RuntimeError("the daskflow engine thread failed") from self._thread_error

    def wait_node(self, node: TaskNode, timeout: float | None) -> bool:
        """Wait for ``node`` to be final; False on timeout."""
        if node.done.is_set():
            return True
        self._check_alive()
        finished = self.wait_for(node.done.is_set, timeout)
        if self._abort is not None and not isinstance(self._abort, _BodyFailed):
            raise self._abort
        return finished

    def add_done_callback(self, node: TaskNode, callback: Callable[[], None]) -> None:
        with self._lock:
            if not node.final:
                node.callbacks.append(callback)
                return
        callback()

    def wait_all(self) -> None:
        """Block until every task run of this flow run is final."""
        self.wait_for(lambda: not self._outstanding, None)

    def cancel(self, reason: BaseException) -> None:
        """Cancel every task run that is not final, and make later calls from the
        body raise ``reason``. Running threads are not interrupted."""
        with self._lock:
            if self._abort is None:
                self._abort = reason
            open_nodes = [n for n in self._nodes.values() if not n.final]
            handles = [n.handle for n in open_nodes if n.handle is not None]
            message = str(reason) or type(reason).__name__
            for node in open_nodes:
                self._finalize(node, Cancelled(message))
            self._drain()
        try:
            self.runner.cancel(handles)
        except Exception:  # the cluster may be gone; the runs are final either way
            logger.debug("cancelling %d handles failed", len(handles), exc_info=True)

    @property
    def cancelled_by(self) -> CancelledRun | None:
        """The reason the run was cancelled (``daskflow cancel``), if it was."""
        return self._abort if isinstance(self._abort, CancelledRun) else None

    def unsuccessful(self) -> list[TaskRun]:
        """Task runs that ended Failed, Crashed, TimedOut or UpstreamFailed."""
        return [n.record for n in self._nodes.values() if n.record.state.is_unsuccessful()]

    def unhandled(self) -> list[TaskRun]:
        """Unsuccessful task runs whose failure the flow body never saw.

        A run the body observed (its final state reached the body through
        ``return_state=True``, ``future.state`` or ``result()``) is
        handled; an ``UpstreamFailed`` run is handled when every failure that
        skipped it is (the body saw the root cause).
        """
        memo: dict[str, bool] = {}

        def unhandled(node: TaskNode) -> bool:
            key = node.record.id
            if key not in memo:
                memo[key] = False  # a cycle cannot happen; this only guards the recursion
                state = node.record.state
                if not state.is_unsuccessful() or node.observed:
                    memo[key] = False
                elif state.is_skipped():
                    causes = [u for u in (*node.upstream, *node.wait_for) if u.record.state.is_unsuccessful()]
                    memo[key] = not causes or any(unhandled(u) for u in causes)
                else:
                    memo[key] = True
            return memo[key]

        return [n.record for n in self._nodes.values() if unhandled(n)]

    def first_error(self) -> BaseException | None:
        """The exception of the first task run that failed by itself (not upstream)."""
        for node in self._nodes.values():
            state = node.record.state
            if state.is_failed() or state.is_crashed():
                return state.data if isinstance(state.data, BaseException) else state._default_error()
        return None

    def _check_alive(self) -> None:
        if self._abort is not None and not isinstance(self._abort, _BodyFailed):
            raise self._abort
        if self.closed:
            raise RuntimeError(f"flow run {self.flow_run.name!r} has ended; submit tasks while the flow is running")

    # ------------------------------------------------------------- task runs
    def _new_node(
        self, task: Task, settings: TaskStorage, args: tuple[Any, ...], kwargs: dict[str, Any], wait_for: list[Any]
    ) -> TaskNode:
        index = self._counters[task.name]
        custom = task_run_name(task, args, kwargs) if task.task_run_name is not None else None  # may raise
        record = TaskRun(
            # Unique across runs (the flow run's random id) without a uuid4 per task:
            # os.urandom is slow enough here to show in the per-task overhead.
            id=f"{self.flow_run.id[:16]}{len(self.flow_run.task_runs):016x}",
            name=custom or f"{task.name}-{index}",
            task_name=task.name,
            flow_run_id=self.flow_run.id,
            index=index,
            tags=run_tags(task.tags),
            seq=len(self.flow_run.task_runs),
            listener=self.flow_run.task_listener(),
        )
        if settings.policy is not None:
            inputs = _bound_inputs(task, args, kwargs)
            context = CacheKeyContext(task, record, self.flow_run, inputs)
            record.cache_key = compute_key(  # may raise
                settings.policy, context, inputs, explicit=settings.explicit, on_uncached=lambda m: self._uncached(record, m)
            )
        self._counters[task.name] = index + 1
        node = TaskNode(self, task, record, args, kwargs)
        if task.on_running or task.on_completion or task.on_failure:
            node.parameters = call_parameters(task, args, kwargs)
        if settings.store is not None:
            node.storage = settings
            node.result_key = record.cache_key or run_result_key(record.id)
            node.lookup = record.cache_key is not None and not settings.refresh
        linked: set[int] = set()  # ids of upstream nodes, so a fan-in over N futures links in O(N)
        for future in find_instances((args, kwargs), TaskFuture):
            self._link(node, future, node.upstream, linked)
        linked = set()
        for future in wait_for:
            self._link(node, future, node.wait_for, linked)
        record.upstream_ids = [u.record.id for u in node.upstream]
        record.wait_for_ids = [u.record.id for u in node.wait_for]
        self._nodes[record.id] = node
        self.flow_run.task_runs[record.id] = record
        self._outstanding += 1
        if record.listener is not None:
            record.listener(record)  # recorded Pending
        return node

    def _task_log(self, record: TaskRun, level: int, text: str, exc_info: bool = False) -> None:
        """Print one of the engine's own messages about a task run and keep it in
        that task run's logs (``daskflow logs RUN --task NAME``, the status page),
        as the lines the task body logs are kept; levels below the run's
        ``log_level`` are printed (if the logger allows) but not kept."""
        logger.log(level, "Task run %r - %s", record.name, text, exc_info=exc_info)
        if level >= self.log_level:
            if exc_info:
                import traceback

                text = f"{text}\n{traceback.format_exc().rstrip()}"
            self.flow_run.logs.append(LogLine(time.time(), level, mask(text), record.id, record.name))

    def _uncached(self, record: TaskRun, message: str) -> None:
        """Keep a ``CacheKeyWarning`` in the run's logs (history, the status page),
        once per task: a Python warning alone reaches only the driver's stderr,
        and under ``daskflow serve`` nobody reads that."""
        if record.task_name in self._uncached_tasks:
            return
        self._uncached_tasks.add(record.task_name)
        self.flow_run.logs.append(LogLine(time.time(), logging.WARNING, mask(message), record.id, record.name))

    def _link(self, node: TaskNode, future: TaskFuture[Any], into: list[TaskNode], linked: set[int]) -> None:
        upstream = future._node
        if upstream.engine is not self:
            raise ValueError(
                f"task run {upstream.record.name!r} belongs to another flow run; "
                "pass its value (future.result()) instead of the future"
            )
        if id(upstream) not in linked:
            linked.add(id(upstream))
            into.append(upstream)
            upstream.dependents.append(node)

    def _examine(self, node: TaskNode) -> TaskNode | str:
        """``"ready"``, ``"wait"`` or the upstream node that ended unsuccessfully."""
        if node.lookup:
            return "wait"
        for up in itertools.chain(node.upstream, node.wait_for):
            if up.final:
                if not up.record.state.is_completed():
                    return up
            elif up.handle is None or self.runner.outcome_known_failed(up.handle):
                return "wait"
        return "ready"

    def _drain(self) -> None:
        """Examine queued nodes until none is left; dispatch the ready ones in batches."""
        while self._recheck:
            ready: list[TaskNode] = []
            while self._recheck:
                node = self._recheck.popleft()
                if node.final or node.handle is not None:
                    continue
                verdict = self._examine(node)
                if verdict == "ready":
                    node.waiting = False
                    ready.append(node)
                elif verdict == "wait":
                    node.waiting = True
                else:
                    up = verdict
                    assert isinstance(up, TaskNode)
                    upstream_state = up.record.state
                    reason = f"upstream task run {up.record.name!r} ended {upstream_state.name}" + (
                        f": {upstream_state.message}" if upstream_state.message else ""
                    )
                    error = UpstreamFailedError(f"task run {node.record.name!r} did not run: {reason}")
                    if isinstance(upstream_state.data, BaseException):
                        error.__cause__ = upstream_state.data
                    self._finalize(node, UpstreamFailed(reason, data=error))
            if ready:
                self._dispatch(ready)

    def _dispatch(self, nodes: list[TaskNode]) -> None:
        by_task: dict[int, list[TaskNode]] = {}
        for node in nodes:
            by_task.setdefault(id(node.task), []).append(node)
        for group in by_task.values():
            try:
                # Building a call may be the runner's first use of its cluster
                # (which then starts): a cluster that cannot start crashes the group.
                calls = [self._attempt_call(node) for node in group]
                handles = self.runner.submit(calls)
            except Exception as exc:
                for node in group:
                    state = Crashed(f"could not submit: {exc}", data=RunnerError(f"could not submit task run {node.record.name!r}: {exc}"))
                    if node.recomputing:
                        self._recompute_finished(node, state)
                    else:
                        self._finalize(node, state)
                continue
            for node, handle in zip(group, handles, strict=True):
                node.handle = handle
                self.runner.add_done_callback(handle, _Done(self._queue, node, node.submission))

    def _attempt_call(self, node: TaskNode) -> AttemptCall:
        task = node.task
        node.submission += 1
        node.running_on = None
        node.first_attempt = node.attempt
        record = node.record
        key = f"{task.slug}-{self._short}-{record.index}-{node.submission}"
        record.dask_keys.append(key)
        record.attempts = node.attempt
        self._by_key[key] = (node, node.submission)
        spec = AttemptSpec(
            flow_run_id=self.flow_run.id,
            task_run_id=record.id,
            task_run_name=record.name,
            attempt=node.attempt,
            timeout_seconds=task.timeout_seconds,
            log_prints=self.log_prints if task.log_prints is None else task.log_prints,
            log_level=self.log_level,
            result=self._result_spec(node),
            limits=tuple((tag, self.tag_limits[tag]) for tag in record.tags if tag in self.tag_limits) if self.tag_limits else (),
            tags=record.tags,
            task_name=record.task_name,
            flow_run_name=self.flow_run.name,
            flow_name=self.flow_run.flow_name,
            flow_run_tags=self.flow_run.tags,
        )
        args, kwargs = replace_instances((node.args, node.kwargs), TaskFuture, lambda f: self._input_of(f._node))
        # Plain arguments (flow parameters) given to many tasks: a large one crosses once per run.
        share = self.runner.share
        args = tuple(share(a) for a in args)
        kwargs = {name: share(v) for name, v in kwargs.items()}
        return AttemptCall(
            fn=self._fn_ref(task),
            spec=spec,
            args=args,
            kwargs=kwargs,
            key=key,
            wait_for=[up.handle for up in node.wait_for if up.handle is not None],
            resources=task.resources,
        )

    def _result_spec(self, node: TaskNode) -> ResultSpec | None:
        settings = node.storage
        if settings is None or settings.store is None or node.result_key is None:
            return None
        cached = node.record.cache_key is not None
        return ResultSpec(
            store=settings.store,
            key=node.result_key,
            serializer=settings.serializer,
            expiration=settings.expiration if cached else None,
            overwrite=settings.refresh or node.recomputing,
            reuse="none" if node.recomputing else "task_run" if settings.refresh else "any",
            meta={"task": node.task.name, "task_run": node.record.name},
        )

    def _input_of(self, up: TaskNode) -> Any:
        """What to pass where ``up``'s future is an argument: its live handle, or
        for a Cached run a reference its consumer loads from storage."""
        if up.handle is None and up.storage is not None and up.record.cache_hit and up.result_key is not None:
            assert up.storage.store is not None
            up.handle = self.runner.load(StoredRef(up.storage.store, up.result_key, up.record.id, up.record.name))
        return up.handle

    def _fn_ref(self, task: Task) -> Any:
        ref = self._fn_refs.get(id(task))
        if ref is None:
            ref = self._fn_refs[id(task)] = self.runner.prepare(task.slug, task.fn)
        return ref

    # --------------------------------------------------------- engine thread
    def _loop(self) -> None:
        try:
            while True:
                timeout = None
                if self._timers:
                    timeout = max(0.0, self._timers[0][0] - time.monotonic())
                try:
                    item = self._queue.get(timeout=timeout)
                except queue.Empty:
                    item = None
                if item is _STOP:
                    return
                if isinstance(item, dict) and item.get("ev") == "facts":
                    self._answer_facts()  # outside the lock: pickling the parameters may take a while
                    continue
                with self._lock:
                    while self._timers and self._timers[0][0] <= time.monotonic():
                        heapq.heappop(self._timers)[2]()
                    if isinstance(item, _Done):
                        self._on_done(item.node, item.submission, item.handle)
                    elif isinstance(item, _LookedUp):
                        self._on_lookup(item.nodes, item.found)
                    elif isinstance(item, dict):
                        self._on_report(item)
                    self._drain()
                self._work.set()  # a waiting body runs what a sequential runner queued
        except BaseException as exc:  # never die silently: wait_all re-raises it
            self._thread_error = exc
            logger.exception("daskflow engine thread failed")
            self._work.set()

    def _answer_facts(self) -> None:
        """A task in another process asked for this run's facts (``runtime.flow_run.parameters``)."""
        from ..context import FlowRunSnapshot  # the snapshot get_run_context() gives the flow body

        try:
            self.runner.answer_run_facts(self.flow_run.id, lambda: FlowRunSnapshot.of_run(self.flow_run))
        except Exception as exc:  # the asking task times out and says so; the run goes on
            logger.warning("Flow run %r - could not send the run's facts to a task that asked for them: %s", self.flow_run.name, exc)

    def _call_later(self, delay: float, fn: Callable[[], None]) -> None:
        heapq.heappush(self._timers, (time.monotonic() + delay, next(self._timer_seq), fn))

    def _lookup_service(self) -> CacheLookups:
        if self._lookups is None:
            queue_ = self._queue
            self._lookups = CacheLookups(lambda nodes, found: queue_.put(_LookedUp(nodes, found)), self.flow_run.name)
        return self._lookups

    def _on_lookup(self, nodes: list[TaskNode], found: dict[str, Manifest | None] | BaseException) -> None:
        for node in nodes:
            if node.final:
                continue  # cancelled while its lookup ran
            node.lookup = False
            if isinstance(found, BaseException):
                self._finalize(node, Failed(f"cache lookup failed: {found}", data=found))
                continue
            manifest = found.get(node.record.cache_key or "")
            if manifest is None:
                self._recheck.append(node)
            else:
                self._cached(node, manifest)

    def _cached(self, node: TaskNode, manifest: Manifest) -> None:
        record = node.record
        store = node.storage.store if node.storage is not None else None
        assert store is not None
        record.cache_hit = True
        record.result_url = store.describe(store.manifest_path(manifest.key))
        written = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(manifest.created))
        self._finalize(node, Cached(f"stored result from {written}", _fetch=_StoredFetch(self, node, manifest)))

    def _on_done(self, node: TaskNode, submission: int, handle: Any) -> None:
        if node.recomputing and submission == node.submission:
            self._on_recomputed(node, handle)
            return
        if node.final or submission != node.submission:
            return  # a stale attempt, or already cancelled
        outcome = self.runner.outcome(handle)
        if outcome.status == "finished":
            self._finalize(node, Completed(node.returned_message or "", timestamp=max(node.last_end or 0, time.time()), _fetch=_Fetch(self, node, handle)))
            return
        if outcome.status == "cancelled":
            if any(up.final and not up.record.state.is_completed() for up in itertools.chain(node.upstream, node.wait_for)):
                node.handle = None  # Dask cancels dependents of a cancelled key: UpstreamFailed
                self._recheck.append(node)
            else:
                self._finalize(node, Cancelled("its Dask future was cancelled outside this flow run"))
            return
        error = outcome.error
        if isinstance(error, InputLoadError):
            self._on_input_lost(node, error)
            return
        if isinstance(error, NoWorkersError):
            # No retry: with no worker left it would only wait as long again.
            crash = NoWorkersError(f"task run {node.record.name!r} did not run: {error}")
            node.record.error = str(crash)
            self._finalize(node, Crashed(str(crash), data=crash))
            return
        origin = self._origin(error)
        if origin is not None and origin[0] is not node:
            # Never ran: an upstream attempt failed. Wait for that upstream's fate.
            node.handle = None
            self._recheck.append(node)
            return
        if isinstance(error, AttemptError):
            self._on_report(error.report)
            self._attempt_failed(node, error.kind, _user_error(node, error), error.message, error.traceback)
        else:
            # The shipped function may have been lost with the worker too: ship it anew.
            self._fn_refs.pop(id(node.task), None)
            if type(error).__name__ == "KilledWorker":
                crash = self._killed_worker(node, error)
            else:
                crash = CrashedError(f"task run {node.record.name!r} attempt {node.attempt} crashed: {_describe_crash(error, node.task)}")
            crash.__cause__ = error
            self._attempt_failed(node, "crashed", crash, str(crash), None)

    def _killed_worker(self, node: TaskNode, error: BaseException) -> CrashedError:
        """Dask gave up on a submission after ``allowed_failures + 1`` workers died
        running it: count every one of them as an attempt (a worker killed within
        START_REPORT_DELAY sent no start report) and say why they may have died."""
        record = node.record
        allowed = getattr(error, "allowed_failures", None)
        if isinstance(allowed, int) and allowed >= 0:
            node.attempt = node.first_attempt + allowed  # Dask's count is the exact one
            record.attempts = node.attempt
        tries = node.attempt - node.first_attempt + 1
        last = getattr(error, "last_worker", None)
        address = getattr(last, "address", None)
        why = ""
        if address in self._memory_killed:
            why = f"; the worker exceeded its memory limit ({_decimal_bytes(getattr(last, 'memory_limit', None))}) and its nanny restarted it"
        return CrashedError(
            f"task run {record.name!r} crashed: the worker running it died on each of its {tries} attempts{why}. "
            f"The task itself may be killing its worker (os._exit, a crash in native code, memory); see the worker logs "
            f"(last worker {address})"
        )

    def _on_worker_lost(self, worker: str | None, keys: Iterable[str]) -> None:
        """The scheduler removed a dead worker that was processing ``keys``."""
        for key in keys:
            entry = self._by_key.get(key)
            if entry is None:
                continue
            node, submission = entry
            if node.final or node.recomputing or submission != node.submission:
                continue
            if node.handle is not None and self.runner.outcome_known_failed(node.handle):
                continue  # Dask gave up on it (KilledWorker): _on_done counts its attempts
            if node.running_on is not None and node.running_on[0] not in (None, worker):
                continue  # it runs elsewhere
            self._crashed_rerun(node, worker, seen=node.running_on is not None)
            node.running_on = None

    def _on_input_lost(self, node: TaskNode, error: InputLoadError) -> None:
        """A Cached input of ``node`` could not be loaded: recompute it (when its
        entry is corrupted or gone) and submit ``node`` again; no retry is spent."""
        up = self._nodes.get(error.task_run_id)
        if not error.corrupted or up is None:
            storage_error = StorageError(error.message)
            self._attempt_failed(node, "failed", storage_error, error.message, None)
            return
        node.handle = None
        self._recompute(up, error.message)
        self._recheck.append(node)  # dispatched with the recompute's handle, or skipped if it failed

    def _recompute(self, node: TaskNode, reason: str) -> None:
        """Run a Cached task run again because its stored entry proved unusable."""
        if node.recomputing:
            return
        record = node.record
        if node.recomputes >= 2 or not node.record.cache_hit:
            error = CorruptedResultError(f"the stored result of task run {record.name!r} is unusable again after recomputing: {reason}")
            self._recompute_finished(node, Failed(str(error), data=error))
            return
        node.recomputes += 1
        node.recomputing = True
        node.recompute_done.clear()
        node.handle = None
        self._task_log(record, logging.WARNING, f"{reason}; recomputing it")
        self._dispatch([node])

    def _on_recomputed(self, node: TaskNode, handle: Any) -> None:
        outcome = self.runner.outcome(handle)
        if outcome.status == "finished":
            node.record.cache_hit = False
            state = Completed("recomputed: its stored entry could not be used", _fetch=_Fetch(self, node, handle))
        else:
            error = outcome.error
            if isinstance(error, AttemptError):
                self._on_report(error.report)
                exc = _user_error(node, error)
                make = {"failed": Failed, "timed_out": TimedOut, "crashed": Crashed}[error.kind]
                state = make(f"recomputing failed: {type(exc).__name__}: {error.message}", data=exc)
            else:
                state = Crashed(f"recomputing failed: {_describe_crash(error)}", data=CrashedError(_describe_crash(error)))
        self._recompute_finished(node, state)

    def _recompute_finished(self, node: TaskNode, state: State) -> None:
        node.record.set_state(state)
        node.recomputing = False
        if not state.is_completed():
            node.handle = None
        node.recompute_done.set()
        for dependent in node.dependents:
            if dependent.waiting and not dependent.final:
                self._recheck.append(dependent)

    def recompute_now(self, node: TaskNode, cause: BaseException) -> Any:
        """Called by the body when a Cached value cannot be loaded: recompute it
        while the run is alive, and return the new value."""
        with self._lock:
            if self.closed or self._thread is None:
                raise CorruptedResultError(
                    f"the stored result of task run {node.record.name!r} could not be used ({cause}) and its flow run "
                    "has ended; run the flow again to recompute it"
                ) from cause
            self._recompute(node, str(cause))
            self._drain()
        self.wait_for(node.recompute_done.is_set, None)
        state = node.record.state
        if not state.is_completed() or node.handle is None:
            raise state.result(raise_on_failure=False)
        return self.runner.result(node.handle)

    def _origin(self, error: BaseException | None) -> tuple[TaskNode, int] | None:
        if isinstance(error, AttemptError):
            node = self._nodes.get(error.task_run_id)
            return None if node is None else (node, error.attempt)
        key = getattr(error, "task", None)  # distributed.KilledWorker names the key
        if isinstance(key, str):
            return self._by_key.get(key)
        return None

    def _attempt_failed(self, node: TaskNode, kind: str, error: BaseException, message: str, tb: str | None) -> None:
        record = node.record
        record.error = f"{type(error).__name__}: {message}"
        record.traceback = tb
        make = {"failed": Failed, "timed_out": TimedOut, "crashed": Crashed}[kind]
        # A state the task returned is the run's state, with its own message (as in Prefect).
        text = message if isinstance(error, ReturnedStateError) else f"attempt {node.attempt}: {type(error).__name__}: {message}"
        state = make(text, data=error)
        task = node.task
        if node.retries_used < task.retries and self._abort is None and self._should_retry(node, state):
            node.retries_used += 1
            delay = retry_delay(task.retry_delay_seconds, node.retries_used, task.retry_jitter_factor)
            record.set_state(state)
            node.handle = None
            node.attempt += 1
            record.set_state(AwaitingRetry(f"retry {node.retries_used} of {task.retries} in {delay:g} s", scheduled_time=time.time() + delay))
            self._task_log(
                record, logging.WARNING,
                f"attempt {node.attempt - 1} {kind.replace('_', ' ')} ({type(error).__name__}: {message}); "
                f"retry {node.retries_used} of {task.retries} in {delay:g} s",
            )
            self._call_later(delay, lambda: self._retry(node))
            return
        self._finalize(node, state)

    def _should_retry(self, node: TaskNode, state: State) -> bool:
        condition = node.task.retry_condition_fn
        if condition is None:
            return True
        try:
            return bool(condition(node.task, node.record, state))
        except Exception:
            self._task_log(node.record, logging.ERROR, "retry_condition_fn raised; not retrying", exc_info=True)
            return False

    def _retry(self, node: TaskNode) -> None:
        if not node.final:
            self._recheck.append(node)  # it shows Retrying once the attempt starts

    def _on_report(self, report: dict[str, Any]) -> None:
        if report.get("ev") == "worker-lost":
            self._on_worker_lost(report.get("worker"), report.get("keys") or ())
            return
        if report.get("ev") == "worker-memory":
            self._memory_killed[str(report.get("worker"))] = int(report.get("rss") or 0)
            return
        if report.get("ev") == "cancel":
            # ``daskflow cancel --address`` through the scheduler's event stream.
            self.cancel(CancelledRun(str(report.get("reason") or "cancelled with daskflow cancel")))
            return
        node = self._nodes.get(report.get("tr", ""))
        if node is None:
            return
        record = node.record
        for created, level, message in report.get("logs", ()):
            emit_line(self.flow_run, LogLine(created, level, mask(message), record.id, record.name))
        for artifact in report.get("arts", ()):
            merge_artifact(self.flow_run, artifact, record)
        record.storage_retries += int(report.get("sr") or 0)  # every attempt's, stale ones included
        if report.get("ev") == "nested":
            # The attempt's body started a flow run of its own tasks (pipeline/nested.py).
            record.nested_runs.append([str(part) for part in report.get("nested") or ()])
            if record.listener is not None:
                record.listener(record)  # recorded now, not at the task run's next state
            return
        if report.get("reused") and report.get("ev") == "end":
            # The attempt found the result already committed (Dask recomputing a
            # result lost with its worker, or another run of the same key) and
            # loaded it instead of running the function.
            record.reloads += 1
            self._task_log(record, logging.INFO, f"loaded its stored result on {report.get('worker')} instead of running it again")
        if node.final or report.get("k") not in (None, record.dask_keys[-1] if record.dask_keys else None):
            return  # a stale attempt, or Dask recomputing a result lost with its worker
        event = report.get("ev")
        if event == "start":
            self._on_start(node, report)
        elif event == "end":
            if node.running_on is not None and node.running_on[1] != report["s"]:
                # Ends an execution we never saw start: the one we saw died with its worker.
                self._crashed_rerun(node, node.running_on[0])
                node.running_on = None
            if node.running_on is None:  # a short attempt reports its start with its end
                self._mark_running(node, report.get("worker"), report["s"])
            node.running_on = None  # this execution finished: a later start is no crash
            record.worker = report.get("worker", record.worker)
            record.end_time = node.last_end = report["e"]
            node.returned_message = report.get("msg")

    def _on_start(self, node: TaskNode, report: dict[str, Any]) -> None:
        worker = report.get("worker")
        if node.running_on is not None:
            # This submission started before, on a worker that died: Dask reran it.
            self._crashed_rerun(node, node.running_on[0])
        node.running_on = (worker, report["s"])
        self._mark_running(node, worker, report["s"])

    def _mark_running(self, node: TaskNode, worker: str | None, started: float) -> None:
        record = node.record
        record.worker = worker
        if record.start_time is None:
            record.start_time = started
        state = Running if node.attempt == 1 else Retrying
        record.set_state(state(f"attempt {node.attempt} on {worker}", timestamp=started))
        self._task_hooks(node, node.task.on_running, record.state)

    def _crashed_rerun(self, node: TaskNode, dead_worker: str | None, seen: bool = True) -> None:
        """Record that the execution seen running died with its worker and that Dask
        reran it: a Crashed attempt, and the rerun is the next attempt. It spends a
        retry when one is left; with none left Dask's own ``allowed-failures`` bounds
        the reruns (cancelling a rerun already under way would only waste it).

        ``seen=False``: the worker died while the attempt was assigned to it but
        before its start report came (within START_REPORT_DELAY of starting, or
        before it started). It counts as an attempt, as Dask counts it towards
        ``allowed-failures``, but spends no retry."""
        record, task = node.record, node.task
        where = "while running it" if seen else "before the attempt reported its start (it may not have started)"
        if dead_worker in self._memory_killed:
            where += "; the worker exceeded its memory limit and its nanny restarted it"
        crash = CrashedError(f"task run {record.name!r} attempt {node.attempt} crashed: the worker {dead_worker} died {where}")
        record.error = str(crash)
        record.set_state(Crashed(str(crash), data=crash))
        spent = seen and node.retries_used < task.retries
        if spent:
            node.retries_used += 1
        node.attempt += 1
        record.attempts = node.attempt
        how = (f"retry {node.retries_used} of {task.retries}" if spent
               else "no retry spent: it may not have started" if not seen else "no retries left: Dask's allowed-failures applies")
        self._task_log(record, logging.WARNING, f"{crash}; Dask reran it ({how})")

    def _finalize(self, node: TaskNode, state: State) -> None:
        node.final = True
        if not node.record.cache_hit:
            # Only retries needed them; free driver memory. A Cached run keeps them
            # in case its stored entry proves unusable and it must run after all.
            node.args, node.kwargs = (), {}
        record = node.record
        record.set_state(state)
        if record.end_time is None and not state.is_skipped() and not state.is_cancelled():
            record.end_time = state.timestamp
        self._outstanding -= 1
        node.done.set()
        self._work.set()
        if state.is_completed():
            self._task_log(record, logging.DEBUG, f"finished in state {state}")
        elif state.is_failed() or state.is_crashed():
            self._task_log(record, logging.ERROR, f"finished in state {state}" + (f"\n{record.traceback}" if record.traceback else ""))
        for callback in node.callbacks:
            self._run_hook(callback)
        node.callbacks.clear()
        hooks = node.task.on_completion if state.is_completed() else node.task.on_failure if (state.is_failed() or state.is_crashed()) else ()
        self._task_hooks(node, hooks, state)
        for dependent in node.dependents:
            if dependent.waiting and not dependent.final:
                self._recheck.append(dependent)

    def _task_hooks(self, node: TaskNode, hooks: Iterable[Any], state: State) -> None:
        """Prefect's signature ``hook(task, task_run, state)``, with a read-only view of the run."""
        if not hooks:
            return
        view = RunView(node.record, node.parameters)
        for hook in list(hooks):
            self._run_hook(lambda hook=hook: hook(node.task, view, state), hook)

    def _run_hook(self, fn: Callable[[], None], hook: Any = None) -> None:
        """Run user callbacks off the engine thread, one at a time, errors logged."""
        if self._hook_pool is None:
            self._hook_pool = ThreadPoolExecutor(1, thread_name_prefix="daskflow-hooks")

        def guarded() -> None:
            try:
                fn()
            except Exception:
                logger.exception("hook %r of flow run %r raised", getattr(hook, "__name__", hook), self.flow_run.name)

        self._hook_pool.submit(guarded)


class _BodyFailed(Exception):
    """Marks a cancel caused by the flow body raising (the body has already left)."""


class _Done:
    """Queue item: an attempt's handle finished. Callable, as a runner callback."""

    __slots__ = ("handle", "node", "queue", "submission")

    def __init__(self, q: queue.SimpleQueue[Any], node: TaskNode, submission: int) -> None:
        self.queue = q
        self.node = node
        self.submission = submission
        self.handle: Any = None

    def __call__(self, handle: Any) -> None:
        item = _Done(self.queue, self.node, self.submission)
        item.handle = handle
        self.queue.put(item)


class _LookedUp:
    """Queue item: the cache lookups of some task runs came back."""

    __slots__ = ("found", "nodes")

    def __init__(self, nodes: list[TaskNode], found: dict[str, Manifest | None] | BaseException) -> None:
        self.nodes = nodes
        self.found = found


class _FetchOnce:
    """Brings a task's value to the caller once, then keeps it (``State._fetch``)."""

    __slots__ = ("engine", "fetched", "lock", "node", "value")

    def __init__(self, engine: FlowRunEngine, node: TaskNode) -> None:
        self.engine = engine
        self.node = node
        self.lock = threading.Lock()
        self.fetched = False
        self.value: Any = None

    def __call__(self) -> Any:
        if not self.node.task.cache_result_in_memory:
            return self._load()  # the task's cache_result_in_memory=False: fetched anew each time
        with self.lock:
            if not self.fetched:
                self.value = self._load()
                self.fetched = True
            return self.value

    def _load(self) -> Any:
        raise NotImplementedError


class _StoredFetch(_FetchOnce):
    """A Cached task's value, loaded from storage verified; recomputed (while the
    run is alive) if the entry proves unusable."""

    __slots__ = ("manifest",)

    def __init__(self, engine: FlowRunEngine, node: TaskNode, manifest: Manifest) -> None:
        super().__init__(engine, node)
        self.manifest = manifest

    def _load(self) -> Any:
        store = self.node.storage.store if self.node.storage is not None else None
        assert store is not None
        try:
            return store.read_result(self.manifest.key, self.manifest)
        except (CorruptedResultError, FileNotFoundError) as exc:
            return self.engine.recompute_now(self.node, exc)


class _Fetch(_FetchOnce):
    """A completed task's value, from the runner (or its persisted copy)."""

    __slots__ = ("handle",)

    def __init__(self, engine: FlowRunEngine, node: TaskNode, handle: Any) -> None:
        super().__init__(engine, node)
        self.handle = handle

    def _load(self) -> Any:
        try:
            return self.engine.runner.result(self.handle)
        except Exception as exc:
            stored = self._from_storage()
            if stored is not _NOTHING:
                return stored
            if self.engine.closed:
                raise RuntimeError(
                    f"the value of task run {self.node.record.name!r} is gone: its flow run has ended and "
                    "it was not persisted (persist_result=False), so it lived in cluster memory only while "
                    "the flow ran; return it from the flow, or persist it"
                ) from exc
            raise

    def _from_storage(self) -> Any:
        """The persisted copy: the run has ended (its cluster is gone) or the
        worker holding the value died."""
        node = self.node
        if node.storage is None or node.storage.store is None or node.result_key is None:
            return _NOTHING
        try:
            return node.storage.store.read_result(node.result_key)
        except (FileNotFoundError, StorageError):
            return _NOTHING


_NOTHING = object()


def _wait_for_items(wait_for: Any) -> tuple[list[TaskFuture[Any]], State | None]:
    """The futures in ``wait_for`` (nested lists, tuples, sets and dicts too) and
    the first state in it that is not Completed.

    As in Prefect 3, other values are already resolved: they order nothing. A
    state is final; a Completed one lets the task run, any other stops it
    (UpstreamFailed), as its task run would have.
    """
    found = find_instances(wait_for, (TaskFuture, State))
    futures = [item for item in found if isinstance(item, TaskFuture)]
    blocking = next((item for item in found if isinstance(item, State) and not item.is_completed()), None)
    return futures, blocking


def _bound_inputs(task: Task, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    """Arguments by parameter name, defaults filled in, futures as their task's cache key."""
    args, kwargs = replace_instances(
        (args, kwargs), TaskFuture, lambda f: UpstreamKey(f._node.record.cache_key, f._node.record.name)
    )
    signature = task._signature
    if signature is None:
        return {"args": args, "kwargs": kwargs}
    bound = signature.bind(*args, **kwargs)
    bound.apply_defaults()
    return dict(bound.arguments)


def _user_error(node: TaskNode, error: AttemptError) -> BaseException:
    """The exception to show for a failed attempt: the user's own when it survived
    the trip from the worker, with the remote traceback attached."""
    if error.kind == "timed_out":
        return TaskTimeoutError(error.message)
    if error.kind == "crashed":
        return CrashedError(f"task run {node.record.name!r} was aborted by {error.error_type}: {error.message}")
    exc = error.error
    if exc is None:
        return FailedRun(f"task run {node.record.name!r} raised {error.error_type}: {mask(error.message)}\n{error.traceback}")
    _mask_arguments(exc)
    if hasattr(exc, "add_note") and error.traceback:
        exc.add_note(f"\nRemote traceback of task run {node.record.name!r}:\n{error.traceback}")
    return exc


def _mask_arguments(exc: BaseException) -> None:
    """Mask known secrets in the text arguments of a task's exception before it
    reaches the flow body (and, uncaught, the user's terminal)."""
    try:
        if mask(str(exc)) != str(exc):
            exc.args = tuple(mask(a) if isinstance(a, str) else a for a in exc.args)
    except Exception:  # an exception type with odd args: leave it be
        logger.debug("could not mask the arguments of %r", type(exc), exc_info=True)


def _decimal_bytes(size: Any) -> str:
    """``300 MB``, ``4.3 GB``: a memory limit as people write it (``memory_limit="300MB"``)."""
    if not isinstance(size, (int, float)) or size <= 0:
        return "unknown"
    if size >= 1e9:
        return f"{size / 1e9:.3g} GB"
    return f"{size / 1e6:.3g} MB"


def _describe_crash(error: BaseException | None, task: Task | None = None) -> str:
    name = type(error).__name__
    if name == "KilledWorker":
        return f"the worker running it died ({error})"
    text = f"{name}: {error}"
    if task is not None and "deserializ" in str(error):
        # Dask's message does not say which import failed on the cluster; the
        # usual one is a module of the user's own that only the driver has.
        local = _local_modules(task.fn)
        if local:
            text += (
                f"\nThe cluster (scheduler or workers) probably cannot import {', '.join(repr(m) for m in local)}, which "
                "the task's code uses and which this machine imports from a local file: install it in the cluster's "
                "environment, put its folder on the workers' PYTHONPATH, or upload it with client.upload_file()"
            )
    return text


def _local_modules(fn: Callable[..., Any]) -> list[str]:
    """Modules ``fn``'s globals use that come from local files (not the standard
    library, site-packages or daskflow) and are not shipped by value."""
    import sys
    import sysconfig
    import types

    import cloudpickle

    installed = {sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    names: set[str] = set()
    for value in getattr(getattr(fn, "__func__", fn), "__globals__", {}).values():
        module = value.__name__ if isinstance(value, types.ModuleType) else getattr(value, "__module__", None)
        if isinstance(module, str):
            names.add(module.split(".")[0])
    local = []
    for name in sorted(names):
        module = sys.modules.get(name)
        path = getattr(module, "__file__", None)
        if module is None or not path or name in ("daskflow", "__main__"):
            continue
        by_value = getattr(cloudpickle.cloudpickle, "_is_registered_pickle_by_value", lambda m: False)(module)
        if not by_value and not any(path.startswith(root) for root in installed):
            local.append(name)
    return local

