"""The live state of flow runs on the scheduler, as their drivers push it.

A driver sends batches of the same records the run history writes (see
:mod:`daskflow.pipeline.history`): the flow-run record, the task runs that
changed, new log lines and new artifacts. :class:`LiveRuns` merges them and
keeps memory bounded: at most ``max_runs`` runs (finished ones are dropped
first, oldest first) and ``max_log_lines`` lines per run.

A serve loop sends (see :func:`daskflow.status.deployments.publish`) the rows
of the deployments view, which replace the whole list (at most
``max_deployments`` kept), and the runs it made that wait to start
(``Scheduled``, ``Late``): those never overwrite what a run's own driver
pushed, and are the first dropped after finished runs.

It is plain Python with no locking: on the scheduler every read and write
happens on its event loop.
"""

from __future__ import annotations

import re
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from .._names import same_name
from ..exceptions import InvalidOptionError, RunNotFoundError
from ..storage.records import matches_filters, run_ended
from .charts import run_time

__all__ = ["LiveRun", "LiveRuns"]


@dataclass(eq=False)
class LiveRun:
    """One flow run as last pushed by its driver."""

    record: dict[str, Any]
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)
    logs: deque[dict[str, Any]] = field(default_factory=deque)
    artifacts: list[dict[str, Any]] = field(default_factory=list)
    #: Position of each artifact id in ``artifacts``.
    artifact_index: dict[Any, int] = field(default_factory=dict)
    #: The Dask client id of the driver (its disconnect ends a running run).
    client: str | None = None
    #: Bumped on every change, so a page can skip redrawing what did not change.
    version: int = 0

    @property
    def id(self) -> str:
        return self.record["id"]

    @property
    def finished(self) -> bool:
        return run_ended(self.record)

    def task_list(self) -> list[dict[str, Any]]:
        return sorted(self.tasks.values(), key=lambda t: t.get("seq", 0))


