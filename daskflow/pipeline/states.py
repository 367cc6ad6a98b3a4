"""Run states: what a flow or task run is doing, with timestamps and messages.

State types follow Prefect's (``COMPLETED``, ``FAILED``, ``CRASHED``, ...), plus
``SKIPPED`` for a task that never ran because an upstream task did not complete
(named ``UpstreamFailed``, as in Airflow): it is neither a failure of its own nor
pending forever.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable

from ..exceptions import CancelledRun, CrashedError, UpstreamFailedError

__all__ = [
    "AwaitingRetry",
    "Cached",
    "Cancelled",
    "Completed",
    "Crashed",
    "Failed",
    "Late",
    "Pending",
    "Retrying",
    "Running",
    "Scheduled",
    "State",
    "StateType",
    "TimedOut",
    "UpstreamFailed",
]


class StateType(str, enum.Enum):
    """The kind of a state; several named states share a type."""

    SCHEDULED = "SCHEDULED"
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CRASHED = "CRASHED"
    CANCELLED = "CANCELLED"
    SKIPPED = "SKIPPED"


FINAL_TYPES = frozenset(
    {StateType.COMPLETED, StateType.FAILED, StateType.CRASHED, StateType.CANCELLED, StateType.SKIPPED}
)


@dataclass(frozen=True)
class State:
    """One state of a flow or task run.

    Parameters
    ----------
    type : StateType
        The kind of state.
    name : str
        The named state, e.g. ``"TimedOut"`` (type ``FAILED``) or ``"Retrying"``.
    message : str
        A human-readable explanation.
    timestamp : float
        Seconds since the epoch when the run entered this state.
    data : Any
        The exception for failed states, the value for completed flow states.
    scheduled_time : float or None
        When an ``AwaitingRetry`` state will be retried.

    Examples
    --------
    >>> from daskflow import State
    >>> s = Completed(message="done")
    >>> s.is_completed(), s.is_final()
    (True, True)
    """

    type: StateType
    name: str
    message: str = ""
    timestamp: float = field(default_factory=time.time)
    data: Any = field(default=None, repr=False, compare=False)
    scheduled_time: float | None = None
    #: The run record this is the final state of (set on a flow's final state).
    run: Any = field(default=None, repr=False, compare=False)
    # Fetches a completed task's value from wherever it lives (a worker, later storage).
    _fetch: Callable[[], Any] | None = field(default=None, repr=False, compare=False)

    def is_scheduled(self) -> bool:
        return self.type is StateType.SCHEDULED

    def is_pending(self) -> bool:
        return self.type is StateType.PENDING

    def is_running(self) -> bool:
        return self.type is StateType.RUNNING

    def is_completed(self) -> bool:
        return self.type is StateType.COMPLETED

    def is_failed(self) -> bool:
        return self.type is StateType.FAILED

    def is_crashed(self) -> bool:
        return self.type is StateType.CRASHED

    def is_cancelled(self) -> bool:
        return self.type is StateType.CANCELLED

    def is_skipped(self) -> bool:
        return self.type is StateType.SKIPPED

    def is_final(self) -> bool:
        return self.type in FINAL_TYPES

    def is_unsuccessful(self) -> bool:
        """True for every final state that is not ``COMPLETED`` or ``CANCELLED``."""
        return self.type in (StateType.FAILED, StateType.CRASHED, StateType.SKIPPED)

    def result(self, raise_on_failure: bool = True) -> Any:
        """Return the run's value, or raise its error.

        Parameters
        ----------
        raise_on_failure : bool
            With ``False``, a failed state returns its exception instead of raising it.
        """
        if self.is_completed():
            return self._fetch() if self._fetch is not None else self.data
        if not self.is_final():
            raise RuntimeError(
                f"the run is still {self.name}; wait for it (future.wait()) before asking for its result"
            )
        exc = self.data if isinstance(self.data, BaseException) else self._default_error()
        if raise_on_failure:
            raise exc
        return exc

    def _default_error(self) -> BaseException:
        if self.is_crashed():
            return CrashedError(self.message)
        if self.is_skipped():
            return UpstreamFailedError(self.message)
        if self.is_cancelled():
            return CancelledRun(self.message)
        return RuntimeError(self.message or self.name)

    def copy(self, **changes: Any) -> State:
        return replace(self, **changes)

    def __str__(self) -> str:
        return f"{self.name}({self.message!r})" if self.message else f"{self.name}()"


def _maker(type_: StateType, name: str) -> Callable[..., State]:
    def make(message: str | None = "", *, name: str = name, **kwargs: Any) -> State:
        # Prefect's keywords: ``message``, ``data`` and ``name`` (a custom named
        # state such as ``Completed(message="nothing to do", name="Skipped")``).
        return State(type_, name, message or "", **kwargs)

    make.__name__ = make.__qualname__ = name
    make.__doc__ = f"A ``{name}`` state (type ``{type_.value}``)."
    return make


Scheduled = _maker(StateType.SCHEDULED, "Scheduled")
AwaitingRetry = _maker(StateType.SCHEDULED, "AwaitingRetry")
#: A scheduled run that did not start within its grace period (no worker, a full queue).
Late = _maker(StateType.SCHEDULED, "Late")
Pending = _maker(StateType.PENDING, "Pending")
Running = _maker(StateType.RUNNING, "Running")
Retrying = _maker(StateType.RUNNING, "Retrying")
Completed = _maker(StateType.COMPLETED, "Completed")
#: A task run that reused a stored result instead of running.
Cached = _maker(StateType.COMPLETED, "Cached")
Failed = _maker(StateType.FAILED, "Failed")
TimedOut = _maker(StateType.FAILED, "TimedOut")
Crashed = _maker(StateType.CRASHED, "Crashed")
Cancelled = _maker(StateType.CANCELLED, "Cancelled")
UpstreamFailed = _maker(StateType.SKIPPED, "UpstreamFailed")
