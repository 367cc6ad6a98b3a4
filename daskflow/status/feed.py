"""The driver's live feed: pushes a flow run's records to the scheduler's status page.

:func:`watch` is registered in :data:`daskflow.pipeline.flow.RUN_WATCHERS`. For a
run on a :class:`~daskflow.runners.dask.DaskTaskRunner` it makes sure the
scheduler has the :class:`~daskflow.status.plugin.StatusPlugin` (registering it
from the client, once per client), then starts a :class:`LiveFeed`: one thread
that every ``daskflow.status.interval`` seconds sends what changed (the run
record, changed task runs, new log lines and artifacts, the same records the run
history writes) in one scheduler RPC. The engine's only cost is a dict insert
per state change. A scheduler that cannot take the plugin (daskflow not
installed there, plugin registration blocked) costs one warning: the run goes
on without a live page.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable

import dask.config

from ..pipeline.artifacts import ArtifactCursor
from ..pipeline.history import artifact_record, log_record, run_record, task_record
from ..pipeline.runs import FlowRun, TaskRun
from ..runners.base import TaskRunner
from ..storage.records import without_surrogates

__all__ = ["LiveFeed", "status_link", "status_enabled", "watch"]

logger = logging.getLogger("daskflow.status")

#: The scheduler RPC the feed calls (registered by the plugin).
UPDATE_HANDLER = "daskflow_status"
#: Task-run records per RPC (a first push of a 10,000-task map goes in a few messages).
BATCH_TASKS = 2_000

# Whether each scheduler (address and id: a restarted one is another) has the
# plugin: asked once, not once per flow run's client.
_plugin_on: dict[tuple[str, str | None], bool] = {}
_plugin_lock = threading.Lock()


def status_enabled() -> bool:
    return bool(dask.config.get("daskflow.status.enabled", True))


def status_link(dashboard_link: str | None, run_id: str | None = None) -> str | None:
    """The status page beside a Dask dashboard link (``.../status`` → ``.../daskflow``)."""
    if not dashboard_link:
        return None
    base = dashboard_link[: -len("/status")] if dashboard_link.endswith("/status") else dashboard_link.rstrip("/")
    return f"{base}/daskflow" + (f"?run={run_id}" if run_id else "")


def _ensure_plugin(client: Any) -> bool:
    scheduler = (client.scheduler.address, (getattr(client, "_scheduler_identity", None) or {}).get("id"))
    with _plugin_lock:
        known = _plugin_on.get(scheduler)
        if known is not None:
            return known
        from .plugin import StatusPlugin

        try:
            client.register_plugin(StatusPlugin())  # idempotent: a no-op if a preload installed it
            ok = True
        except Exception as exc:  # the scheduler cannot import daskflow, or blocks plugins
            logger.warning(
                "the daskflow status page is not available on the scheduler at %s (%s: %s); install daskflow "
                "where the scheduler runs, or start it with `dask scheduler --preload daskflow.status`",
                client.scheduler.address, type(exc).__name__, exc,
            )
            ok = False
        if scheduler[1] is not None:
            _plugin_on[scheduler] = ok
        return ok


def watch(flow_run: FlowRun, runner: TaskRunner) -> Callable[[], None] | None:
    """Start the live feed of ``flow_run`` if its runner has a Dask scheduler.

    Returns the feed's ``close`` (call it once the run has its final state).
    """
    from ..runners.dask import DaskTaskRunner

    if not status_enabled() or not isinstance(runner, DaskTaskRunner) or runner._client is None:
        return None
    client = runner.client
    if not _ensure_plugin(client):
        return None
    flow_run.status_link = status_link(runner.dashboard_link, flow_run.id)
    if flow_run.parent_flow_run_id is None and flow_run.status_link:
        logging.getLogger("daskflow.runs").info("Flow run %r - status page: %s", flow_run.name, flow_run.status_link)
    feed = LiveFeed(flow_run, client)
    feed.start()
    return feed.close


class LiveFeed:
    """Pushes one flow run's changes to the scheduler (see the module docstring).

    Parameters
    ----------
    flow_run : FlowRun
        The run; the feed joins its ``task_listeners``.
    client : distributed.Client
        A connected client of the scheduler that has the status plugin.
    interval : float, optional
        Seconds between pushes. Default: config ``daskflow.status.interval``.
    """

    def __init__(self, flow_run: FlowRun, client: Any, interval: float | None = None) -> None:
        self.flow_run = flow_run
        self.client = client
        self.interval = float(interval if interval is not None else dask.config.get("daskflow.status.interval", 0.5))
        # Task runs that ended before the feed began (the cached ones of a run
        # whose cluster started late) go in the first push too.
        self._dirty: dict[str, TaskRun] = {task_run.id: task_run for task_run in list(flow_run.task_runs.values())}
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._logs_done = 0
        self._artifacts = ArtifactCursor()
        self._last_state: Any = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failing = False
        self._disabled = False
        flow_run.add_task_listener(self._changed)  # a feed may begin after the run's first task runs

    def _changed(self, task_run: TaskRun) -> None:
        with self._lock:
            self._dirty[task_run.id] = task_run

    def start(self) -> None:
        self.push()  # the run appears on the page before its first task
        self._thread = threading.Thread(target=self._loop, name=f"daskflow-status-{self.flow_run.name}", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.push()

    def close(self) -> None:
        """Stop the thread and push the final state (call after the run's final state)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self.push(final=True)
        try:
            self.flow_run.task_listeners.remove(self._changed)
        except ValueError:
            pass

    def push(self, final: bool = False) -> None:
        """Send what changed since the last push (nothing if nothing did)."""
        if self._disabled:
            return
        with self._send_lock:
            with self._lock:
                dirty, self._dirty = self._dirty, {}
            flow_run = self.flow_run
            logs = flow_run.logs[self._logs_done :]
            artifacts = self._artifacts.due(flow_run.artifacts)
            state = (flow_run.state.name, flow_run.state.timestamp, len(flow_run.subflow_runs))
            if not (dirty or logs or artifacts or final) and state == self._last_state:
                return
            tasks = [task_record(tr) for tr in dirty.values()]
            record = run_record(flow_run)
            chunks = [tasks[i : i + BATCH_TASKS] for i in range(0, len(tasks), BATCH_TASKS)] or [[]]
            try:
                for chunk in chunks[:-1]:
                    self._send({"run": record, "tasks": chunk})
                self._send(
                    {
                        "run": record,
                        "tasks": chunks[-1],
                        "logs": [log_record(line) for line in logs],
                        "artifacts": [artifact_record(a) for a in artifacts],
                    }
                )
            except Exception as exc:
                with self._lock:
                    for key, task_run in dirty.items():
                        self._dirty.setdefault(key, task_run)
                self._failed(exc)
                return
            self._logs_done += len(logs)
            self._artifacts.sent(artifacts)
            self._last_state = state
            if self._failing:
                logger.info("Flow run %r - the status page is fed again", flow_run.name)
                self._failing = False

    def _send(self, batch: dict[str, Any]) -> None:
        client = self.client
        rpc = getattr(client.scheduler, UPDATE_HANDLER)
        try:
            client.sync(rpc, batch=batch, driver=client.id, callback_timeout=30)
        except UnicodeEncodeError:
            # A lone surrogate somewhere (msgpack refuses it before anything is
            # sent): send the text as the history writes it. Only then, so a
            # push does not pay for a walk over every record.
            client.sync(rpc, batch=without_surrogates(batch), driver=client.id, callback_timeout=30)

    def _failed(self, exc: Exception) -> None:
        text = str(exc)
        if "No handler" in text or "unknown operation" in text.lower() or isinstance(exc, KeyError):
            # The plugin went away (unregistered, or a scheduler restarted without it).
            self._disabled = True
            logger.warning("Flow run %r - the scheduler no longer takes status updates (%s); the live page stops here", self.flow_run.name, exc)
            return
        if not self._failing:
            logger.warning("Flow run %r - cannot update the status page: %s: %s (retrying)", self.flow_run.name, type(exc).__name__, exc)
            self._failing = True
