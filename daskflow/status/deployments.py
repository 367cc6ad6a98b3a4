"""The status page's deployments view: one row per deployment, and the serve loop's live feed.

:func:`deployment_rows` turns registered deployment records (see
:mod:`daskflow.deployments.registry`) and run records into plain rows: the
schedule in words, the next fire times, the last run, paused or not, and how
many of its runs wait (``Scheduled`` or ``Late``). Rows are JSON: the same rows
go to the page, to ``/daskflow/api/deployments`` and over the scheduler RPC.

:func:`publish` is how a serve loop feeds the live page on the scheduler's
dashboard: it pushes rows and its waiting runs through the ``daskflow_status``
RPC, from the client's event loop, so the caller never waits on the scheduler.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

__all__ = ["RECENT_RUNS", "attach_live_runs", "deployment_rows", "is_waiting", "publish", "store_rows"]

logger = logging.getLogger("daskflow.status")

#: Runs read (newest first) to find each deployment's last run.
RECENT_RUNS = 2_000
#: Next fire times per row.
NEXT_SHOWN = 3
#: Characters kept of user text in a row (descriptions, parameters): a row is a table cell.
TEXT_LIMIT = 500
#: Seconds one publishing RPC may take before it counts as failed.
RPC_TIMEOUT = 10.0
#: Seconds after which what was sent is sent again even if unchanged (a plugin
#: registered again on the same scheduler starts empty).
RESEND_AFTER = 60.0


# ------------------------------------------------------------------- rows
def is_waiting(record: Mapping[str, Any]) -> bool:
    """Whether a run record waits to start: ``Scheduled`` or ``Late``, never started.

    Parameters
    ----------
    record : dict
        A flow-run record.

    Returns
    -------
    bool
        True for a state of type ``SCHEDULED`` without a start time; a flow run
        retrying (``AwaitingRetry``, also of type ``SCHEDULED``) has one.
    """
    return record.get("state", {}).get("type") == "SCHEDULED" and not record.get("start_time")


def _is_late(record: Mapping[str, Any]) -> bool:
    return is_waiting(record) and record.get("state", {}).get("name") == "Late"


def _run_time(record: Mapping[str, Any]) -> float:
    return float(record.get("start_time") or record.get("created") or 0)


def _clip(text: Any) -> str | None:
    if text is None:
        return None
    text = str(text)
    return text if len(text) <= TEXT_LIMIT else text[: TEXT_LIMIT - 1] + "…"


def _last_run(runs: Iterable[Mapping[str, Any]]) -> dict[str, Any] | None:
    """The newest run that left the waiting states (waiting runs are counted apart)."""
    started = [r for r in runs if not is_waiting(r)]
    if not started:
        return None
    last = max(started, key=_run_time)
    state = last.get("state", {})
    return {
        "id": last.get("id"),
        "name": last.get("name"),
        "state_name": state.get("name"),
        "state_type": state.get("type"),
        "time": last.get("start_time") or last.get("created"),
    }


def _waiting_counts(runs: Iterable[Mapping[str, Any]]) -> tuple[int, int]:
    """``(scheduled, late)``: runs waiting on time, and waiting past it."""
    scheduled = late = 0
    for run in runs:
        if _is_late(run):
            late += 1
        elif is_waiting(run):
            scheduled += 1
    return scheduled, late


def _by_deployment(runs: Iterable[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    out: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for run in runs:
        deployment = run.get("deployment_id")
        if deployment:
            out[deployment].append(run)
    return out


@functools.lru_cache(maxsize=10_000)
def _parsed(schedule_json: str) -> tuple[Any, str]:
    """A stored schedule parsed once, with its words.

    Schedules are immutable and parsing (croniter's expansion above all) is
    most of a row's cost: a view of 1,000 deployments is redrawn every few
    seconds from the same records.
    """
    from ..deployments.schedules import schedule_from_dict

    schedule = schedule_from_dict(json.loads(schedule_json))
    return schedule, schedule.describe()


def _schedule_text(record: Mapping[str, Any], now: float) -> tuple[str, list[float]]:
    """The schedules in words and the next fire times; an unreadable schedule says so.

    The fire times are those of :func:`daskflow.deployments.deployment.next_slots`
    (the next few of every schedule, merged; none while paused), computed from
    the cached schedules.
    """
    try:
        parsed = [_parsed(json.dumps({k: v for k, v in s.items() if k != "id"}, sort_keys=True)) for s in record.get("schedules") or ()]
        start = datetime.fromtimestamp(now, tz=timezone.utc)
        slots = set() if record.get("paused") else {t.timestamp() for schedule, _ in parsed for t in schedule.upcoming(NEXT_SHOWN, start)}
    except Exception as exc:  # one bad record must not blank the whole view
        return f"schedule cannot be read: {type(exc).__name__}: {exc}", []
    words = [text for _, text in parsed]
    return ("; ".join(words) if words else "none (runs on demand)"), sorted(slots)[:NEXT_SHOWN]


def _row(record: Mapping[str, Any], runs: Sequence[Mapping[str, Any]], now: float) -> dict[str, Any]:
    schedules, slots = _schedule_text(record, now)
    scheduled, late = _waiting_counts(runs)
    limit = record.get("concurrency_limit")
    return {
        "id": record.get("id"),
        "name": record.get("name"),
        "flow": record.get("flow_name"),
        "description": _clip(record.get("description")),
        "entrypoint": record.get("entrypoint"),
        "version": record.get("version"),
        "tags": [str(t) for t in record.get("tags") or ()],
        "parameters": _clip(json.dumps(record.get("parameters") or {}, default=str)),
        "schedules": schedules,
        "next_runs": slots,
        "paused": bool(record.get("paused")),
        "queue": record.get("work_queue_name"),
        "concurrency": f"{limit} ({record.get('collision_strategy')})" if limit else None,
        "catchup": record.get("catchup"),
        "last_run": _last_run(runs),
        "scheduled": scheduled,
        "late": late,
        "updated": record.get("updated"),
    }


def deployment_rows(
    records: Iterable[Mapping[str, Any]], runs: Iterable[Mapping[str, Any]], now: float | None = None
) -> list[dict[str, Any]]:
    """One row per deployment, for the deployments view.

    Parameters
    ----------
    records : iterable of dict
        Deployment records, as ``Registry(store).all()`` returns them.
    runs : iterable of dict
        Run records (any order; those of other flows are ignored), matched to
        deployments by ``deployment_id``.
    now : float, optional
        The time next fire times are counted from. Default: now.

    Returns
    -------
    list of dict
        JSON rows, in the order of ``records``: ``id``, ``name``, ``flow``,
        ``description``, ``entrypoint``, ``version``, ``tags``, ``parameters``
        (JSON text), ``schedules`` (in words, ``"; "``-joined), ``next_runs``
        (up to 3 timestamps; none while paused), ``paused``, ``queue``,
        ``concurrency``, ``catchup``, ``last_run`` (``id``, ``name``,
        ``state_name``, ``state_type``, ``time``: its start, or its creation;
        ``None`` if no run has started), ``scheduled`` and ``late`` (its runs
        waiting now, on time and past it), ``updated``.
    """
    now = time.time() if now is None else now
    runs_of = _by_deployment(runs)
    return [_row(record, runs_of.get(record.get("id"), []), now) for record in records]


def store_rows(store: Any, records: Sequence[Mapping[str, Any]] | None = None, now: float | None = None) -> list[dict[str, Any]]:
    """:func:`deployment_rows` of the deployments registered in ``store`` (or of
    ``records``, read from it already), with last runs from its newest
    :data:`RECENT_RUNS` runs. Blocking: it reads the store."""
    from ..deployments.registry import Registry
    from ..storage.records import History

    records = Registry(store).all() if records is None else records
    return deployment_rows(records, History(store).runs(limit=RECENT_RUNS) if records else [], now)


def attach_live_runs(rows: Iterable[Mapping[str, Any]], runs: Iterable[Mapping[str, Any]], now: float | None = None) -> list[dict[str, Any]]:
    """Rows as pushed by a serve loop, brought up to date with the runs the scheduler holds.

    The live runs are newer than the rows (a driver pushes every state change,
    the loop its rows only when they change).

    Parameters
    ----------
    rows : iterable of dict
        Rows of :func:`deployment_rows`, as last pushed.
    runs : iterable of dict
        The run records the scheduler holds.
    now : float, optional
        Fire times up to it are dropped (fired since the push). Default: now.

    Returns
    -------
    list of dict
        Copies of ``rows``: a live run newer than a row's last run (or the
        same run, in a newer state) replaces it; for a deployment with live
        runs, ``scheduled`` and ``late`` are counted from them, so they agree
        with the runs table.
    """
    now = time.time() if now is None else now
    runs_of = _by_deployment(runs)
    out = []
    for row in rows:
        row = dict(row)
        row["next_runs"] = [t for t in row.get("next_runs") or () if t > now]
        live = runs_of.get(row.get("id"))
        if live:
            row["scheduled"], row["late"] = _waiting_counts(live)
            last, pushed = _last_run(live), row.get("last_run")
            if last is not None and (not pushed or last["id"] == pushed.get("id") or (last["time"] or 0) >= (pushed.get("time") or 0)):
                row["last_run"] = last
        out.append(row)
    return out


# ---------------------------------------------------------------- publish
@dataclass
class _Channel:
    """What one client has pushed to its scheduler, and what waits to go."""

    deployments: list[dict[str, Any]] | None = None
    deployments_digest: str | None = None
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)
    sent_deployments: str | None = None
    sent_runs: dict[str, str] = field(default_factory=dict)
    sent_at: float = 0.0
    #: When the drain coroutine was scheduled (0: none is).
    draining_since: float = 0.0


_channels: dict[tuple[Any, ...], _Channel] = {}
_channels_lock = threading.Lock()
#: Channels kept (one per serve loop's client; closed clients' go past this).
MAX_CHANNELS = 64


def _digest(value: Any) -> str:
    return hashlib.sha1(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def _run_fingerprint(record: Mapping[str, Any]) -> str:
    state = record.get("state", {})
    return f"{state.get('type')}|{state.get('name')}|{state.get('timestamp')}|{state.get('message')}"


def _scheduler_key(client: Any) -> tuple[str, str | None]:
    return (client.scheduler.address, (getattr(client, "_scheduler_identity", None) or {}).get("id"))


def _channel(client: Any) -> tuple[tuple[Any, ...], _Channel]:
    key = (getattr(client, "id", None), *_scheduler_key(client))
    channel = _channels.get(key)
    if channel is None:
        if len(_channels) >= MAX_CHANNELS:
            for old in [k for k, c in _channels.items() if not c.draining_since]:
                del _channels[old]
        channel = _channels[key] = _Channel()
    return key, channel


def _queue(channel: _Channel, deployments: list[dict[str, Any]] | None, runs: Iterable[Mapping[str, Any]], now: float) -> bool:
    """Put what changed since the last push in ``channel``; whether anything waits to go."""
    if now - channel.sent_at > RESEND_AFTER:
        channel.sent_deployments, channel.sent_runs = None, {}
    if deployments is not None:
        digest = _digest(deployments)
        if digest != channel.sent_deployments:
            channel.deployments, channel.deployments_digest = deployments, digest
        else:
            channel.deployments = channel.deployments_digest = None  # back to what the page has
    for record in runs:
        if not isinstance(record, Mapping) or not isinstance(record.get("id"), str):
            raise TypeError(f"publish(runs=...) takes run records with an id, got {type(record).__name__}")
        if channel.sent_runs.get(record["id"]) != _run_fingerprint(record):
            channel.runs[record["id"]] = dict(record)
    return channel.deployments is not None or bool(channel.runs)


def publish(
    client: Any,
    *,
    deployments: Sequence[Mapping[str, Any]] | None = None,
    runs: Iterable[Mapping[str, Any]] | None = None,
) -> None:
    """Push deployment rows and waiting runs to the live status page of ``client``'s scheduler.

    Makes sure the scheduler has the status plugin (once per scheduler, as a
    flow run's feed does), then hands one batch to the client's event loop and
    returns: the caller never waits for the scheduler. What the page has
    already (the same rows, a run in the same state) is not sent again. It
    never raises: a scheduler that cannot take the batch costs one warning
    until a push works again.

    Parameters
    ----------
    client : distributed.Client
        A connected (synchronous) client of the scheduler, like the serve loop's.
    deployments : list of dict, optional
        Rows of :func:`deployment_rows`: they replace the page's whole list.
        ``None`` leaves it as it is; ``[]`` empties it.
    runs : iterable of dict, optional
        Run records to show in the runs table, typically the loop's
        ``Scheduled`` and ``Late`` runs (and the final record of a run that
        ended without starting). They are pushed with no driver, so the loop's
        client disconnecting never shows them Crashed, and a run's own driver
        (once it starts) always wins over them.
    """
    try:
        _publish(client, None if deployments is None else [dict(row) for row in deployments], list(runs or ()))
    except Exception as exc:  # the page is a view: never fail the serve loop for it
        _failed(client, exc)


def _publish(client: Any, deployments: list[dict[str, Any]] | None, runs: list[Mapping[str, Any]]) -> None:
    from .feed import _ensure_plugin, status_enabled

    if not status_enabled() or (deployments is None and not runs):
        return
    if not _ensure_plugin(client):
        return  # warned once there
    now = time.monotonic()
    with _channels_lock:
        key, channel = _channel(client)
        if not _queue(channel, deployments, runs, now):
            return
        if channel.draining_since and now - channel.draining_since < 2 * RPC_TIMEOUT:
            return  # the running drain takes it along
        channel.draining_since = now
    try:
        client.loop.add_callback(_drain, client, key)
    except Exception:
        with _channels_lock:
            channel.draining_since = 0.0
        raise


async def _drain(client: Any, key: tuple[Any, ...]) -> None:
    """On the client's event loop: send what waits, one batch at a time, in order."""
    while True:
        with _channels_lock:
            channel = _channels.get(key)
            if channel is None:
                return
            if channel.deployments is None and not channel.runs:
                channel.draining_since = 0.0
                return
            batch: dict[str, Any] = {}
            if channel.deployments is not None:
                batch["deployments"] = channel.deployments
            if channel.runs:
                batch["runs"] = list(channel.runs.values())
            digest = channel.deployments_digest
            channel.deployments = channel.deployments_digest = None
            channel.runs = {}
            channel.draining_since = time.monotonic()
        try:
            rpc = client.scheduler.daskflow_status
            await asyncio.wait_for(rpc(batch=batch, driver=None), RPC_TIMEOUT)
        except Exception as exc:
            with _channels_lock:
                channel.sent_deployments, channel.sent_runs = None, {}  # the next publish sends all again
                channel.draining_since = 0.0
            _failed(client, exc)
            return
        with _channels_lock:
            if digest is not None:
                channel.sent_deployments = digest
            for record in batch.get("runs", ()):
                channel.sent_runs[record["id"]] = _run_fingerprint(record)
            if len(channel.sent_runs) > 10_000:  # a long backfill: forget, at worst some are sent twice
                channel.sent_runs = {}
            channel.sent_at = time.monotonic()
            recovered = getattr(client, "id", None) in _failing
            _failing.discard(getattr(client, "id", None))
        if recovered:
            logger.info("the live status page is fed deployments again")


#: Ids of the clients whose last push failed (warned about once, until one works).
_failing: set[Any] = set()


def _failed(client: Any, exc: BaseException) -> None:
    """Warn on a client's first failure, then stay quiet until a push works again."""
    text = str(exc)
    if "No handler" in text or "unknown operation" in text.lower() or isinstance(exc, KeyError):
        from . import feed

        # The plugin went away (unregistered, or a scheduler restarted without it): register it again next time.
        try:
            with feed._plugin_lock:
                feed._plugin_on.pop(_scheduler_key(client), None)
        except Exception:  # a client without a scheduler: nothing was remembered for it
            pass
    with _channels_lock:
        if len(_failing) >= MAX_CHANNELS:
            _failing.clear()
        key = getattr(client, "id", None)
        first = key not in _failing
        _failing.add(key)
    if first:
        logger.warning("cannot update the live status page's deployments: %s: %s (the serve loop goes on)", type(exc).__name__, exc)
    else:
        logger.debug("cannot update the live status page's deployments", exc_info=exc)
