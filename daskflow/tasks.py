"""Prefect's ``prefect.tasks`` path: daskflow's :func:`task` and :class:`Task`."""

from __future__ import annotations

from ._absent import module_getattr
from .pipeline.cache import task_input_hash
from .pipeline.retries import exponential_backoff
from .pipeline.task import Task, task

__all__ = ["Task", "exponential_backoff", "task", "task_input_hash"]


# Prefect names this module does not have raise the reason (daskflow._absent).
__getattr__ = module_getattr(__name__)
