"""Serializers by name: how a result becomes bytes and back.

The name is recorded in each entry's manifest and looked up here when reading,
so a stored entry can never choose which code deserialises it (Prefect's records
name an importable ``module.loads``; ours name a registry entry).
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import cloudpickle

from ..exceptions import InvalidOptionError, SerializationError

__all__ = ["Serializer", "get_serializer", "register_serializer", "serializer_names"]


@dataclass(frozen=True)
class Serializer:
    """A named pair of functions between values and bytes."""

    name: str
    dumps: Callable[[Any], bytes]
    loads: Callable[[bytes], Any]


_REGISTRY: dict[str, Serializer] = {}


def register_serializer(name: str, dumps: Callable[[Any], bytes], loads: Callable[[bytes], Any]) -> Serializer:
    """Make ``result_serializer=name`` available (in this process: register it on workers too,
    e.g. in a module they import or a worker preload).

    Examples
    --------
    >>> import numpy as np, io
    >>> def dumps(a): buf = io.BytesIO(); np.save(buf, a, allow_pickle=False); return buf.getvalue()
    >>> register_serializer("numpy", dumps, lambda b: np.load(io.BytesIO(b)))  # doctest: +SKIP
    """
    if not isinstance(name, str) or not name or not name.replace("-", "").replace("_", "").replace("/", "").isalnum():
        raise InvalidOptionError(f"serializer name must be letters, digits, '-', '_' or '/', got {name!r}")
    if not callable(dumps) or not callable(loads):
        raise InvalidOptionError(f"serializer {name!r} needs callable dumps(value) -> bytes and loads(bytes) -> value")
    serializer = Serializer(name, dumps, loads)
    _REGISTRY[name] = serializer
    return serializer


def get_serializer(name: str) -> Serializer:
    """The serializer registered as ``name``.

    Raises
    ------
    InvalidOptionError
        If no serializer has that name; the message lists the known ones.
    """
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise InvalidOptionError(
            f"unknown result serializer {name!r}; known: {', '.join(sorted(_REGISTRY))} "
            "(add one with daskflow.storage.register_serializer)"
        ) from None


def serializer_names() -> list[str]:
    return sorted(_REGISTRY)


def _json_dumps(value: Any) -> bytes:
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=True).encode()
    except (TypeError, ValueError) as exc:
        raise SerializationError(f"json cannot serialise {type(value).__name__}: {exc}") from exc


register_serializer("pickle", cloudpickle.dumps, pickle.loads)
register_serializer("json", _json_dumps, lambda data: json.loads(data.decode()))
