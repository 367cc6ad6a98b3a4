"""Environment overrides of ``daskflow.runtime`` attributes (Prefect's
``PREFECT__RUNTIME__...`` under daskflow's prefix)."""

from __future__ import annotations

import datetime
import json
import os
from collections.abc import Mapping
from types import FrameType
from typing import Any

from .._absent import missing_attribute

__all__ = ["MISSING", "outside_run", "override", "unknown"]

MISSING = object()


def override(module: str, name: str, default: Any) -> Any:
    """The value of ``DASKFLOW__RUNTIME__<MODULE>__<NAME>`` cast like ``default``, or :data:`MISSING`."""
    raw = os.environ.get(f"DASKFLOW__RUNTIME__{module.upper()}__{name.upper()}")
    if raw is None:
        return MISSING
    if isinstance(default, list):
        return [t.strip() for t in raw.split(",") if t.strip()]
    if isinstance(default, dict):
        try:
            value = json.loads(raw)
        except ValueError:
            raise ValueError(f"DASKFLOW__RUNTIME__{module.upper()}__{name.upper()} must be a JSON object, got {raw!r}") from None
        if not isinstance(value, dict):
            raise ValueError(f"DASKFLOW__RUNTIME__{module.upper()}__{name.upper()} must be a JSON object, got {raw!r}")
        return value
    if isinstance(default, bool):
        return raw.strip().lower() in ("1", "true", "yes", "on")
    if isinstance(default, int):
        return int(raw)
    if name == "scheduled_start_time":
        return datetime.datetime.fromisoformat(raw)
    return raw


def unknown(module: str, name: str, known: Mapping[str, Any], caller: FrameType | None) -> Any:
    """An attribute the module does not have: an environment mock of it (Prefect
    allows mocking any key), else the error of :func:`daskflow._absent.missing_attribute`
    (the reason for a Prefect name daskflow lacks, or ``AttributeError`` naming the real ones).
    ``caller`` is the frame that looked it up."""
    value = override(module, name, None)
    if value is not MISSING:
        return value
    plain = f"daskflow.runtime.{module} has no attribute {name!r}; it has {', '.join(sorted(known))}"
    raise missing_attribute(f"daskflow.runtime.{module}", name, caller, plain)


def outside_run(module: str, name: str, defaults: Mapping[str, Any]) -> Any:
    """The value outside a run: the environment override, else Prefect's default
    (a fresh list or dict, never a shared one)."""
    default = defaults[name]
    value = override(module, name, default)
    if value is not MISSING:
        return value
    return type(default)() if isinstance(default, (list, dict)) else default
