"""The serve loop: fires the deployments' due slots, once each, and hands the runs to the cluster.

One :class:`Serve` per process (``daskflow serve``, or ``flow.serve()``), any
number per store. Each pass (:meth:`Serve.tick`):

1. **Refresh.** Every ``daskflow.deployments.refresh`` seconds it reads the store's
   small ``deployments/VERSION`` marker and reloads the deployments only when it
   changed.
2. **Fire.** For every schedule whose next slot is due it commits the slot's
   fire record create-only; only the loop whose write wins creates the run
   (``Scheduled``, before anything starts) and submits its flow-run task. Slots
   the loop reached more than ``daskflow.deployments.catchup-after`` seconds late
   (it was down, or the machine slept) follow the deployment's catch-up policy.
3. **Watch.** Runs it submitted announce their start on an event topic; one not
   started ``daskflow.deployments.late-after`` seconds after its slot is marked
   ``Late`` (and notified), with the reason when it can tell (no worker serves
   its queue). A finished run that Failed or Crashed is notified.

Between passes it sleeps until the earliest of: the next slot of any schedule,
the next refresh, the next Late check. Nothing polls.

Exactly once per slot: a restarted loop resumes from each schedule's cursor and
tries every slot since; slots already fired lose the create-only write and are
skipped. A slot whose winner died between its fire record and its run (the only
window where a slot could be lost) is taken over by any loop once the fire
record is ``daskflow.deployments.takeover-after`` seconds old, again with create-only
writes, so at most one run is ever made. SIGTERM stops the loop between passes:
a slot being fired is finished first.
"""

from __future__ import annotations

import heapq
import logging
import math
import queue
import threading
import time
import uuid
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterable

from .. import config
from .._names import same_name
from ..exceptions import InvalidOptionError, StorageError
from ..storage.records import RUNS, RunWriter
from ..storage.store import Store
from .deployment import DEFAULT_QUEUE
from .launch import (
    DEPLOY_TOPIC,
    RunRequest,
    claim_slot,
    create_run,
    finish_crashed,
    mark_late,
    queue_resource,
    request_of,
    submit_run,
    submit_runs,
)
from .registry import Registry
from .schedules import Schedule, schedule_from_dict

__all__ = ["Clock", "ManualClock", "Serve", "serve"]

logger = logging.getLogger("daskflow.deployments")

#: Seconds between writes of the schedules' cursors (a hint for restarts: a stale
#: one costs a few create-only writes that lose, never a duplicate).
CURSOR_INTERVAL = 30.0
#: Enumerating missed slots stops after this many (a minutely schedule down a year).
MAX_MISSED_SCAN = 100_000
#: Seconds before a pass that failed unexpectedly is tried again.
RETRY_AFTER = 5.0
#: Runs :attr:`Serve.created` remembers.
CREATED_KEPT = 10_000


def _seconds(name: str, default: float) -> float:
    return config.seconds(f"daskflow.deployments.{name}", default)


class Clock:
    """The loop's time: ``now()`` and a sleep that a wake-up event cuts short."""

    def now(self) -> float:
        return time.time()

    def sleep(self, wake: threading.Event, seconds: float) -> None:
        wake.wait(max(seconds, 0.0))


class ManualClock(Clock):
    """A clock that moves only when told (tests of schedules, DST days, catch-up).

    Parameters
    ----------
    start : float or datetime
        The time it shows first.
    """

    def __init__(self, start: float | datetime) -> None:
        self._now = start.timestamp() if isinstance(start, datetime) else float(start)
        self._changed = threading.Condition()

    def now(self) -> float:
        with self._changed:
            return self._now

    def set(self, when: float | datetime) -> None:
        with self._changed:
            self._now = when.timestamp() if isinstance(when, datetime) else float(when)
            self._changed.notify_all()

    def advance(self, seconds: float) -> None:
        with self._changed:
            self._now += seconds
            self._changed.notify_all()

    def sleep(self, wake: threading.Event, seconds: float) -> None:
        with self._changed:
            deadline = self._now + max(seconds, 0.0)
            while self._now < deadline and not wake.is_set():
                self._changed.wait(0.05)


