"""Checks of the options ``@task`` and ``@flow`` take, run when the decorator runs."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Callable, Sequence

from .._names import name_key
from ..exceptions import InvalidOptionError
from .hooks import HookList

__all__ = [
    "Hook",
    "check_hooks",
    "check_name",
    "check_optional_bool",
    "check_resources",
    "check_result_storage",
    "check_result_storage_key",
    "check_runner",
    "check_serializer",
    "check_tags",
    "check_timeout",
]

#: A state hook: ``hook(task_or_flow, run, state)``.
Hook = Callable[..., None]


def check_hooks(owner: str, label: str, value: Hook | Sequence[Hook] | None) -> HookList:
    """The hooks as a new :class:`HookList` (a list that also works as a decorator)."""
    if value is None:
        return HookList()
    hooks = HookList(value) if isinstance(value, (list, tuple)) else HookList((value,))
    for hook in hooks:
        if not callable(hook):
            raise InvalidOptionError(f"{owner}: {label} takes a callable or a list of callables, got {hook!r}")
    return hooks


def check_runner(owner: str, value: Any) -> Any:
    """A task runner instance; a runner class (``DaskTaskRunner``, as Prefect allows) is instantiated."""
    from ..runners.base import TaskRunner

    if isinstance(value, type) and issubclass(value, TaskRunner):
        try:
            value = value()
        except TypeError as exc:
            raise InvalidOptionError(f"{owner}: task_runner class {value.__name__} cannot be made without arguments ({exc}); pass an instance") from None
    if value is not None and not isinstance(value, TaskRunner):
        raise InvalidOptionError(
            f"{owner}: task_runner must be a runner instance such as DaskTaskRunner(), or a runner class such as DaskTaskRunner, got {value!r}"
        )
    return value


def check_template(owner: str, label: str, value: Any, example: str, hint: str = "") -> str:
    """``value`` if it is a non-empty ``str.format`` template whose fields parse.

    ``example`` shows the form in the error; ``hint`` follows a parse error.
    """
    import string

    if not isinstance(value, str) or not value.strip():
        raise InvalidOptionError(f"{owner}: {label} must be a string like {example}, got {value!r}")
    try:
        list(string.Formatter().parse(value))
    except ValueError as exc:
        raise InvalidOptionError(f"{owner}: {label} {value!r} is not a valid template ({exc}){hint}") from None
    return value


def check_result_storage_key(owner: str, value: Any) -> str | None:
    """A ``str.format`` template such as ``"{parameters[x]}-result"`` (fields: see ``cache.StorageKeyPolicy``)."""
    if value is None:
        return None
    return check_template(owner, "result_storage_key", value, "'{parameters[x]}-result'")


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
    """``name``, or the default one: a task's is its function's name; a flow's, as in
    Prefect 3, that name with ``_`` turned into ``-`` (a lambda is ``unknown-lambda``).

    The flow default is the function name's :func:`~daskflow._names.name_key`, so
    lookups still find runs and deployments recorded under the function name
    (daskflow's old default). An explicit ``name`` is kept as given.
    """
    if name is None:
        name = getattr(fn, "__name__", None) or type(fn).__name__
        if kind == "flow":
            name = "unknown-lambda" if name == "<lambda>" else name_key(name)
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


def check_optional_bool(owner: str, label: str, value: Any) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    raise InvalidOptionError(f"{owner}: {label} must be True, False or None, got {value!r}")


def check_result_storage(owner: str, value: Any) -> Any:
    """A URL, folder or Store; resolved (and probed) when a run first uses it."""
    import os

    from ..storage.store import Store

    if value is None or isinstance(value, Store):
        return value
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if isinstance(value, str) and value.strip():
        return value
    raise InvalidOptionError(
        f"{owner}: result_storage must be a folder, a URL like 's3://bucket/prefix', or a daskflow Store, got {value!r}"
    )


def check_serializer(owner: str, value: Any) -> str | None:
    if value is None:
        return None
    from ..storage.serializers import get_serializer

    try:
        get_serializer(value)
    except InvalidOptionError as exc:
        raise InvalidOptionError(f"{owner}: {exc}") from None
    return value
