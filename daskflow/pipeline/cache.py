"""Cache keys: which stored result a task run may reuse instead of running.

A key is a hash of the key-scheme version, the task's identity (module,
qualified name, ``version``) and the parts its cache policy names: its inputs,
its normalised source, the flow run id, ... An input that is the future of
another task contributes that task's key, not its value (a Merkle chain), so the
driver knows every key before anything runs, and a fully cached flow resolves
without loading intermediate results.

Values are hashed with ``dask.base.tokenize`` in deterministic mode, after
:func:`~daskflow.pipeline.tokens.normalise` has made them the same in every
process (instances of classes as their class identity plus their state, so a
dataclass defined in the script being run hashes alike in every rerun). An
input that cannot be hashed deterministically never gets a random key: the task
runs uncached with a :class:`~daskflow.exceptions.CacheKeyWarning` naming the
argument and the part of it at fault, or, when the task asked for caching
explicitly, raises :class:`~daskflow.exceptions.CacheKeyError`.

Caveats a user should know (documented in the README too):

* The source fingerprint covers the task function itself, not helper functions
  it calls. Bump ``@task(version=...)`` when a helper changes.
* An object hashes by what pickling keeps of it (its ``__getstate__``, or its
  ``__dict__`` and slots). A field holding something new in every process (an
  id made at start-up, a timestamp) makes every run a new input: leave it out
  with ``INPUTS - "name"``, or give the class ``__dask_tokenize__``.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime
import hashlib
import sys
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dask.base import tokenize

from ..exceptions import CacheKeyError, CacheKeyWarning, InvalidOptionError
from .tokens import Unhashable, module_name, source_fingerprint
from .tokens import normalise as _normalise

if TYPE_CHECKING:
    from .runs import FlowRun, TaskRun
    from .task import Task

__all__ = [
    "DEFAULT",
    "FLOW_PARAMETERS",
    "INPUTS",
    "NONE",
    "NOT_SET",
    "NO_CACHE",
    "RUN_ID",
    "SCHEME_VERSION",
    "TASK_SOURCE",
    "CacheKeyContext",
    "CacheKeyFnPolicy",
    "CachePolicy",
    "PREFECT_DEFAULT",
    "StorageKeyPolicy",
    "UpstreamKey",
    "default_policy",
    "source_fingerprint",
    "task_input_hash",
]

#: Bumped when the way keys are computed changes: old entries then simply miss.
SCHEME_VERSION = 1


class UpstreamKey:
    """Stands for a future in the inputs being hashed: it hashes as its task's key."""

    __slots__ = ("key", "name")

    def __init__(self, key: str | None, name: str) -> None:
        self.key = key
        self.name = name

    def __dask_tokenize__(self) -> Any:
        if self.key is None:
            raise _NoUpstreamKey(self.name)
        return ("daskflow-upstream", self.key)

    def __repr__(self) -> str:
        return f"UpstreamKey({self.name!r}, {self.key!r})"


class _NoUpstreamKey(Exception):
    """An upstream task run has no cache key: its dependents cannot have one either."""


@dataclass(frozen=True)
class CacheKeyContext:
    """What a ``cache_key_fn`` receives as its first argument (Prefect passes its
    task run context; the attributes users read are here)."""

    task: Task[Any, Any]
    task_run: TaskRun
    flow_run: FlowRun
    parameters: dict[str, Any]


class CachePolicy:
    """How a task's cache key is made. Combine policies with ``+``; drop an
    input from ``INPUTS`` with ``-``: ``INPUTS - "verbose" + TASK_SOURCE``."""

    def parts(self, context: CacheKeyContext, inputs: dict[str, Any]) -> list[Any] | None:
        """What this policy puts into the key; ``None`` means "do not cache"."""
        raise NotImplementedError

    def __add__(self, other: CachePolicy) -> CachePolicy:
        if not isinstance(other, CachePolicy):
            return NotImplemented
        return _Compound(_flatten(self) + _flatten(other))

    def __sub__(self, name: str) -> CachePolicy:
        if not isinstance(name, str):
            return NotImplemented
        return _Compound(tuple(p - name if isinstance(p, _Inputs) else p for p in _flatten(self)))


