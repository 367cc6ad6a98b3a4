"""Run loggers under Prefect 3's module names (``prefect.logging`` and
``prefect.logging.loggers``).

daskflow's own modules use absolute imports, so ``import logging`` in them is
the standard library's, not this module.
"""

from __future__ import annotations

import logging
from typing import Any

from ..pipeline.context import FLOW_RUN_CONTEXT, RUNS_LOGGER, disable_run_logger, get_run_logger
from ..runners.execute import TASK_RUN_CONTEXT
from ..runners.execute import task_run_logger as _attempt_logger

__all__ = ["disable_run_logger", "flow_run_logger", "get_logger", "get_run_logger", "task_run_logger"]


def get_logger(name: str | None = None) -> logging.Logger:
    """The ``daskflow`` logger, or its child ``daskflow.<name>``."""
    return logging.getLogger("daskflow" if not name else f"daskflow.{name}")


def flow_run_logger(flow_run: Any, flow: Any = None, **extra: Any) -> logging.Logger:
    """The logger of ``flow_run`` (a run record or ``get_run_context().flow_run``).

    For the current flow run it is :func:`get_run_logger`'s (lines go into the
    run's record); for another run, a logger named after it that only prints.
    """
    context = FLOW_RUN_CONTEXT.get()
    if context is not None and context.flow_run.id == getattr(flow_run, "id", None):
        return context.logger()
    return logging.getLogger(f"{RUNS_LOGGER}.{getattr(flow_run, 'name', flow_run)}")


def task_run_logger(task_run: Any, task: Any = None, flow_run: Any = None, flow: Any = None, **extra: Any) -> logging.Logger:
    """The logger of ``task_run`` (``get_run_context().task_run``).

    For the task run the calling code is in, lines go into its record; for
    another, a logger named after it that only prints.
    """
    context = TASK_RUN_CONTEXT.get()
    if context is not None and context.spec.task_run_id == getattr(task_run, "id", None):
        return _attempt_logger(context)
    return logging.getLogger(f"daskflow.task_runs.{getattr(task_run, 'name', task_run)}")
