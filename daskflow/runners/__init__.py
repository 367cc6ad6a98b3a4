"""Where task attempts execute: a Dask cluster, or in-process for debugging."""

from .base import TaskRunner
from .dask import DaskTaskRunner
from .local import ConcurrentTaskRunner, SequentialTaskRunner, ThreadPoolTaskRunner

__all__ = ["ConcurrentTaskRunner", "DaskTaskRunner", "SequentialTaskRunner", "TaskRunner", "ThreadPoolTaskRunner"]
