"""Prefect's ``prefect.task_runners`` path: daskflow's task runners.

``PrefectTaskRunner`` (Prefect's runner that submits to Prefect's task workers) and
``ProcessPoolTaskRunner`` are not part of daskflow: :class:`DaskTaskRunner` runs
tasks in worker processes (``DaskTaskRunner()`` starts a local process cluster).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .exceptions import MissingContextError
from .pipeline.futures import TaskFuture, TaskFutureList, wait
from .runners import ConcurrentTaskRunner, DaskTaskRunner, SequentialTaskRunner, TaskRunner, ThreadPoolTaskRunner

PrefectFuture = TaskFuture
PrefectFutureList = TaskFutureList

from ._absent import module_getattr

__all__ = [
    "ConcurrentTaskRunner",
    "DaskTaskRunner",
    "PrefectFuture",
    "PrefectFutureList",
    "SequentialTaskRunner",
    "TaskRunner",
    "ThreadPoolTaskRunner",
    "get_dask_client",
    "wait",
]


@contextmanager
def get_dask_client(timeout: float | None = None, **kwargs: Any) -> Iterator[Any]:
    """Yield a ``distributed.Client`` connected to the cluster running this task.

    For a task run by :class:`DaskTaskRunner` (prefect_dask's ``get_dask_client``):
    it uses ``distributed.worker_client``, which leaves the worker's thread pool while
    the block runs, so tasks submitted to Dask from here cannot deadlock the worker.

    Parameters
    ----------
    timeout
        Seconds to wait for the connection to the scheduler.
    **kwargs
        Passed to ``distributed.worker_client``.

    Raises
    ------
    MissingContextError
        Outside a task running on a Dask worker (in the flow body, or with
        ``ThreadPoolTaskRunner`` / ``SequentialTaskRunner``, which have no cluster).
    """
    from distributed import get_worker, worker_client

    try:
        get_worker()
    except ValueError:
        raise MissingContextError(
            "get_dask_client() works inside a task run by DaskTaskRunner (on a Dask worker); "
            "this code runs outside one (the flow body, or an in-process task runner such as "
            "ThreadPoolTaskRunner). Use DaskTaskRunner, or create distributed.Client(address) yourself."
        ) from None
    with worker_client(timeout=timeout, **kwargs) as client:
        yield client


# Prefect names this module does not have raise the reason (daskflow._absent).
__getattr__ = module_getattr(__name__)
