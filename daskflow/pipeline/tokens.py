"""Deterministic tokens of values and code, the same in every process.

``dask.base.tokenize`` hashes an object it has no rule for through its pickle.
For a class defined in the script being run (``__main__``) that pickle holds the
class itself, by value, and differs in every interpreter; for any class, a
``set`` of strings in its state pickles in salted-hash order. Either way every
rerun would miss its cache silently. :func:`normalise` turns a value into plain
data that dask hashes deterministically:

* a class stands for itself by identity: its module, named as daskflow names
  scripts (a ``__main__`` module by its file's name, so ``python job.py`` and
  ``import job`` agree), and its qualified name;
* an instance of an ordinary class is its class identity plus its state:
  dataclass fields, an Enum member's name and value, a pydantic model's
  ``model_dump(mode="python")``, otherwise what pickling would keep (its
  ``__getstate__`` or ``__dict__`` and ``__slots__``), recursively;
* a function is its identity plus its normalised source, and for a lambda or a
  nested function its defaults and closure values.

An object counts as what pickling keeps of it, the value a task in another
process receives: a custom ``__reduce__`` or ``__getstate__`` that leaves out a
lock or a connection is trusted, as pickle trusts it (so such an object hashes
by the rest), but one that answers differently at each call is refused.

What cannot be made stable raises :class:`Unhashable` (a ``TypeError``) naming
where inside the value the problem sits: a lock, an open file, a generator, a
closure over one of them, a state that differs at every call.

numpy, pandas and the other types dask has its own rules for are left to dask.
"""

from __future__ import annotations

import ast
import collections
import contextvars
import copyreg
import dataclasses
import enum
import functools
import hashlib
import inspect
import os
import sys
import textwrap
import types
import weakref
from collections.abc import Callable
from typing import Any

from dask.base import normalize_token, tokenize
from dask.tokenize import normalize_object

__all__ = ["Unhashable", "module_name", "normalise", "source_fingerprint"]

#: Values dask hashes as themselves (no recursion needed).
_SCALARS = frozenset({int, float, str, bytes, bool, type(None), complex, slice, type(Ellipsis)})


