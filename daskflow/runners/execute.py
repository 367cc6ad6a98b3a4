"""Run one attempt of a task where the runner placed it (a Dask worker, a thread).

This is the only daskflow code that runs on workers. It sets the task-run context
(so ``get_run_logger()`` and ``log_prints`` work), enforces ``timeout_seconds``,
collects log lines, and turns every outcome into either a returned value plus a
small report, or an :class:`AttemptError` that carries the same report.

Timeouts
--------
A task with ``timeout_seconds`` runs its function in a helper thread; the attempt
waits for it at most that long. On overrun the attempt ends at once as
``TimedOut`` (freeing the worker slot, so downstream tasks are skipped and the flow
moves on) and a ``TaskTimeoutError`` is raised *inside* the overrunning thread.
Python code stops at its next bytecode; a call blocked in C (``time.sleep``, a
socket read, a long numpy routine) cannot be interrupted and keeps running until
it returns, then stops. Its eventual result is discarded.
"""

from __future__ import annotations

import asyncio
import builtins
import contextvars
import ctypes
import inspect
import logging
import os
import pickle
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from .._collections import find_instances, replace_instances
from ..exceptions import (
    CorruptedResultError,
    ReturnedStateError,
    SerializationError,
    StorageError,
    TaskTimeoutError,
)
from ..masking import add_secrets, mask, mask_exception, secrets_in, secrets_to_share
from ..storage import retry as storage_retry
from ..storage.store import Store

__all__ = [
    "PRINT_SINK",
    "TASK_RUN_CONTEXT",
    "AttemptError",
    "AttemptSpec",
    "InputLoadError",
    "ResultSpec",
    "SealedArguments",
    "StoredRef",
    "TaskRunContext",
    "execute_attempt",
    "install_print_capture",
    "load_stored",
    "record_text",
]

#: Log lines shipped per report; a chatty task flushes a batch each time it fills.
LOG_BATCH = 200
#: Seconds a logged line may wait before it is sent (checked at the next line).
LOG_INTERVAL = 1.0
#: Longest log line kept; longer ones are cut with a marker (a runaway print of a
#: whole array must not blow up the scheduler's event stream).
MAX_LINE = 20_000


class ResultSpec(NamedTuple):
    """Where and how an attempt stores its result.

    ``reuse`` says which existing entry the attempt may load instead of running
    (the driver found none, but a rerun after a lost worker, or another run of
    the same key, may have committed it since): ``"any"`` for a cache key,
    ``"task_run"`` only one written by this same task run (``refresh_cache``:
    another task run of the key, even in this flow run, is recomputed).
    """

    store: Store
    key: str
    serializer: str = "pickle"
    expiration: float | None = None
    overwrite: bool = False
    reuse: str = "any"
    meta: dict[str, Any] | None = None


class StoredRef:
    """An argument that is a stored result: loaded where the attempt runs.

    A plain class, not a tuple: containers of arguments are walked for futures,
    and this must stay one opaque value.
    """

    __slots__ = ("key", "store", "task_run_id", "task_run_name")

    def __init__(self, store: Store, key: str, task_run_id: str, task_run_name: str) -> None:
        self.store = store
        self.key = key
        self.task_run_id = task_run_id
        self.task_run_name = task_run_name

    def __reduce__(self) -> tuple[Any, ...]:
        return (StoredRef, (self.store, self.key, self.task_run_id, self.task_run_name))

    def __repr__(self) -> str:
        return f"StoredRef({self.task_run_name!r}, {self.key!r})"


class _Lifted:
    """Where a lifted-out value goes back into sealed arguments."""

    __slots__ = ("index",)

    def __init__(self, index: int) -> None:
        self.index = index

    def __reduce__(self) -> tuple[Any, ...]:
        return (_Lifted, (self.index,))


