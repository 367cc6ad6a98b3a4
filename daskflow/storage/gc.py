"""What interrupted writers leave behind in a :class:`~daskflow.storage.Store`, and its removal.

A writer killed mid-write never publishes a partial object at its final path
(see :mod:`daskflow.storage.store`), but it can leave:

- on a local store, its temporary file ``.tmp-*`` next to the final path
  (``Store.put`` writes there and then renames or links it into place), or a
  ``.tmp-*`` staging folder of a deployment's code snapshot;
- on S3, an unfinished multipart upload (s3fs uploads results of 100 MB and
  more in parts). It is invisible to listings, but its parts are stored and
  billed until the upload is aborted.

Neither is ever read as a result. :func:`find_leftovers` lists them and
:func:`remove_leftovers` deletes temporary files and aborts uploads, only those
older than a grace period (:data:`GRACE`, an hour by default): a younger one may
belong to a writer that is still writing. Only uploads whose key lies under the
store's prefix are touched, never others in the same bucket.

No printing here: used by ``daskflow cache ls`` and ``daskflow cache gc``.
"""

from __future__ import annotations

import datetime
import os
import shutil
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from .store import Store

__all__ = ["GRACE", "TEMP_PREFIX", "Leftover", "Removed", "find_leftovers", "remove_leftovers", "stale"]

#: Name prefix of local temporary files and staging folders.
TEMP_PREFIX = ".tmp-"
#: Seconds a leftover is left alone by default: a younger one may be a write in progress.
GRACE = 3600.0


@dataclass(frozen=True)
class Leftover:
    """A temporary file (``kind="temp"``) or an unfinished multipart upload
    (``kind="upload"``) under a store's root."""

    kind: str
    #: Path relative to the store's root (for an upload, the key it was writing).
    path: str
    #: Bytes stored: the file's size, or the parts uploaded so far.
    size: int
    #: When it was last written to (file modification time; an upload's
    #: initiation or its last part, whichever is later), if known.
    started: float | None
    #: The multipart upload's id (uploads only).
    upload_id: str | None = None
    #: A staging folder rather than a file (local temps only).
    folder: bool = False

    def age(self, now: float | None = None) -> float | None:
        if self.started is None:
            return None
        return max(0.0, (time.time() if now is None else now) - self.started)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "path": self.path, "size": self.size, "started": self.started,
                "age": self.age(), "upload_id": self.upload_id, "folder": self.folder}


@dataclass
class Removed:
    """What :func:`remove_leftovers` removed (or, in a dry run, would remove) so far."""

    temps: int = 0
    uploads: int = 0
    bytes: int = 0


def find_leftovers(store: Store) -> list[Leftover]:
    """Every temporary file and unfinished multipart upload under the store's
    root, oldest first. Read only.

    Raises
    ------
    StorageError
        If listing fails (a store that does not exist has none).
    """
    if store.local:
        found = list(_local_temps(store))
    elif store.protocol in ("s3", "s3a"):
        found = list(_uploads(store))
    else:
        found = []  # memory:// and whole-object backends leave nothing behind
    found.sort(key=lambda item: (item.started is None, item.started or 0.0, item.path))
    return found


def stale(leftovers: Iterable[Leftover], older_than: float = GRACE, now: float | None = None) -> list[Leftover]:
    """The leftovers started more than ``older_than`` seconds ago (or of unknown age)."""
    now = time.time() if now is None else now
    return [item for item in leftovers if item.started is None or item.started <= now - older_than]


def remove_leftovers(store: Store, leftovers: Iterable[Leftover], dry_run: bool = False, tally: Removed | None = None) -> Removed:
    """Delete temporary files and abort multipart uploads.

    Pass only :func:`stale` ones: removing a live writer's temporary file makes
    that write fail.

    Returns
    -------
    Removed
        ``tally`` (or a new one) with what was removed added to it.

    Raises
    ------
    StorageError
        On the first failure; ``tally`` then holds what was removed before it.
    """
    tally = Removed() if tally is None else tally
    for item in leftovers:
        if not dry_run:
            if item.kind == "temp":
                _remove_temp(store, item)
            else:
                _abort(store, item)
        if item.kind == "temp":
            tally.temps += 1
        else:
            tally.uploads += 1
        tally.bytes += item.size
    return tally


