"""Run history in a store: flow-run records, task-run records, log lines, artifacts.

Layout under the store root::

    runs/<folder>/run.json              the flow run (rewritten at each flush)
    runs/<folder>/tasks-000001.jsonl    task-run records changed since the last flush
    runs/<folder>/logs-000001.jsonl     log lines since the last flush
    runs/<folder>/artifacts-000001.jsonl
    runs/<folder>/cancel.json           a cancel request (``daskflow cancel``)
    runs/<folder>/late.json             a scheduled run the serve loop found Late
    active/<folder>                     present while the run's driver is alive

``<folder>`` is ``<UTC start time>-<run id>``, so a listing of ``runs/`` is in
start order and ``--since``/``--limit`` read only the run records they show.
The driver writes in batches: one object per kind per flush, never one per
event. Every object is written whole (the store's atomic put), so a reader in
another process sees the run as of some flush while it is going. A task run's
line in a later segment replaces its line in an earlier one; at the end the
driver compacts the task segments into one.

A driver that dies stops refreshing ``heartbeat`` in ``run.json``; the sweep
(:meth:`History.sweep`, run when a flow starts and by the history commands)
marks such runs Crashed. Only runs listed under ``active/`` are examined, so a
sweep costs one listing, not one read per run ever made.

This module knows nothing of flows and tasks: records are JSON dicts, built by
:mod:`daskflow.pipeline.history`.
"""

from __future__ import annotations

import calendar
import json
import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import dask.config

from .._names import same_name
from ..exceptions import RunNotFoundError, StorageError
from .store import Store

__all__ = [
    "FINAL_STATE_TYPES",
    "FORMAT",
    "LATE",
    "History",
    "RunEntry",
    "RunWriter",
    "escape_surrogates",
    "json_safe",
    "json_text",
    "matches_filters",
    "run_ended",
    "run_folder",
    "with_late_mark",
    "without_surrogates",
]

#: Bumped when the record layout changes incompatibly.
FORMAT = 1
RUNS = "runs"
ACTIVE = "active"
#: State types after which a run never changes again.
FINAL_STATE_TYPES = frozenset({"COMPLETED", "FAILED", "CRASHED", "CANCELLED"})
KINDS = ("tasks", "logs", "artifacts")
#: The serve loop's mark on a scheduled run that did not start in time. A file of
#: its own, not a rewrite of ``run.json``: once a run starts, its driver alone
#: writes ``run.json``, and a mark racing the start must not overwrite it.
LATE = "late.json"

_FOLDER_RE = re.compile(r"^(\d{8}T\d{6}\d{3}Z)-([0-9a-f]{32})$")
_SEGMENT_RE = re.compile(r"^(tasks|logs|artifacts)-(\d{6,})\.jsonl$")


def run_folder(run_id: str, started: float) -> str:
    """The folder name of a run: its UTC start time to the millisecond, then its id."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(started)) + f"{int(started * 1000) % 1000:03d}Z"
    return f"{stamp}-{run_id}"


def _folder_time(folder: str) -> float:
    stamp = _FOLDER_RE.match(folder)
    assert stamp is not None
    text = stamp.group(1)
    return calendar.timegm(time.strptime(text[:15], "%Y%m%dT%H%M%S")) + int(text[15:18]) / 1000


#: Lone surrogates (``"\\ud800"``, or bytes decoded with ``surrogateescape``): no
#: UTF-8 encoding exists for them.
_SURROGATES = re.compile("[\ud800-\udfff]")


def _visible_escape(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def escape_surrogates(text: str) -> str:
    """``text`` with each lone surrogate written as its visible escape (``\\ud800``,
    six characters), as Python's ``repr`` shows it: text that always encodes."""
    return _SURROGATES.sub(_visible_escape, text)


def _text(value: Any) -> str:
    # ``default=`` of the record encoder: an odd value is written as its str(),
    # and one whose str() raises as its type.
    try:
        return str(value)
    except Exception:
        return f"<unprintable {type(value).__name__}>"