class Unhashable(TypeError):
    """A value (or a part of it, at :attr:`where`) has no deterministic token.

    Internal: :func:`daskflow.pipeline.cache.compute_key` turns it into a
    ``CacheKeyWarning`` or ``CacheKeyError`` naming the task and the input.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.parts: list[tuple[str, Any]] = []

    def inside(self, kind: str, label: Any) -> Unhashable:
        """Record that the problem sits under an attribute (``kind="."``), an item
        (``"[]"``) or a named part (``""``), added from the inside out."""
        self.parts.insert(0, (kind, label))
        return self

    @property
    def where(self) -> str:
        """The path to the problem, like ``value.lock`` or ``value['paths'][0]``."""
        return "".join(f".{label}" if kind == "." else f"[{label!r}]" if kind == "[]" else str(label) for kind, label in self.parts)

    def __str__(self) -> str:
        return f"{self.where}: {self.reason}" if self.parts else self.reason


# Ids of the containers and objects being normalised, outermost first: a value
# reached again inside itself (a parent pointer) becomes a back-reference.
_ON_PATH: contextvars.ContextVar[dict[int, int] | None] = contextvars.ContextVar("daskflow_normalise_path", default=None)
# Objects already normalised in this call, by id (with the object).
_MEMO: contextvars.ContextVar[dict[int, tuple[Any, Any]] | None] = contextvars.ContextVar("daskflow_normalise_memo", default=None)


def normalise(value: Any) -> Any:
    """``value`` as data that ``tokenize(..., ensure_deterministic=True)`` hashes
    the same in every process (see the module docstring).

    Plain data (numbers, strings, lists, tuples and dicts of them) comes back as
    it was, so the keys of plain inputs do not depend on this module's rules.

    Raises
    ------
    Unhashable
        If a part of ``value`` cannot be hashed deterministically.
    """
    if type(value) in _SCALARS:
        return value
    path = _ON_PATH.get()
    if path is not None:  # inside another normalise (a set's items, a fingerprint)
        return _norm(value, path)
    path: dict[int, int] = {}
    token, memo_token = _ON_PATH.set(path), _MEMO.set({})
    try:
        return _norm(value, path)
    finally:
        _ON_PATH.reset(token)
        _MEMO.reset(memo_token)


def _norm(value: Any, path: dict[int, int]) -> Any:
    cls = type(value)
    if cls in _SCALARS:
        return value
    key = id(value)
    if key in path:
        return ("daskflow-backref", path[key])
    path[key] = len(path)
    try:
        return _dispatch(value, cls, path)
    finally:
        del path[key]


def _child(value: Any, path: dict[int, int], kind: str, label: Any) -> Any:
    """``value`` (a part of another value) normalised; a failure says where it sits."""
    if type(value) in _SCALARS:
        return value
    try:
        return _norm(value, path)
    except Unhashable as exc:
        raise exc.inside(kind, label) from exc.__cause__


def _dispatch(value: Any, cls: type, path: dict[int, int]) -> Any:
    # Plain containers first, in the shapes earlier releases hashed (their keys stay valid).
    if cls is dict:
        if all(type(k) in _SCALARS or (type(k) is tuple and all(type(i) in _SCALARS for i in k)) for k in value):
            return {k: _child(v, path, "[]", k) for k, v in value.items()}
        return ("dict", _items(value, path))
    if cls is list or cls is tuple:
        return cls(_seq(value, path))
    if cls is set or cls is frozenset:
        # dask has no deterministic rule for frozenset (its pickle order follows the salted hash).
        return (cls.__name__, _set_tokens(value, path))
    if isinstance(value, type):
        return class_identity(value)
    if getattr(value, "__dask_tokenize__", None) is not None:
        return value  # the class's own rule, applied by dask
    if isinstance(value, enum.Enum):
        return ("enum", class_identity(cls), value._name_, _child(value._value_, path, ".", "value"))
    if _is_pydantic_model(value):
        try:
            dumped = value.model_dump(mode="python")
        except Exception as exc:
            raise Unhashable(f"{cls.__qualname__}.model_dump() raised {type(exc).__name__}: {exc}") from exc
        return ("pydantic", class_identity(cls), _child(dumped, path, "", ""))
    if dataclasses.is_dataclass(value):
        fields = tuple((f.name, _child(getattr(value, f.name, None), path, ".", f.name)) for f in dataclasses.fields(value))
        return ("dataclass", class_identity(cls), fields)
    if isinstance(value, (list, tuple, dict, set, frozenset)):
        # A subclass (a namedtuple, a defaultdict, ...): its class counts, and its attributes.
        if isinstance(value, dict):
            items: Any = _items(value, path, ordered=isinstance(value, collections.OrderedDict))
        elif isinstance(value, (set, frozenset)):
            items = _set_tokens(value, path)
        else:
            items = tuple(_seq(value, path))
        return ("container", class_identity(cls), items, _child(getattr(value, "__dict__", None) or None, path, "", ""))
    if isinstance(value, types.FunctionType):
        return _function(value, path)
    if isinstance(value, types.ModuleType):  # ``import uuid`` inside a function: a closure value
        main_file = getattr(value, "__file__", None) if value.__name__ == "__main__" else None
        return ("module", os.path.splitext(os.path.basename(main_file))[0] if main_file else value.__name__)
    if isinstance(value, types.MethodType):
        return ("method", _child(value.__self__, path, ".", "__self__"), _function(value.__func__, path))
    if isinstance(value, functools.partial):
        parts = (value.func, value.args, value.keywords)
        return ("partial",) + tuple(_child(p, path, ".", n) for p, n in zip(parts, ("func", "args", "keywords")))
    if cls is memoryview:
        return ("memoryview", value.format, value.shape, value.tobytes())
    if cls is object or normalize_token.dispatch(cls) is not normalize_object:
        return value  # numpy, pandas, datetimes, paths, ...: dask's rules (and its refusal of a bare object())
    return _object(value, cls, path)


def _seq(values: Any, path: dict[int, int]) -> list[Any]:
    return [v if type(v) in _SCALARS else _child(v, path, "[]", i) for i, v in enumerate(values)]


def _set_tokens(values: Any, path: dict[int, int]) -> tuple[str, ...]:
    return tuple(sorted(tokenize(_child(v, path, "", "{...}"), ensure_deterministic=True) for v in values))


def _items(mapping: Any, path: dict[int, int], ordered: bool = False) -> tuple[Any, ...]:
    """A mapping's pairs, keys normalised too, sorted by the key's token unless
    their order counts (an ``OrderedDict``)."""
    pairs = []
    for k, v in mapping.items():
        nk = _child(k, path, "", "[<key>]")
        pairs.append((tokenize(nk, ensure_deterministic=True), nk, _child(v, path, "[]", k)))
    if not ordered:
        pairs.sort(key=lambda p: p[0])
    return tuple((nk, nv) for _, nk, nv in pairs)


def _is_pydantic_model(value: Any) -> bool:
    pydantic = sys.modules.get("pydantic")  # never imported here: a model exists only if it was
    return pydantic is not None and isinstance(value, pydantic.BaseModel)


# ---------------------------------------------------------------- objects
def _object(value: Any, cls: type, path: dict[int, int]) -> Any:
    """An instance of a class dask has no rule for: its class identity and what pickling keeps."""
    memo = _MEMO.get()
    known = memo.get(id(value)) if memo is not None else None
    if known is not None and known[0] is value:
        return known[1]
    out = _reduced(value, cls, path)
    if _python_hooks(cls):
        # A hook written in Python may answer differently at each call (a clock, a
        # counter): such a value would give a new key every run, a silent miss.
        # (Objects inside were memoised by the first pass: nesting costs no more.)
        if tokenize(out, ensure_deterministic=True) != tokenize(_reduced(value, cls, path), ensure_deterministic=True):
            raise Unhashable(f"{cls.__qualname__}'s {' and '.join(sorted(_python_hooks(cls)))} gives a different state at each call")
    if memo is not None:
        memo[id(value)] = (value, out)  # the object is kept, so its id cannot be reused meanwhile
    return out


def _reduced(value: Any, cls: type, path: dict[int, int]) -> Any:
    try:
        # As pickle does: a reducer registered with copyreg (re.Pattern's), else the
        # object's own; refuses what pickle refuses (locks, open files, sockets,
        # generators) with pickle's message, and calls a custom __reduce__ or __getstate__.
        registered = copyreg.dispatch_table.get(cls)
        reduced = registered(value) if registered is not None else value.__reduce_ex__(4)
    except Exception as exc:
        raise Unhashable(f"{type(exc).__name__}: {exc}") from exc
    if isinstance(reduced, str):  # a module-level singleton, pickled by name
        return ("global", class_identity(cls), reduced)
    func, args, state, listitems, dictitems = (tuple(reduced) + (None,) * 5)[:5]
    if type(state) in (tuple, dict) and not state:
        state = None  # nothing to restore, however a reducer spells it
    custom_reduce = "__reduce__" in _python_hooks(cls)
    if func in (copyreg.__newobj__, copyreg.__newobj_ex__) and not custom_reduce:
        # The default: the class and its state (a custom __getstate__'s, or __dict__ and slots).
        out: tuple[Any, ...] = ("object", class_identity(cls), _child(args[1:], path, "", ""))
    else:
        out = ("reduce", _callable_identity(func), _child(args, path, "", ""))
    out += (_state(state, path),)
    if listitems is not None:
        out += (tuple(_seq(list(listitems), path)),)
    if dictitems is not None:
        out += (_items(dict(dictitems), path),)
    return out


def _state(state: Any, path: dict[int, int]) -> Any:
    """A pickle state: ``__dict__``, ``(__dict__, slots)`` or a custom ``__getstate__``'s value."""
    if type(state) is dict:
        return tuple(sorted((str(k), _child(v, path, ".", k)) for k, v in state.items()))
    if type(state) is tuple and len(state) == 2 and all(s is None or type(s) is dict for s in state):
        return tuple(_state(s, path) for s in state)
    return _child(state, path, "", "<state>")


