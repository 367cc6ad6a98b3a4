"""Custom run names: ``task_run_name`` and ``flow_run_name``.

As in Prefect 3, a run name is a string template whose ``{fields}`` are the
call's bound parameters (``"fit-{c}"``), or a callable: a task's callable is
given ``parameters=`` if it takes a parameter of that name, otherwise (and for
flows) it is called with no arguments. The result is cleaned to the name rule
(:mod:`daskflow.pipeline.names`): a parameter value holding a newline or a
control character cannot break a log line or a record; each such character
becomes ``?`` and a long name is cut.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

from ..exceptions import InvalidOptionError
from .names import MAX_NAME_LENGTH, name_problem
from .options import check_template

__all__ = ["RunName", "call_parameters", "check_run_name", "clean_run_name", "resolve_run_name", "task_run_name"]

#: A run name option: a ``str.format`` template or a callable returning a string.
RunName = str | Callable[..., str]


def check_run_name(owner: str, label: str, value: Any) -> RunName | None:
    """``value`` if it is ``None``, a non-empty template whose fields parse, or a callable."""
    if value is None or callable(value):
        return value
    return check_template(owner, label, value, "'run-{x}' or a callable returning a string", "; write fields as {name}, braces as {{ }}")


def clean_run_name(text: str) -> str:
    """``text`` with every character the name rule refuses replaced by ``?``, cut to its length."""
    text = text[:MAX_NAME_LENGTH]
    if name_problem(text) is None:
        return text
    return "".join("?" if name_problem(char) is not None else char for char in text)


def resolve_run_name(owner: str, label: str, option: RunName | None, parameters: dict[str, Any], *, pass_parameters: bool) -> str | None:
    """The run name ``option`` gives for a call with ``parameters`` (``None``: the default name).

    Raises
    ------
    InvalidOptionError
        A template field that is not a parameter, or a callable that does not return a string.
    """
    if option is None:
        return None
    if callable(option):
        takes = pass_parameters and _takes_parameters(option)
        name = option(parameters=dict(parameters)) if takes else option()
        if not isinstance(name, str):
            raise InvalidOptionError(f"{owner}: the {label} callable {option!r} returned {type(name).__name__} {name!r}; return a string")
    else:
        try:
            name = option.format(**parameters)
        except (KeyError, IndexError) as exc:
            field = exc.args[0] if exc.args else exc
            raise InvalidOptionError(
                f"{owner}: {label} {option!r} names the field {{{field}}}, which is not a parameter of the call; "
                f"parameters: {sorted(parameters)}"
            ) from None
        except (AttributeError, ValueError, TypeError) as exc:
            raise InvalidOptionError(f"{owner}: {label} {option!r} could not be filled from the parameters {sorted(parameters)}: {exc}") from None
    name = clean_run_name(name)
    return name if name.strip() else None


def _takes_parameters(fn: Callable[..., Any]) -> bool:
    try:
        return "parameters" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def call_parameters(task: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    """A task call's arguments by parameter name, defaults filled in (futures as given)."""
    signature = getattr(task, "_signature", None)
    if signature is None:
        return {**{f"arg{i}": a for i, a in enumerate(args)}, **kwargs}
    bound = signature.bind_partial(*args, **kwargs)
    bound.apply_defaults()
    return dict(bound.arguments)


def task_run_name(task: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
    """The name ``task.task_run_name`` gives one call (``None``: the default ``<name>-<n>``)."""
    return resolve_run_name(f"task {task.name!r}", "task_run_name", task.task_run_name, call_parameters(task, args, kwargs), pass_parameters=True)
