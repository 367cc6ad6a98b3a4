"""Cache keys: which stored result a task run may reuse instead of running.

A key is a hash of the key-scheme version, the task's identity (module,
qualified name, ``version``) and the parts its cache policy names: its inputs,
its normalised source, the flow run id, ... An input that is the future of
another task contributes that task's key, not its value (a Merkle chain), so the
driver knows every key before anything runs, and a fully cached flow resolves
without loading intermediate results.

Values are hashed with ``dask.base.tokenize`` in deterministic mode. An input
that cannot be hashed deterministically never gets a random key: the task runs
uncached with a :class:`~daskflow.exceptions.CacheKeyWarning` naming the
argument, or, when the task asked for caching explicitly, raises
:class:`~daskflow.exceptions.CacheKeyError`.

Caveats a user should know (documented in the README too):

* The source fingerprint covers the task function itself, not helper functions
  it calls. Bump ``@task(version=...)`` when a helper changes.
* Tokens are stable across processes for plain data, numpy and pandas, but an
  object whose pickle holds a ``set`` of strings hashes differently in each
  interpreter (string hashing is salted): give such classes ``__dask_tokenize__``.
"""

from __future__ import annotations

import ast
import contextlib
import contextvars
import datetime
import hashlib
import inspect
import os
import sys
import textwrap
import types
import warnings
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dask.base import tokenize

from ..exceptions import CacheKeyError, CacheKeyWarning, InvalidOptionError

if TYPE_CHECKING:
    from .runs import FlowRun, TaskRun
    from .task import Task

__all__ = [
    "DEFAULT",
    "FLOW_PARAMETERS",
    "INPUTS",
    "NONE",
    "NO_CACHE",
    "RUN_ID",
    "SCHEME_VERSION",
    "TASK_SOURCE",
    "CacheKeyContext",
    "CachePolicy",
    "UpstreamKey",
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
        return [("inputs", {k: _input_token(v) for k, v in inputs.items() if k not in self.exclude})]

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


@dataclass(frozen=True)
class CacheKeyFnPolicy(CachePolicy):
    """Wraps ``cache_key_fn(context, parameters) -> str | None`` (Prefect's signature)."""

    fn: Callable[[CacheKeyContext, dict[str, Any]], str | None]

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
#: What a task uses unless told otherwise.
DEFAULT: CachePolicy = INPUTS + TASK_SOURCE


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


def check_cache_policy(owner: str, value: Any) -> CachePolicy | None:
    if value is None or isinstance(value, CachePolicy):
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
) -> str | None:
    """The cache key of one task run, or ``None`` if it is not cached.

    ``inputs`` maps argument names to values, with upstream futures replaced by
    :class:`UpstreamKey`. With ``explicit`` (the task asked for caching) an input
    that cannot be hashed deterministically raises; otherwise it warns and the
    task runs uncached.

    Raises
    ------
    CacheKeyError
        Explicit caching and an input that cannot be hashed deterministically.
    """
    task = context.task
    try:
        parts = policy.parts(context, inputs)
        if parts is None:
            return None
        identity = (_module_name(task.fn), getattr(task.fn, "__qualname__", task.name), task.version)
        return tokenize(("daskflow-cache", SCHEME_VERSION), identity, _normalise(parts), ensure_deterministic=True)
    except _NoUpstreamKey:
        return None  # an upstream is uncached: so is this run, quietly (nothing to fix)
    except CacheKeyError:
        raise
    except Exception as exc:
        culprit = _culprit(inputs)
        what = f"input {culprit!r}" if culprit else "its source or a cache policy part"
        message = (
            f"task {task.name!r}: {what} cannot be hashed deterministically for the cache key "
            f"({type(exc).__name__}: {exc}). Pass cache_key_fn=..., leave the argument out with "
            f"cache_policy=INPUTS - {culprit or 'name'!r} + TASK_SOURCE, give its class __dask_tokenize__, "
            "or set cache_policy=NONE"
        )
        if explicit:
            raise CacheKeyError(message) from exc
        warnings.warn(message + "; it runs uncached", CacheKeyWarning, stacklevel=_caller_level())
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