_HOOKS = (("__reduce__", "__reduce__"), ("__reduce_ex__", "__reduce__"), ("__getstate__", "__getstate__"))
_HOOKS_OF: weakref.WeakKeyDictionary[type, frozenset[str]] = weakref.WeakKeyDictionary()


def _python_hooks(cls: type) -> frozenset[str]:
    """Which of the pickling hooks the class (or a base) defines in Python:
    ``__reduce__`` (or ``__reduce_ex__``) and ``__getstate__``."""
    found = _HOOKS_OF.get(cls)
    if found is None:
        found = frozenset(label for name, label in _HOOKS if isinstance(_defined(cls, name), types.FunctionType))
        _HOOKS_OF[cls] = found
    return found


def _defined(cls: type, name: str) -> Any:
    for base in cls.__mro__:
        if name in vars(base):
            return vars(base)[name]
    return None


def _callable_identity(func: Any) -> Any:
    """A reconstructor named by where it lives (its code is not the object's data)."""
    if isinstance(func, type):
        return class_identity(func)
    name = getattr(func, "__qualname__", None) or getattr(func, "__name__", None)
    if name is not None:
        return ("callable", module_name(func), name)
    return normalise(func)


def class_identity(cls: type) -> tuple[str, str | None, str]:
    """A class as ``("class", module, qualified name)``, a script's module named after its file."""
    return ("class", module_name(cls), getattr(cls, "__qualname__", cls.__name__))