class SealedArguments:
    """A task attempt's arguments as they travel through Dask: one opaque value.

    Dask shows task arguments where daskflow cannot mask them: a worker logs
    ``repr(run_spec)`` of every failed task ("Compute Failed"), and the run spec
    lives on the scheduler. This object's repr names the task run only. Values
    Dask must resolve (futures of upstream results) are lifted out by
    :meth:`seal` and passed beside it, so they stay edges of the graph;
    :meth:`open` puts their values back where the attempt runs.

    ``secrets`` are the known secrets the arguments contain, and those shared
    by this process's runs (:func:`daskflow.masking.secrets_to_share`): the
    worker masks them in the attempt's logs and errors, even when it learned
    them nowhere else (a ``SecretStr`` parameter passed on as a plain string).
    """

    __slots__ = ("args", "kwargs", "lifted", "name", "secrets")

    def __init__(self, args: tuple[Any, ...], kwargs: dict[str, Any], name: str, secrets: tuple[str, ...] = (), lifted: int = 0) -> None:
        self.args = args
        self.kwargs = kwargs
        self.name = name
        self.secrets = secrets
        self.lifted = lifted

    @classmethod
    def seal(cls, args: tuple[Any, ...], kwargs: dict[str, Any], name: str, lift: type | tuple[type, ...] = ()) -> tuple[SealedArguments, list[Any]]:
        """Sealed arguments of task run ``name``, and the objects of type ``lift``
        taken out of them (in order) for the runner to pass on beside them."""
        secrets = secrets_to_share((args, kwargs))
        lifted: list[Any] = []

        def take(value: Any) -> _Lifted:
            lifted.append(value)
            return _Lifted(len(lifted) - 1)

        if lift:
            args, kwargs = replace_instances((args, kwargs), lift, take)
        return cls(args, kwargs, name, secrets, len(lifted)), lifted

    def open(self, values: tuple[Any, ...] | list[Any] = ()) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """``(args, kwargs)`` with the lifted objects replaced by ``values`` (what
        the runner resolved them to); teaches this process the secrets."""
        if self.secrets:
            add_secrets(self.secrets)
        if not self.lifted:
            return self.args, self.kwargs
        if len(values) != self.lifted:
            raise ValueError(f"the arguments of task run {self.name!r} take {self.lifted} lifted values, got {len(values)}")
        return replace_instances((self.args, self.kwargs), _Lifted, lambda slot: values[slot.index])

    def __reduce__(self) -> tuple[Any, ...]:
        return (SealedArguments, (self.args, self.kwargs, self.name, self.secrets, self.lifted))

    def __repr__(self) -> str:
        return f"<arguments of task run {self.name!r}, not shown>"


class InputLoadError(Exception):
    """A stored input could not be loaded: ``corrupted`` (or missing) entries are
    recomputed by the driver; other storage errors fail the attempt."""

    def __init__(self, task_run_id: str, key: str, corrupted: bool, message: str) -> None:
        super().__init__(task_run_id, key, corrupted, message)
        self.task_run_id = task_run_id
        self.key = key
        self.corrupted = corrupted
        self.message = message

    def __str__(self) -> str:
        return self.message


def load_stored(ref: StoredRef) -> Any:
    """The value of a stored result, verified before it is deserialised.

    Raises
    ------
    InputLoadError
        If the entry is missing, corrupted or unreadable.
    """
    try:
        return ref.store.read_result(ref.key)
    except (CorruptedResultError, FileNotFoundError) as exc:
        message = f"the stored result of task run {ref.task_run_name!r} ({ref.key} in {ref.store.url}) could not be used: {exc}"
        raise InputLoadError(ref.task_run_id, ref.key, True, message) from None
    except (StorageError, SerializationError) as exc:
        message = f"cannot load the stored result of task run {ref.task_run_name!r} from {ref.store.url}: {exc}"
        raise InputLoadError(ref.task_run_id, ref.key, False, message) from None


