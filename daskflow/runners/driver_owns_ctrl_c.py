"""A worker preload for the LocalClusters daskflow starts: the driver owns Ctrl-C.

A terminal's Ctrl-C reaches every process of its foreground group, so the
worker processes of an embedded LocalCluster would each stop on their own,
mid-task, printing their own warnings and tracebacks, while the driver is
cancelling the run and closing the cluster in order. Ignoring SIGINT in those
workers leaves the stop to the driver (see :mod:`daskflow.pipeline.interrupt`).
Only for clusters daskflow starts with worker processes, never for a scheduler
it joins or a cluster in threads (that would be the driver's own signal).
"""

from __future__ import annotations

import signal
from typing import Any

__all__ = ["dask_setup"]


def dask_setup(worker: Any) -> None:
    """Dask's preload hook: ignore SIGINT in this worker process."""
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # not the process's main thread: nothing to set here
        pass