def module_name(obj: Any) -> str | None:
    """The module of a function or class, with a script run as ``__main__`` named
    after its file, so ``python job.py`` and a tool importing ``job`` agree on keys."""
    module = getattr(obj, "__module__", None)
    if module != "__main__":
        return module
    try:
        known = _MAIN_NAMES.get(obj)
    except TypeError:  # not weak-referenceable
        known = None
    if known is not None:
        return known
    try:
        source = inspect.getsourcefile(obj)
    except (TypeError, OSError):
        source = None
    if source is None:  # a class of ``python -c`` or a REPL: no file, keep ``__main__``
        return module
    name = os.path.splitext(os.path.basename(source))[0]
    try:
        _MAIN_NAMES[obj] = name
    except TypeError:
        pass
    return name


_MAIN_NAMES: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()


# --------------------------------------------------------------- functions
def _function(fn: types.FunctionType, path: dict[int, int]) -> Any:
    identity = ("function", module_name(fn), fn.__qualname__, _basis_digest(fn))
    if _importable(fn):
        return identity  # a module-level function: its defaults are in its source
    closure = tuple(_cell(cell) for cell in (fn.__closure__ or ()))
    return identity + (
        _child(fn.__defaults__, path, ".", "__defaults__"),
        _child(fn.__kwdefaults__, path, ".", "__kwdefaults__"),
        tuple(_child(c, path, "", f".<closure {name}>") for name, c in zip(fn.__code__.co_freevars, closure)),
    )


def _cell(cell: types.CellType) -> Any:
    try:
        return cell.cell_contents
    except ValueError:  # an empty cell (a name not bound yet)
        return ("daskflow-empty-cell",)


def _importable(fn: types.FunctionType) -> bool:
    module = sys.modules.get(fn.__module__ or "")
    target: Any = module
    for part in fn.__qualname__.split("."):
        target = getattr(target, part, None)
    return target is fn


_BASES: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()


def _basis_digest(fn: Any) -> str:
    cached = _BASES.get(fn)
    if cached is None:
        cached = hashlib.sha256(repr(_source_basis(fn)).encode()).hexdigest()[:24]
        _BASES[fn] = cached
    return cached


# ------------------------------------------------------- source fingerprint
_FINGERPRINTS: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()


def source_fingerprint(fn: Callable[..., Any]) -> str:
    """A hash of what ``fn`` does: its normalised source (comments, formatting,
    docstring and decorators ignored), its defaults and closure values.

    Falls back to the bytecode when there is no source (a REPL, ``exec``), which
    is specific to the Python version.

    Raises
    ------
    TypeError
        If a default or closure value cannot be hashed deterministically.
    """
    fn = inspect.unwrap(fn)
    try:
        cached = _FINGERPRINTS.get(fn)
    except TypeError:  # not weak-referenceable
        cached = None
    if cached is not None:
        return cached
    code = getattr(fn, "__code__", None)
    if code is None:  # a callable object: its class and state stand for it
        basis: Any = ("object", tokenize(normalise(fn), ensure_deterministic=True))
    else:
        basis = _source_basis(fn)
    closure = tuple(_cell(cell) for cell in (getattr(fn, "__closure__", None) or ()))
    digest = hashlib.sha256(repr((module_name(fn), getattr(fn, "__qualname__", None), basis)).encode()).hexdigest()[:24]
    extra = tokenize(
        normalise(getattr(fn, "__defaults__", None)),
        normalise(getattr(fn, "__kwdefaults__", None)),
        normalise(closure),
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