# ------------------------------------------------------------------- local
def _local_temps(store: Store) -> Iterator[Leftover]:
    root = store.root
    if not os.path.isdir(root):
        return

    def failed(exc: OSError) -> None:
        # A folder removed while walking is not an error; anything else is.
        if not isinstance(exc, FileNotFoundError):
            raise store._error(exc, "list", os.path.relpath(exc.filename or root, root))

    for folder, dirs, files in os.walk(root, onerror=failed):
        for name in [d for d in dirs if d.startswith(TEMP_PREFIX)]:
            dirs.remove(name)  # a staging folder is one leftover, not walked into
            path = os.path.join(folder, name)
            size, modified = _tree_size(path)
            yield Leftover("temp", os.path.relpath(path, root).replace(os.sep, "/"), size, modified, folder=True)
        for name in files:
            if not name.startswith(TEMP_PREFIX):
                continue
            path = os.path.join(folder, name)
            try:
                stat = os.lstat(path)
            except FileNotFoundError:
                continue  # its writer just renamed it into place
            yield Leftover("temp", os.path.relpath(path, root).replace(os.sep, "/"), stat.st_size, stat.st_mtime)


def _tree_size(path: str) -> tuple[int, float | None]:
    size, newest = 0, None
    for folder, _, files in os.walk(path):
        for name in files:
            try:
                stat = os.lstat(os.path.join(folder, name))
            except FileNotFoundError:
                continue
            size += stat.st_size
            newest = stat.st_mtime if newest is None else max(newest, stat.st_mtime)
    if newest is None:
        try:
            newest = os.lstat(path).st_mtime
        except FileNotFoundError:
            pass
    return size, newest


def _remove_temp(store: Store, item: Leftover) -> None:
    parts = item.path.split("/")
    if item.path.startswith("/") or ".." in parts or not parts[-1].startswith(TEMP_PREFIX):
        return  # never anything but a temporary file under the root
    path = os.path.join(store.root, *parts)
    try:
        if item.folder:
            shutil.rmtree(path)
        else:
            os.unlink(path)
    except FileNotFoundError:
        pass  # gone meanwhile
    except OSError as exc:
        raise store._error(exc, "delete", item.path) from exc


# ---------------------------------------------------------------------- S3
def _bucket_and_prefix(store: Store) -> tuple[str, str]:
    bucket, _, prefix = store.root.partition("/")
    # "prefix/": uploads under "prefix2/" belong to another store.
    return bucket, (prefix.strip("/") + "/") if prefix.strip("/") else ""


def _uploads(store: Store) -> Iterator[Leftover]:
    bucket, prefix = _bucket_and_prefix(store)
    markers: dict[str, str] = {}
    while True:
        try:
            page = store.fs.call_s3("list_multipart_uploads", Bucket=bucket, Prefix=prefix, **markers)
        except Exception as exc:
            raise store._error(exc, "list", "(multipart uploads)") from exc
        for upload in page.get("Uploads") or []:
            key = upload.get("Key", "")
            if not key.startswith(prefix):
                continue  # the server ignored Prefix: never touch another store's upload
            size, last_part = _parts(store, bucket, key, upload["UploadId"])
            # Its last activity, not only its start: an upload begun hours ago may
            # still be sending parts (and some servers, moto among them, report a
            # fixed Initiated date).
            times = [t for t in (_timestamp(upload.get("Initiated")), last_part) if t is not None]
            yield Leftover("upload", key[len(prefix):], size, max(times) if times else None, upload_id=upload["UploadId"])
        if not page.get("IsTruncated"):
            return
        markers = {"KeyMarker": page.get("NextKeyMarker", ""), "UploadIdMarker": page.get("NextUploadIdMarker", "")}


def _parts(store: Store, bucket: str, key: str, upload_id: str) -> tuple[int, float | None]:
    """Bytes uploaded so far, and when the last part was."""
    size, newest = 0, None
    marker: dict[str, int] = {}
    while True:
        try:
            page = store.fs.call_s3("list_parts", Bucket=bucket, Key=key, UploadId=upload_id, **marker)
        except Exception:
            return size, newest  # aborted or completed meanwhile
        for part in page.get("Parts") or []:
            size += int(part.get("Size") or 0)
            when = _timestamp(part.get("LastModified"))
            if when is not None:
                newest = when if newest is None else max(newest, when)
        if not page.get("IsTruncated"):
            return size, newest
        marker = {"PartNumberMarker": int(page.get("NextPartNumberMarker") or 0)}


def _timestamp(value: Any) -> float | None:
    if isinstance(value, datetime.datetime):
        return value.timestamp()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


def _abort(store: Store, item: Leftover) -> None:
    bucket, prefix = _bucket_and_prefix(store)
    try:
        store.fs.call_s3("abort_multipart_upload", Bucket=bucket, Key=prefix + item.path, UploadId=item.upload_id)
    except FileNotFoundError:
        pass  # NoSuchUpload: completed or aborted meanwhile
    except Exception as exc:
        if "NoSuchUpload" in str(exc):
            return
        raise store._error(exc, "delete", item.path) from exc
