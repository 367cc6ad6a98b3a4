"""Prefect's ``prefect.states`` path: daskflow's :class:`State` and its constructors.

``Completed(data=...)``, ``Failed(...)`` and the others build a daskflow
:class:`State`; a task or flow may return one to set its own final state, as in Prefect.
"""

from __future__ import annotations

from ._absent import module_getattr
from .exceptions import CancelledRun, CrashedRun, FailedRun, MissingContextError
from .pipeline.states import (
    AwaitingRetry,
    Cached,
    Cancelled,
    Completed,
    Crashed,
    Failed,
    Late,
    Pending,
    Retrying,
    Running,
    Scheduled,
    State,
    StateType,
    TimedOut,
    UpstreamFailed,
)

__all__ = [
    "AwaitingRetry",
    "Cached",
    "Cancelled",
    "CancelledRun",
    "Completed",
    "Crashed",
    "CrashedRun",
    "Failed",
    "FailedRun",
    "Late",
    "MissingContextError",
    "Pending",
    "Retrying",
    "Running",
    "Scheduled",
    "State",
    "StateType",
    "TimedOut",
    "UpstreamFailed",
]


# Prefect names this module does not have raise the reason (daskflow._absent).
__getattr__ = module_getattr(__name__)
