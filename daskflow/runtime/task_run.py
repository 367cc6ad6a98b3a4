"""The current task run (``from daskflow.runtime import task_run``; ``task_run.name``).

Attributes: ``id``, ``name``, ``task_name``, ``parameters``, ``run_count``
(the attempt, 1 for the first), ``tags``. Works where the task runs, a Dask
worker included; outside a task they read ``None``, ``{}``, ``0``, ``[]``.
"""

from __future__ import annotations

import sys
from typing import Any

from ..context import TaskRunContext
from ._env import outside_run, unknown

# The attributes are read by the module __getattr__ below, when accessed.
__all__ = ["id", "name", "parameters", "run_count", "tags", "task_name"]  # noqa: F822

_DEFAULTS: dict[str, Any] = {"id": None, "name": None, "task_name": None, "parameters": {}, "run_count": 0, "tags": []}


def __getattr__(name: str) -> Any:
    if name not in _DEFAULTS:
        return unknown("task_run", name, _DEFAULTS, sys._getframe(1))
    context = TaskRunContext.get()
    if context is not None:
        return dict(context.parameters) if name == "parameters" else getattr(context.task_run, name)
    return outside_run("task_run", name, _DEFAULTS)


def __dir__() -> list[str]:
    return sorted(__all__)