def _flatten(policy: CachePolicy) -> tuple[CachePolicy, ...]:
    return policy.policies if isinstance(policy, _Compound) else (policy,)


@dataclass(frozen=True)
class _Inputs(CachePolicy):
    exclude: frozenset[str] = frozenset()

    def parts(self, context: CacheKeyContext, inputs: dict[str, Any]) -> list[Any]:
        tokens = {}
        for name, value in inputs.items():
            if name not in self.exclude:
                try:
                    tokens[name] = _input_token(value)
                except Unhashable as exc:
                    raise exc.inside("", name) from exc.__cause__
        return [("inputs", tokens)]

    def __sub__(self, name: str) -> CachePolicy:
        if not isinstance(name, str):
            return NotImplemented
        return _Inputs(self.exclude | {name})

    def __repr__(self) -> str:
        return "INPUTS" + "".join(f" - {n!r}" for n in sorted(self.exclude))


@dataclass(frozen=True)
class _TaskSource(CachePolicy):
    def parts(self, context: CacheKeyContext, inputs: dict[str, Any]) -> list[Any]:
        return [("source", source_fingerprint(context.task.fn))]

    def __repr__(self) -> str:
        return "TASK_SOURCE"


@dataclass(frozen=True)
class _RunId(CachePolicy):
    def parts(self, context: CacheKeyContext, inputs: dict[str, Any]) -> list[Any]:
        return [("run", context.flow_run.id)]

    def __repr__(self) -> str:
        return "RUN_ID"


@dataclass(frozen=True)
class _FlowParameters(CachePolicy):
    def parts(self, context: CacheKeyContext, inputs: dict[str, Any]) -> list[Any]:
        return [("flow-parameters", context.flow_run.parameters)]

    def __repr__(self) -> str:
        return "FLOW_PARAMETERS"


@dataclass(frozen=True)
class _NoCache(CachePolicy):
    def parts(self, context: CacheKeyContext, inputs: dict[str, Any]) -> None:
        return None

    def __add__(self, other: CachePolicy) -> CachePolicy:
        return self  # nothing added to "no cache" makes it cache

    def __radd__(self, other: CachePolicy) -> CachePolicy:
        return self

    def __repr__(self) -> str:
        return "NONE"


