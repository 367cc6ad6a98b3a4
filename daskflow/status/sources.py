"""Where the status page reads runs from: the scheduler's live state, or stored history.

Both give the same records (those of :mod:`daskflow.pipeline.history`), so the
page and the JSON routes have one code path. :class:`LiveSource` reads memory on
the scheduler's event loop; :class:`HistorySource` reads a store, which blocks,
so callers run it in a thread (``blocking`` says which). Both also give the
rows of the deployments view (:mod:`daskflow.status.deployments`).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Protocol

from ..deployments.registry import Registry
from ..storage.records import History, run_ended
from .deployments import attach_live_runs, store_rows
from .state import LiveRuns

__all__ = ["HistorySource", "LiveSource", "RunDetail", "RunSource"]

#: Seconds after which the deployments view is read again even if nothing else changed.
DEPLOYMENTS_EVERY = 10.0


@dataclass(frozen=True)
class RunDetail:
    """A flow run with its task runs and artifacts (logs are read apart: they can be long)."""

    record: dict[str, Any]
    tasks: list[dict[str, Any]]
    artifacts: list[dict[str, Any]]
    #: Changes whenever the run does (compare to skip redrawing).
    version: Any

    @property
    def id(self) -> str:
        return self.record["id"]

    @property
    def finished(self) -> bool:
        return run_ended(self.record)


class RunSource(Protocol):
    """What the page and the JSON routes need from a source of runs."""

    #: Shown in the page header ("live on the scheduler", "history in file:///...").
    label: str
    #: Whether calls block (read storage): then they run in a thread.
    blocking: bool
    #: Seconds between checks for changes.
    poll_interval: float
    #: The Dask dashboard's own pages (``/status``) sit beside this one.
    on_dashboard: bool

    def runs(
        self,
        *,
        flow: str | None = None,
        state: str | None = None,
        tag: str | None = None,
        since: float | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]: ...

    def detail(self, ref: str) -> RunDetail: ...

    def logs(self, ref: str, task: str | None = None) -> list[dict[str, Any]]: ...

    def run_version(self, ref: str) -> Any:
        """Cheap: what :attr:`RunDetail.version` would be, or ``None`` if unknown without reading."""
        ...

    def cancel(self, ref: str, reason: str) -> str: ...

    def version(self) -> Any: ...

    def deployments(self) -> list[dict[str, Any]]:
        """Rows of the deployments view, sorted by name."""
        ...

    def deployments_version(self) -> Any:
        """Cheap: changes when :meth:`deployments` may have (and with time: fire times pass)."""
        ...


def _task_logs(lines: list[dict[str, Any]], task: str | None) -> list[dict[str, Any]]:
    if task is None:
        return lines
    return [line for line in lines if line.get("tn") == task or (line.get("tn") or "").rsplit("-", 1)[0] == task]


class LiveSource:
    """Runs as the scheduler plugin holds them (call on the scheduler's event loop).

    Parameters
    ----------
    runs : callable
        Returns the plugin's current :class:`~daskflow.status.state.LiveRuns`
        (looked up per call: a plugin registered again replaces it).
    send_cancel : callable
        ``send_cancel(run_id, reason)`` tells the run's driver to cancel.
    """

    blocking = False
    poll_interval = 1.0
    on_dashboard = True

    def __init__(self, runs: Callable[[], LiveRuns], send_cancel: Callable[[str, str], None], label: str = "live on the Dask scheduler") -> None:
        self._runs = runs
        self._send_cancel = send_cancel
        self.label = label

    def runs(self, **filters: Any) -> list[dict[str, Any]]:
        return self._runs().runs(**filters)

    def detail(self, ref: str) -> RunDetail:
        live = self._runs().get(ref)
        return RunDetail(live.record, live.task_list(), list(live.artifacts), (id(live), live.version))

    def logs(self, ref: str, task: str | None = None) -> list[dict[str, Any]]:
        return _task_logs(list(self._runs().get(ref).logs), task)

    def run_version(self, ref: str) -> Any:
        live = self._runs().get(ref)
        return (id(live), live.version)

    def cancel(self, ref: str, reason: str) -> str:
        live = self._runs().get(ref)
        if live.finished:
            return f"run {live.record.get('name')} already ended {live.record['state'].get('name')}"
        self._send_cancel(live.id, reason)
        return f"asked the driver of {live.record.get('name')} to cancel it"

    def version(self) -> Any:
        runs = self._runs()
        return (id(runs), runs.version)

    def deployments(self) -> list[dict[str, Any]]:
        runs = self._runs()
        rows = attach_live_runs(runs.deployments(), runs.runs(), time.time())
        return sorted(rows, key=lambda row: row.get("name") or "")

    def deployments_version(self) -> Any:
        runs = self._runs()
        return (id(runs), runs.version, int(time.time() // DEPLOYMENTS_EVERY))


class HistorySource:
    """Runs as recorded in a store's ``runs/`` folder (blocking reads).

    A finished run's detail is read once and kept; a running one is read again
    when asked (its driver flushes every ``daskflow.history.flush-interval``).
    """

    blocking = True
    on_dashboard = False

    def __init__(self, history: History, poll_interval: float = 2.0) -> None:
        self.history = history
        self.poll_interval = poll_interval
        self.label = f"history in {history.store.url}"
        self.registry = Registry(history.store)
        self._finished: dict[str, RunDetail] = {}
        self._lock = threading.Lock()
        self._deployments: tuple[Any, list[dict[str, Any]]] = (None, [])

    def runs(self, **filters: Any) -> list[dict[str, Any]]:
        return self.history.runs(**filters)

    def detail(self, ref: str) -> RunDetail:
        with self._lock:
            kept = self._finished.get(ref)
        if kept is not None:
            return kept
        entry = self.history.resolve(ref)
        record = self.history.run(entry)
        tasks = self.history.tasks(entry)
        artifacts = self.history.artifacts(entry)
        detail = RunDetail(record, tasks, artifacts, (record.get("heartbeat"), record["state"].get("timestamp"), len(tasks)))
        if detail.finished:
            with self._lock:
                if len(self._finished) > 64:  # a long-lived `daskflow ui` must not keep every run it showed
                    self._finished.clear()
                self._finished[ref] = self._finished[entry.run_id] = detail
        return detail

    def logs(self, ref: str, task: str | None = None) -> list[dict[str, Any]]:
        return self.history.logs(self.history.resolve(ref), task)

    def run_version(self, ref: str) -> Any:
        with self._lock:
            kept = self._finished.get(ref)
        return kept.version if kept is not None else None  # a running run: read it to know

    def cancel(self, ref: str, reason: str) -> str:
        entry = self.history.resolve(ref)
        record = self.history.run(entry)
        if run_ended(record):
            return f"run {record.get('name')} already ended {record['state'].get('name')}"
        self.history.request_cancel(entry, reason)
        return f"asked the driver of {record.get('name')} to cancel it (it checks every few seconds)"

    def version(self) -> Any:
        # A listing is cheap next to reading records; new runs change it, and the
        # page re-reads running runs on its own.
        return (len(self.history.entries()), time.time() // max(self.poll_interval, 1.0))

    def deployments(self) -> list[dict[str, Any]]:
        """Every registered deployment with its last run among the newest
        :data:`~daskflow.status.deployments.RECENT_RUNS` runs (blocking: reads the store)."""
        key = self.deployments_version()
        with self._lock:
            if self._deployments[0] == key:
                return self._deployments[1]  # several sessions and the JSON route share one read
        rows = store_rows(self.history.store)
        with self._lock:
            self._deployments = (key, rows)
        return rows

    def deployments_version(self) -> Any:
        # The registry's marker changes with every registration, pause and
        # removal; new runs change the listing; time moves the fire times and
        # brings Late marks (written beside a run, not in the listing).
        return (self.registry.version(), len(self.history.entries()), int(time.time() // DEPLOYMENTS_EVERY))