def _module_name(fn: Any) -> str | None:
    """The task's module, with a script run as ``__main__`` named after its file,
    so ``python job.py`` and a tool importing ``job`` agree on keys."""
    module = getattr(fn, "__module__", None)
    if module != "__main__":
        return module
    try:
        path = inspect.getsourcefile(fn)
    except TypeError:
        path = None
    return os.path.splitext(os.path.basename(path))[0] if path else module


def _culprit(inputs: dict[str, Any]) -> str | None:
    for name, value in inputs.items():
        try:
            tokenize(_normalise(value), ensure_deterministic=True)
        except _NoUpstreamKey:
            continue
        except Exception:
            return name
    return None


def _normalise(value: Any) -> Any:
    """Make containers hash the same in every process: ``frozenset`` has no
    deterministic tokenizer in dask (its pickle order follows the salted string
    hash), so it becomes a sorted tuple of item tokens."""
    if isinstance(value, frozenset):
        return ("frozenset", tuple(sorted(tokenize(_normalise(v), ensure_deterministic=True) for v in value)))
    if isinstance(value, set):
        return ("set", tuple(sorted(tokenize(_normalise(v), ensure_deterministic=True) for v in value)))
    if type(value) is dict:
        return {k: _normalise(v) for k, v in value.items()}
    if type(value) in (list, tuple):
        return type(value)(_normalise(v) for v in value)
    return value


# ------------------------------------------------------------- source fingerprint
_FINGERPRINTS: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()


def source_fingerprint(fn: Callable[..., Any]) -> str:
    """A hash of what ``fn`` does: its normalised source (comments, formatting,
    docstring and decorators ignored), its defaults and closure values.

    Falls back to the bytecode when there is no source (a REPL, ``exec``), which
    is specific to the Python version.

    Raises
    ------
    TypeError
        From tokenize, if a default or closure value cannot be hashed deterministically.
    """
    fn = inspect.unwrap(fn)
    try:
        cached = _FINGERPRINTS.get(fn)
    except TypeError:  # not weak-referenceable
        cached = None
    if cached is not None:
        return cached
    code = getattr(fn, "__code__", None)
    if code is None:  # a callable object: its class's source stands for it
        basis: Any = ("object", tokenize(fn, ensure_deterministic=True))
    else:
        basis = _source_basis(fn)
    closure = tuple(cell.cell_contents for cell in (getattr(fn, "__closure__", None) or ()))
    digest = hashlib.sha256(repr((_module_name(fn), getattr(fn, "__qualname__", None), basis)).encode()).hexdigest()[:24]
    extra = tokenize(
        _normalise(getattr(fn, "__defaults__", None)),
        _normalise(getattr(fn, "__kwdefaults__", None)),
        _normalise(closure),
        ensure_deterministic=True,
    )
    fingerprint = f"{digest}-{extra}"
    try:
        _FINGERPRINTS[fn] = fingerprint
    except TypeError:
        pass
    return fingerprint


def _source_basis(fn: Any) -> Any:
    try:
        source = textwrap.dedent(inspect.getsource(fn))
        node = ast.parse(source).body[0]
    except (OSError, TypeError, SyntaxError, IndentationError, IndexError):
        return ("code", sys.version_info[:2], _code_fingerprint(fn.__code__))
    if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        # A lambda: getsource gives its whole line, which may hold others.
        return ("code", sys.version_info[:2], _code_fingerprint(fn.__code__))
    node.decorator_list = []  # @task(retries=3) edits must not bust the cache
    body = node.body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
        node.body = body[1:] or [ast.Pass()]  # a docstring edit changes nothing
    return ("ast", ast.dump(node, include_attributes=False))


def _code_fingerprint(code: types.CodeType) -> Any:
    consts = tuple(_code_fingerprint(c) if isinstance(c, types.CodeType) else repr(c) for c in code.co_consts)
    return (code.co_code.hex(), consts, code.co_names, code.co_varnames)