def json_safe(value: Any, _seen: frozenset[int] = frozenset()) -> Any:
    """``value`` as plain JSON data that always encodes: strings with lone
    surrogates escaped (:func:`escape_surrogates`), keys made strings, other
    objects as their ``str()``, a container inside itself as ``"<cycle>"``.

    Returns ``value`` itself when nothing in it needs changing.
    """
    if isinstance(value, str):
        return value if value.isascii() or not _SURROGATES.search(value) else escape_surrogates(value)
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, (dict, list, tuple)):
        if id(value) in _seen:
            return "<cycle>"
        seen = _seen | {id(value)}
        if isinstance(value, dict):
            out = {json_safe(k if isinstance(k, str) else _text(k), seen): json_safe(v, seen) for k, v in value.items()}
            same = all(a is b for a, b in zip(out, value)) and all(out[k] is v for k, v in zip(out, value.values()))
            return value if same and len(out) == len(value) else out
        items = [json_safe(v, seen) for v in value]
        return value if all(a is b for a, b in zip(items, value)) else type(value)(items)
    return escape_surrogates(_text(value))


def without_surrogates(value: Any) -> Any:
    """``value`` with the lone surrogates of its strings (keys included, inside
    dicts, lists and tuples) escaped as :func:`escape_surrogates` does; other
    objects are kept as they are. For messages that go out as msgpack (Dask's
    comms refuse a surrogate: a worker's report stream would break).

    Returns ``value`` itself when nothing in it needs changing.
    """
    if isinstance(value, str):
        return value if value.isascii() or not _SURROGATES.search(value) else escape_surrogates(value)
    if isinstance(value, dict):
        changed = False
        out = {}
        for key, item in value.items():
            new_key, new_item = without_surrogates(key), without_surrogates(item)
            changed = changed or new_key is not key or new_item is not item
            out[new_key] = new_item
        return out if changed else value
    if isinstance(value, (list, tuple)):
        items = [without_surrogates(item) for item in value]
        if all(a is b for a, b in zip(items, value)):
            return value
        return items if isinstance(value, list) else tuple(items)
    return value


def json_text(value: Any) -> str:
    """JSON text of a record that can always be written as UTF-8.

    A value is never refused: a lone surrogate anywhere (a parameter, a log
    line, an error message) is written as the visible escape ``\\ud800`` (JSON
    ``"\\\\ud800"``, read back as those six characters), so one odd character
    never costs a run its history.
    """
    options: dict[str, Any] = {"separators": (",", ":"), "default": _text, "ensure_ascii": False}
    try:
        text = json.dumps(value, **options)
    except (TypeError, ValueError):  # a key that is not a string, a container inside itself
        text = json.dumps(json_safe(value), **options)
    # Surrogates can only be inside JSON strings, where the escaped backslash
    # keeps them as text (a bare ``\\ud800`` would decode back to the surrogate).
    return _SURROGATES.sub(lambda m: "\\" + _visible_escape(m), text)


def _dumps(value: Any) -> bytes:
    return json_text(value).encode()


def _jsonl(rows: Iterable[Any]) -> bytes:
    return b"\n".join(_dumps(row) for row in rows) + b"\n"


def _parse_jsonl(data: bytes) -> Iterator[dict[str, Any]]:
    # A line that does not parse (bytes that are not UTF-8, a file edited by
    # hand or by an older writer) is skipped: it must not hide the rest of the run.
    for line in data.splitlines():
        if line.strip():
            try:
                row = json.loads(line.decode("utf-8", "replace"))
            except ValueError:
                continue
            if isinstance(row, dict):
                yield row


