"""Flow parameter validation from type hints, before anything is submitted."""

from __future__ import annotations

import inspect
import typing
from typing import Any, Callable

import pydantic

from ..exceptions import ParameterValidationError

__all__ = ["ParameterModel"]

#: Longest rendering of a bad value in an error message.
_MAX_VALUE_REPR = 80


class ParameterModel:
    """Binds, checks and coerces a flow's call arguments using its signature.

    Missing, unknown and ill-typed parameters are all reported together, one line
    each. Values pydantic can convert without loss ("3" for ``int``, an ISO string
    for ``datetime``, as a CLI passes them) are converted; anything else fails.
    Parameters without a type hint, and ``*args``/``**kwargs``, pass through.
    """

    def __init__(self, fn: Callable[..., Any], flow_name: str) -> None:
        self.flow_name = flow_name
        self.signature = inspect.signature(fn)
        try:
            hints = typing.get_type_hints(fn, include_extras=True)  # keep Annotated constraints (Field(gt=0))
        except Exception:  # unresolvable forward references: validate what we can
            hints = {}
        fields: dict[str, Any] = {}
        for name, param in self.signature.parameters.items():
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD) or name not in hints:
                continue
            default = ... if param.default is param.empty else param.default
            fields[name] = (hints[name], default)
        self.checked = set(fields)
        self.model = pydantic.create_model(  # type: ignore[call-overload]
            f"{flow_name}_parameters",
            __config__=pydantic.ConfigDict(arbitrary_types_allowed=True),
            **fields,
        ) if fields else None

    def bind(self, args: tuple[Any, ...], kwargs: dict[str, Any], validate: bool = True) -> dict[str, Any]:
        """Return the parameters by name, validated and coerced.

        Raises
        ------
        ParameterValidationError
            Naming every missing, unknown or invalid parameter.
        """
        errors: list[dict[str, str]] = []
        params = self.signature.parameters
        positional = [p for p in params.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        accepts_varargs = any(p.kind is p.VAR_POSITIONAL for p in params.values())
        accepts_varkw = any(p.kind is p.VAR_KEYWORD for p in params.values())
        if len(args) > len(positional) and not accepts_varargs:
            errors.append({"field": "<positional>", "error": f"takes {len(positional)} positional arguments but {len(args)} were given"})
        for name in kwargs:
            if name not in params and not accepts_varkw:
                errors.append({"field": name, "error": f"unknown parameter; {self.flow_name!r} accepts {', '.join(params) or 'no parameters'}"})
        try:
            bound = self.signature.bind_partial(*args, **{k: v for k, v in kwargs.items() if k in params or accepts_varkw})
        except TypeError as exc:
            errors.append({"field": "<arguments>", "error": str(exc)})
            bound = None
        if bound is not None:
            for name, param in params.items():
                if name not in bound.arguments and param.default is param.empty and param.kind not in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                    errors.append({"field": name, "error": "missing required parameter"})
            bound.apply_defaults()
        if bound is not None and validate and self.model is not None and not errors:
            values = {k: v for k, v in bound.arguments.items() if k in self.checked}
            try:
                validated = self.model.model_validate(values)
            except pydantic.ValidationError as exc:
                for err in exc.errors():
                    field = ".".join(str(p) for p in err["loc"])
                    errors.append({"field": field, "error": f"{err['msg']} (got {_short_repr(err.get('input'))})"})
            else:
                for name in values:
                    bound.arguments[name] = getattr(validated, name)
        if errors:
            lines = "\n".join(f"  - {e['field']}: {e['error']}" for e in errors)
            raise ParameterValidationError(
                f"flow {self.flow_name!r} got invalid parameters, nothing was run:\n{lines}\n"
                f"expected signature: {self.flow_name}{self.signature}",
                errors,
            )
        assert bound is not None
        return dict(bound.arguments)

    def call_arguments(self, parameters: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """Turn validated parameters back into ``(args, kwargs)`` for the function."""
        bound = inspect.BoundArguments(self.signature, parameters)  # type: ignore[arg-type]
        return bound.args, bound.kwargs


def _short_repr(value: Any) -> str:
    if isinstance(value, pydantic.SecretStr | pydantic.SecretBytes):
        return "a secret value"
    text = repr(value)
    return text if len(text) <= _MAX_VALUE_REPR else text[: _MAX_VALUE_REPR - 3] + "..."
