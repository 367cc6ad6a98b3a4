"""The cache entries of a :class:`~daskflow.storage.Store`: list, inspect, delete.

Used by ``daskflow cache`` and meant for any other reader (a status page): no
printing here, and no payload is ever deserialised. Checks stop at what the
manifest promises: the payload's size and sha256, and the manifest's signature
when the store has a signing key.

What an entry is on storage (see :mod:`daskflow.storage.store`)::

    results/<k[0:2]>/<k[2:4]>/<key>.json            manifest
    results/<k[0:2]>/<k[2:4]>/<key>.<sha256[:16]>   payload it names
    quarantine/<key>-<time>-<random>/               manifest.json and payload of a damaged entry

Keys of uncached task runs' results start with ``r`` (``run_result_key``);
cache keys are hexadecimal, so :attr:`Entry.kind` tells them apart.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple

from ..exceptions import CorruptedResultError
from .store import Manifest, Store

__all__ = [
    "MIN_PREFIX",
    "ORPHAN_GRACE",
    "Deleted",
    "Entry",
    "EntryNotFoundError",
    "Inspection",
    "Listing",
    "QuarantinedEntry",
    "StoredFile",
    "delete_entries",
    "delete_quarantined",
    "format_size",
    "inspect_entry",
    "list_entries",
    "list_quarantine",
    "resolve_key",
    "select",
]

#: Shortest key prefix accepted by :func:`resolve_key` (keys share their first
#: four characters with a whole shard folder).
MIN_PREFIX = 6

_KEY = r"[A-Za-z0-9_-]{8,128}"
_MANIFEST_RE = re.compile(rf"^results/([^/]{{2}})/([^/]{{2}})/({_KEY})\.json$")
_PAYLOAD_RE = re.compile(rf"^results/[^/]{{2}}/[^/]{{2}}/({_KEY})\.[0-9a-f]{{16}}$")
_QUARANTINE_RE = re.compile(rf"^quarantine/(({_KEY})-(\d+)-[0-9a-f]+)/(.+)$")
#: Seconds a payload without a manifest is left alone: a writer publishes the
#: manifest right after the payload, so a younger one may be a write in progress.
ORPHAN_GRACE = 3600.0
_CHUNK = 8 * 2**20


class StoredFile(NamedTuple):
    """An object in a listing."""

    size: int
    #: Last modified (seconds since the epoch), if the backend says.
    modified: float | None


class EntryNotFoundError(LookupError):
    """No entry matches a key or prefix, or several do (``matches`` lists them)."""

    def __init__(self, message: str, matches: Iterable[str] = ()) -> None:
        super().__init__(message)
        self.matches = list(matches)


@dataclass(frozen=True)
class Entry:
    """One entry under ``results/``, read from a listing and its manifest.

    ``manifest`` is ``None`` when the manifest is malformed or, in a signed
    store, does not verify: ``problem`` says which, and nothing in it is
    trusted (not even the task name).
    """

    key: str
    manifest_path: str
    manifest_bytes: int
    manifest: Manifest | None = None
    problem: str | None = None
    payload_path: str | None = None
    #: Bytes of the payload on storage; ``None`` if it is missing.
    payload_bytes: int | None = None

    @property
    def kind(self) -> str:
        """``"run"`` for an uncached task run's result, ``"cache"`` for a cache entry."""
        return "run" if self.key.startswith("r") else "cache"

    @property
    def task(self) -> str | None:
        return self._meta("task")

    @property
    def task_run(self) -> str | None:
        return self._meta("task_run")

    @property
    def created(self) -> float | None:
        return self.manifest.created if self.manifest else None

    @property
    def expired(self) -> bool:
        return bool(self.manifest and self.manifest.expired())

    @property
    def stored_bytes(self) -> int:
        """What deleting the entry frees: manifest plus payload."""
        return self.manifest_bytes + (self.payload_bytes or 0)

    def _meta(self, name: str) -> Any:
        return self.manifest.meta.get(name) if self.manifest else None

    def to_dict(self) -> dict[str, Any]:
        """The entry as JSON-able fields (full key, manifest fields flattened)."""
        m = self.manifest
        return {
            "key": self.key,
            "kind": self.kind,
            "task": self.task,
            "task_run": self.task_run,
            "flow_run_id": self._meta("flow_run_id"),
            "task_run_id": self._meta("task_run_id"),
            "attempt": self._meta("attempt"),
            "size": m.size if m else None,
            "stored_bytes": self.stored_bytes,
            "serializer": m.serializer if m else None,
            "created": m.created if m else None,
            "expires": m.expires if m else None,
            "expired": self.expired,
            "signed": bool(m and m.hmac),
            "payload_missing": self.payload_path is not None and self.payload_bytes is None,
            "problem": self.problem,
        }