class RunWriter:
    """Writes one flow run's history (used by the driver's recorder thread only)."""

    def __init__(self, store: Store, run_id: str, started: float, *, active: bool = False) -> None:
        """``active``: the run is listed under ``active/`` already (a scheduled run
        created ahead), so a final record removes it from there."""
        self.store = store
        self.folder = run_folder(run_id, started)
        self.prefix = f"{RUNS}/{self.folder}"
        self._segments = dict.fromkeys(KINDS, 0)
        self._active = active

    @property
    def url(self) -> str:
        """Where this run's records are, for messages."""
        return self.store.describe(self.prefix)

    def write_run(self, record: dict[str, Any]) -> None:
        """Replace ``run.json``; the first call also marks the run active."""
        self.store.put(f"{self.prefix}/run.json", _dumps(record))
        final = run_ended(record)
        if not self._active and not final:
            self.store.put(f"{ACTIVE}/{self.folder}", b"")
            self._active = True
        elif final and self._active:
            self.store.delete(f"{ACTIVE}/{self.folder}")
            self._active = False

    def create_run(self, record: dict[str, Any]) -> bool:
        """Write the first ``run.json`` of a run created before it starts (a
        scheduled run), listed under ``active/`` first so no reader misses it.

        Create-only: False if the run exists already (another serve loop made it,
        or it started and wrote its own record).
        """
        self.store.put(f"{ACTIVE}/{self.folder}", b"")
        self._active = True
        try:
            self.store.put(f"{self.prefix}/run.json", _dumps(record), create_only=True)
        except FileExistsError:
            return False
        return True

    def read_run(self) -> dict[str, Any] | None:
        """The current ``run.json`` as written (no staleness rule applied)."""
        return self.get_extra("run.json")

    def put_extra(self, name: str, value: Any, *, create_only: bool = False) -> bool:
        """Write ``<run folder>/<name>`` as JSON (a scheduled run's late mark);
        with ``create_only``, False if it exists."""
        try:
            self.store.put(f"{self.prefix}/{name}", _dumps(value), create_only=create_only)
        except FileExistsError:
            return False
        return True

    def get_extra(self, name: str) -> Any:
        """The JSON at ``<run folder>/<name>``, or ``None``."""
        try:
            return json.loads(self.store.get(f"{self.prefix}/{name}"))
        except (FileNotFoundError, ValueError):
            return None

    def append(self, kind: str, rows: list[dict[str, Any]]) -> None:
        """Write ``rows`` as the next segment of ``kind`` (nothing for no rows)."""
        if not rows:
            return
        number = self._segments[kind] + 1
        self.store.put(f"{self.prefix}/{kind}-{number:06d}.jsonl", _jsonl(rows))
        self._segments[kind] = number

    def compact_tasks(self, rows: list[dict[str, Any]]) -> None:
        """Replace every task segment by one holding ``rows`` (all task runs).

        The new segment is written before the old ones are deleted: a reader
        always finds every task run, at worst twice (and the later line wins).
        """
        old = self._segments["tasks"]
        if old <= 1 and not rows:
            return
        self.append("tasks", rows)
        for number in range(1, old + 1):
            self.store.delete(f"{self.prefix}/tasks-{number:06d}.jsonl")

    def cancel_requested(self) -> dict[str, Any] | None:
        """The cancel request written by ``daskflow cancel``, if any."""
        try:
            return json.loads(self.store.get(f"{self.prefix}/cancel.json"))
        except FileNotFoundError:
            return None
        except ValueError:
            return {"reason": "cancel requested (unreadable request)"}


@dataclass(frozen=True)
class RunEntry:
    """A run's folder in ``runs/``: its id and start time come from the name."""

    folder: str
    run_id: str
    started: float