@dataclass
class _Entry:
    """One schedule of one deployment, as the loop fires it."""

    deployment: dict[str, Any]
    schedule: Schedule
    #: The latest slot handled (fired, or skipped by the catch-up policy).
    cursor: float
    next: float | None = None
    cursor_dirty: bool = False


@dataclass
class _InFlight:
    """A run this loop submitted and watches until it ends."""

    request: RunRequest
    future: Any
    started: bool = False
    late: bool = False
    resubmits: int = 0
    #: Its Scheduled record as written (what the live page shows until it starts).
    record: dict[str, Any] | None = None


@dataclass
class _Takeover:
    at: float
    deployment: str
    schedule: str
    slot: datetime = field(compare=False)


class Serve:
    """Fire deployments' scheduled runs and run them on a Dask cluster.

    Parameters
    ----------
    store : Store
        The store holding the deployments (and where runs are recorded).
    client : distributed.Client
        A client of the cluster the runs go to.
    names : iterable of str, optional
        Serve only these deployments (``flow.serve()`` serves its own).
    queues : iterable of str, optional
        Serve only deployments of these work queues.
    clock : Clock, optional
        Where time comes from (a :class:`ManualClock` in tests).
    notifier : WebhookNotifier or False, optional
        Told of Failed, Crashed and Late runs. Default: config
        ``daskflow.notifications``; ``False`` for none.
    """

    def __init__(
        self,
        store: Store,
        client: Any,
        *,
        names: Iterable[str] | None = None,
        queues: Iterable[str] | None = None,
        clock: Clock | None = None,
        notifier: Any = None,
    ) -> None:
        from .notify import notifier_from_config

        self.store = store
        self.client = client
        self.registry = Registry(store)
        self.names = set(names) if names else None
        self.queues = set(queues) if queues else None
        self.clock = clock or Clock()
        # ``notifier=False``: none, whatever the config says.
        self.notifier = notifier_from_config() if notifier is None else (notifier or None)
        self.refresh_every = _seconds("refresh", 10.0)
        self.late_after = _seconds("late-after", 30.0)
        self.catchup_after = _seconds("catchup-after", 60.0)
        self.takeover_after = _seconds("takeover-after", 30.0)
        #: This loop's id in the fire records it writes.
        self.instance = uuid.uuid4().hex[:12]
        self._version: str | None = None
        self._deployments: dict[str, dict[str, Any]] = {}
        self._entries: dict[tuple[str, str], _Entry] = {}
        self._heap: list[tuple[float, tuple[str, str]]] = []
        self._inflight: dict[str, _InFlight] = {}
        self._takeovers: list[tuple[float, int, _Takeover]] = []
        self._takeover_seq = 0
        self._events: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._next_refresh = 0.0
        self._last_cursor_write = 0.0
        self._workers: tuple[float, dict[str, Any]] = (-1.0, {})
        self._pool = None if store.local or store.protocol == "memory" else ThreadPoolExecutor(16, thread_name_prefix="daskflow-serve")
        self._subscribed = False
        #: The runs this loop created, in order: the last CREATED_KEPT of them
        #: (a loop runs for months); ``created_count`` counts them all.
        self.created: deque[RunRequest] = deque(maxlen=CREATED_KEPT)
        self.created_count = 0
        #: Records of runs just created, until they are tracked.
        self._records: dict[str, dict[str, Any]] = {}
        #: What the live status page has not been shown yet: the deployments'
        #: rows (after a reload) and the records of runs created, Late or ended.
        self._page_rows: list[dict[str, Any]] | None = None
        self._page_runs: list[dict[str, Any]] = []

    # ---------------------------------------------------------------- loop
    def run(self) -> None:
        """Serve until :meth:`stop` (SIGTERM and Ctrl-C call it in ``daskflow serve``)."""
        self.start()
        try:
            while not self._stop.is_set():
                try:
                    self.tick()
                except Exception:  # a transient failure (the scheduler restarting): the next pass tries again
                    logger.exception("a pass of the serve loop failed; trying again in %g s", RETRY_AFTER)
                    self._wake.clear()
                    self.clock.sleep(self._wake, RETRY_AFTER)
                    continue
                if self._stop.is_set():
                    break
                self._wake.clear()
                if not self._events.empty():
                    continue
                self.clock.sleep(self._wake, self._next_wake() - self.clock.now())
        finally:
            self.close()

    def run_until_signalled(self) -> None:
        """:meth:`run`, stopped by SIGINT (Ctrl-C) or SIGTERM when called from the
        main thread (their previous handlers come back afterwards)."""
        import signal

        previous = {}
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                previous[signum] = signal.signal(signum, lambda *_: self.stop())
        try:
            self.run()
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def start(self) -> None:
        """Listen for run starts and adopt the runs a previous loop left unfinished."""
        if not self._subscribed:
            self.client.subscribe_topic(DEPLOY_TOPIC, self._on_topic)
            self._subscribed = True
            self._adopt()

    def stop(self) -> None:
        """Ask the loop to stop after the pass it is in (safe from signal handlers and threads)."""
        self._stop.set()
        self._wake.set()

    def close(self) -> None:
        """Write the cursors and stop listening; submitted runs go on on the cluster."""
        self._write_cursors(force=True)
        if self._subscribed:
            try:
                self.client.unsubscribe_topic(DEPLOY_TOPIC)
            except Exception:  # the scheduler may be gone already
                pass
            self._subscribed = False
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        if self.notifier is not None:
            self.notifier.close()

    def tick(self) -> list[RunRequest]:
        """One pass: refresh, fire what is due, take over orphaned slots, watch runs.

        Returns the runs this pass created.
        """
        now = self.clock.now()
        if now >= self._next_refresh:
            self._refresh(now)
            self._next_refresh = now + self.refresh_every
        created = self._fire_due(now)
        created += self._take_over(now)
        self._watch(now)
        self._write_cursors()
        self._feed_page()
        return created

    def _feed_page(self) -> None:
        """Show the deployments and the waiting runs on the scheduler's live status page."""
        if self._page_rows is None and not self._page_runs:
            return
        from ..status.deployments import publish

        publish(self.client, deployments=self._page_rows, runs=self._page_runs)
        self._page_rows, self._page_runs = None, []

    def _next_wake(self) -> float:
        times = [self._next_refresh]
        if self._heap:
            times.append(self._heap[0][0])
        if self._takeovers:
            times.append(self._takeovers[0][0])
        for flight in self._inflight.values():
            if not flight.started and not flight.late:
                times.append(flight.request.scheduled_time + self.late_after)
        if any(entry.cursor_dirty for entry in self._entries.values()):
            times.append(self._last_cursor_write + CURSOR_INTERVAL)
        return min(times)

    # ------------------------------------------------------------- refresh
    def _refresh(self, now: float) -> None:
        try:
            version = self.registry.version()
            if version == self._version and self._version is not None:
                return
            records = self.registry.all()
        except (StorageError, OSError) as exc:
            logger.warning("cannot read the deployments in %s (will retry): %s", self.store.url, exc)
            return
        self._version = version
        self._page_rows = self._rows(records)
        wanted = {
            r["id"]: r
            for r in records
            if self._named(r["name"]) and (self.queues is None or r.get("work_queue_name") in self.queues)
        }
        self._deployments = wanted
        entries: dict[tuple[str, str], _Entry] = {}
        for record in wanted.values():
            if record.get("paused"):
                continue  # its slots are skipped, not caught up when it resumes
            for data in record.get("schedules", []):
                sid = data["id"]
                key = (record["id"], sid)
                old = self._entries.get(key)
                since = max(float(record.get("schedule_since", {}).get(sid, record.get("created", now))), float(record.get("resumed") or 0))
                if old is not None:
                    old.deployment = record
                    old.cursor = max(old.cursor, since)
                    entries[key] = old
                    continue
                try:
                    schedule = schedule_from_dict({k: v for k, v in data.items() if k != "id"})
                except InvalidOptionError as exc:
                    logger.error("deployment %r: schedule %s cannot be used (%s); it fires nothing", record["name"], sid, exc)
                    continue
                stored = self.registry.cursor(record["id"], sid)
                entries[key] = _Entry(record, schedule, max(stored if stored is not None else -math.inf, since))
        self._entries = entries
        self._heap = []
        for key, entry in entries.items():
            if entry.next is None or entry.next <= entry.cursor:
                entry.next = _next_after(entry.schedule, entry.cursor)
            if entry.next is not None:
                self._heap.append((entry.next, key))
        heapq.heapify(self._heap)
        logger.info("serving %d deployment(s) with %d schedule(s) from %s", len(wanted), len(entries), self.store.url)

    def _rows(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The deployments view's rows, with their last runs from recent history
        (without them if the history cannot be read now)."""
        from ..status.deployments import deployment_rows, store_rows

        try:
            return store_rows(self.store, records)
        except (StorageError, OSError):
            return deployment_rows(records, [])

    # ---------------------------------------------------------------- fire
    def _fire_due(self, now: float) -> list[RunRequest]:
        jobs: list[tuple[_Entry, datetime]] = []
        while self._heap and self._heap[0][0] <= now:
            _, key = heapq.heappop(self._heap)
            entry = self._entries.get(key)
            if entry is None:
                continue
            jobs.extend((entry, slot) for slot in self._due_slots(entry, now))
            entry.next = _next_after(entry.schedule, max(entry.cursor, now))
            if entry.next is not None:
                heapq.heappush(self._heap, (entry.next, key))
        if not jobs:
            return []
        if self._pool is None:
            # A local store answers in microseconds: threads would only fight
            # over the GIL (measured: 1 thread fires 1,000 slots faster than 8).
            results = [self._fire(entry, slot, now) for entry, slot in jobs]
        else:
            # An object store answers in milliseconds: overlap the requests.
            results = list(self._pool.map(lambda job: self._fire(job[0], job[1], now), jobs))
        created = [r for r in results if r is not None]
        # Records first, then the cluster, in one message per queue: submitting
        # while still writing makes the client's event loop fight this thread
        # for the GIL at every write (measured: twice as slow for 1,000 slots).
        self._submit(created)
        return created

    def _due_slots(self, entry: _Entry, now: float) -> list[datetime]:
        """The slots of ``entry`` to fire now, after its catch-up policy; moves its cursor."""
        after = _utc(entry.cursor)
        edge = now - self.catchup_after
        deployment = entry.deployment
        policy = deployment.get("catchup", "latest")
        keep = 0 if policy == "skip" else 1 if policy == "latest" else int(deployment.get("catchup_limit", 10))
        missed: deque[datetime] = deque(maxlen=max(keep, 1))
        skipped = 0
        scanned = 0
        while entry.cursor < edge and scanned < MAX_MISSED_SCAN:
            chunk = entry.schedule.slots_between(after, _utc(edge), limit=1000)
            if not chunk:
                break
            scanned += len(chunk)
            skipped += len(chunk)
            missed.extend(chunk)
            after = chunk[-1]
            if len(chunk) < 1000:
                break
        kept = list(missed)[-keep:] if keep else []
        skipped -= len(kept)
        on_time = entry.schedule.slots_between(max(after, _utc(entry.cursor)), _utc(now))
        slots = kept + on_time
        if skipped:
            logger.warning(
                "deployment %r: %d slot(s) were missed (the serve loop was not running, or fell behind); catchup=%s %s",
                deployment["name"], skipped, policy, "runs the latest" if policy == "latest" else f"runs the last {keep}" if keep else "skips them",
            )
        last = max([s.timestamp() for s in slots] + [after.timestamp() if scanned else -math.inf])
        if last > entry.cursor:
            entry.cursor = last
            entry.cursor_dirty = True
        return slots

    def _fire(self, entry: _Entry, slot: datetime, now: float) -> RunRequest | None:
        """Claim one slot; the winner creates its run. Runs in the I/O pool."""
        deployment = entry.deployment
        try:
            request, existing = claim_slot(self.registry, deployment, entry.schedule.id, slot, self.instance, now)
        except (StorageError, OSError) as exc:
            logger.error("deployment %r: cannot record the fire of slot %s (%s); it is tried again", deployment["name"], slot, exc)
            self._retry_slot(entry, slot)
            return None
        if existing is not None:
            # Fired already (another loop, or this one before a restart): if its
            # run never appeared, whoever fired it died; take it over later.
            if not existing or not self._run_exists(existing):
                self._schedule_takeover(entry, slot, existing, now)
            return None
        return self._create(request, now)

    def _create(self, request: RunRequest, now: float) -> RunRequest | None:
        try:
            record = create_run(self.store, request, self._waiting_reason(request.queue, now))
        except (StorageError, OSError) as exc:
            logger.error("run %r of deployment %r could not be recorded (%s)", request.name, request.deployment["name"], exc)
            return None
        if record is None:
            return None
        self._records[request.run_id] = record  # a dict insert: safe from the I/O pool's threads
        return request

    def _submit(self, requests: list[RunRequest]) -> None:
        if not requests:
            return
        try:
            futures = submit_runs(self.client, self.store, requests)
        except Exception as exc:  # the records exist: adoption or a restart submits them again
            logger.error("%d run(s) could not be submitted to the cluster (%s); they stay Scheduled", len(requests), exc)
            return
        for request, future in zip(requests, futures):
            self._track(request, future)
            self.created.append(request)
            self.created_count += 1
            logger.info(
                "deployment %r: created run %r for %s (queue %s)",
                request.deployment["name"], request.name, _format_slot(request.scheduled_time), request.queue,
            )

    def _track(self, request: RunRequest, future: Any, started: bool = False) -> None:
        record = self._records.pop(request.run_id, None)
        self._inflight[request.run_id] = _InFlight(request, future, started=started, record=record)
        if record is not None:
            self._page_runs.append(record)
        future.add_done_callback(lambda f, run_id=request.run_id: self._event("done", run_id))

    def _retry_slot(self, entry: _Entry, slot: datetime) -> None:
        # Roll the cursor back so the next pass tries this slot again.
        entry.cursor = min(entry.cursor, slot.timestamp() - 1e-6)
        entry.next = slot.timestamp()

    def _run_exists(self, fire: dict[str, Any]) -> bool:
        try:
            return self.store.exists(f"{RUNS}/{fire['folder']}/run.json")
        except (StorageError, OSError, KeyError):
            return True  # unknown: never risk a second run

    # ----------------------------------------------------------- takeover
    def _schedule_takeover(self, entry: _Entry, slot: datetime, fire: dict[str, Any], now: float) -> None:
        created = float(fire.get("created") or now)
        self._takeover_seq += 1
        item = _Takeover(max(created + self.takeover_after, now), entry.deployment["id"], entry.schedule.id, slot)
        heapq.heappush(self._takeovers, (item.at, self._takeover_seq, item))
        self._wake.set()

    def _take_over(self, now: float) -> list[RunRequest]:
        created = []
        while self._takeovers and self._takeovers[0][0] <= now:
            _, _, item = heapq.heappop(self._takeovers)
            fire = self.registry.fire(item.deployment, item.schedule, item.slot)
            if not fire or "request" not in fire:
                continue
            if self._run_exists(fire):
                continue  # its loop was only slow
            request = RunRequest.from_json(fire["request"])
            made = self._create(request, now)
            if made is not None:
                logger.warning(
                    "deployment %r: slot %s was fired by serve loop %s, which did not create its run; created it here",
                    request.deployment["name"], _format_slot(request.scheduled_time), fire.get("by"),
                )
                created.append(made)
        self._submit(created)
        return created

    # -------------------------------------------------------------- adopt
    def _adopt(self) -> None:
        """Watch (and submit again) the served deployments' runs that have not started.

        A run a previous loop created but could not submit, or whose flow-run
        task the cluster lost, starts; a run already on the cluster is joined
        (the same key), not started twice.
        """
        from ..storage.records import History

        try:
            records = History(self.store).active_runs()
        except (StorageError, OSError) as exc:
            logger.warning("cannot list the unfinished runs in %s: %s", self.store.url, exc)
            return
        for record in records:
            if not record.get("deployment_id"):
                continue
            # Only runs not started carry their request; a started one is driven
            # by its worker (and marked Crashed by the history sweep if that dies).
            request = request_of(record)
            if request is None or request.run_id in self._inflight:
                continue
            if not self._named(request.deployment["name"]) or (
                self.queues is not None and request.queue not in self.queues
            ):
                continue
            try:
                future = submit_run(self.client, self.store, request)
            except Exception as exc:
                logger.error("run %r could not be submitted again (%s)", request.name, exc)
                continue
            self._track(request, future)
            logger.info("watching run %r of deployment %r (%s)", request.name, request.deployment["name"], record["state"].get("name"))

    # -------------------------------------------------------------- watch
    def _on_topic(self, event: tuple[float, dict[str, Any]]) -> None:
        # On the client's event loop: hand over and return.
        message = event[1]
        if isinstance(message, dict) and message.get("ev") == "started":
            self._event("started", message.get("run"))

    def _event(self, kind: str, run_id: Any) -> None:
        self._events.put((kind, run_id))
        self._wake.set()

    def _watch(self, now: float) -> None:
        while True:
            try:
                kind, run_id = self._events.get_nowait()
            except queue.Empty:
                break
            flight = self._inflight.get(run_id)
            if flight is None:
                continue
            if kind == "started":
                flight.started = True
            elif kind == "done":
                self._finished(flight)
        for flight in list(self._inflight.values()):
            if flight.started or flight.late or now < flight.request.scheduled_time + self.late_after:
                continue
            flight.late = True
            request = flight.request
            reason = self._waiting_reason(request.queue, now) or "its flow-run task is waiting for a free worker slot"
            message = f"not started {now - request.scheduled_time:.0f} s after its scheduled time: {reason}"
            try:
                marked = mark_late(self.store, request, message, now)
            except (StorageError, OSError) as exc:
                logger.warning("run %r is late, but its mark could not be written: %s", request.name, exc)
                marked = True
            if marked:
                logger.warning("run %r of deployment %r is Late: %s", request.name, request.deployment["name"], message)
                self._notify(request, "Late", message)
                if flight.record is not None:
                    from ..storage.records import with_late_mark

                    self._page_runs.append(with_late_mark(flight.record, {"timestamp": now, "message": message}))

    def _finished(self, flight: _InFlight) -> None:
        request, future = flight.request, flight.future
        self._inflight.pop(request.run_id, None)
        status = future.status
        if status == "finished":
            try:
                summary = future.result(timeout=30)
            except Exception as exc:
                summary = {"type": "CRASHED", "name": "Crashed", "message": f"its result could not be read: {exc}"}
            logger.info("run %r of deployment %r ended %s", request.name, request.deployment["name"], summary.get("name"))
            self._notify(request, summary.get("name", "?"), summary.get("message", ""))
            return
        if status == "cancelled" and flight.resubmits < 3:
            # The cluster lost the task (a scheduler restart): submit it again;
            # a run that ended meanwhile is not run twice.
            flight.resubmits += 1
            try:
                self._track(request, submit_run(self.client, self.store, request), started=flight.started)
                self._inflight[request.run_id].resubmits = flight.resubmits
                return
            except Exception as exc:
                logger.error("run %r could not be submitted again (%s)", request.name, exc)
        try:
            error = future.exception(timeout=30)
        except Exception as exc:
            error = exc
        message = f"its flow-run task ended without a result on the cluster: {type(error).__name__}: {error}"
        logger.error("run %r of deployment %r Crashed: %s", request.name, request.deployment["name"], message)
        try:
            finish_crashed(self.store, request, message)
            final = RunWriter(self.store, request.run_id, request.created).read_run()
            if final is not None:
                self._page_runs.append(final)
        except (StorageError, OSError) as exc:
            logger.warning("run %r: its Crashed record could not be written: %s", request.name, exc)
        self._notify(request, "Crashed", message)

    def _notify(self, request: RunRequest, state_name: str, message: str) -> None:
        if self.notifier is None:
            return
        run = {
            "id": request.run_id,
            "name": request.name,
            "deployment_name": request.deployment["name"],
            "flow_name": request.deployment.get("flow_name"),
            "scheduled_time": request.scheduled_time,
        }
        self.notifier.notify(run, state_name, message)

    def _named(self, name: str) -> bool:
        """Whether this loop serves the deployment called ``name`` (names in either spelling, see ``same_name``)."""
        return self.names is None or any(same_name(name, wanted) for wanted in self.names)

    def _waiting_reason(self, queue_name: str, now: float) -> str:
        """Why a run of ``queue_name`` cannot start now, if the cluster says so ('' if it can)."""
        checked, workers = self._workers
        if now - checked > 2.0 or checked < 0:
            try:
                workers = self.client.scheduler_info(n_workers=-1).get("workers", {})
            except Exception:
                workers = {}
            self._workers = (now, workers)
        address = getattr(self.client.scheduler, "address", "SCHEDULER")
        if not workers:
            return f"no worker is connected to the scheduler at {address}; start one with `dask worker {address}`"
        if queue_name == DEFAULT_QUEUE:
            return ""
        resource = queue_resource(queue_name)
        if not any(resource in (info.get("resources") or {}) for info in workers.values()):
            return (
                f"no worker serves queue {queue_name!r}; start one with `dask worker {address} --resources {resource}=1`"
            )
        return ""

    def _write_cursors(self, force: bool = False) -> None:
        now = self.clock.now()  # the loop's clock: _next_wake compares with it
        if not force and now - self._last_cursor_write < CURSOR_INTERVAL:
            return
        self._last_cursor_write = now
        for (deployment, sid), entry in list(self._entries.items()):
            if not entry.cursor_dirty or not math.isfinite(entry.cursor):
                continue
            try:
                self.registry.set_cursor(deployment, sid, _utc(entry.cursor))
                entry.cursor_dirty = False
            except (StorageError, OSError) as exc:
                logger.debug("cursor of %s/%s not written: %s", deployment, sid, exc)


def _utc(timestamp: float) -> datetime:
    if not math.isfinite(timestamp):
        return datetime(1970, 1, 1, tzinfo=timezone.utc)
    return datetime.fromtimestamp(timestamp, tz=timezone.utc)


def _next_after(schedule: Schedule, after: float) -> float | None:
    nxt = schedule.next_after(_utc(after))
    return None if nxt is None else nxt.timestamp()


def _format_slot(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))


def serve(*deployments: Any, storage: Store | str | None = None, address: str | None = None, queues: Iterable[str] | None = None) -> None:
    """Register ``deployments`` and serve them from this process until stopped.

    Prefect's ``serve(*deployments)``: runs go to the Dask scheduler at
    ``address`` (default: a LocalCluster on 127.0.0.1 started for the loop and
    closed after it); results and history go to ``storage``. Ctrl-C or SIGTERM
    stops the loop between passes; runs already on the cluster go on (on a
    LocalCluster started here, they stop with it).
    """
    from ..runners.dask import cluster_client
    from ..storage.store import resolve_store
    from .deployment import deploy

    store = resolve_store(storage)
    records = deploy(*deployments, storage=store)
    with cluster_client(address) as client:
        loop = Serve(store, client, names=[r["name"] for r in records], queues=queues)
        logger.info("serving %s from %s; stop with Ctrl-C", ", ".join(repr(r["name"]) for r in records), store.url)
        loop.run_until_signalled()
