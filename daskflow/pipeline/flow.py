"""``@flow``: a function whose call is a flow run on a task runner."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import copy
import functools
import inspect
import logging
import threading
import time
import types
import uuid
from collections import Counter
from typing import (
    Any,
    Callable,
    Generic,
    Iterable,
    ParamSpec,
    Sequence,
    TypeVar,
    overload,
)

import dask.config

from .. import config
from .._collections import find_instances, replace_instances
from ..exceptions import (
    CancelledRun,
    CrashedError,
    FlowTimeoutError,
    InvalidOptionError,
    ParameterValidationError,
    RunnerError,
    StorageError,
    UpstreamFailedError,
)
from ..masking import add_secrets, mask, mask_exception, secrets_in
from ..runners.base import TaskRunner
from ..runners.execute import PRINT_SINK, TASK_RUN_CONTEXT, install_print_capture
from ..storage.store import Store
from .context import FLOW_RUN_CONTEXT, FlowRunContext, configure_console_logging, run_tags
from .engine import FlowRunEngine, _BodyFailed
from .futures import TaskFuture
from .history import RunRecorder, history_enabled
from .hooks import RunView
from .interrupt import INTERRUPTED, interrupted, resume_hint
from .names import check_name_text, check_tag_texts
from .options import (
    Hook,
    check_hooks,
    check_name,
    check_optional_bool,
    check_result_storage,
    check_runner,
    check_serializer,
    check_tags,
    check_timeout,
)
from .parameters import ParameterModel
from .persistence import RunStorage
from .retries import RetryDelay, retry_delay, validate_retry_options
from .run_names import RunName, check_run_name, resolve_run_name
from .runs import FlowRun, ParentTaskRun, RunPlan
from .states import Cancelled, Completed, Crashed, Failed, Running, State, TimedOut

__all__ = ["Flow", "flow"]

P = ParamSpec("P")
R = TypeVar("R")

logger = logging.getLogger("daskflow.runs")


#: Called with each new flow run in this process (the CLI's progress bar watches
#: its run through this).
RUN_OBSERVERS: list[Callable[[FlowRun], None]] = []

#: Called with each flow run and its started task runner; a watcher returns a
#: function to call when the run has its final state (or ``None``). The status
#: page's live feed registers here (``daskflow.status.feed.watch``).
RUN_WATCHERS: list[Callable[[FlowRun, TaskRunner], Callable[[], None] | None]] = []


class Flow(Generic[P, R]):
    """A function whose call is a flow run: its tasks run on the flow's task runner.

    Create flows with :func:`flow`. Calling a flow inside another flow makes a
    subflow run, with its own record linked to the parent, on the parent's runner
    (unless the subflow names a runner of its own).
    """

    _OPTIONS = (
        "name", "description", "version", "tags", "task_runner", "retries", "retry_delay_seconds",
        "timeout_seconds", "validate_parameters", "log_prints", "on_completion", "on_failure", "on_crashed", "on_cancellation",
        "result_storage", "persist_result", "result_serializer", "refresh_cache",
        "flow_run_name", "cache_result_in_memory", "on_running",
    )

    def __init__(
        self,
        fn: Callable[P, R],
        name: str | None = None,
        description: str | None = None,
        version: str | None = None,
        tags: Iterable[str] | None = None,
        task_runner: TaskRunner | None = None,
        retries: int = 0,
        retry_delay_seconds: RetryDelay = 0,
        timeout_seconds: float | None = None,
        validate_parameters: bool = True,
        log_prints: bool = False,
        on_completion: Hook | Sequence[Hook] | None = None,
        on_failure: Hook | Sequence[Hook] | None = None,
        result_storage: Store | str | None = None,
        persist_result: bool | None = None,
        result_serializer: str | None = None,
        refresh_cache: bool | None = None,
        on_crashed: Hook | Sequence[Hook] | None = None,
        on_cancellation: Hook | Sequence[Hook] | None = None,
        flow_run_name: RunName | None = None,
        cache_result_in_memory: bool = True,
        on_running: Hook | Sequence[Hook] | None = None,
    ) -> None:
        # ``@flow`` over ``@classmethod`` / ``@staticmethod`` (Prefect's order): the
        # function is kept, and ``__get__`` binds the class (or nothing).
        self._method_kind: str | None = None
        if isinstance(fn, (classmethod, staticmethod)):
            self._method_kind = "class" if isinstance(fn, classmethod) else "static"
            fn = fn.__func__
        if not callable(fn):
            raise InvalidOptionError(f"@flow decorates a function, got {fn!r}")
        self.fn = fn
        #: ``async def`` (or an async generator): calling the flow returns a coroutine.
        self.isasync = inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn)
        #: A generator body: its yielded values are the run's result (a list).
        self.isgenerator = inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn)
        self.name = check_name_text("flow", check_name(fn, name, "flow"))
        owner = f"flow {self.name!r}"
        self.description = description if description is not None else inspect.getdoc(fn)
        self.version = version
        self.tags = check_tag_texts(owner, check_tags(owner, tags))
        self.task_runner = check_runner(owner, task_runner)
        self.retry_delay_seconds = validate_retry_options(owner, retries, retry_delay_seconds, None)
        self.retries = retries
        self.timeout_seconds = check_timeout(owner, timeout_seconds)
        self.validate_parameters = bool(validate_parameters)
        if not isinstance(log_prints, bool):
            raise InvalidOptionError(f"{owner}: log_prints must be True or False, got {log_prints!r}")
        self.log_prints = log_prints
        self.on_completion = check_hooks(owner, "on_completion", on_completion)
        self.on_failure = check_hooks(owner, "on_failure", on_failure)
        self.on_crashed = check_hooks(owner, "on_crashed", on_crashed)
        self.on_cancellation = check_hooks(owner, "on_cancellation", on_cancellation)
        self.on_running = check_hooks(owner, "on_running", on_running)
        self.flow_run_name = check_run_name(owner, "flow_run_name", flow_run_name)
        if not isinstance(cache_result_in_memory, bool):
            raise InvalidOptionError(f"{owner}: cache_result_in_memory must be True or False, got {cache_result_in_memory!r}")
        self.cache_result_in_memory = cache_result_in_memory
        self.result_storage = check_result_storage(owner, result_storage)
        self.persist_result = check_optional_bool(owner, "persist_result", persist_result)
        self.result_serializer = check_serializer(owner, result_serializer)
        self.refresh_cache = check_optional_bool(owner, "refresh_cache", refresh_cache)
        self.parameters = ParameterModel(fn, self.name)
        functools.update_wrapper(self, fn)  # type: ignore[arg-type]

    def with_options(self, **changes: Any) -> Flow[P, R]:
        """A copy of this flow with some options changed."""
        unknown = set(changes) - set(self._OPTIONS)
        if unknown:
            raise InvalidOptionError(f"with_options() got unknown options {sorted(unknown)}; valid: {', '.join(self._OPTIONS)}")
        options = {name: getattr(self, name) for name in self._OPTIONS}
        options.update(changes)
        made = Flow(self.fn, **options)
        made._method_kind = self._method_kind
        return made

    def __get__(self, instance: Any, owner: type | None = None) -> Flow[P, R]:
        """A flow defined in a class: bound to the instance (a method), the class
        (``@flow`` over ``@classmethod``) or nothing (over ``@staticmethod``).
        ``self`` / ``cls`` is not a flow parameter."""
        if self._method_kind == "static" or isinstance(self.fn, types.MethodType):
            return self
        target = owner if self._method_kind == "class" else instance
        if target is None:
            return self  # looked up on the class: the plain flow
        bound = copy.copy(self)
        bound.fn = types.MethodType(self.fn, target)
        bound.parameters = ParameterModel(bound.fn, self.name)
        return bound

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run the flow; returns its value, or its final :class:`State` with ``return_state=True``.

        An ``async def`` flow returns a coroutine to await (``asyncio.run(my_flow())``,
        or ``await my_flow()`` in async code, also in an async parent flow). A
        generator flow returns a generator over its yielded values.

        Raises
        ------
        ParameterValidationError
            Before anything runs, if the parameters do not fit the signature.
        """
        return_state = bool(kwargs.pop("return_state", False))
        if _reimporting_main():
            # A script calling its flow at the top level, without an
            # ``if __name__ == "__main__":`` guard, is imported again by each
            # worker process a LocalCluster spawns; running the flow there would
            # start clusters inside the workers and fail their start.
            logger.info("not running flow %r: this process is importing the script that started it (a spawned worker)", self.name)
            return _nothing(self)  # type: ignore[return-value]
        if self.isgenerator and return_state:
            raise InvalidOptionError(f"flow {self.name!r} is a generator: call it without return_state=True and iterate")
        if self.isasync:
            if self.isgenerator:
                return self._aiterate(args, kwargs)  # type: ignore[return-value]
            return self._call_async(args, kwargs, return_state)  # type: ignore[return-value]
        if self.isgenerator:
            return self._iterate(args, kwargs)  # type: ignore[return-value]
        runner = _FlowRunner(self)
        try:
            state = runner.run(args, kwargs)
        except KeyboardInterrupt:
            if runner.interrupted and runner.parent is None and TASK_RUN_CONTEXT.get() is None:
                # The run's last log line said what happened and how to resume.
                raise interrupted(self.name) from None
            raise
        return state if return_state else state.result()  # type: ignore[return-value]

    async def _call_async(self, args: tuple[Any, ...], kwargs: dict[str, Any], return_state: bool) -> Any:
        """Await a flow run: it runs in a thread of its own (its body on a new event
        loop there), so the caller's loop goes on serving other coroutines."""
        runner = _FlowRunner(self)  # here: the awaiting context names the parent flow, if any
        done: concurrent.futures.Future[State] = concurrent.futures.Future()
        context = contextvars.copy_context()

        def target() -> None:
            try:
                done.set_result(context.run(runner.run, args, kwargs))
            except BaseException as exc:  # handed to the awaiting coroutine
                done.set_exception(exc)

        threading.Thread(target=target, name=f"daskflow-async-flow-{self.name}", daemon=True).start()
        try:
            state = await asyncio.shield(asyncio.wrap_future(done))
        except asyncio.CancelledError:
            # The awaiting task was cancelled (Ctrl-C in asyncio.run): cancel the run's tasks too.
            runner._cancel_requested("the coroutine awaiting the flow run was cancelled")
            raise
        return state if return_state else state.result()

    def _iterate(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        # The run starts at the first next(), like calling a generator function.
        yield from _FlowRunner(self).run(args, kwargs).result()

    async def _aiterate(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        for value in await self._call_async(args, kwargs, False):
            yield value

    def _run_planned(self, plan: RunPlan, parameters: dict[str, Any]) -> State:
        """Run as the flow run ``plan`` describes (made ahead by a deployment); the final state."""
        return _FlowRunner(self).run((), dict(parameters), plan)

    def to_deployment(
        self,
        name: str | None = None,
        *,
        cron: str | Sequence[str] | None = None,
        interval: Any = None,
        rrule: str | Sequence[str] | None = None,
        schedules: Sequence[Any] | None = None,
        timezone: str | None = None,
        anchor_date: Any = None,
        parameters: dict[str, Any] | None = None,
        tags: Iterable[str] | None = None,
        description: str | None = None,
        version: str | None = None,
        work_queue_name: str | None = None,
        paused: bool = False,
        concurrency_limit: int | dict[str, Any] | None = None,
        collision_strategy: str | None = None,
        catchup: str = "latest",
        catchup_limit: int = 10,
        entrypoint: str | None = None,
        **hooks: Any,
    ) -> Any:
        """A :class:`~daskflow.Deployment` of this flow, to register with :func:`daskflow.deploy`.

        Prefect 3's names: ``cron``, ``interval`` (seconds or a timedelta) and
        ``rrule`` each take one value or a list, ``schedules`` more; ``timezone``
        applies to them (``anchor_date`` to intervals). The flow must be defined at
        the top level of a file: that file (or the package it is in) is what
        workers run, from a snapshot stored at registration. See
        :class:`~daskflow.Deployment` for the other options (and the
        ``on_completion``, ``on_failure``, ``on_crashed`` and
        ``on_cancellation`` hooks a deployment may add).

        Examples
        --------
        >>> retrain.to_deployment("monthly-retrain", cron="0 3 1 * *", timezone="Europe/Berlin")  # doctest: +SKIP
        """
        # Deployments sit above the pipeline layer: imported when asked for, so
        # running a flow never loads them.
        from ..deployments.deployment import Deployment, schedules_from_options

        name = self.name if name is None else name
        owner = f"deployment {name!r}"
        made = schedules_from_options(
            owner, cron=cron, interval=interval, rrule=rrule, schedules=schedules, timezone=timezone, anchor_date=anchor_date
        )
        return Deployment(
            name=name, entrypoint=entrypoint, flow=self, parameters=parameters, tags=tags, description=description,
            version=version, schedules=made, work_queue_name=work_queue_name, paused=paused, concurrency_limit=concurrency_limit,
            collision_strategy=collision_strategy, catchup=catchup, catchup_limit=catchup_limit, **hooks,
        )

    def serve(self, name: str | None = None, *, storage: Any = None, address: str | None = None, **options: Any) -> None:
        """Register a deployment of this flow and run the serve loop here until stopped.

        ``options`` are those of :meth:`to_deployment` (``cron=``, ``interval=``,
        ``parameters=``, ...). Runs go to the Dask scheduler at ``address``, or to
        a LocalCluster started for the loop; results and history go to
        ``storage``. Ctrl-C or SIGTERM stops the loop (runs already on the
        cluster go on).
        """
        from ..deployments.serve import serve

        serve(self.to_deployment(name, **options), storage=storage, address=address)

    def __repr__(self) -> str:
        return f"Flow(name={self.name!r})"


class _FlowRunner:
    """Everything one call of a flow does, start to end."""

    def __init__(self, flow: Flow[Any, Any], started_by: ParentTaskRun | None = None) -> None:
        self.flow = flow
        #: The task run whose body this run serves (daskflow.pipeline.nested).
        self.started_by = started_by
        parent = FLOW_RUN_CONTEXT.get()
        # A flow called inside a task (on a worker, or a local runner's thread) is
        # its own top-level run, not a subflow of the flow that ran the task.
        self.parent = None if TASK_RUN_CONTEXT.get() is not None else parent
        #: Set when Ctrl-C stopped the run (its final line says so; see pipeline/interrupt.py).
        self.interrupted = False
        self.recorder: RunRecorder | None = None
        self.engine: FlowRunEngine | None = None
        self.tag_limits: dict[str, int] = {}
        self.plan: RunPlan | None = None
        self._unwatch: list[Callable[[], None]] = []

    def run(self, args: tuple[Any, ...], kwargs: dict[str, Any], plan: RunPlan | None = None) -> State:
        flow = self.flow
        configure_console_logging(dask.config.get("daskflow.logging.console"))
        self.log_level = config.log_level()  # a bad setting fails here, before anything runs
        self.plan = plan
        run_id = plan.id if plan is not None else uuid.uuid4().hex
        flow_run = FlowRun(
            id=run_id,
            name=plan.name if plan is not None else f"{flow.name}-{run_id[:8]}",
            flow_name=flow.name,
            version=flow.version,
            parameters={},
            tags=run_tags((*flow.tags, *plan.tags) if plan is not None else flow.tags),
            parent_flow_run_id=self.parent.flow_run.id if self.parent else None,
            parent_flow_run_name=self.parent.flow_run.name if self.parent else None,
        )
        flow_run.started_by = self.started_by
        if plan is not None:
            flow_run.created = plan.created
            flow_run.deployment_id = plan.deployment_id
            flow_run.deployment_name = plan.deployment_name
            flow_run.scheduled_time = plan.scheduled_time
            flow_run.work_queue = plan.work_queue
            flow_run.state_history[:0] = plan.states
        if self.parent is not None:
            self.parent.flow_run.subflow_runs.append(flow_run)
        for observer in list(RUN_OBSERVERS):
            observer(flow_run)
        try:
            parameters = flow.parameters.bind(args, kwargs, flow.validate_parameters)
        except ParameterValidationError as exc:
            flow_run.parameters = {"<invalid>": True}
            logger.error("Flow run %r - %s", flow_run.name, exc)
            return self._finish(flow_run, Failed(str(exc), data=exc))
        flow_run.parameters = parameters
        try:
            custom = resolve_run_name(f"flow {flow.name!r}", "flow_run_name", flow.flow_run_name, parameters, pass_parameters=False)
        except Exception as exc:
            # Prefect raises here, even with return_state=True; the run is recorded Failed first.
            logger.error("Flow run %r - %s", flow_run.name, exc)
            self._finish(flow_run, Failed(str(exc), data=exc))
            raise
        if custom is not None:
            logger.info("Flow run %r - renamed to %r (flow_run_name)", flow_run.name, custom)
            flow_run.name = custom
        # Masked in records, logs and the console, and taken by every task to its
        # worker (a task may get the raw value as a plain string).
        add_secrets(secrets_in(parameters), share=True)
        call_args, call_kwargs = flow.parameters.call_arguments(parameters)
        task_context = TASK_RUN_CONTEXT.get()  # a flow called in a task body keeps its records in the task's store
        task_store = task_context.store if task_context is not None else None
        options = (flow.result_storage or task_store, flow.persist_result, flow.result_serializer, flow.refresh_cache)
        self.storage = self.parent.engine.storage.child(*options) if self.parent is not None else RunStorage(*options)
        if self.storage.persist_result is not False:
            try:
                store = self.storage.store()  # probed: a bad bucket fails here, before any task
            except (StorageError, InvalidOptionError) as exc:
                return self._finish(flow_run, Failed(str(exc), data=exc))  # its final line says why, once
            flow_run.result_storage = store.url
        self.recorder = self._recorder(flow_run)

        runner, owns_runner = self._runner()
        flow_run.runner = repr(runner)
        if owns_runner:
            try:
                runner.start()
            except Exception as exc:
                error = exc if isinstance(exc, RunnerError) else RunnerError(f"the task runner {runner!r} failed to start: {exc}")
                if error is not exc:
                    error.__cause__ = exc
                logger.error("Flow run %r - %s", flow_run.name, error)
                return self._finish(flow_run, Crashed(str(error), data=error))
        try:
            try:
                self.storage.check_runner(runner)
            except InvalidOptionError as exc:
                logger.error("Flow run %r - %s", flow_run.name, exc)
                return self._finish(flow_run, Failed(str(exc), data=exc))
            self.tag_limits = self._read_tag_limits(flow_run, runner)
            logger.info("Flow run %r - beginning flow %r on %s", flow_run.name, flow.name, runner.name)

            def starting() -> None:
                flow_run.activity = "starting the local Dask cluster"
                logger.info("Flow run %r - %s", flow_run.name, flow_run.activity)

            def started() -> None:
                flow_run.activity = None
                flow_run.dashboard_link = runner.dashboard_link
                if owns_runner and runner.dashboard_link:
                    logger.info("Flow run %r - Dask dashboard: %s", flow_run.name, runner.dashboard_link)
                self._watch(flow_run, runner)

            # A runner's own LocalCluster starts when a task run first has to execute.
            runner.when_started(started, starting)
            if flow_run.history_url and self.parent is None:
                logger.info("Flow run %r - run history: %s", flow_run.name, flow_run.history_url)
            state = self._attempts(flow_run, runner, call_args, call_kwargs)
            # Finished while the runner is up: watchers (the status page's feed)
            # push the final state through it, and shutting a cluster down is
            # not part of the run's time.
            return self._finish(flow_run, state)
        except KeyboardInterrupt:
            self.interrupted = True
            runner.silence_teardown()
            self._finish(flow_run, Cancelled(INTERRUPTED))
            raise
        finally:
            if owns_runner:
                runner.shutdown()

    def _read_tag_limits(self, flow_run: FlowRun, runner: TaskRunner) -> dict[str, int]:
        """The task-tag concurrency limits of the run's store (``daskflow limits``);
        they are held as leases on a Dask cluster, so only Dask runs read them."""
        from ..runners.dask import DaskTaskRunner
        from ..storage.limits import Limits

        if self.parent is not None:
            return self.parent.engine.tag_limits
        if not isinstance(runner, DaskTaskRunner) or self.storage.persist_result is False:
            return {}
        try:
            return Limits(self.storage.store()).all("tag")
        except (StorageError, InvalidOptionError) as exc:
            logger.warning("Flow run %r - cannot read the task concurrency limits, running without them: %s", flow_run.name, exc)
            return {}

    def _watch(self, flow_run: FlowRun, runner: TaskRunner) -> None:
        for watcher in list(RUN_WATCHERS):
            try:
                unwatch = watcher(flow_run, runner)
            except Exception:  # a watcher shows the run; it must never stop it
                logger.warning("Flow run %r - watcher %r failed to start", flow_run.name, watcher, exc_info=True)
                continue
            if unwatch is not None:
                self._unwatch.append(unwatch)

    def _recorder(self, flow_run: FlowRun) -> RunRecorder | None:
        """Start recording the run's history in its store (config ``daskflow.history``)."""
        if not history_enabled():
            return None
        try:
            store = self.plan.history_store if self.plan is not None and self.plan.history_store is not None else self.storage.store()
        except (StorageError, InvalidOptionError) as exc:
            # Results are not persisted (or the probe would have failed the run):
            # the run goes on, unrecorded.
            logger.warning("Flow run %r - its history cannot be recorded: %s", flow_run.name, exc)
            return None
        recorder = RunRecorder(flow_run, store, sweep=self.parent is None and self.started_by is None)
        recorder.on_cancel = self._cancel_requested
        recorder.start()
        return recorder

    def _cancel_requested(self, reason: str) -> None:
        engine = self.engine
        if engine is not None:
            engine.cancel(CancelledRun(reason))

    def _runner(self) -> tuple[TaskRunner, bool]:
        if self.parent is not None and self.flow.task_runner is None:
            return self.parent.engine.runner, False
        if self.flow.task_runner is not None:
            return self.flow.task_runner.duplicate(), True
        from ..runners.default import default_task_runner

        return default_task_runner(), True

    def _attempts(self, flow_run: FlowRun, runner: TaskRunner, args: tuple[Any, ...], kwargs: dict[str, Any]) -> State:
        flow = self.flow
        counters: Counter[str] = Counter()
        attempt = 1
        while True:
            state = self._attempt(flow_run, runner, args, kwargs, counters)
            if not (state.is_failed() or state.is_crashed()) or attempt > flow.retries:
                return state
            delay = retry_delay(flow.retry_delay_seconds, attempt, None)
            logger.warning(
                "Flow run %r - attempt %d ended %s; retry %d of %d in %g s", flow_run.name, attempt, state, attempt, flow.retries, delay
            )
            flow_run.set_state(state)
            time.sleep(delay)  # the driver's own thread: nothing else is waiting on it
            attempt += 1

    def _attempt(self, flow_run: FlowRun, runner: TaskRunner, args: tuple[Any, ...], kwargs: dict[str, Any], counters: Counter[str]) -> State:
        flow = self.flow
        engine = FlowRunEngine(
            flow_run, runner, self.storage, log_level=self.log_level, log_prints=flow.log_prints, counters=counters,
            tag_limits=self.tag_limits,
        )
        engine.start()
        self.engine = engine
        context = FlowRunContext(flow, flow_run, engine, engine.log_level)
        flow_run.set_state(Running())
        self._call_hooks(flow.on_running, flow_run, flow_run.state)
        try:
            try:
                value = self._call_body(context, args, kwargs)
            except FlowTimeoutError as exc:
                engine.cancel(exc)
                return TimedOut(str(exc), data=exc)
            except KeyboardInterrupt:
                runner.silence_teardown()
                engine.cancel(CancelledRun("the flow run was interrupted (KeyboardInterrupt)"))
                raise
            except CancelledRun as exc:
                engine.cancel(exc)
                return Cancelled(str(exc), data=exc)
            except BaseException as exc:
                mask_exception(exc)  # before its text goes anywhere: it may carry a task's secret
                engine.cancel(_BodyFailed(f"the flow body raised {type(exc).__name__}: {exc}"))
                make = Crashed if _infrastructure(exc) else Failed
                logger.error("Flow run %r - the flow body raised %s: %s", flow_run.name, type(exc).__name__, exc)
                return make(f"{type(exc).__name__}: {exc}", data=exc)
            engine.wait_all()
            cancelled = engine.cancelled_by
            if cancelled is not None:
                return Cancelled(str(cancelled), data=cancelled)
            return self._final_state(engine, value)
        finally:
            engine.close()
            self.engine = None

    def _call_body(self, context: FlowRunContext, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        flow = self.flow
        sink = None
        if flow.log_prints:
            install_print_capture()
            flow_logger = context.logger()
            sink = flow_logger.info

        def body() -> Any:
            token = FLOW_RUN_CONTEXT.set(context)
            print_token = PRINT_SINK.set(sink)
            try:
                return _consume(flow.fn(*args, **kwargs))
            finally:
                PRINT_SINK.reset(print_token)
                FLOW_RUN_CONTEXT.reset(token)

        if flow.timeout_seconds is None:
            return body()
        # The body runs in a helper thread so the driver can stop waiting for it;
        # on timeout its tasks are cancelled and its next daskflow call raises.
        outcome: dict[str, Any] = {}
        ctx = contextvars.copy_context()

        def target() -> None:
            try:
                outcome["value"] = ctx.run(body)
            except BaseException as exc:
                outcome["error"] = exc

        thread = threading.Thread(target=target, name=f"daskflow-flow-{context.flow_run.name}", daemon=True)
        thread.start()
        thread.join(flow.timeout_seconds)
        if thread.is_alive():
            raise FlowTimeoutError(f"flow run {context.flow_run.name!r} exceeded timeout_seconds={flow.timeout_seconds:g}")
        if "error" in outcome:
            raise outcome["error"]
        return outcome["value"]

    def _final_state(self, engine: FlowRunEngine, value: Any) -> State:
        """The flow run's final state from what the body returned.

        Prefect's rules: a returned state is the final state (its name and
        message kept; a task's state gives its value); returned futures and
        states decide together (any not completed fails the run). daskflow's
        one addition: a body that returns ``None`` fails when a task run did
        not complete and the body never saw it (see ``FlowRunEngine.unhandled``);
        a failure the body looked at is one it handled, and the run completes.
        """
        if isinstance(value, State):
            return _returned_state(value)
        returned = find_instances(value, (TaskFuture, State))
        if returned:
            states = [r.state if isinstance(r, TaskFuture) else r for r in returned]
            bad = [s for s in states if not s.is_completed()]
            if bad and _mixed(value):
                # Prefect: runs decide only a return of runs alone; ("bar", failed_state)
                # is data, and the body that returned the failure has handled it.
                value = replace_instances(value, (TaskFuture, State), lambda r: _returned_state(r.state if isinstance(r, TaskFuture) else r))
                return Completed(data=value)
            if bad:
                error = bad[0].result(raise_on_failure=False) if bad[0].is_final() else RuntimeError(str(bad[0]))
                make = Crashed if bad[0].is_crashed() else Failed  # infrastructure, not user code
                return make(f"{len(bad)} of the {len(states)} returned runs did not complete; first: {bad[0]}", data=error)
            try:
                # Prefect: returned futures give their values, returned states stay
                # states (with their values fetched now: the cluster goes away).
                value = replace_instances(value, (TaskFuture, State), lambda r: r.result() if isinstance(r, TaskFuture) else _returned_state(r))
            except Exception as exc:
                return Crashed(f"could not fetch the returned results: {exc}", data=exc)
            return Completed(data=value)
        if value is None:
            bad_runs = engine.unhandled()
            if bad_runs:
                names = ", ".join(f"{r.name} ({r.state.name})" for r in bad_runs[:5])
                more = f" and {len(bad_runs) - 5} more" if len(bad_runs) > 5 else ""
                error = engine.first_error() or bad_runs[0].state.result(raise_on_failure=False)
                make = Crashed if _infrastructure(error) else Failed
                return make(
                    f"{len(bad_runs)} of {len(engine.flow_run.task_runs)} task runs did not complete and the flow "
                    f"neither returned nor looked at them: {names}{more}",
                    data=error,
                )
        return Completed(data=value)

    def _finish(self, flow_run: FlowRun, state: State) -> State:
        # The final message and the error the caller raises (uncaught, printed with
        # its causes and notes) are masked here, whichever way they were built.
        if isinstance(state.data, BaseException):
            mask_exception(state.data)
        state = state.copy(run=flow_run, message=mask(state.message))
        flow_run.set_state(state)
        flow_run.end_time = time.time()
        for unwatch in self._unwatch:
            try:
                unwatch()
            except Exception:
                logger.warning("Flow run %r - a watcher failed to finish", flow_run.name, exc_info=True)
        self._unwatch = []
        if self.recorder is not None:
            self.recorder.close()  # the final record is written before the call returns
        counts = ", ".join(f"{n} {name}" for name, n in sorted(flow_run.state_counts().items()))
        log = logger.info if state.is_completed() else logger.error
        hint = resume_hint(flow_run) if state.is_cancelled() and state.message == INTERRUPTED and self.parent is None else ""
        log("Flow run %r - finished in state %s%s%s", flow_run.name, state, f" (task runs: {counts})" if counts else "", hint)
        hooks = self.flow.on_completion if state.is_completed() else self.flow.on_failure if state.is_unsuccessful() else ()
        if state.is_crashed():
            hooks = (*hooks, *self.flow.on_crashed)
        elif state.is_cancelled():
            hooks = self.flow.on_cancellation
        self._call_hooks(hooks, flow_run, state)
        return state

    def _call_hooks(self, hooks: Sequence[Hook], flow_run: FlowRun, state: State) -> None:
        """Prefect's signature ``hook(flow, flow_run, state)``; one that raises is logged."""
        view = RunView(flow_run)
        for hook in list(hooks):
            try:
                hook(self.flow, view, state)
            except Exception:
                logger.exception("Flow run %r - hook %r raised", flow_run.name, getattr(hook, "__name__", hook))


@overload
def flow(__fn: Callable[P, R]) -> Flow[P, R]: ...


@overload
def flow(
    *,
    name: str | None = None,
    description: str | None = None,
    version: str | None = None,
    tags: Iterable[str] | None = None,
    task_runner: TaskRunner | None = None,
    retries: int = 0,
    retry_delay_seconds: RetryDelay = 0,
    timeout_seconds: float | None = None,
    validate_parameters: bool = True,
    log_prints: bool = False,
    on_completion: Hook | Sequence[Hook] | None = None,
    on_failure: Hook | Sequence[Hook] | None = None,
    result_storage: Store | str | None = None,
    persist_result: bool | None = None,
    result_serializer: str | None = None,
    refresh_cache: bool | None = None,
    on_crashed: Hook | Sequence[Hook] | None = None,
    on_cancellation: Hook | Sequence[Hook] | None = None,
    flow_run_name: RunName | None = None,
    cache_result_in_memory: bool = True,
    on_running: Hook | Sequence[Hook] | None = None,
) -> Callable[[Callable[P, R]], Flow[P, R]]: ...


def flow(__fn: Any = None, **options: Any) -> Any:
    """Turn a function into a :class:`Flow`; works bare (``@flow``) and called.

    Parameters
    ----------
    name, description, version, tags
        Kept in the run record; ``name`` defaults to the function's name.
    task_runner : TaskRunner or TaskRunner class, optional
        Where tasks run (a class, e.g. ``DaskTaskRunner``, is instantiated with
        no arguments). Default: config ``daskflow.task-runner``, ``dask``
        unless set: a :class:`DaskTaskRunner` on the scheduler at Dask's
        ``scheduler-address`` if one is set, else on an embedded LocalCluster
        started and closed by the run (``threads``: ThreadPoolTaskRunner,
        ``sequential``: SequentialTaskRunner). A subflow uses its parent's.
    retries, retry_delay_seconds
        Rerun the whole body when the flow run fails.
    timeout_seconds : float, optional
        The run ends ``TimedOut`` after this long; its open task runs are cancelled.
    validate_parameters : bool
        Check and coerce parameters from type hints with pydantic (default True).
    log_prints : bool
        Send ``print`` output of the body and its tasks to the run log.
    on_completion, on_failure, on_crashed, on_cancellation : callable or list of callables
        ``hook(flow, flow_run, state)``, called once the run is final:
        ``on_completion`` when it completed, ``on_failure`` when it Failed,
        Crashed or TimedOut, ``on_crashed`` (after ``on_failure``) when it
        Crashed, ``on_cancellation`` when it was Cancelled. ``on_running`` is
        called on the driver when each attempt of the body starts. ``flow_run``
        is a read-only view (``id``, ``name``, ``parameters``, ``tags``,
        ``state``). A hook that raises is logged; it never changes the state.
        Each also works as a decorator that adds a hook
        (``@my_flow.on_completion``).
    flow_run_name : str or callable, optional
        The run's name: a template filled from the parameters
        (``"train-{date}"``) or a callable with no arguments returning a
        string. Default ``<flow name>-<8 hex digits>``. A field that is not a
        parameter raises :class:`InvalidOptionError` from the call (as Prefect
        raises), and the run is recorded Failed.
    cache_result_in_memory : bool
        Accepted for Prefect code. A flow's return value is what the call
        returns, so the flow run's state keeps it either way; its tasks each
        have their own ``cache_result_in_memory``.
    result_storage : str or Store, optional
        Default store of the run's tasks: a folder, ``s3://bucket/prefix``, or a
        :class:`Store`. Else config ``daskflow.storage.url``, else ``./.daskflow``.
        It is probed (write, read, delete) before anything runs.
    persist_result : bool, optional
        Default for the tasks' ``persist_result`` (True when unset).
    result_serializer : str, optional
        Default for the tasks' ``result_serializer`` (``"pickle"``).
    refresh_cache : bool, optional
        Recompute cached tasks in this run and overwrite their entries (a task's
        own ``refresh_cache`` wins).

    Examples
    --------
    >>> from daskflow import flow, task
    >>> @task
    ... def square(x: int) -> int:
    ...     return x * x
    >>> @flow
    ... def total(n: int = 3) -> int:
    ...     return sum(square.map(range(n)).result())
    """
    if __fn is not None:
        if options:
            raise InvalidOptionError("use @flow or @flow(...), not @flow(fn, ...)")
        return Flow(__fn)
    return lambda fn: Flow(fn, **options)


def _reimporting_main() -> bool:
    """Whether this process is a spawned child (a Dask worker of a LocalCluster)
    re-importing the ``__main__`` script of its parent."""
    import multiprocessing

    return bool(getattr(multiprocessing.current_process(), "_inheriting", False))


def _nothing(flow: Flow[Any, Any]) -> Any:
    """What a skipped flow call gives back, in the shape the caller expects."""
    if flow.isasync and flow.isgenerator:
        return _no_values()
    if flow.isasync:
        return asyncio.sleep(0)  # a coroutine whose value is None
    return iter(()) if flow.isgenerator else None


def _consume(value: Any) -> Any:
    """What a body's call gives, run to its value: a coroutine (an ``async def``
    flow) on a new event loop in this thread, a generator into a list (Prefect
    consumes a returned generator: a run's result must be a value)."""
    if inspect.iscoroutine(value):
        value = asyncio.run(value)
    if inspect.isasyncgen(value):
        value = asyncio.run(_collect(value))
    if inspect.isgenerator(value):
        value = list(value)
    return value


async def _no_values() -> Any:
    for value in ():
        yield value


async def _collect(values: Any) -> list[Any]:
    return [value async for value in values]


def _mixed(value: Any) -> bool:
    """A returned list, tuple or set with an item that is plain data (holds no
    future or state), such as ``("bar", state)``: Prefect takes it as data. A
    return of runs alone, nested ones included (``(futures, more_futures)``),
    still decides the final state."""
    return isinstance(value, (list, tuple, set)) and any(not find_instances(v, (TaskFuture, State)) for v in value)


def _returned_state(state: State) -> State:
    """The final state of a flow whose body returned ``state`` (Prefect: a returned
    state is the run's state, e.g. ``return Completed(message="nothing to do")``)."""
    if not state.is_final():
        return Failed(f"the flow returned a state that is not final: {state}", data=RuntimeError(str(state)))
    if state.is_completed():
        try:
            data = state.result()  # a task's state: its value, fetched now (the cluster goes away)
        except Exception as exc:
            return Crashed(f"could not fetch the returned state's result: {exc}", data=exc)
        return state.copy(data=data, _fetch=None, run=None, timestamp=time.time())
    error = state.result(raise_on_failure=False)
    return state.copy(data=error, _fetch=None, run=None, timestamp=time.time())


def _infrastructure(error: BaseException | None) -> bool:
    """Whether ``error`` comes from the infrastructure (a crashed task, the runner),
    directly or through the upstream failures it caused: the flow run is then
    Crashed, not Failed, like the task run at the root."""
    seen = 0
    while error is not None and seen < 50:
        if isinstance(error, (CrashedError, RunnerError)):
            return True
        if not isinstance(error, UpstreamFailedError):
            return False
        error, seen = error.__cause__, seen + 1
    return False