def _load_inputs(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
    if not find_instances((args, kwargs), StoredRef):
        return args, kwargs
    loaded: dict[str, Any] = {}

    def load(ref: StoredRef) -> Any:
        if ref.key not in loaded:
            loaded[ref.key] = load_stored(ref)
        return loaded[ref.key]

    return replace_instances((args, kwargs), StoredRef, load)


class AttemptSpec(NamedTuple):
    """What a worker needs to know about the attempt it runs.

    A named tuple, not a dataclass: it is pickled once per submit, and a tuple
    pickles several times faster.
    """

    flow_run_id: str
    task_run_id: str
    task_run_name: str
    attempt: int
    timeout_seconds: float | None = None
    log_prints: bool = False
    log_level: int = logging.INFO
    result: ResultSpec | None = None
    #: ``(tag, limit)`` of each of the task's tags with a concurrency limit.
    limits: tuple[tuple[str, int], ...] = ()
    #: What ``daskflow.runtime`` and ``get_run_context()`` tell the task about its run.
    tags: tuple[str, ...] = ()
    task_name: str | None = None
    flow_run_name: str | None = None
    flow_name: str | None = None
    #: The flow run's tags (``runtime.flow_run.tags``). Its other facts, the parameters
    #: among them, do not ride along: a task on another process asks for them once
    #: (``daskflow.runners.dask.run_facts_on_worker``).
    flow_run_tags: tuple[str, ...] = ()


#: Sends one report to the driver (Dask: ``Worker.log_event``; in-process: a call).
Publish = Callable[[dict[str, Any]], None]


@dataclass(slots=True)
class TaskRunContext:
    """The task run the current thread is executing."""

    spec: AttemptSpec
    lines: list[list[Any]] = field(default_factory=list)
    publish: Publish | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    artifacts: list[dict[str, Any]] = field(default_factory=list)
    #: When buffered lines were last sent: a slow task's lines go out every
    #: LOG_INTERVAL seconds, so ``daskflow logs`` shows them while it runs.
    sent: float = field(default_factory=time.monotonic)
    #: Transient storage errors this attempt retried (its report's ``sr``).
    storage_retries: storage_retry.RetryCounter = field(default_factory=storage_retry.RetryCounter)
    #: The implicit flow run of the tasks this task's body calls or submits
    #: (daskflow.pipeline.nested), and what ends it with the attempt.
    nested: Any = None
    nested_inline: Any = None
    on_end: list[Callable[[], None]] = field(default_factory=list)
    #: The attempt's Dask key, if it has one.
    key: str | None = None
    #: Whether the driver has cancelled this attempt's task run (its runner
    #: says; None: it cannot tell). The nested runs watch it to end with it.
    cancelled: Callable[[], bool] | None = None
    #: Why the attempt's nested runs must stop instead of being waited for
    #: (the attempt timed out or was interrupted), once it is known.
    abandon: str | None = None
    #: The function and its loaded arguments (``runtime.task_run.parameters``).
    call: tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]] | None = None

    #: Artifacts created or changed since the last report, by id: they go with
    #: the next batch of lines, so a progress bar moves while the task runs.
    changed: dict[str, dict[str, Any]] = field(default_factory=dict)

    def add_line(self, created: float, level: int, message: str) -> None:
        if len(message) > MAX_LINE:
            message = message[:MAX_LINE] + f"... [cut, {len(message)} characters]"
        message = mask(message)
        with self.lock:
            self.lines.append([created, level, message])
        self._send_if_due()

    def _send_if_due(self) -> None:
        """Send the buffered lines and changed artifacts if a batch is full or
        LOG_INTERVAL has passed since the last send."""
        with self.lock:
            if self.publish is None or not (self.lines or self.changed):
                return
            now = time.monotonic()
            if len(self.lines) < LOG_BATCH and now - self.sent < LOG_INTERVAL:
                return
            batch, self.lines = self.lines, []
            arts = [dict(a) for a in self.changed.values()]
            self.changed = {}
            self.sent = now
        message = _message(self.spec, "logs", logs=batch)
        if arts:
            message["arts"] = arts
        self.publish(message)

    def take_lines(self) -> list[list[Any]]:
        with self.lock:
            batch, self.lines = self.lines, []
        return batch

    def add_artifact(self, artifact: dict[str, Any]) -> None:
        """Keep an artifact for the end report (``create_*_artifact`` in a task)."""
        with self.lock:
            self.artifacts.append(artifact)
            self.changed[artifact["id"]] = artifact
        self._send_if_due()

    def update_artifact(self, artifact_id: str, changes: dict[str, Any]) -> bool:
        """Change an artifact this attempt created (``update_progress_artifact``);
        ``False`` if it has none of that id. The driver replaces its copy."""
        with self.lock:
            found = next((a for a in self.artifacts if a["id"] == artifact_id), None)
            if found is None:
                return False
            found.update(changes)
            self.changed[artifact_id] = found
        self._send_if_due()
        return True

    @property
    def store(self) -> Any:
        """The store this task run's result goes to, if any: a flow run its body
        starts keeps its records there (on a worker the configured store may be
        another, or the worker's own folder)."""
        return self.spec.result.store if self.spec.result is not None else None

    def announce_nested(self, flow_run_id: str, flow_run_name: str) -> None:
        """Tell the driver this task run started the flow run ``flow_run_id`` (its
        task record lists it), and say so in the task run's log."""
        self.add_line(time.time(), logging.INFO, f"its own task runs go to the flow run {flow_run_name!r} ({flow_run_id})")
        if self.publish is not None:
            self.publish(_message(self.spec, "nested", nested=[flow_run_id, flow_run_name]))