@dataclass(frozen=True)
class Listing:
    """Every entry under ``results/`` (newest first, untrusted manifests last) and
    the payloads no manifest names (``orphans``), left by a writer that died
    before publishing its manifest, or being written right now."""

    entries: list[Entry]
    orphans: dict[str, StoredFile] = field(default_factory=dict)

    def stale_orphans(self, grace: float = ORPHAN_GRACE, now: float | None = None) -> dict[str, StoredFile]:
        """The orphans older than ``grace`` seconds (or of unknown age): safe to delete."""
        now = time.time() if now is None else now
        return {p: f for p, f in self.orphans.items() if f.modified is None or f.modified <= now - grace}


@dataclass(frozen=True)
class QuarantinedEntry:
    """An entry a reader found damaged and moved to ``quarantine/<folder>/``."""

    folder: str
    key: str
    #: When it was moved there (from the folder's name).
    quarantined: float
    files: dict[str, int]
    reason: str | None = None
    task: str | None = None

    @property
    def size(self) -> int:
        return sum(self.files.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "folder": self.folder,
            "quarantined": self.quarantined,
            "reason": self.reason,
            "size": self.size,
            "task": self.task,
        }


@dataclass(frozen=True)
class Inspection:
    """What :func:`inspect_entry` found: the manifest, its signature and the payload check.

    ``fields`` holds the manifest's fields as stored, even when it is not
    trusted (then ``manifest`` is ``None``), or ``None`` when it is not JSON.
    """

    key: str
    manifest_url: str
    payload_url: str | None
    manifest: Manifest | None
    fields: dict[str, Any] | None
    signature: str
    payload_bytes: int | None
    problem: str | None

    @property
    def ok(self) -> bool:
        return self.problem is None

    @property
    def kind(self) -> str:
        return "run" if self.key.startswith("r") else "cache"

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "kind": self.kind,
            "manifest": self.fields,
            "trusted": self.manifest is not None,
            "manifest_url": self.manifest_url,
            "payload_url": self.payload_url,
            "payload_bytes": self.payload_bytes,
            "signature": self.signature,
            "status": "verified" if self.ok else "corrupted",
            "problem": self.problem,
        }


@dataclass
class Deleted:
    """What a deletion removed (or, in a dry run, would remove) so far: pass one
    in as ``tally`` to know how far a deletion got when it fails."""

    entries: int = 0
    orphans: int = 0
    bytes: int = 0


# ----------------------------------------------------------------- listing
def _files(store: Store, prefix: str) -> dict[str, StoredFile]:
    """Every object under ``prefix`` with its size, as paths relative to the root,
    from one listing (:meth:`Store.files`); a local writer's temporary files are
    not (yet) part of the store."""
    return {
        relative: StoredFile(int(info.get("size") or 0), _modified(info))
        for relative, info in store.files(prefix).items()
        if not os.path.basename(relative).startswith(".tmp-")
    }


def _modified(info: Mapping[str, Any]) -> float | None:
    # Each fsspec backend names it its own way: local "mtime", s3fs
    # "LastModified", memory "created".
    for name in ("mtime", "LastModified", "last_modified", "created"):
        value = info.get(name)
        if isinstance(value, datetime.datetime):
            return value.timestamp()
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    return None


def _payload_name(key: str, data: bytes) -> str | None:
    """The payload an untrusted manifest names, only if it is a name this key's
    payloads can have (a damaged manifest must not point a deletion elsewhere)."""
    try:
        name = json.loads(data.decode())["payload"]
    except (ValueError, TypeError, KeyError, UnicodeDecodeError):
        return None
    return name if isinstance(name, str) and re.fullmatch(re.escape(key) + r"\.[0-9a-f]{16}", name) else None


def _read_manifest(store: Store, key: str, data: bytes) -> tuple[Manifest | None, str | None]:
    """The manifest if it parses and (signed store) verifies, else the problem."""
    try:
        # The store's own check: parse, field types and, with a key, the HMAC.
        return store._verified_manifest(key, data), None
    except CorruptedResultError as exc:
        return None, str(exc)


def list_entries(store: Store) -> Listing:
    """Every entry under ``results/``: one listing, then every manifest.

    Read only: nothing is quarantined or deleted, even entries that fail.

    Raises
    ------
    StorageError
        If the listing or a read fails (a missing store is an empty listing).
    """
    files = _files(store, "results")
    manifests: dict[str, str] = {}
    for path in files:
        match = _MANIFEST_RE.match(path)
        if match and match.group(3)[0:2] == match.group(1) and match.group(3)[2:4] == match.group(2):
            manifests[path] = match.group(3)
    raw = store.get_many(manifests)
    entries: list[Entry] = []
    named: set[str] = set()
    for path, key in manifests.items():
        data = raw.get(path)
        if data is None:
            continue  # deleted since the listing
        manifest, problem = _read_manifest(store, key, data)
        payload: str | None
        if manifest is not None:
            payload = store.payload_path(manifest)
        else:
            name = _payload_name(key, data)
            payload = f"{path.rsplit('/', 1)[0]}/{name}" if name else None
        if payload is not None:
            named.add(payload)
        found = files.get(payload) if payload else None
        entries.append(Entry(key, path, len(data), manifest, problem, payload, found.size if found else None))
    entries.sort(key=lambda e: (e.manifest is None, -(e.created or 0.0), e.key))
    orphans = {path: f for path, f in files.items() if _PAYLOAD_RE.match(path) and path not in named}
    return Listing(entries, orphans)


