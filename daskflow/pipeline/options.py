"""Checks of the options ``@task`` and ``@flow`` take, run when the decorator runs."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Callable, Sequence

from ..exceptions import InvalidOptionError

__all__ = ["Hook", "check_hooks", "check_name", "check_resources", "check_tags", "check_timeout"]

#: A state hook: ``hook(task_or_flow, run, state)``.
Hook = Callable[..., None]


def check_hooks(owner: str, label: str, value: Hook | Sequence[Hook] | None) -> tuple[Hook, ...]:
    if value is None:
        return ()
    hooks = tuple(value) if isinstance(value, (list, tuple)) else (value,)
    for hook in hooks:
        if not callable(hook):
            raise InvalidOptionError(f"{owner}: {label} takes a callable or a list of callables, got {hook!r}")
    return hooks


def check_tags(owner: str, tags: Iterable[str] | None) -> tuple[str, ...]:
    if tags is None:
        return ()
    if isinstance(tags, str):
        return (tags,)
    tags = tuple(tags)
    for tag in tags:
        if not isinstance(tag, str):
            raise InvalidOptionError(f"{owner}: tags must be strings, got {tag!r}")
    return tags


def check_timeout(owner: str, timeout: float | None) -> float | None:
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
        raise InvalidOptionError(f"{owner}: timeout_seconds must be a number > 0, got {timeout!r}")
    return float(timeout)


def check_name(fn: Callable[..., Any], name: str | None, kind: str) -> str:
    if name is None:
        name = getattr(fn, "__name__", None) or type(fn).__name__
    if not isinstance(name, str) or not name.strip():
        raise InvalidOptionError(f"{kind} name must be a non-empty string, got {name!r}")
    return name


def check_resources(owner: str, resources: Mapping[str, float] | None) -> dict[str, float] | None:
    if resources is None:
        return None
    if not isinstance(resources, Mapping):
        raise InvalidOptionError(f"{owner}: resources must be a dict like {{'GPU': 1}}, got {resources!r}")
    for key, amount in resources.items():
        if not isinstance(key, str) or isinstance(amount, bool) or not isinstance(amount, (int, float)) or amount <= 0:
            raise InvalidOptionError(f"{owner}: resources must map names to positive numbers, got {key!r}: {amount!r}")
    return dict(resources)
