"""Walk the containers a task's arguments may nest futures in."""

from __future__ import annotations

from typing import Any, Callable

__all__ = ["find_instances", "replace_instances"]

_CONTAINERS = (list, tuple, dict, set, frozenset)


def find_instances(obj: Any, types: type | tuple[type, ...]) -> list[Any]:
    """Return every object of ``types`` found in ``obj`` and the lists, tuples,
    dicts and sets it nests, depth first, in order of appearance."""
    found: list[Any] = []
    _find(obj, types, found)
    return found


def _find(obj: Any, types: type | tuple[type, ...], found: list[Any]) -> None:
    if isinstance(obj, types):
        found.append(obj)
    elif isinstance(obj, dict):
        for value in obj.values():
            _find(value, types, found)
    elif isinstance(obj, _CONTAINERS):
        for item in obj:
            _find(item, types, found)


def replace_instances(obj: Any, types: type | tuple[type, ...], fn: Callable[[Any], Any]) -> Any:
    """Return ``obj`` with each object of ``types`` replaced by ``fn(object)``.

    Containers without a match are returned as they are (no copy), so plain
    arguments cost one walk and no allocation.
    """
    if isinstance(obj, types):
        return fn(obj)
    if isinstance(obj, dict):
        new = {k: replace_instances(v, types, fn) for k, v in obj.items()}
        if all(new[k] is obj[k] for k in obj):
            return obj
        return type(obj)(new) if type(obj) is not dict else new
    if isinstance(obj, _CONTAINERS):
        items = [replace_instances(item, types, fn) for item in obj]
        if all(a is b for a, b in zip(items, obj, strict=True)):
            return obj
        if isinstance(obj, tuple) and hasattr(obj, "_fields"):  # namedtuple
            return type(obj)(*items)
        return type(obj)(items)
    return obj