TASK_RUN_CONTEXT: contextvars.ContextVar[TaskRunContext | None] = contextvars.ContextVar(
    "daskflow_task_run", default=None
)
#: Where ``print`` goes while ``log_prints`` is on in this thread (flow body or task).
PRINT_SINK: contextvars.ContextVar[Callable[[str], None] | None] = contextvars.ContextVar(
    "daskflow_print_sink", default=None
)


class AttemptError(Exception):
    """A task attempt did not return a value; raised on the worker, read by the driver.

    ``kind`` is ``"failed"`` (user code raised), ``"timed_out"`` or ``"crashed"``
    (``SystemExit``/``KeyboardInterrupt`` inside the task). ``error`` is the user's
    exception when it survives pickling, else ``None`` and ``error_type`` /
    ``message`` / ``traceback`` describe it.
    """

    def __init__(
        self,
        task_run_id: str,
        attempt: int,
        kind: str,
        error: BaseException | None,
        error_type: str,
        message: str,
        traceback: str,
        report: dict[str, Any],
    ) -> None:
        super().__init__(task_run_id, attempt, kind, error_type, message)
        self.task_run_id = task_run_id
        self.attempt = attempt
        self.kind = kind
        self.error = error
        self.error_type = error_type
        self.message = message
        self.traceback = traceback
        self.report = report

    def __reduce__(self):
        return (
            type(self),
            (
                self.task_run_id,
                self.attempt,
                self.kind,
                self.error,
                self.error_type,
                self.message,
                self.traceback,
                self.report,
            ),
        )

    def __repr__(self) -> str:
        return f"AttemptError({str(self)!r})"

    def __str__(self) -> str:
        # Dask workers log this on failure: keep it short and free of argument values.
        return f"task run {self.report.get('name', self.task_run_id)!r} attempt {self.attempt} {self.kind}: {self.error_type}: {self.message}"


class _RunLogHandler(logging.Handler):
    """Sends records of a task-run logger to the attempt's line buffer."""

    def __init__(self, context: TaskRunContext) -> None:
        super().__init__()
        self.context = context

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.context.add_line(record.created, record.levelno, record_text(record))
        except Exception:  # a logging error must never fail the task
            self.handleError(record)


def record_text(record: logging.LogRecord) -> str:
    """A log record's message, with its exception's traceback when it has one
    (``logger.exception``): what a run's log keeps of it."""
    message = record.getMessage()
    if record.exc_info:
        message += "\n" + "".join(traceback.format_exception(*record.exc_info)).rstrip()
    return message


def task_run_logger(context: TaskRunContext) -> logging.Logger:
    """A logger whose records land in ``context``'s report (not on the worker's stderr:
    the driver prints them, so a LocalCluster does not show every line twice)."""
    logger = logging.Logger(f"daskflow.task_runs.{context.spec.task_run_name}", context.spec.log_level)
    logger.addHandler(_RunLogHandler(context))
    logger.propagate = False
    return logger


_original_print = builtins.print
_print_lock = threading.Lock()


def _capturing_print(*values: object, sep: str | None = " ", end: str | None = "\n", file: Any = None, flush: bool = False) -> None:
    sink = PRINT_SINK.get()
    if sink is None or file not in (None, sys.stdout):
        _original_print(*values, sep=sep, end=end, file=file, flush=flush)
        return
    sink((" " if sep is None else sep).join(str(v) for v in values))


def install_print_capture() -> None:
    """Route ``print`` to the run logger in threads that asked for it (``log_prints``).

    Replaces ``builtins.print`` once per process with a function that checks a
    context variable and otherwise behaves exactly like ``print``; it is only
    installed when a run uses ``log_prints=True``.
    """
    with _print_lock:
        if builtins.print is not _capturing_print:
            builtins.print = _capturing_print


def _call(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    # Coroutines run on a new event loop in this thread; generators are consumed
    # into a list here, where they run (a generator cannot travel to the driver).
    if inspect.iscoroutinefunction(fn):
        return asyncio.run(fn(*args, **kwargs))
    if inspect.isasyncgenfunction(fn):
        return asyncio.run(_collect(fn(*args, **kwargs)))
    value = fn(*args, **kwargs)
    return list(value) if inspect.isgenerator(value) else value


async def _collect(values: Any) -> list[Any]:
    return [value async for value in values]


def _raise_in_thread(thread: threading.Thread, exc_type: type[BaseException]) -> None:
    """Best effort: make ``thread`` raise ``exc_type`` at its next Python bytecode."""
    if thread.ident is not None:
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread.ident), ctypes.py_object(exc_type))