class History:
    """Reads (and sweeps) the run history of a store; safe while runs are going.

    Parameters
    ----------
    store : Store
        The store whose ``runs/`` folder to read.
    stale_after : float, optional
        Seconds without a heartbeat after which a running run counts as
        Crashed. Default: config ``daskflow.history.crashed-after``.
    """

    def __init__(self, store: Store, stale_after: float | None = None) -> None:
        self.store = store
        self.stale_after = float(stale_after if stale_after is not None else dask.config.get("daskflow.history.crashed-after", 90))

    # -------------------------------------------------------------- finding
    def entries(self) -> list[RunEntry]:
        """Every run folder, oldest first (one listing)."""
        out = []
        for name in self.store.children(RUNS):
            match = _FOLDER_RE.match(name)
            if match is not None:
                out.append(RunEntry(name, match.group(2), _folder_time(name)))
        return out

    def resolve(self, ref: str) -> RunEntry:
        """The run whose id, id prefix (6+ characters) or name is ``ref`` (a name
        in either spelling, ``hpo_kfold-1a2b3c4d`` or ``hpo-kfold-1a2b3c4d``).

        Raises
        ------
        RunNotFoundError
            If none or several runs match.
        """
        ref = ref.strip()
        entries = self.entries()
        if re.fullmatch(r"[0-9a-f]{6,32}", ref):
            matches = [e for e in entries if e.run_id.startswith(ref)]
            if len(matches) == 1:
                return matches[0]
            if len(matches) > 1:
                raise RunNotFoundError(
                    f"run id prefix {ref!r} matches {len(matches)} runs in {self.store.url}; give more characters of the id"
                )
        # A run name (``flow-1a2b3c4d``): its last part is the id's start.
        head = ref.rsplit("-", 1)[-1]
        if re.fullmatch(r"[0-9a-f]{8}", head):
            candidates = [e for e in entries if e.run_id.startswith(head)]
            records = self._read_runs(candidates)
            named = [e for e, r in zip(candidates, records) if r is not None and r.get("name") == ref]
            named = named or [e for e, r in zip(candidates, records) if r is not None and same_name(r.get("name"), ref)]
            if len(named) == 1:
                return named[0]
        raise RunNotFoundError(
            f"no run {ref!r} in {self.store.url}; list runs with `daskflow runs ls --storage {self.store.url}` "
            "and pass a run id (or its first 6+ characters) or a run name"
        )

    # -------------------------------------------------------------- reading
    def runs(
        self,
        *,
        flow: str | None = None,
        state: str | None = None,
        tag: str | None = None,
        since: float | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """Run records, newest first, filtered; reads only as many as it needs."""
        entries = [e for e in reversed(self.entries()) if since is None or e.started >= since]
        out: list[dict[str, Any]] = []
        chunk = 64
        for start in range(0, len(entries), chunk):
            batch = entries[start : start + chunk]
            for record in self._read_runs(batch):
                if record is None or not matches_filters(record, flow=flow, state=state, tag=tag):
                    continue
                out.append(record)
                if limit is not None and len(out) >= limit:
                    return out
        return out

    def active_runs(self) -> list[dict[str, Any]]:
        """The records of the runs not finished yet (listed under ``active/``): one
        listing and one concurrent read, however long the history. Scheduled runs
        are shown Late when marked so."""
        active = set(self.store.children(ACTIVE))
        entries = [e for e in self.entries() if e.folder in active] if active else []
        return [r for r in self._read_runs(entries) if r is not None and not run_ended(r)]

    def run(self, entry: RunEntry) -> dict[str, Any]:
        """The flow-run record of ``entry`` (with a stale run shown Crashed)."""
        record = self._read_runs([entry])[0]
        if record is None:
            raise RunNotFoundError(f"run {entry.run_id} in {self.store.url} has no record (yet); try again in a moment")
        return record

    def tasks(self, entry: RunEntry) -> list[dict[str, Any]]:
        """Task-run records of a run, in the order they were created."""
        by_id: dict[str, dict[str, Any]] = {}
        for row in self._segments(entry, "tasks"):
            by_id[row["id"]] = row
        return sorted(by_id.values(), key=lambda r: r.get("seq", 0))

    def logs(self, entry: RunEntry, task: str | None = None) -> list[dict[str, Any]]:
        """Log lines of a run in time order; ``task``: only that task run's (by
        name, like ``fit-3``, or a task name, like ``fit``)."""
        lines = list(self._segments(entry, "logs"))
        if task is not None:
            lines = [line for line in lines if line.get("tn") == task or (line.get("tn") or "").rsplit("-", 1)[0] == task]
        lines.sort(key=lambda line: line.get("t", 0))
        return lines

    def artifacts(self, entry: RunEntry) -> list[dict[str, Any]]:
        """Artifacts of a run, in the order they were created (the last copy of one
        written again after a change: a progress artifact's update)."""
        latest: dict[str, dict[str, Any]] = {}
        for artifact in self._segments(entry, "artifacts"):
            latest[str(artifact.get("id"))] = artifact
        return sorted(latest.values(), key=lambda a: a.get("created", 0))

    def _read_runs(self, entries: list[RunEntry]) -> list[dict[str, Any] | None]:
        paths = [f"{RUNS}/{e.folder}/run.json" for e in entries]
        raw = self.store.get_many(paths)
        now = time.time()
        out: list[dict[str, Any] | None] = []
        for entry, path in zip(entries, paths):
            data = raw.get(path)
            if data is None:
                out.append(None)
                continue
            try:
                record = json.loads(data)
            except ValueError:
                out.append(None)
                continue
            record["folder"] = entry.folder
            out.append(self._shown(record, now))
        waiting = [i for i, r in enumerate(out) if r is not None and r.get("state", {}).get("name") == "Scheduled"]
        if waiting:
            marks = self.store.get_many([f"{RUNS}/{entries[i].folder}/{LATE}" for i in waiting])
            for i in waiting:
                data = marks.get(f"{RUNS}/{entries[i].folder}/{LATE}")
                if data is not None:
                    out[i] = with_late_mark(out[i], data)  # type: ignore[arg-type]
        return out

    def _shown(self, record: dict[str, Any], now: float) -> dict[str, Any]:
        """A running record whose driver stopped beating is shown Crashed."""
        return _crashed_if_stale(record, now, self.stale_after) or record

    def _segments(self, entry: RunEntry, kind: str) -> Iterator[dict[str, Any]]:
        prefix = f"{RUNS}/{entry.folder}"
        for _ in range(3):
            names = sorted(
                (int(m.group(2)), n) for n in self.store.children(prefix) if (m := _SEGMENT_RE.match(n)) and m.group(1) == kind
            )
            paths = [f"{prefix}/{name}" for _, name in names]
            raw = self.store.get_many(paths)
            if all(raw.get(p) is not None for p in paths):
                for path in paths:
                    yield from _parse_jsonl(raw[path])  # type: ignore[arg-type]
                return
            # A segment vanished between the listing and the read: the driver
            # compacted them. List again; the compacted one holds everything.
        raise StorageError(f"the records of run {entry.run_id} in {self.store.url} keep changing; try again", self.store.url, "read")

    # ---------------------------------------------------------- writing
    def sweep(self) -> list[str]:
        """Mark runs whose driver stopped beating Crashed (in their records).

        Returns the ids of the runs marked. Only runs listed under ``active/``
        are read.
        """
        marked = []
        now = time.time()
        for name in self.store.children(ACTIVE):
            match = _FOLDER_RE.match(name)
            if match is None:
                continue
            path = f"{RUNS}/{name}/run.json"
            try:
                record = json.loads(self.store.get(path))
            except FileNotFoundError:
                if now - _folder_time(name) > self.stale_after:
                    self.store.delete(f"{ACTIVE}/{name}")  # a driver that died before its first write
                continue
            except ValueError:
                continue
            if not run_ended(record):
                crashed = _crashed_if_stale(record, now, self.stale_after)
                if crashed is None:
                    continue  # alive
                self.store.put(path, _dumps(crashed))
                marked.append(match.group(2))
            self.store.delete(f"{ACTIVE}/{name}")
        return marked

    def request_cancel(self, entry: RunEntry, reason: str) -> None:
        """Ask the run's driver to cancel the run (it checks at each heartbeat)."""
        self.store.put(f"{RUNS}/{entry.folder}/cancel.json", _dumps({"reason": reason, "requested": time.time()}))


def run_ended(record: dict[str, Any]) -> bool:
    """Whether a flow-run record is in a final state (Completed, Failed, Crashed, Cancelled)."""
    return record.get("state", {}).get("type") in FINAL_STATE_TYPES


def matches_filters(
    record: dict[str, Any],
    *,
    flow: str | None = None,
    state: str | None = None,
    tag: str | None = None,
    since: float | None = None,
) -> bool:
    """Whether a flow-run record passes the filters of ``daskflow runs ls`` (and the status page).

    ``flow`` matches the flow's name in either spelling (``hpo_kfold`` and
    ``hpo-kfold``, see :func:`~daskflow._names.same_name`); ``state`` matches a
    state's name or type, in any case (``failed``, ``TimedOut``).
    """
    if flow and not same_name(record.get("flow_name"), flow):
        return False
    if state:
        wanted = state.lower()
        current = record.get("state", {})
        if wanted not in (str(current.get("name", "")).lower(), str(current.get("type", "")).lower()):
            return False
    if tag and tag not in record.get("tags", ()):
        return False
    # A run not started yet (Scheduled) counts from when it was created.
    return since is None or (record.get("start_time") or record.get("created") or 0) >= since


def with_late_mark(record: dict[str, Any], mark: bytes | dict[str, Any]) -> dict[str, Any]:
    """A Scheduled run's record shown Late, as its ``late.json`` mark says."""
    try:
        late = json.loads(mark) if isinstance(mark, bytes) else dict(mark)
    except ValueError:
        return record
    state = {"type": "SCHEDULED", "name": "Late", "timestamp": late.get("timestamp"), "message": late.get("message", "")}
    return dict(record, state=state, state_history=[*record.get("state_history", []), state])


def _crashed_if_stale(record: dict[str, Any], now: float, stale_after: float) -> dict[str, Any] | None:
    """A copy of a running ``record`` whose heartbeat is older than ``stale_after``,
    ended Crashed at its last heartbeat; ``None`` if it is final or alive."""
    if run_ended(record) or record.get("state", {}).get("type") == "SCHEDULED":
        return None  # final, or not started yet: no driver beats for it (the serve loop owns it)
    beat = record.get("heartbeat") or record.get("start_time") or 0
    if now - beat <= stale_after:
        return None
    seen = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(beat))
    crashed = {
        "type": "CRASHED",
        "name": "Crashed",
        "timestamp": now,
        "message": f"the driver stopped sending heartbeats (last at {seen}); it was killed or lost its machine",
    }
    return dict(record, state=crashed, state_history=[*record.get("state_history", []), crashed], end_time=record.get("end_time") or beat)