def select(entries: Iterable[Entry], task: str | None = None, older_than: float | None = None, now: float | None = None) -> list[Entry]:
    """The entries of task ``task`` created more than ``older_than`` seconds ago.

    An entry without a trusted manifest matches neither filter: its task and age
    are unknown.
    """
    now = time.time() if now is None else now
    out = []
    for entry in entries:
        if task is not None and (entry.manifest is None or entry.task != task):
            continue
        if older_than is not None and (entry.created is None or entry.created > now - older_than):
            continue
        out.append(entry)
    return out


def list_quarantine(store: Store, reasons: bool = False) -> list[QuarantinedEntry]:
    """Entries moved to ``quarantine/``, most recently quarantined first.

    With ``reasons``, each one's manifest is read and its payload checked
    against it (hashed, never deserialised) to say why it was quarantined.

    Raises
    ------
    StorageError
        If the listing or a read fails.
    """
    folders: dict[str, tuple[str, float, dict[str, int]]] = {}
    for path, stored in _files(store, "quarantine").items():
        match = _QUARANTINE_RE.match(path)
        if match:
            folder, key, when, name = match.groups()
            folders.setdefault(folder, (key, float(when), {}))[2][name] = stored.size
    found = []
    for folder, (key, when, files) in folders.items():
        reason, task = _diagnose(store, folder, key, files) if reasons else (None, None)
        found.append(QuarantinedEntry(folder, key, when, files, reason, task))
    found.sort(key=lambda q: (-q.quarantined, q.folder))
    return found


def _diagnose(store: Store, folder: str, key: str, files: dict[str, int]) -> tuple[str | None, str | None]:
    """Why a quarantined entry fails (``None`` if it passes every check now), and its task."""
    if "manifest.json" not in files:
        return "no manifest was kept", None
    try:
        data = store.get(f"quarantine/{folder}/manifest.json")
    except FileNotFoundError:
        return "no manifest was kept", None
    manifest, problem = _read_manifest(store, key, data)
    if manifest is None:
        return problem, None
    task = manifest.meta.get("task")
    if "payload" not in files:
        return "its payload is missing", task
    return _check_payload(store, f"quarantine/{folder}/payload", manifest), task


# ------------------------------------------------------------------ lookup
def resolve_key(store: Store, text: str) -> str:
    """The full key of the one entry whose key is ``text`` or starts with it.

    One listing of the shard folder the prefix falls in.

    Raises
    ------
    EntryNotFoundError
        If ``text`` is shorter than :data:`MIN_PREFIX`, or no entry or several match.
    StorageError
        If the listing fails.
    """
    text = text.strip()
    if len(text) < MIN_PREFIX or not re.fullmatch(r"[A-Za-z0-9_-]+", text):
        raise EntryNotFoundError(f"key {text!r} is not a key or a prefix of at least {MIN_PREFIX} letters, digits, '-' or '_'")
    keys = [name[:-5] for name in store.children(f"results/{text[0:2]}/{text[2:4]}") if name.endswith(".json")]
    if text in keys:
        return text
    matches = sorted(k for k in keys if k.startswith(text))
    if len(matches) == 1:
        return matches[0]
    if matches:
        shown = ", ".join(matches[:5]) + (", ..." if len(matches) > 5 else "")
        raise EntryNotFoundError(f"key prefix {text!r} matches {len(matches)} entries in {store.url} ({shown}); give more characters", matches)
    quarantined = [name for name in store.children("quarantine") if name.startswith(text)]
    where = " (it is in quarantine/: a reader found it damaged)" if quarantined else ""
    raise EntryNotFoundError(f"no entry with key or prefix {text!r} in {store.url}{where}")