def _call_with_timeout(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], spec: AttemptSpec) -> Any:
    outcome: dict[str, Any] = {}
    context = contextvars.copy_context()

    def target() -> None:
        try:
            outcome["value"] = context.run(_call, fn, args, kwargs)
        except BaseException as exc:  # handed to the waiting thread below
            outcome["error"] = exc

    thread = threading.Thread(target=target, name=f"daskflow-timeout-{spec.task_run_name}", daemon=True)
    thread.start()
    thread.join(spec.timeout_seconds)
    if thread.is_alive():
        _raise_in_thread(thread, TaskTimeoutError)
        raise TaskTimeoutError(
            f"task run {spec.task_run_name!r} exceeded timeout_seconds={spec.timeout_seconds:g}"
        )
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def _picklable(exc: BaseException) -> BaseException | None:
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        return None
    return exc


def _user_traceback(exc: BaseException) -> str:
    tb = exc.__traceback__
    # Skip this module's own frames so the traceback starts in user code.
    while tb is not None and tb.tb_frame.f_code.co_filename == __file__:
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb)).rstrip()


def execute_attempt(
    fn: Callable[..., Any],
    spec: AttemptSpec,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    publish: Publish | None = None,
    key: str | None = None,
    cancelled: Callable[[], bool] | None = None,
) -> tuple[Any, dict[str, Any]]:
    """Run ``fn(*args, **kwargs)`` as attempt ``spec.attempt`` of a task run.

    ``publish`` receives a ``start`` report at once (so the driver knows the
    attempt runs, and notices when a dead worker's attempt starts again
    elsewhere) and ``logs`` reports while a chatty task runs.

    Returns
    -------
    value, report
        The ``end`` report is a msgpack-friendly dict: flow and task run ids,
        attempt, Dask key, start and end times, pid and the remaining log lines.

    Raises
    ------
    AttemptError
        For every way the attempt can end without a value; it carries the report.
    """
    context = TaskRunContext(spec, publish=publish, key=key, cancelled=cancelled)
    # The task's own secrets (SecretStr arguments) are masked in its logs and errors.
    add_secrets(secrets_in((args, kwargs)))
    if spec.log_prints:
        install_print_capture()
    started = time.time()
    if publish is not None:
        publish(_message(spec, "start", k=key, s=started, pid=os.getpid()))
    token = TASK_RUN_CONTEXT.set(context)
    print_token = PRINT_SINK.set(_print_sink(context) if spec.log_prints else None)
    # Each retried storage call of the attempt is counted and logged in its task's log.
    context.storage_retries.on_retry = lambda message: context.add_line(time.time(), logging.WARNING, message)
    retries_token = storage_retry.count_into(context.storage_retries)
    stored: dict[str, Any] = {}
    returned_message: str | None = None
    try:
        args, kwargs = _load_inputs(args, kwargs)
        context.call = (fn, args, kwargs)
        result = spec.result
        reused = _reuse_stored(result, spec) if result is not None and result.reuse != "none" else _MISSING
        if reused is not _MISSING:
            value = reused
            stored["reused"] = True
        else:
            if spec.timeout_seconds is not None:
                value = _call_with_timeout(fn, args, kwargs, spec)
            else:
                value = _call(fn, args, kwargs)
            value, returned_message = _returned_state(value)
            if result is not None:
                value = _store_result(result, spec, value, stored)
    except InputLoadError:
        raise  # the driver recomputes the input (or fails this run), nothing ran
    except BaseException as exc:
        if isinstance(exc, TaskTimeoutError):
            kind = "timed_out"
        elif isinstance(exc, (SystemExit, KeyboardInterrupt)):
            kind = "crashed"
        else:
            kind = "failed"
        if kind != "failed":
            # The body may still be running (a timeout cannot stop its thread):
            # its nested task runs are cancelled, not waited for.
            context.abandon = f"the task run {spec.task_run_name!r} that started them {kind.replace('_', ' ')}: {exc}"
        report = _report(spec, started, context, key)
        # Masked in place before anything formats or pickles it (the driver, and
        # Dask's pages, see its arguments, notes and causes); an exception whose
        # text still shows a secret does not travel, only its masked text does.
        clean = mask_exception(exc)
        raise AttemptError(
            spec.task_run_id,
            spec.attempt,
            kind,
            _picklable(exc) if clean else None,
            f"{type(exc).__module__}.{type(exc).__qualname__}".removeprefix("builtins."),
            mask(str(exc)),
            mask(_user_traceback(exc)),
            report,
        ) from None
    finally:
        _end_nested(context)
        storage_retry.stop_counting(retries_token)
        PRINT_SINK.reset(print_token)
        TASK_RUN_CONTEXT.reset(token)
    report = _report(spec, started, context, key)
    if stored:
        report.update(stored)
    if returned_message:
        report["msg"] = mask(returned_message)
    return value, report


