"""The task runner of a flow that names none: config ``daskflow.task-runner``."""

from __future__ import annotations

from .base import TaskRunner

__all__ = ["RUNNER_CHOICES", "default_task_runner"]

#: Config value -> what a flow without ``task_runner=`` gets.
RUNNER_CHOICES = {
    "dask": "DaskTaskRunner() (the scheduler at Dask's scheduler-address if set, else a LocalCluster)",
    "threads": "ThreadPoolTaskRunner() (threads in the flow's process, Prefect 3's default)",
    "sequential": "SequentialTaskRunner() (one task run at a time, in the flow's thread)",
}


def default_task_runner() -> TaskRunner:
    """A new runner for a flow run whose flow has no ``task_runner``.

    ``daskflow.task-runner`` picks it: ``dask`` (the default), ``threads`` or
    ``sequential``. ``dask`` connects to the scheduler named by Dask's own
    ``scheduler-address`` setting (``DASK_SCHEDULER_ADDRESS``) when one is set,
    as ``distributed.Client()`` does, and otherwise starts a LocalCluster.

    Raises
    ------
    InvalidOptionError
        If the setting is another value, naming the choices.
    """
    import dask.config

    from ..exceptions import InvalidOptionError

    value = dask.config.get("daskflow.task-runner", "dask")
    choice = value.strip().lower() if isinstance(value, str) else None
    if choice == "threads":
        from .local import ThreadPoolTaskRunner

        return ThreadPoolTaskRunner()
    if choice == "sequential":
        from .local import SequentialTaskRunner

        return SequentialTaskRunner()
    if choice == "dask":
        from .dask import DaskTaskRunner, in_worker_task

        address = dask.config.get("scheduler-address", None)
        # Inside a Dask task the runner borrows the worker's own cluster instead.
        if address and not in_worker_task():
            return DaskTaskRunner(address=str(address))
        return DaskTaskRunner()
    choices = "; ".join(f"{name}: {what}" for name, what in RUNNER_CHOICES.items())
    raise InvalidOptionError(
        f"daskflow.task-runner is {value!r}; use one of {choices} "
        "(dask.config.set({'daskflow.task-runner': 'threads'}) or DASK_DASKFLOW__TASK_RUNNER=threads)"
    )