class LiveRuns:
    """Flow runs merged from driver batches, bounded in memory.

    Parameters
    ----------
    max_runs : int
        Runs kept; past it, the oldest finished run is dropped (a running run
        only when every kept run is running).
    max_log_lines : int
        Log lines kept per run (the newest).
    max_task_runs : int
        Task-run records kept over all runs; past it, finished runs are dropped,
        oldest first (a week of sweeps must not grow the scheduler's memory).
    max_deployments : int
        Deployment rows kept (the first, in the order pushed); the others are
        counted in :attr:`deployments_dropped`.
    """

    def __init__(
        self, max_runs: int = 500, max_log_lines: int = 10_000, max_task_runs: int = 200_000, max_deployments: int = 5_000
    ) -> None:
        limits = (("max_runs", max_runs), ("max_log_lines", max_log_lines), ("max_task_runs", max_task_runs), ("max_deployments", max_deployments))
        for name, value in limits:
            if not isinstance(value, int) or value < 1:
                raise InvalidOptionError(f"daskflow.status.{name.replace('_', '-')} must be a positive integer, got {value!r}")
        self.max_runs = max_runs
        self.max_log_lines = max_log_lines
        self.max_task_runs = max_task_runs
        self.max_deployments = max_deployments
        self._runs: dict[str, LiveRun] = {}
        self._deployments: list[dict[str, Any]] = []
        #: Rows past ``max_deployments`` in the last push.
        self.deployments_dropped = 0
        #: Bumped on every change to any run or to the deployments.
        self.version = 0

    def __len__(self) -> int:
        return len(self._runs)

    def update(self, batch: dict[str, Any], client: str | None = None) -> None:
        """Merge one batch.

        A driver's: ``{"run": record, "tasks": [...], "logs": [...], "artifacts": [...]}``.
        A serve loop's: ``{"deployments": [row, ...], "runs": [record, ...]}``,
        either key alone, or with ``"run"`` too.

        Raises
        ------
        InvalidOptionError
            For a batch with none of ``run``, ``runs``, ``deployments``, or
            with a malformed one (nothing is changed then).
        """
        rows = batch.get("deployments")
        waiting = batch.get("runs")
        record = batch.get("run")
        if rows is not None and (not isinstance(rows, (list, tuple)) or not all(isinstance(r, dict) and isinstance(r.get("name"), str) for r in rows)):
            raise InvalidOptionError("a status batch's deployments must be a list of rows with a name")
        if waiting is not None and (not isinstance(waiting, (list, tuple)) or not all(_has_id(r) for r in waiting)):
            raise InvalidOptionError("a status batch's runs must be a list of run records with an id")
        if record is None and (rows is not None or waiting is not None):
            self._merge_serve_loop(rows, waiting or [])
            return
        if not _has_id(record):
            raise InvalidOptionError(f"a status batch needs a run record with an id, got {type(record).__name__}")
        if rows is not None or waiting:
            self._merge_serve_loop(rows, waiting or [])
        live = self._runs.get(record["id"])
        if live is None:
            live = self._runs[record["id"]] = LiveRun(record, logs=deque(maxlen=self.max_log_lines))
            self._evict()
        live.record = record
        if client is not None:
            live.client = client
        for task in batch.get("tasks") or ():
            live.tasks[task["id"]] = task
        live.logs.extend(batch.get("logs") or ())
        for artifact in batch.get("artifacts") or ():
            # A progress artifact comes again after each update: replace its copy.
            index = live.artifact_index.get(artifact.get("id"))
            if index is None:
                live.artifact_index[artifact.get("id")] = len(live.artifacts)
                live.artifacts.append(artifact)
            else:
                live.artifacts[index] = artifact
        live.version += 1
        self.version += 1
        if live.finished:
            self._evict_tasks(keep=live.id)

    def _merge_serve_loop(self, rows: list[dict[str, Any]] | None, waiting: list[dict[str, Any]]) -> None:
        if rows is not None:
            self._deployments = rows[: self.max_deployments]
            self.deployments_dropped = max(len(rows) - self.max_deployments, 0)
        for record in waiting:
            live = self._runs.get(record["id"])
            if live is not None and (live.client is not None or live.finished):
                continue  # its driver (or its end) knows better than the loop that made it
            if live is None:
                live = self._runs[record["id"]] = LiveRun(record, logs=deque(maxlen=self.max_log_lines))
                self._evict()
            live.record = record
            live.version += 1
        self.version += 1

    def deployments(self) -> list[dict[str, Any]]:
        """The deployment rows last pushed (see :func:`~daskflow.status.deployments.deployment_rows`)."""
        return list(self._deployments)

    def _evict(self) -> None:
        # Finished runs go first, then runs a serve loop pushed that no driver
        # took yet (a backfill of 1,000 slots must not push running runs off
        # the page), then the oldest.
        while len(self._runs) > self.max_runs:
            finished = next((run_id for run_id, run in self._runs.items() if run.finished), None)
            if finished is None:
                finished = next((run_id for run_id, run in self._runs.items() if run.client is None), None)
            del self._runs[finished if finished is not None else next(iter(self._runs))]

    def _evict_tasks(self, keep: str) -> None:
        total = sum(len(run.tasks) for run in self._runs.values())
        for run_id in [run_id for run_id, run in self._runs.items() if run.finished and run_id != keep]:
            if total <= self.max_task_runs:
                return
            total -= len(self._runs.pop(run_id).tasks)

    def client_gone(self, client: str) -> list[str]:
        """End the running runs whose driver (Dask client ``client``) disconnected.

        Returns the ids of the runs marked Crashed. A driver that reconnects and
        pushes again overwrites the mark.
        """
        marked = []
        now = time.time()
        for live in self._runs.values():
            if live.client != client or live.finished:
                continue
            crashed = {
                "type": "CRASHED",
                "name": "Crashed",
                "timestamp": now,
                "message": "its driver disconnected from the scheduler before the run ended",
            }
            live.record = dict(
                live.record,
                state=crashed,
                state_history=[*live.record.get("state_history", []), crashed],
                end_time=now,
            )
            live.version += 1
            marked.append(live.id)
        if marked:
            self.version += 1
        return marked

    def runs(
        self,
        *,
        flow: str | None = None,
        state: str | None = None,
        tag: str | None = None,
        since: float | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """Run records, newest first (a run not started yet by its scheduled time), filtered like ``daskflow runs ls``."""
        out = []
        for live in sorted(self._runs.values(), key=lambda r: run_time(r.record), reverse=True):
            if matches_filters(live.record, flow=flow, state=state, tag=tag, since=since):
                out.append(live.record)
                if limit is not None and len(out) >= limit:
                    break
        return out

    def get(self, ref: str) -> LiveRun:
        """The run whose id, id prefix (6+ characters) or name is ``ref``.

        Raises
        ------
        RunNotFoundError
            If none or several runs match.
        """
        ref = ref.strip()
        if ref in self._runs:
            return self._runs[ref]
        if re.fullmatch(r"[0-9a-f]{6,32}", ref):
            matches = [run for run_id, run in self._runs.items() if run_id.startswith(ref)]
            if len(matches) == 1:
                return matches[0]
        named = [run for run in self._runs.values() if run.record.get("name") == ref]
        # Else the name in its other spelling (a run of a flow named before flow names had hyphens).
        named = named or [run for run in self._runs.values() if same_name(run.record.get("name"), ref)]
        if len(named) == 1:
            return named[0]
        raise RunNotFoundError(f"no live run {ref!r} on this scheduler; it may have been dropped, see its stored history")


def _has_id(record: Any) -> bool:
    return isinstance(record, dict) and isinstance(record.get("id"), str)