def _returned_state(value: Any) -> tuple[Any, str | None]:
    """A task that returned a state (Prefect's ``return Completed(message=...)`` or
    ``return Failed(...)``): its value and message, or the failure it stands for."""
    from ..pipeline.states import State  # a leaf module: states are data, not the engine

    if not isinstance(value, State):
        return value, None
    if not value.is_completed():
        raise ReturnedStateError(value.message or f"the task returned a {value.name} state")
    return value.result(), value.message or None


_MISSING = object()


def _end_nested(context: TaskRunContext) -> None:
    """Wait for the task runs the attempt's body submitted (their own flow run)."""
    for end in context.on_end:
        try:
            end()
        except Exception as exc:  # their run records its own failure; the parent's outcome is its body's
            context.add_line(time.time(), logging.WARNING, f"the nested task runs did not end cleanly: {exc}")


def _reuse_stored(result: ResultSpec, spec: AttemptSpec) -> Any:
    """The committed value of this attempt's key, if one may be used instead of
    running: Dask recomputing a result lost with its worker finds it here."""
    manifest = result.store.read_manifest(result.key)
    if manifest is None or manifest.expired():
        return _MISSING
    if result.reuse == "task_run" and manifest.meta.get("task_run_id") != spec.task_run_id:
        return _MISSING
    try:
        return result.store.read_result(result.key, manifest)
    except (CorruptedResultError, FileNotFoundError):
        return _MISSING  # quarantined by the store: compute it again


def _store_result(result: ResultSpec, spec: AttemptSpec, value: Any, stored: dict[str, Any]) -> Any:
    """Commit ``value``; return the value this run should use (the first writer's,
    if another run committed the same key first)."""
    meta = dict(result.meta or {})
    meta.update(flow_run_id=spec.flow_run_id, task_run_id=spec.task_run_id, attempt=spec.attempt)
    expires = time.time() + result.expiration if result.expiration is not None else None
    try:
        manifest, adopted = result.store.write_result(
            result.key, value, serializer=result.serializer, expires=expires, meta=meta, overwrite=result.overwrite
        )
    except SerializationError as exc:
        raise SerializationError(
            f"task run {spec.task_run_name!r} returned a value that cannot be stored: {exc}. Return a "
            f"picklable value, choose another result_serializer, or keep it in one process: persist_result=False "
            f"on the task with a threads runner (ConcurrentTaskRunner)"
        ) from None
    stored["size"] = manifest.size
    if not adopted:
        return value
    stored["adopted"] = True
    try:
        return result.store.read_result(result.key, manifest)
    except (CorruptedResultError, FileNotFoundError):
        # The first writer's entry is bad (and now quarantined): ours replaces it.
        result.store.write_result(result.key, value, serializer=result.serializer, expires=expires, meta=meta, overwrite=True)
        stored.pop("adopted")
        return value


def _print_sink(context: TaskRunContext) -> Callable[[str], None]:
    def sink(message: str) -> None:
        context.add_line(time.time(), logging.INFO, message)

    return sink


def _message(spec: AttemptSpec, event: str, **fields: Any) -> dict[str, Any]:
    return {"ev": event, "fr": spec.flow_run_id, "tr": spec.task_run_id, "a": spec.attempt, **fields}


def _report(spec: AttemptSpec, started: float, context: TaskRunContext, key: str | None) -> dict[str, Any]:
    report = _message(
        spec, "end", name=spec.task_run_name, k=key, s=started, e=time.time(), pid=os.getpid(), logs=context.take_lines()
    )
    if context.artifacts:
        # All of them, in their final form (the driver replaces copies sent earlier).
        report["arts"] = [dict(a) for a in context.artifacts]
    if context.storage_retries.retries:
        report["sr"] = context.storage_retries.retries
    return report
