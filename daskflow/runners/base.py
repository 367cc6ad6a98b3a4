"""The interface between the flow engine and the place tasks execute."""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .execute import AttemptSpec, StoredRef

__all__ = ["AttemptCall", "Outcome", "ReportSink", "TaskRunner"]

#: Receives attempt reports (timings and log lines) for one flow run.
ReportSink = Callable[[dict[str, Any]], None]


@dataclass(slots=True)
class AttemptCall:
    """One attempt to submit.

    ``args``/``kwargs`` hold the runner's own handles (as returned by
    :meth:`TaskRunner.submit`) where the user passed futures of upstream tasks;
    the runner resolves them to values where the attempt runs.
    """

    fn: Any  # what TaskRunner.prepare returned for the task's function
    spec: AttemptSpec
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    key: str
    wait_for: list[Any] = field(default_factory=list)
    resources: dict[str, float] | None = None


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a submitted attempt ended: ``status`` is ``"finished"``, ``"error"`` or ``"cancelled"``."""

    status: str
    error: BaseException | None = None


class TaskRunner(abc.ABC):
    """Executes task attempts for flow runs.

    A flow holds a runner as a template; each flow run works on
    :meth:`duplicate`, started with :meth:`start` and closed with
    :meth:`shutdown`. Handles returned by :meth:`submit` may be passed inside the
    arguments of later calls; the runner turns them into values (or fails the
    dependent attempt with the upstream's error, without running it).
    """

    #: Shown in logs and run records.
    name: str = "runner"

    def duplicate(self) -> TaskRunner:
        """A fresh, unstarted runner with the same settings."""
        return type(self)(**self._settings())

    @abc.abstractmethod
    def _settings(self) -> dict[str, Any]:
        """The constructor arguments this runner was made with."""

    @abc.abstractmethod
    def start(self) -> None:
        """Acquire resources (threads, a cluster, a client)."""

    @abc.abstractmethod
    def shutdown(self) -> None:
        """Release everything :meth:`start` acquired. Safe to call twice."""

    def when_started(self, callback: Callable[[], None], before: Callable[[], None] | None = None) -> None:
        """Call ``callback`` once the runner's resources exist: now for a runner
        that acquires them in :meth:`start`; a runner that starts lazily calls
        ``before`` and then ``callback`` when it really starts, or never."""
        callback()

    def silence_teardown(self) -> None:
        """Called when Ctrl-C stops the run, before its task runs are cancelled: a
        runner whose cancelling and :meth:`shutdown` would print warnings about the
        work cut short (Dask's) silences them, as the run's final line says it all."""

    def prepare(self, name: str, fn: Callable[..., Any]) -> Any:
        """Ship a task function once per run; the result goes into ``AttemptCall.fn``."""
        return fn

    def load(self, ref: StoredRef) -> Any:
        """Something to pass in later submits where a stored result is an input.

        The default passes the reference itself; the attempt loads it where it
        runs. A runner may instead load once and share the value.
        """
        return ref

    def share(self, value: Any) -> Any:
        """What to pass in later submits where ``value`` (an argument of a task,
        such as a flow parameter) is given to many tasks.

        The default passes the value itself. A runner that ships arguments over
        the network may send a large one once per run and pass a handle.
        """
        return value

    def shares_memory(self) -> bool:
        """Whether every attempt runs in this process (so a ``memory://`` store works)."""
        return False

    def answer_run_facts(self, flow_run_id: str, facts: Callable[[], Any]) -> None:
        """Make ``facts()`` (a picklable snapshot of flow run ``flow_run_id``) readable by
        the run's tasks in other processes, which asked for it. Runners whose tasks run in
        this process have nothing to do: tasks read the run's record directly."""

    @abc.abstractmethod
    def submit(self, calls: Sequence[AttemptCall]) -> list[Any]:
        """Submit attempts (one batch) and return one handle each."""

    def run_pending(self) -> None:
        """Execute attempts a runner queued in :meth:`submit` to run in the caller's
        thread. The engine calls it after releasing its lock; most runners have
        nothing to do here."""

    @abc.abstractmethod
    def add_done_callback(self, handle: Any, callback: Callable[[Any], None]) -> None:
        """Call ``callback(handle)`` from any thread once the attempt has ended."""

    @abc.abstractmethod
    def outcome(self, handle: Any) -> Outcome:
        """How a finished handle ended, with its exception (blocking fetch allowed)."""

    @abc.abstractmethod
    def outcome_known_failed(self, handle: Any) -> bool:
        """Cheap, non-blocking: has this attempt already ended without a value?"""

    @abc.abstractmethod
    def result(self, handle: Any, timeout: float | None = None) -> Any:
        """Bring a finished attempt's value to the caller."""

    @abc.abstractmethod
    def cancel(self, handles: Sequence[Any]) -> None:
        """Cancel attempts that have not finished (a running thread is not interrupted)."""

    @abc.abstractmethod
    def subscribe(self, flow_run_id: str, sink: ReportSink) -> None:
        """Deliver the reports of ``flow_run_id``'s attempts to ``sink``."""

    @abc.abstractmethod
    def unsubscribe(self, flow_run_id: str) -> None:
        """Stop delivering reports for ``flow_run_id``."""

    @property
    def dashboard_link(self) -> str | None:
        """Where a person can watch the work, if anywhere."""
        return None

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._settings().items() if v is not None)
        return f"{type(self).__name__}({args})"
