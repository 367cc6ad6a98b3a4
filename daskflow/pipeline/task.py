"""``@task``: a function whose calls inside a flow become Dask tasks."""

from __future__ import annotations

import asyncio
import copy
import datetime
import functools
import inspect
import re
import types
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Callable, Generic, ParamSpec, Sequence, TypeVar, overload

from ..exceptions import InvalidOptionError, MappingLengthMismatch, MissingContextError
from ..runners.execute import TASK_RUN_CONTEXT
from ..storage.store import Store
from .cache import NONE, NOT_SET, CachePolicy, check_cache_policy, check_expiration
from .context import FLOW_RUN_CONTEXT
from .futures import TaskFuture, TaskFutureList, unmapped
from .names import check_name_text, check_tag_texts
from .nested import lone_task_run, nested_run
from .options import (
    Hook,
    check_hooks,
    check_name,
    check_optional_bool,
    check_resources,
    check_result_storage,
    check_result_storage_key,
    check_serializer,
    check_tags,
    check_timeout,
)
from .retries import RetryDelay, validate_retry_options
from .run_names import RunName, check_run_name

__all__ = ["Task", "task"]

P = ParamSpec("P")
R = TypeVar("R")

class Task(Generic[P, R]):
    """A function whose calls inside a flow run as task runs on the task runner.

    Create tasks with :func:`task`. Inside a flow, ``t(x)`` runs a task run and
    returns its value, ``t.submit(x)`` returns a :class:`TaskFuture` and
    ``t.map(xs)`` one future per element. Outside any flow, ``t(x)`` is one task
    run in the calling thread (recorded as a flow run of its own); inside a task's
    body, calls, submits and maps run as that task's nested run
    (:mod:`daskflow.pipeline.nested`).
    """

    def __init__(
        self,
        fn: Callable[P, R],
        name: str | None = None,
        description: str | None = None,
        tags: Iterable[str] | None = None,
        version: str | None = None,
        retries: int = 0,
        retry_delay_seconds: RetryDelay = 0,
        retry_jitter_factor: float | None = None,
        retry_condition_fn: Callable[..., bool] | None = None,
        timeout_seconds: float | None = None,
        log_prints: bool | None = None,
        on_completion: Hook | Sequence[Hook] | None = None,
        on_failure: Hook | Sequence[Hook] | None = None,
        resources: Mapping[str, float] | None = None,
        cache_policy: CachePolicy | None = NOT_SET,
        cache_key_fn: Callable[..., str | None] | None = None,
        cache_expiration: datetime.timedelta | float | None = None,
        refresh_cache: bool | None = None,
        persist_result: bool | None = None,
        result_storage: Store | str | None = None,
        result_serializer: str | None = None,
        task_run_name: RunName | None = None,
        result_storage_key: str | None = None,
        cache_result_in_memory: bool = True,
        on_running: Hook | Sequence[Hook] | None = None,
    ) -> None:
        # ``@task`` over ``@classmethod`` / ``@staticmethod`` (Prefect's order).
        self._method_kind: str | None = None
        if isinstance(fn, (classmethod, staticmethod)):
            self._method_kind = "class" if isinstance(fn, classmethod) else "static"
            fn = fn.__func__
        if not callable(fn):
            raise InvalidOptionError(f"@task decorates a function, got {fn!r}")
        self.fn = fn
        #: ``async def``: in an async flow, calling the task returns a coroutine to await.
        self.isasync = inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn)
        #: A generator: its yielded values are the result (a list, consumed where it runs).
        self.isgenerator = inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn)
        self.name = check_name_text("task", check_name(fn, name, "task"))
        owner = f"task {self.name!r}"
        self.description = description if description is not None else inspect.getdoc(fn)
        self.tags = check_tag_texts(owner, check_tags(owner, tags))
        self.version = version
        self.retry_delay_seconds = validate_retry_options(owner, retries, retry_delay_seconds, retry_jitter_factor)
        self.retries = retries
        self.retry_jitter_factor = retry_jitter_factor
        if retry_condition_fn is not None and not callable(retry_condition_fn):
            raise InvalidOptionError(f"{owner}: retry_condition_fn must be callable(task, task_run, state) -> bool, got {retry_condition_fn!r}")
        self.retry_condition_fn = retry_condition_fn
        self.timeout_seconds = check_timeout(owner, timeout_seconds)
        if log_prints is not None and not isinstance(log_prints, bool):
            raise InvalidOptionError(f"{owner}: log_prints must be True, False or None, got {log_prints!r}")
        self.log_prints = log_prints
        self.on_completion = check_hooks(owner, "on_completion", on_completion)
        self.on_failure = check_hooks(owner, "on_failure", on_failure)
        self.on_running = check_hooks(owner, "on_running", on_running)
        self.resources = check_resources(owner, resources)
        self.cache_policy = check_cache_policy(owner, cache_policy)
        if cache_key_fn is not None and not callable(cache_key_fn):
            raise InvalidOptionError(f"{owner}: cache_key_fn must be callable(context, parameters) -> str | None, got {cache_key_fn!r}")
        self.cache_key_fn = cache_key_fn
        self.cache_expiration = check_expiration(owner, cache_expiration)
        self.refresh_cache = check_optional_bool(owner, "refresh_cache", refresh_cache)
        self.persist_result = check_optional_bool(owner, "persist_result", persist_result)
        if persist_result is False and ((self.cache_policy is not None and self.cache_policy is not NONE) or cache_key_fn is not None):
            raise InvalidOptionError(
                f"{owner}: caching needs a persisted result; drop persist_result=False, or the cache_policy/cache_key_fn"
            )
        self.result_storage = check_result_storage(owner, result_storage)
        self.result_serializer = check_serializer(owner, result_serializer)
        self.task_run_name = check_run_name(owner, "task_run_name", task_run_name)
        self.result_storage_key = check_result_storage_key(owner, result_storage_key)
        if result_storage_key is not None and persist_result is False:
            raise InvalidOptionError(f"{owner}: result_storage_key needs a persisted result; drop persist_result=False or the key")
        if not isinstance(cache_result_in_memory, bool):
            raise InvalidOptionError(f"{owner}: cache_result_in_memory must be True or False, got {cache_result_in_memory!r}")
        self.cache_result_in_memory = cache_result_in_memory
        self.slug = re.sub(r"[^A-Za-z0-9_.]+", "_", self.name)[:60] or "task"
        try:
            self._signature: inspect.Signature | None = inspect.signature(fn)
        except (TypeError, ValueError):  # some builtins have none
            self._signature = None
        functools.update_wrapper(self, fn)  # type: ignore[arg-type]

    # Settings copied by with_options; the order is the constructor's.
    _OPTIONS = (
        "name", "description", "tags", "version", "retries", "retry_delay_seconds",
        "retry_jitter_factor", "retry_condition_fn", "timeout_seconds", "log_prints",
        "on_completion", "on_failure", "resources", "cache_policy", "cache_key_fn", "cache_expiration",
        "refresh_cache", "persist_result", "result_storage", "result_serializer",
        "task_run_name", "result_storage_key", "cache_result_in_memory", "on_running",
    )

    def with_options(self, **changes: Any) -> Task[P, R]:
        """A copy of this task with some options changed.

        Examples
        --------
        >>> patient_fit = fit.with_options(retries=3, timeout_seconds=600)
        """
        unknown = set(changes) - set(self._OPTIONS)
        if unknown:
            raise InvalidOptionError(f"with_options() got unknown options {sorted(unknown)}; valid: {', '.join(self._OPTIONS)}")
        options = {name: getattr(self, name) for name in self._OPTIONS}
        if options["cache_policy"] is None:
            options["cache_policy"] = NOT_SET  # stored None: never chosen (an explicit None is NONE)
        options.update(changes)
        made = Task(self.fn, **options)
        made._method_kind = self._method_kind
        return made

    def __get__(self, instance: Any, owner: type | None = None) -> Task[P, R]:
        """A task defined in a class: bound to the instance, or the class (``@task``
        over ``@classmethod``); the bound object travels with the function."""
        if self._method_kind == "static" or isinstance(self.fn, types.MethodType):
            return self
        target = owner if self._method_kind == "class" else instance
        if target is None:
            return self
        bound = copy.copy(self)
        bound.fn = types.MethodType(self.fn, target)
        bound._signature = inspect.signature(bound.fn)
        return bound

    # ------------------------------------------------------------------ calls
    def _check_arguments(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if self._signature is None:
            return
        try:
            self._signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise TypeError(f"task {self.name!r} called with the wrong arguments: {exc}; signature: {self.name}{self._signature}") from None

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run a task run and return its value (``return_state=True``: its final :class:`State`).

        Inside a flow it is a task run of that flow run. Outside any flow it runs
        in this thread as the one task run of an implicit flow run (recorded in
        history, with the task's retries, timeout, caching and hooks). Inside
        another task's body it is a task run of that task's nested run (see
        :mod:`daskflow.pipeline.nested`).
        """
        return_state = kwargs.pop("return_state", False)
        wait_for = kwargs.pop("wait_for", ())
        self._check_arguments(args, kwargs)
        context = FLOW_RUN_CONTEXT.get()
        task_context = TASK_RUN_CONTEXT.get()
        if context is None and task_context is None:
            if self.isasync:  # Prefect: an async task called anywhere gives a coroutine
                return self._call_async(lambda: lone_task_run(self, args, kwargs, wait_for), return_state)  # type: ignore[return-value]
            state = lone_task_run(self, args, kwargs, wait_for)
        else:
            target = self._flow_context("call", inline=True)
            if self.isasync and task_context is None and getattr(context.flow, "isasync", False):
                return self._call_async(lambda: _final_state(target.submit_many(self, [(args, kwargs)], wait_for)[0]), return_state)  # type: ignore[return-value]
            state = _final_state(target.submit_many(self, [(args, kwargs)], wait_for)[0])
        if return_state:
            return state  # type: ignore[return-value]
        value = state.result()
        # Prefect hands a generator task's caller a generator; its values were
        # produced where the task ran.
        return (v for v in value) if self.isgenerator else value  # type: ignore[return-value]

    async def _call_async(self, run: Callable[[], Any], return_state: bool) -> Any:
        """``await my_task(x)``: submitted when awaited; the wait (and fetching the
        value) happens in a helper thread, so the caller's other coroutines go on."""
        state = await asyncio.to_thread(run)
        if return_state:
            return state
        return await asyncio.to_thread(state.result)

    def submit(self, *args: Any, **kwargs: Any) -> TaskFuture[R]:
        """Submit a task run and return its future at once.

        Accepts ``wait_for=[futures]`` to order runs without passing data, and
        ``return_state=True`` to get the final state (waits).
        """
        return_state = kwargs.pop("return_state", False)
        wait_for = kwargs.pop("wait_for", ())
        context = self._flow_context("submit")
        self._check_arguments(args, kwargs)
        future = context.submit_many(self, [(args, kwargs)], wait_for)[0]
        return _final_state(future) if return_state else future  # type: ignore[return-value]

    def map(self, *args: Any, **kwargs: Any) -> TaskFutureList:
        """Submit one task run per element of the iterable arguments, in one batch.

        Lists, tuples, sets, ranges, generators and other iterables (except
        strings, bytes and mappings) are iterated together; wrap an iterable in
        :class:`unmapped` to pass it whole to every call. A future of an upstream
        task that returned a list is waited for and iterated.

        Raises
        ------
        MappingLengthMismatch
            If the iterables have different lengths.
        """
        return_state = kwargs.pop("return_state", False)
        wait_for = kwargs.pop("wait_for", ())
        context = self._flow_context("map")
        mapped: dict[int | str, list[Any]] = {}
        for position, value in _argument_items(args, kwargs):
            if isinstance(value, TaskFuture):
                value = value.result()
            if _is_mappable(value):
                mapped[position] = list(value)
        if not mapped:
            raise InvalidOptionError(
                f"task {self.name!r}: map() needs at least one iterable argument (list, tuple, range, ...); "
                "use submit() for a single call"
            )
        lengths = {_label(p, self): len(v) for p, v in mapped.items()}
        if len(set(lengths.values())) > 1:
            raise MappingLengthMismatch(
                f"task {self.name!r}: map() got iterables of different lengths {lengths}; "
                "make them equal, or wrap the one meant for every call in unmapped(...)"
            )
        count = next(iter(lengths.values()))
        calls = []
        for i in range(count):
            call_args = tuple(mapped[p][i] if p in mapped else _unwrap(v) for p, v in enumerate(args))
            call_kwargs = {k: mapped[k][i] if k in mapped else _unwrap(v) for k, v in kwargs.items()}
            self._check_arguments(call_args, call_kwargs)
            calls.append((call_args, call_kwargs))
        futures = TaskFutureList(context.submit_many(self, calls, wait_for))
        if return_state:
            futures.wait()
            return TaskFutureList(f.state for f in futures)
        return futures

    def _flow_context(self, method: str, inline: bool = False) -> Any:
        """What takes this call's task runs: the flow run's engine, or, inside a
        task's body, that task run's nested run."""
        task_context = TASK_RUN_CONTEXT.get()
        context = FLOW_RUN_CONTEXT.get()
        # The innermost run takes it: a task of this flow run (Sequential runs it
        # in the flow's thread) submits to its nested run; a flow called inside
        # a task body submits to its own engine.
        if task_context is not None and (context is None or context.flow_run.id == task_context.spec.flow_run_id):
            return nested_run(task_context, inline)
        if context is None:
            # As Prefect 3: there is no task runner to submit to outside a flow.
            raise MissingContextError(
                f"task {self.name!r}: {method}() works inside a flow run or a task run; "
                f"call it from a @flow function, or call {self.name}(...) directly to run it here"
            )
        return context.engine

    def __repr__(self) -> str:
        return f"Task(name={self.name!r}, fn={getattr(self.fn, '__qualname__', self.fn)!r})"


def _argument_items(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Iterator[tuple[int | str, Any]]:
    yield from enumerate(args)
    yield from kwargs.items()


def _label(position: int | str, task: Task[Any, Any]) -> str:
    if isinstance(position, str):
        return position
    if task._signature is not None:
        names = list(task._signature.parameters)
        if position < len(names):
            return names[position]
    return f"arg{position}"


def _is_mappable(value: Any) -> bool:
    if isinstance(value, (unmapped, str, bytes, bytearray, Mapping)):
        return False
    return isinstance(value, Iterable)


def _unwrap(value: Any) -> Any:
    return value.value if isinstance(value, unmapped) else value


@overload
def task(__fn: Callable[P, R]) -> Task[P, R]: ...


@overload
def task(
    *,
    name: str | None = None,
    description: str | None = None,
    tags: Iterable[str] | None = None,
    version: str | None = None,
    retries: int = 0,
    retry_delay_seconds: RetryDelay = 0,
    retry_jitter_factor: float | None = None,
    retry_condition_fn: Callable[..., bool] | None = None,
    timeout_seconds: float | None = None,
    log_prints: bool | None = None,
    on_completion: Hook | Sequence[Hook] | None = None,
    on_failure: Hook | Sequence[Hook] | None = None,
    resources: Mapping[str, float] | None = None,
    cache_policy: CachePolicy | None = NOT_SET,
    cache_key_fn: Callable[..., str | None] | None = None,
    cache_expiration: datetime.timedelta | float | None = None,
    refresh_cache: bool | None = None,
    persist_result: bool | None = None,
    result_storage: Store | str | None = None,
    result_serializer: str | None = None,
    task_run_name: RunName | None = None,
    result_storage_key: str | None = None,
    cache_result_in_memory: bool = True,
    on_running: Hook | Sequence[Hook] | None = None,
) -> Callable[[Callable[P, R]], Task[P, R]]: ...


def task(__fn: Any = None, **options: Any) -> Any:
    """Turn a function into a :class:`Task`; works bare (``@task``) and called.

    Parameters
    ----------
    name : str, optional
        Defaults to the function's name; task runs are named ``<name>-<n>``.
    description, tags, version
        Kept in run records.
    retries : int
        How many times a failed, timed-out or crashed attempt is tried again.
    retry_delay_seconds : float, list of float or callable
        Delay before each retry; a list gives one per retry (the last repeats);
        :func:`exponential_backoff` builds one. Waited on the driver.
    retry_jitter_factor : float, optional
        Spread each delay over ``delay * [1 - f, 1 + f]``.
    retry_condition_fn : callable, optional
        ``fn(task, task_run, state) -> bool``; retry only when it returns True.
    timeout_seconds : float, optional
        An attempt running longer ends ``TimedOut`` (see ``daskflow.runners.execute``
        for what happens to its thread).
    log_prints : bool, optional
        Send ``print`` output to the run log; ``None`` inherits the flow's setting.
    on_completion, on_failure, on_running : callable or list of callables
        ``hook(task, task_run, state)``, called on the driver: ``on_completion``
        and ``on_failure`` once the task run is final (Failed or Crashed for
        ``on_failure``), ``on_running`` when an attempt starts. ``task_run`` is a
        read-only view (``id``, ``name``, ``parameters``, ``tags``, ``state``). A
        hook that raises is logged; it never changes the state. The task's
        ``on_completion``, ``on_failure`` and ``on_running`` also work as
        decorators that add a hook (``@my_task.on_failure``).
    resources : dict, optional
        Dask worker resources each attempt needs, e.g. ``{"GPU": 1}``.
    cache_policy : CachePolicy, optional
        What the cache key is made of; default ``INPUTS + TASK_SOURCE``, so a
        rerun with the same inputs and code loads the stored result instead of
        running. ``NONE`` (or ``None``, as in Prefect) turns caching off. ``version=`` is part of every key:
        bump it when a helper the task calls changes.
    cache_key_fn : callable, optional
        ``fn(context, parameters) -> str | None`` makes the key instead (Prefect's
        signature; :func:`task_input_hash` is one). ``None`` means "do not cache".
    cache_expiration : timedelta or float, optional
        How long a stored result may be reused (seconds if a number).
    refresh_cache : bool, optional
        Run even on a cache hit and overwrite the entry. ``None`` inherits the
        flow's setting, then config ``daskflow.cache.refresh``.
    persist_result : bool, optional
        Store the result (default True; ``None`` inherits the flow's setting).
        Without it the task is not cached either.
    result_storage : str or Store, optional
        Where results go: a folder, ``s3://bucket/prefix``, or a :class:`Store`.
        Default: the flow's, then config ``daskflow.storage.url``, then ``./.daskflow``.
    result_serializer : str, optional
        ``"pickle"`` (cloudpickle, the default), ``"json"`` or a name registered
        with :func:`daskflow.storage.register_serializer`.
    task_run_name : str or callable, optional
        The task runs' name: a template filled from the call's parameters
        (``"fit-{c}"``), or a callable returning a string (given ``parameters=``
        if it takes that argument). Default ``<name>-<n>``.
    result_storage_key : str, optional
        A template that decides the stored entry of the result, filled with
        ``parameters`` (``"{parameters[x]}-result"``), ``flow_run`` and
        ``task_run`` (their ``id``, ``name``, ...). It is also the cache key,
        in place of ``cache_policy`` and ``cache_key_fn``, as in Prefect: a later
        call whose key formats the same loads that entry, whatever its inputs
        or code. With ``cache_policy=NONE`` the task is not cached and the key
        is not used.
    cache_result_in_memory : bool
        Keep the value on the driver once fetched (default True). With False,
        each ``.result()`` fetches it again from the cluster or the store.

    Examples
    --------
    >>> from daskflow import task
    >>> @task(retries=2, retry_delay_seconds=[1, 10])
    ... def fit(c: float) -> float:
    ...     return c * 2
    >>> fit(3.0)  # outside a flow: one task run, in this thread
    6.0
    """
    if __fn is not None:
        if options:
            raise InvalidOptionError("use @task or @task(...), not @task(fn, ...)")
        return Task(__fn)
    return lambda fn: Task(fn, **options)


def _final_state(future: TaskFuture[Any]) -> Any:
    """Wait for ``future`` and give its state, as the body sees it: a state the
    body received is a failure it handled (``TaskFuture.state`` records that)."""
    future.wait()
    return future.state
