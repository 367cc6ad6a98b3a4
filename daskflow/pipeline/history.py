"""The driver's recorder: writes a flow run's history to the store in batches.

One background thread per flow run wakes every ``daskflow.history.flush-interval``
seconds and writes what changed since its last flush: the task runs whose state
changed (one segment), the new log lines (one segment), new artifacts (one
segment) and the run record with a fresh heartbeat. Nothing on the engine's
path waits for storage: a state change only puts the task run in a dict.

At the end of the run the recorder writes everything left, compacts the task
segments into one and writes the final run record before the flow call returns,
so a reader right after sees the final state.

The recorder also checks, once per heartbeat, whether ``daskflow cancel`` asked
for the run to stop, and runs the heartbeat sweep once when a top-level run
starts (runs whose drivers died are marked Crashed).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import traceback
from typing import Any, Callable

import dask.config

from .. import config
from ..exceptions import StorageError
from ..masking import mask, mask_value
from ..storage.records import FORMAT, History, RunWriter
from ..storage.retry import RetryPolicy, transient_kind
from ..storage.store import Store
from .artifacts import ArtifactCursor
from .runs import Artifact, FlowRun, LogLine, TaskRun
from .states import State

__all__ = ["RunRecorder", "artifact_record", "history_enabled", "log_record", "run_record", "state_record", "task_record"]

logger = logging.getLogger("daskflow.runs")


def history_enabled() -> bool:
    """Config ``daskflow.history.enabled`` (default True)."""
    return bool(dask.config.get("daskflow.history.enabled", True))


def _seconds(name: str, default: float) -> float:
    return max(config.seconds(f"daskflow.history.{name}", default), 0.01)


def state_record(state: State) -> dict[str, Any]:
    """A state as JSON: type, name, timestamp, message (masked)."""
    return {"type": state.type.value, "name": state.name, "timestamp": state.timestamp, "message": mask(state.message or "")}


def task_record(tr: TaskRun) -> dict[str, Any]:
    """A task run as JSON, secrets masked."""
    return {
        "id": tr.id,
        "seq": tr.seq,
        "name": tr.name,
        "task_name": tr.task_name,
        "index": tr.index,
        "tags": list(tr.tags),
        "upstream": list(tr.upstream_ids),
        "wait_for": list(tr.wait_for_ids),
        "state": state_record(tr.state),
        "history": [[s.type.value, s.name, s.timestamp, mask(s.message or "")] for s in list(tr.state_history)],
        "attempts": tr.attempts,
        "dask_keys": list(tr.dask_keys),
        "worker": tr.worker,
        "start_time": tr.start_time,
        "end_time": tr.end_time,
        "error": mask(tr.error) if tr.error else None,
        "traceback": mask(tr.traceback) if tr.traceback else None,
        "cache_key": tr.cache_key,
        "cache_hit": tr.cache_hit,
        "result_url": tr.result_url,
        "reloads": tr.reloads,
        "storage_retries": tr.storage_retries,
        "nested_runs": [list(run) for run in list(tr.nested_runs)],
    }


def log_record(line: LogLine) -> dict[str, Any]:
    return {"t": line.timestamp, "l": line.level, "m": line.message, "tr": line.task_run_id, "tn": line.task_run_name}


def artifact_record(artifact: Artifact) -> dict[str, Any]:
    return {
        "id": artifact.id,
        "type": artifact.type,
        "key": artifact.key,
        "description": mask(artifact.description) if artifact.description else None,
        "data": mask_value(artifact.data),
        "created": artifact.created,
        "task_run_id": artifact.task_run_id,
        "task_run_name": artifact.task_run_name,
    }


def run_record(flow_run: FlowRun, now: float | None = None) -> dict[str, Any]:
    """A flow run as JSON (parameters and messages masked); ``now`` is its heartbeat."""
    link = flow_run.started_by
    return {
        "format": FORMAT,
        "id": flow_run.id,
        "name": flow_run.name,
        "flow_name": flow_run.flow_name,
        "version": flow_run.version,
        "parameters": mask_value(flow_run.parameters),
        "tags": list(flow_run.tags),
        "state": state_record(flow_run.state),
        "state_history": [state_record(s) for s in list(flow_run.state_history)],
        "start_time": flow_run.start_time,
        "end_time": flow_run.end_time,
        # The run that started this one: as a subflow, or through a task run (nested).
        "parent_flow_run_id": link.flow_run_id if link else flow_run.parent_flow_run_id,
        "parent_flow_run_name": link.flow_run_name if link else flow_run.parent_flow_run_name,
        "parent_task_run_id": link.task_run_id if link else None,
        "parent_task_run_name": link.task_run_name if link else None,
        "subflow_run_ids": [sub.id for sub in list(flow_run.subflow_runs)],
        "result_storage": flow_run.result_storage,
        "history_url": flow_run.history_url,
        "runner": flow_run.runner,
        "dashboard_link": flow_run.dashboard_link,
        "status_link": flow_run.status_link,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "heartbeat": now if now is not None else time.time(),
        "task_counts": flow_run.state_counts(),
        "task_runs": len(flow_run.task_runs),
        "cached": flow_run.cache_hits(),
        "traceback": _error_text(flow_run.state),
        "created": flow_run.created,
        "deployment_id": flow_run.deployment_id,
        "deployment_name": flow_run.deployment_name,
        "scheduled_time": flow_run.scheduled_time,
        "work_queue": flow_run.work_queue,
    }


def _error_text(state: State) -> str | None:
    error = state.data if isinstance(state.data, BaseException) else None
    if error is None or not (state.is_failed() or state.is_crashed()):
        return None
    return mask("".join(traceback.format_exception(type(error), error, error.__traceback__)).rstrip())


class RunRecorder:
    """Persists one flow run's record, task runs, logs and artifacts.

    Parameters
    ----------
    flow_run : FlowRun
        The run to record; it joins ``task_listeners`` so task runs report changes.
    store : Store
        Where ``runs/`` lives (the run's result storage root).
    sweep : bool
        Run the heartbeat sweep of the store once, in the background (top-level runs).
    """

    def __init__(self, flow_run: FlowRun, store: Store, *, sweep: bool = False) -> None:
        self.flow_run = flow_run
        self.store = store
        self.writer = RunWriter(store, flow_run.id, flow_run.created or flow_run.start_time)
        self.interval = _seconds("flush-interval", 2.0)
        self.heartbeat = _seconds("heartbeat", 10.0)
        flow_run.history_url = self.writer.url
        flow_run.task_listeners.append(self._changed)
        #: Called with the reason when ``daskflow cancel`` asks the run to stop.
        self.on_cancel: Callable[[str], None] | None = None
        self._sweep = sweep
        self._dirty: dict[str, TaskRun] = {}
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._logs_done = 0
        self._artifacts = ArtifactCursor()
        self._last_beat = 0.0
        self._last_check = 0.0
        self._cancel_seen = False
        self._failing = False
        self._final_failed = False
        self._last_error: BaseException | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Write the first record and start flushing in the background."""
        self._thread = threading.Thread(target=self._loop, name=f"daskflow-history-{self.flow_run.name}", daemon=True)
        self._thread.start()

    def _changed(self, task_run: TaskRun) -> None:
        with self._lock:
            self._dirty[task_run.id] = task_run

    def _loop(self) -> None:
        if self._sweep:
            try:
                marked = History(self.store).sweep()
                if marked:
                    logger.warning("marked %d run(s) Crashed whose drivers stopped sending heartbeats: %s", len(marked), ", ".join(marked))
            except Exception:  # the sweep is housekeeping: never fail a run for it
                logger.debug("heartbeat sweep of %s failed", self.store.url, exc_info=True)
        while True:
            self.flush()
            try:
                self._check_cancel()
            except Exception:  # never let the recorder thread die: the run still needs its record
                logger.warning("Flow run %r - checking for a cancel request failed", self.flow_run.name, exc_info=True)
            if self._stop.wait(self.interval):
                return

    def flush(self, final: bool = False) -> bool:
        """Write what changed since the last flush (everything, compacted, if
        ``final``); False if the store refused (it is tried again next time)."""
        with self._write_lock:
            with self._lock:
                dirty, self._dirty = self._dirty, {}
            flow_run = self.flow_run
            logs = flow_run.logs[self._logs_done :]
            artifacts = self._artifacts.due(flow_run.artifacts)
            now = time.time()
            if not (dirty or logs or artifacts or final) and now - self._last_beat < self.heartbeat:
                return True
            try:
                if final:
                    self.writer.compact_tasks([task_record(tr) for tr in list(flow_run.task_runs.values())])
                else:
                    self.writer.append("tasks", [task_record(tr) for tr in dirty.values()])
                self.writer.append("logs", [log_record(line) for line in logs])
                self._logs_done += len(logs)
                self.writer.append("artifacts", [artifact_record(a) for a in artifacts])
                self._artifacts.sent(artifacts)
                self.writer.write_run(run_record(self.flow_run, now))
                self._last_beat = now
                if self._failing:
                    logger.info("Flow run %r - writing its history to %s works again", flow_run.name, self.writer.url)
                    self._failing = False
                return True
            except Exception as exc:  # history is a record of the run, not the run: warn, go on, retry
                with self._lock:
                    for key, task_run in dirty.items():
                        self._dirty.setdefault(key, task_run)
                if not self._failing or (final and not self._final_failed):
                    unexpected = not isinstance(exc, (StorageError, OSError))
                    logger.warning(
                        "Flow run %r - cannot write its history to %s: %s", flow_run.name, self.writer.url, exc, exc_info=unexpected
                    )
                    self._failing = True
                self._final_failed = self._final_failed or final
                self._last_error = exc
                return False

    def _check_cancel(self) -> None:
        now = time.time()
        if self._cancel_seen or self.on_cancel is None or now - self._last_check < min(self.heartbeat, 5.0):
            return
        self._last_check = now
        try:
            request = self.writer.cancel_requested()
        except (StorageError, OSError):
            return
        if request is not None:
            self._cancel_seen = True
            reason = str(request.get("reason") or "cancelled with daskflow cancel")
            logger.warning("Flow run %r - %s", self.flow_run.name, reason)
            self.on_cancel(reason)

    def close(self) -> None:
        """Stop the thread and write the final record (call after the run's final state).

        While the store refuses, the final record is tried again for up to config
        ``daskflow.history.final-write-budget`` seconds: a run that ended during a
        storage outage must read as what it was (Failed, Completed), not stay
        Running until the heartbeat sweep calls it Crashed.
        """
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self.flush(final=True):
            return
        if self._last_error is None or transient_kind(self._last_error) is None:
            return  # not an outage (a record that cannot be written, a file where a folder belongs): trying again cannot help
        budget = config.seconds("daskflow.history.final-write-budget", 60.0)
        started = time.monotonic()
        name, state = self.flow_run.name, self.flow_run.state.name
        if budget > 0:
            logger.warning(
                "Flow run %r - retrying its final record (%s) for up to %g s (config daskflow.history.final-write-budget)",
                name, state, budget,
            )
        # Jittered backoff as for any storage call: the drivers of many runs cut
        # off by one outage do not all come back at the same instant.
        backoff = RetryPolicy(base_delay=1.0, max_delay=5.0)
        tries = 0
        while time.monotonic() - started < budget:
            tries += 1
            time.sleep(min(backoff.delay(tries), max(budget - (time.monotonic() - started), 0.0)))
            if self.flush(final=True):
                logger.warning("Flow run %r - final record (%s) written after %.1f s", name, state, time.monotonic() - started)
                return
        logger.error(
            "Flow run %r - its final state %s is not recorded in %s: the store refused for %.0f s; its record says it "
            "is still running until the heartbeat sweep marks it Crashed (config daskflow.history.final-write-budget)",
            name, state, self.writer.url, time.monotonic() - started,
        )