@dataclass(frozen=True)
class _Compound(CachePolicy):
    policies: tuple[CachePolicy, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        # One INPUTS at most (excludes merged), other parts once each, in order.
        inputs = [p for p in self.policies if isinstance(p, _Inputs)]
        merged: list[CachePolicy] = []
        for p in self.policies:
            if isinstance(p, _Inputs):
                if not any(isinstance(m, _Inputs) for m in merged):
                    merged.append(_Inputs(frozenset().union(*(i.exclude for i in inputs))))
            elif p not in merged:
                merged.append(p)
        object.__setattr__(self, "policies", tuple(merged))

    def parts(self, context: CacheKeyContext, inputs: dict[str, Any]) -> list[Any] | None:
        out: list[Any] = []
        for policy in self.policies:
            part = policy.parts(context, inputs)
            if part is None:
                return None
            out.extend(part)
        return out

    def __repr__(self) -> str:
        return " + ".join(repr(p) for p in self.policies)


@dataclass(frozen=True, init=False)
class CacheKeyFnPolicy(CachePolicy):
    """Wraps ``cache_key_fn(context, parameters) -> str | None`` (Prefect's signature)
    as a policy, combinable with ``+``: ``CacheKeyFnPolicy(cache_key_fn=by_day) + INPUTS``.

    Parameters
    ----------
    cache_key_fn : callable
        Returns the key part as a string, or ``None`` to skip the cache.
    """

    fn: Callable[[CacheKeyContext, dict[str, Any]], str | None]

    def __init__(self, cache_key_fn: Callable[[CacheKeyContext, dict[str, Any]], str | None] | None = None, **kwargs: Any) -> None:
        fn = kwargs.pop("fn", None) if cache_key_fn is None else cache_key_fn
        if kwargs:
            raise TypeError(f"CacheKeyFnPolicy takes cache_key_fn, got {', '.join(kwargs)}")
        if not callable(fn):
            raise InvalidOptionError(f"CacheKeyFnPolicy takes a function cache_key_fn(context, parameters) -> str | None, got {fn!r}")
        object.__setattr__(self, "fn", fn)

    @property
    def cache_key_fn(self) -> Callable[[CacheKeyContext, dict[str, Any]], str | None]:
        """The wrapped function (Prefect's attribute name)."""
        return self.fn

    def parts(self, context: CacheKeyContext, inputs: dict[str, Any]) -> list[Any] | None:
        value = self.fn(context, inputs)
        if value is None:
            return None
        if not isinstance(value, str):
            raise CacheKeyError(
                f"cache_key_fn {getattr(self.fn, '__name__', self.fn)!r} of task {context.task.name!r} "
                f"returned {type(value).__name__} {value!r}; return a string (or None to skip the cache)"
            )
        return [("cache_key_fn", value)]

    def __repr__(self) -> str:
        return f"cache_key_fn={getattr(self.fn, '__qualname__', self.fn)}"


#: Hash the task's inputs (futures count as their task's key).
INPUTS: CachePolicy = _Inputs()
#: Hash the task function's normalised source (not comments, docstring or decorators).
TASK_SOURCE: CachePolicy = _TaskSource()
#: Hash the flow run id: reuse only within one run (and its retries).
RUN_ID: CachePolicy = _RunId()
#: Hash the flow run's parameters.
FLOW_PARAMETERS: CachePolicy = _FlowParameters()
#: Never cache (results are still persisted, under a key of their own run).
NONE: CachePolicy = _NoCache()
#: Prefect 3's name for :data:`NONE`.
NO_CACHE = NONE
#: What a task uses unless told otherwise: results are reused across runs.
DEFAULT: CachePolicy = INPUTS + TASK_SOURCE
#: Prefect 3's default: reuse only within one flow run (config ``daskflow.cache.default-policy: prefect``).
PREFECT_DEFAULT: CachePolicy = INPUTS + TASK_SOURCE + RUN_ID


def default_policy(persist_asked: bool = False) -> CachePolicy | None:
    """The policy of a task with no ``cache_policy``, ``cache_key_fn`` or
    ``result_storage_key``, as config ``daskflow.cache.default-policy`` says.

    - ``daskflow`` (the default): :data:`DEFAULT`, results reused across runs.
    - ``prefect``: Prefect 3's rule. Prefect caches only results it persists,
      and by default persists only what a task (or its flow) asks to persist,
      so a task that asked (``persist_result=True``, ``result_storage=`` or
      ``result_serializer=``; ``persist_asked``) gets :data:`PREFECT_DEFAULT`
      (reuse within one flow run) and any other gets no cache at all. Its
      results are still stored under a key of their run, as with :data:`NONE`.

    Raises
    ------
    InvalidOptionError
        If the setting is another value.
    """
    import dask.config

    value = dask.config.get("daskflow.cache.default-policy", "daskflow")
    choice = value.lower() if isinstance(value, str) else None
    if choice == "daskflow":
        return DEFAULT
    if choice == "prefect":
        return PREFECT_DEFAULT if persist_asked else None
    raise InvalidOptionError(
        f"daskflow.cache.default-policy is {value!r}; use 'daskflow' (INPUTS + TASK_SOURCE: reuse across runs) "
        "or 'prefect' (Prefect 3's: INPUTS + TASK_SOURCE + RUN_ID for tasks that persist their result, no cache for the others), e.g. "
        "dask.config.set({'daskflow.cache.default-policy': 'prefect'}) or DASK_DASKFLOW__CACHE__DEFAULT_POLICY=prefect"
    )


@dataclass(frozen=True)
class StorageKeyPolicy(CachePolicy):
    """A task's ``result_storage_key``: the formatted template alone decides the
    stored entry (and so the cache key), as in Prefect, where the result is
    written at that key: two calls, or two tasks, whose keys format the same
    share one entry. Fields: ``parameters`` (the call's arguments; a future
    formats as its task run's name), ``flow_run`` and ``task_run`` (``id``,
    ``name``, ``flow_name``, ``tags``, ...)."""

    template: str

    def parts(self, context: CacheKeyContext, inputs: dict[str, Any]) -> list[Any]:
        return [("storage-key", self.format(context, inputs))]

    def format(self, context: CacheKeyContext, inputs: dict[str, Any]) -> str:
        from .hooks import RunView

        parameters = {k: v.name if isinstance(v, UpstreamKey) else v for k, v in inputs.items()}
        fields = {"flow_run": RunView(context.flow_run), "task_run": RunView(context.task_run, parameters)}
        try:
            return self.template.format(parameters=parameters, **fields)
        except (KeyError, IndexError, AttributeError) as exc:
            raise InvalidOptionError(
                f"task {context.task.name!r}: result_storage_key {self.template!r} names {exc.args[0] if exc.args else exc!r}, "
                f"which this call does not have; fields: parameters[...] (parameters: {sorted(parameters)}), flow_run, task_run"
            ) from None

    def __repr__(self) -> str:
        return f"StorageKeyPolicy({self.template!r})"


def task_input_hash(context: CacheKeyContext, arguments: dict[str, Any]) -> str | None:
    """A ``cache_key_fn`` hashing the task's source and its inputs, as in Prefect 2.

    Futures among the arguments hash as their task's key.

    Examples
    --------
    >>> from datetime import timedelta
    >>> @task(cache_key_fn=task_input_hash, cache_expiration=timedelta(days=1))
    ... def load(url: str) -> bytes: ...
    """
    try:
        return tokenize(source_fingerprint(context.task.fn), _normalise(arguments), ensure_deterministic=True)
    except _NoUpstreamKey:
        return None


class _NotSet:
    """The default of ``cache_policy=``: the task did not choose (the configured default applies)."""

    def __repr__(self) -> str:
        return "NotSet"

    def __reduce__(self) -> str:
        return "NOT_SET"


#: ``cache_policy=`` left out; an explicit ``None`` is :data:`NONE`, as in Prefect.
NOT_SET: Any = _NotSet()


def check_cache_policy(owner: str, value: Any) -> CachePolicy | None:
    """A task's ``cache_policy=`` as stored: None when left out (the default policy
    applies), :data:`NONE` for ``None`` (Prefect 3 reads ``cache_policy=None`` as
    "no caching", and caching a result the user asked not to cache would be wrong)."""
    if value is NOT_SET:
        return None
    if value is None:
        return NONE
    if isinstance(value, CachePolicy):
        return value
    raise InvalidOptionError(
        f"{owner}: cache_policy must be a cache policy such as INPUTS + TASK_SOURCE or NONE "
        f"(from daskflow import INPUTS, TASK_SOURCE, NONE), got {value!r}"
    )


def check_expiration(owner: str, value: Any) -> float | None:
    """``cache_expiration`` as seconds (a ``timedelta`` or a number)."""
    if value is None:
        return None
    if isinstance(value, datetime.timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        raise InvalidOptionError(f"{owner}: cache_expiration must be a timedelta or seconds, got {value!r}")
    if seconds <= 0:
        raise InvalidOptionError(f"{owner}: cache_expiration must be positive, got {value!r}")
    return seconds


def compute_key(
    policy: CachePolicy,
    context: CacheKeyContext,
    inputs: dict[str, Any],
    *,
    explicit: bool,
    on_uncached: Callable[[str], None] | None = None,
) -> str | None:
    """The cache key of one task run, or ``None`` if it is not cached.

    ``inputs`` maps argument names to values, with upstream futures replaced by
    :class:`UpstreamKey`. With ``explicit`` (the task asked for caching) an input
    that cannot be hashed deterministically raises; otherwise it warns, tells
    ``on_uncached`` (the run's record keeps the warning) and the task runs uncached.

    Raises
    ------
    CacheKeyError
        Explicit caching and an input that cannot be hashed deterministically.
    """
    task = context.task
    if isinstance(policy, StorageKeyPolicy):
        # The formatted key alone decides the entry: not the task's identity or version.
        return "s" + hashlib.sha256(policy.format(context, inputs).encode()).hexdigest()[:39]
    try:
        parts = policy.parts(context, inputs)
        if parts is None:
            return None
        identity = (module_name(task.fn), getattr(task.fn, "__qualname__", task.name), task.version)
        return tokenize(("daskflow-cache", SCHEME_VERSION), identity, _normalise(parts), ensure_deterministic=True)
    except _NoUpstreamKey:
        return None  # an upstream is uncached: so is this run, quietly (nothing to fix)
    except CacheKeyError:
        raise
    except Exception as exc:
        named = exc.parts[0][1] if isinstance(exc, Unhashable) and exc.parts else None
        culprit = named if isinstance(named, str) and named in inputs else _culprit(inputs)
        what = f"input {culprit!r}" if culprit else "its source or a cache policy part"
        detail = str(exc) if isinstance(exc, Unhashable) else f"{type(exc).__name__}: {exc}"  # Unhashable says where
        message = (
            f"task {task.name!r}: {what} cannot be hashed deterministically for the cache key "
            f"({detail}). Pass cache_key_fn=..., leave the argument out with "
            f"cache_policy=INPUTS - {culprit or 'name'!r} + TASK_SOURCE, give its class __dask_tokenize__, "
            "or set cache_policy=NONE"
        )
        if explicit:
            raise CacheKeyError(message) from exc
        warnings.warn(message + "; it runs uncached", CacheKeyWarning, stacklevel=_caller_level())
        if on_uncached is not None:
            on_uncached(message + "; it runs uncached")
        return None


def _caller_level() -> int:
    """The ``stacklevel`` of the first frame outside daskflow (the user's call)."""
    package = __name__.split(".")[0] + "."
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_globals.get("__name__", "").startswith(package):
        frame, level = frame.f_back, level + 1
    return level


#: Tokens of argument objects already hashed in this batch of submissions, by id
#: (with the object, so a reused id cannot match): ``t.map(xs, unmapped(big_array))``
#: hashes the array once, not once per task.
_TOKEN_MEMO: contextvars.ContextVar[dict[int, tuple[Any, str]] | None] = contextvars.ContextVar("daskflow_token_memo", default=None)

_SCALARS = (int, float, str, bytes, bool, type(None))


@contextlib.contextmanager
def token_memo() -> Iterator[None]:
    """Within this block, each argument object is hashed once."""
    token = _TOKEN_MEMO.set({})
    try:
        yield
    finally:
        _TOKEN_MEMO.reset(token)


def _input_token(value: Any) -> str:
    memo = _TOKEN_MEMO.get()
    if memo is None or isinstance(value, _SCALARS):
        return tokenize(_normalise(value), ensure_deterministic=True)
    known = memo.get(id(value))
    if known is not None and known[0] is value:
        return known[1]
    token = tokenize(_normalise(value), ensure_deterministic=True)
    memo[id(value)] = (value, token)
    return token


def _culprit(inputs: dict[str, Any]) -> str | None:
    for name, value in inputs.items():
        try:
            tokenize(_normalise(value), ensure_deterministic=True)
        except _NoUpstreamKey:
            continue
        except Exception:
            return name
    return None
