"""Environment overrides of ``daskflow.runtime`` attributes (Prefect's
``PREFECT__RUNTIME__...`` under daskflow's prefix)."""

from __future__ import annotations

import json
import os
from typing import Any

__all__ = ["MISSING", "override"]

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
    if isinstance(default, int):
        return int(raw)
    return raw
