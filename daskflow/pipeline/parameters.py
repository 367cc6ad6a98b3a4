"""Flow parameter validation from type hints, before anything is submitted."""

from __future__ import annotations

import inspect
import typing
from typing import Any, Callable

import pydantic

from ..exceptions import ParameterValidationError
from ..masking import mask

__all__ = ["MISSING", "ParameterModel"]

#: Longest rendering of a bad value in an error message; longer ones are described.
_MAX_VALUE_REPR = 80
#: The error of a required parameter the call did not give.
MISSING = "missing required parameter"


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
        self.hints = {name: hints[name] for name in self.checked}

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
                    errors.append({"field": name, "error": MISSING})
            bound.apply_defaults()
        if validate and self.model is not None:
            # Type and constraint errors are reported along with binding errors: a
            # call with a typo and a bad value should not take two tries to fix.
            given = bound.arguments if bound is not None else {k: v for k, v in kwargs.items() if k in params}
            values = {k: v for k, v in given.items() if k in self.checked}
            missing = {e["field"] for e in errors if e["error"] == MISSING}
            try:
                validated = self.model.model_validate(values)
            except pydantic.ValidationError as exc:
                for err in exc.errors(include_url=False, include_context=False):
                    loc = tuple(err["loc"])
                    if err["type"] == "missing" and len(loc) == 1 and (loc[0] in missing or bound is None):
                        continue  # reported above, once (or the call did not bind: positions are unknown)
                    field = ".".join(str(p) for p in loc)
                    shown = self._describe_input(loc, err.get("input"))
                    errors.append({"field": field, "error": mask(f"{err['msg']} ({shown})")})
            else:
                if bound is not None and not errors:
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

    def _describe_input(self, loc: tuple[Any, ...], value: Any) -> str:
        """What an error message shows of a bad input: its repr when short and not
        secret; a secret field's value (or a value holding one) is never shown."""
        annotation: Any = self.hints.get(loc[0]) if loc else None
        secret = _holds_secret(annotation)
        for part in loc[1:]:
            inner = _field_type(annotation, part)
            if inner is _UNKNOWN:
                break  # a union member's tag or the like: judge by the closest known type
            annotation = inner
            secret = _holds_secret(annotation)
        if secret or isinstance(value, pydantic.SecretStr | pydantic.SecretBytes):
            return "a secret value, not shown"
        return f"got {_short_repr(value)}"

    def call_arguments(self, parameters: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """Turn validated parameters back into ``(args, kwargs)`` for the function."""
        bound = inspect.BoundArguments(self.signature, parameters)  # type: ignore[arg-type]
        return bound.args, bound.kwargs


def _short_repr(value: Any) -> str:
    try:
        text = repr(value)
    except Exception:  # a broken __repr__ must not hide the validation errors
        text = f"<{type(value).__name__}>"
    if len(text) <= _MAX_VALUE_REPR:
        return text
    # Long values are described, not cut: a cut repr can still carry a token.
    if isinstance(value, str | bytes):
        return f"a {type(value).__name__} of {len(value)} characters"
    if isinstance(value, dict):
        return f"a dict with {len(value)} keys"
    if isinstance(value, list | tuple | set | frozenset):
        return f"a {type(value).__name__} of {len(value)} items"
    return f"a {type(value).__name__}"


_UNKNOWN = object()
_SECRET_TYPES = (pydantic.SecretStr, pydantic.SecretBytes, pydantic.Secret)


def _strip(annotation: Any) -> Any:
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    return annotation


def _holds_secret(annotation: Any, seen: set[int] | None = None) -> bool:
    """Whether values of this type are, or may contain, a secret (``SecretStr`` and
    the like, at any depth of models, containers and unions)."""
    annotation = _strip(annotation)
    if annotation is None:
        return False
    seen = set() if seen is None else seen
    if id(annotation) in seen:
        return False  # a model that refers to itself
    seen.add(id(annotation))
    origin = typing.get_origin(annotation)
    if isinstance(annotation, type) and issubclass(annotation, _SECRET_TYPES):
        return True
    if origin is not None and isinstance(origin, type) and issubclass(origin, _SECRET_TYPES):
        return True  # Secret[int]
    if isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel):
        return any(_holds_secret(f.annotation, seen) for f in annotation.model_fields.values())
    return any(_holds_secret(arg, seen) for arg in typing.get_args(annotation) if not isinstance(arg, (str, int)))


def _field_type(annotation: Any, part: Any) -> Any:
    """The type of ``part`` (a field name, an index, a key) inside ``annotation``,
    or ``_UNKNOWN``."""
    annotation = _strip(annotation)
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel):
        field = annotation.model_fields.get(part) if isinstance(part, str) else None
        return field.annotation if field is not None else _UNKNOWN
    if origin in (list, set, frozenset) and args and isinstance(part, int):
        return args[0]
    if origin is tuple and args and isinstance(part, int):
        return args[0] if len(args) == 2 and args[1] is Ellipsis else args[part] if part < len(args) else _UNKNOWN
    if origin is dict and len(args) == 2:
        return args[1]  # pydantic adds "[key]" for a bad key: judged by the values' type too
    return _UNKNOWN