def inspect_entry(store: Store, key: str) -> Inspection:
    """Read entry ``key``'s manifest and check its payload's size and sha256
    (hashed while streaming, never deserialised).

    A manifest that is malformed or, in a signed store, does not verify is
    reported and not trusted: its payload is not checked against it.

    Raises
    ------
    EntryNotFoundError
        If there is no entry ``key`` (it may have been deleted meanwhile).
    StorageError
        If storage fails (other than a corrupted entry, which is reported).
    """
    path = store.manifest_path(key)
    try:
        data = store.get(path)
    except FileNotFoundError:
        raise EntryNotFoundError(f"no entry with key {key!r} in {store.url}") from None
    manifest, problem = _read_manifest(store, key, data)
    try:
        fields = json.loads(data.decode())
        fields = fields if isinstance(fields, dict) else None
    except (ValueError, UnicodeDecodeError):
        fields = None
    if manifest is not None:
        fields = asdict(manifest)
        payload = store.payload_path(manifest)
    else:
        name = _payload_name(key, data)
        payload = f"{path.rsplit('/', 1)[0]}/{name}" if name else None
    stored = _files(store, path.rsplit("/", 1)[0]).get(payload) if payload else None
    if manifest is not None:
        problem = _check_payload(store, payload, manifest) if payload else None
    return Inspection(
        key=key,
        manifest_url=store.describe(path),
        payload_url=store.describe(payload) if payload else None,
        manifest=manifest,
        fields=fields,
        signature=_signature(store, manifest, fields),
        payload_bytes=stored.size if stored else None,
        problem=problem,
    )


def _signature(store: Store, manifest: Manifest | None, fields: dict[str, Any] | None) -> str:
    signed = bool(fields and fields.get("hmac"))
    if store.signed:
        return "verified with this store's signing key" if manifest is not None else "DOES NOT VERIFY with this store's signing key"
    if signed:
        return "signed, not checked: no signing key is configured here (daskflow.storage.signing-key)"
    return "unsigned (no signing key is configured)"


def _check_payload(store: Store, path: str, manifest: Manifest) -> str | None:
    """Why the payload at ``path`` does not match ``manifest``, or ``None``."""
    digest = hashlib.sha256()
    size = 0
    full = f"{store.root}/{path}"
    try:
        # Streamed: a multi-gigabyte payload is hashed in bounded memory.
        with store.fs.open(full, "rb") as file:
            while chunk := file.read(_CHUNK):
                digest.update(chunk)
                size += len(chunk)
    except FileNotFoundError:
        return "its payload is missing"
    except Exception as exc:
        raise store._error(exc, "read", path) from exc
    if size != manifest.size:
        return f"the payload has {size} bytes, the manifest says {manifest.size}"
    if digest.hexdigest() != manifest.sha256:
        return "the payload's sha256 does not match the manifest"
    return None


# ---------------------------------------------------------------- deletion
def delete_entries(
    store: Store,
    entries: Iterable[Entry],
    orphans: Mapping[str, StoredFile] | None = None,
    dry_run: bool = False,
    tally: Deleted | None = None,
) -> Deleted:
    """Delete ``entries`` (each manifest before its payload, so a concurrent
    reader sees a miss, never a manifest without its payload), then ``orphans``.

    Returns
    -------
    Deleted
        ``tally`` (or a new one) with what was deleted added to it.

    Raises
    ------
    StorageError
        On the first failed deletion; ``tally`` then holds what was deleted before it.
    """
    tally = Deleted() if tally is None else tally
    for entry in entries:
        if not dry_run:
            store.delete(entry.manifest_path)
            if entry.payload_path is not None:
                store.delete(entry.payload_path)
        tally.entries += 1
        tally.bytes += entry.stored_bytes
    for path, stored in (orphans or {}).items():
        if not dry_run:
            store.delete(path)
        tally.orphans += 1
        tally.bytes += stored.size
    return tally


def delete_quarantined(store: Store, items: Iterable[QuarantinedEntry], dry_run: bool = False, tally: Deleted | None = None) -> Deleted:
    """Delete quarantined entries (and their folders, on a local store).

    Raises
    ------
    StorageError
        On the first failed deletion; ``tally`` then holds what was deleted before it.
    """
    tally = Deleted() if tally is None else tally
    for item in items:
        if not dry_run:
            for name in item.files:
                store.delete(f"quarantine/{item.folder}/{name}")
            if store.local:  # object stores have no folders to leave behind
                try:
                    os.rmdir(f"{store.root}/quarantine/{item.folder}")
                except OSError:
                    pass  # not empty (written to meanwhile) or already gone
        tally.entries += 1
        tally.bytes += item.size
    return tally


def format_size(size: int | None) -> str:
    """``512 B``, ``1.2 KB``, ``3.4 MB``, ``5.6 GB``, ``7.8 TB`` (powers of 1000), or ``-``."""
    if size is None:
        return "-"
    if size < 1000:
        return f"{size} B"
    value, unit = size / 1000, "KB"
    for bigger in ("MB", "GB", "TB"):
        if value < 999.95:  # would print as 1000.0
            break
        value, unit = value / 1000, bigger
    return f"{value:.1f} {unit}"
