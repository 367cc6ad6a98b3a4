"""Prefect's ``prefect.tasks`` path: daskflow's :func:`task` and :class:`Task`."""

from __future__ import annotations

from .pipeline.cache import task_input_hash
from .pipeline.retries import exponential_backoff
from .pipeline.task import Task, task

__all__ = ["Task", "exponential_backoff", "task", "task_input_hash"]
