"""One ``Store`` over bytes on any fsspec filesystem: where task results live.

Layout under the root URL (paths come from hashes, never from human names)::

    results/<k[0:2]>/<k[2:4]>/<key>.json            the entry's manifest (small JSON)
    results/<k[0:2]>/<k[2:4]>/<key>.<sha256[:16]>   its payload, named by its digest
    quarantine/<key>-<time>-<random>/               entries that failed verification
    probe/<random>                                  written and deleted by :meth:`Store.probe`

An entry is committed payload first, manifest last, so a manifest is never
visible before its payload is complete. The manifest is written create-only
(unless overwriting on purpose): when two runs compute one key at once, the first
manifest wins and the other run adopts it. Payload names carry their digest, so
two writers never overwrite each other's bytes.

Every object is published whole or not at all: locally through a temporary file
in the same folder and ``os.replace`` (or ``os.link`` for create-only); on S3 by
a single PUT (``If-None-Match: *`` for create-only). A bare ``fs.open(path, "wb")``
would publish a truncated object if the writer failed half way.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import dask.config
import fsspec

from ..exceptions import (
    CorruptedResultError,
    InvalidOptionError,
    SerializationError,
    StorageError,
)
from ..masking import add_secrets
from . import retry
from .serializers import get_serializer
from .urls import check_url, sanitize_url

__all__ = ["DEFAULT_URL", "Manifest", "Store", "resolve_store"]

logger = logging.getLogger("daskflow.storage")

#: Where results go when nothing is configured.
DEFAULT_URL = "./.daskflow"
#: Bumped when the manifest format changes incompatibly.
MANIFEST_VERSION = 1

_KEY_RE = re.compile(r"^[A-Za-z0-9_-]{8,128}$")
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")
# Option names that hold credentials: kept out of pickles sent to workers, which
# get credentials from their own environment instead.
# Whole names (or their last "_" part), not substrings: "SSEKMSKeyId" or
# "ServerSideEncryption" must reach workers, or they would write unencrypted.
_SECRET_OPTION = re.compile(
    r"(^|_)(key|secret|token|password|passwd|credentials?)$"
    r"|^aws_(access_key_id|secret_access_key|session_token)$|connection_string",
    re.IGNORECASE,
)
_SAFE_OPTION = {"endpoint_url", "region_name", "use_ssl", "verify", "anon", "requester_pays", "use_listings_cache"}
#: Payloads above this many bytes are read with s3fs's parallel ranged GETs.
_LARGE_READ = 32 * 2**20
# memory:// is one dict per process, shared by every Store on it: create-only
# writes need one lock per process too, not one per Store instance.
_MEMORY_LOCK = threading.Lock()


@dataclass(frozen=True)
class Manifest:
    """What is known about a stored entry without reading its payload.

    ``hmac`` signs every other field (the payload's digest included) when the
    store has a signing key.
    """

    key: str
    serializer: str
    size: int
    sha256: str
    payload: str
    created: float
    expires: float | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    version: int = MANIFEST_VERSION
    hmac: str | None = None

    def expired(self, now: float | None = None) -> bool:
        return self.expires is not None and (now if now is not None else time.time()) >= self.expires

    def signed_bytes(self) -> bytes:
        fields = asdict(self)
        fields.pop("hmac")
        return json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()

    def to_bytes(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, key: str, data: bytes) -> Manifest:
        """Parse a manifest; anything malformed raises :class:`CorruptedResultError`."""
        try:
            fields = json.loads(data.decode())
            if not isinstance(fields, dict):
                raise TypeError(f"a JSON {type(fields).__name__}, not an object")
            manifest = cls(**fields)
        except (ValueError, TypeError, UnicodeDecodeError) as exc:
            raise CorruptedResultError(f"the manifest of entry {key} is not valid ({type(exc).__name__}: {exc})") from None
        if not manifest._well_formed(key):
            raise CorruptedResultError(f"the manifest of entry {key} does not describe this entry")
        return manifest

    def _well_formed(self, key: str) -> bool:
        """Every field of the type the readers use (a wrong type would otherwise
        raise later, e.g. ``expired()`` comparing a float with a string)."""
        def number(value: Any) -> bool:
            return isinstance(value, (int, float)) and not isinstance(value, bool)

        return (
            self.key == key
            and isinstance(self.size, int) and not isinstance(self.size, bool) and self.size >= 0
            and isinstance(self.sha256, str) and re.fullmatch(r"[0-9a-f]{64}", self.sha256) is not None
            and self.payload == f"{key}.{self.sha256[:16]}"
            and isinstance(self.serializer, str)
            and number(self.created)
            and (self.expires is None or number(self.expires))
            and isinstance(self.meta, dict)
            and isinstance(self.version, int)
            and (self.hmac is None or isinstance(self.hmac, str))
        )


def _shard(key: str) -> str:
    return f"results/{key[0:2]}/{key[2:4]}"


def _payload_name(key: str, manifest_bytes: bytes) -> str | None:
    """The payload a (possibly damaged) manifest names, if it is a name this
    key's payloads can have."""
    try:
        name = json.loads(manifest_bytes.decode())["payload"]
    except (ValueError, TypeError, KeyError, UnicodeDecodeError):
        return None
    return name if isinstance(name, str) and re.fullmatch(re.escape(key) + r"\.[0-9a-f]{16}", name) else None


def _still_the_entry(key: str, current: bytes, seen: Manifest | bytes | None) -> bool:
    """Whether the manifest now stored (``current``) is the one that failed."""
    if seen is None:
        return True
    if isinstance(seen, bytes):
        return current == seen
    return _payload_name(key, current) in (seen.payload, None)


def _check_key(key: str) -> str:
    if not isinstance(key, str) or not _KEY_RE.match(key):
        raise InvalidOptionError(f"result key {key!r} must be 8-128 letters, digits, '-' or '_'")
    return key


def _check_path(path: str) -> str:
    if (
        not isinstance(path, str)
        or not path
        or path.startswith("/")
        or "\\" in path
        or any(part in ("", ".", "..") for part in path.split("/"))
        or _CONTROL_CHARS.search(path) is not None
    ):
        raise InvalidOptionError(f"storage path {path!r} must be relative, '/'-separated, without '..' or control characters")
    return path


def _is_secret_option(name: str) -> bool:
    return name not in _SAFE_OPTION and bool(_SECRET_OPTION.search(name))


def _credentials(options: Mapping[str, Any]) -> list[str]:
    """String values of credential options, at any depth (to mask them in logs)."""
    found: list[str] = []
    for name, value in options.items():
        if isinstance(value, Mapping):
            found.extend(_credentials(value))
        elif isinstance(value, str) and _is_secret_option(name):
            found.append(value)
    return found


def shareable_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """``storage_options`` without credentials (what may travel to workers)."""
    safe: dict[str, Any] = {}
    for name, value in options.items():
        if _is_secret_option(name):
            continue  # a secret, or a mapping of them (e.g. "credentials": {...})
        safe[name] = shareable_options(value) if isinstance(value, Mapping) else value
    return safe


class Store:
    """Task results on a local folder, S3 or anything fsspec opens.

    Parameters
    ----------
    url : str, optional
        Root of the store: a folder (``./.daskflow``, made absolute here so
        workers with another working directory agree), ``s3://bucket/prefix``,
        ``memory://name`` (this process only) or any fsspec URL. Default: config
        ``daskflow.storage.url``, else ``./.daskflow``.
    storage_options : dict, optional
        Passed to fsspec, merged over config ``daskflow.storage.options``.
        Credentials among them are used here but never sent to workers: workers
        use their own environment (``AWS_*`` variables, profile, instance role).

    Notes
    -----
    With config ``daskflow.storage.signing-key`` set (environment variable
    ``DASK_DASKFLOW__STORAGE__SIGNING_KEY`` on the driver and every worker), each
    manifest carries an HMAC-SHA256 of its fields, the payload digest included,
    and an entry that does not verify is never deserialised. Without a key, the
    sha256 still catches corruption, but not deliberate tampering: only use a
    pickle store that nobody untrusted can write to.

    Examples
    --------
    >>> store = Store("memory://doc")
    >>> store.put("notes/a.txt", b"hello")
    >>> store.get("notes/a.txt")
    b'hello'
    """

    def __init__(self, url: str | os.PathLike[str] | None = None, storage_options: Mapping[str, Any] | None = None) -> None:
        source = ""
        if url is None:
            url = dask.config.get("daskflow.storage.url", None) or DEFAULT_URL
            source = "config daskflow.storage.url"
        url = os.fspath(url)
        if not isinstance(url, str) or not url.strip():
            raise InvalidOptionError(f"result storage must be a URL or folder like 's3://bucket/prefix' or './results', got {url!r}")
        # Before anything is made: "s3:/bucket" would otherwise become a local folder "s3:".
        check_url(url, source)
        if "://" not in url or url.startswith("file://"):
            url = os.path.abspath(os.path.expanduser(url.removeprefix("file://")))
        options = dict(dask.config.get("daskflow.storage.options", None) or {})
        options.update(storage_options or {})
        self.url = sanitize_url(url)
        self.storage_options = options
        protocol = url.split("://", 1)[0] if "://" in url else "file"
        if protocol in ("s3", "s3a"):
            # Lookups must see other processes' writes: never a listing cache
            # (RELIABILITY 2.2), even if asked for: a stale listing is a false miss.
            options["use_listings_cache"] = False
        try:
            self.fs, self.root = fsspec.url_to_fs(url, **options)
        except ImportError as exc:
            if protocol in ("s3", "s3a"):
                install = "install it with: pip install 'daskflow[s3]'"
            else:
                install = f"install the fsspec backend package for {protocol}://"
            raise InvalidOptionError(f"result storage {self.url!r} needs an fsspec backend that is not installed ({exc}); {install}") from exc
        except (TypeError, ValueError) as exc:
            if protocol not in fsspec.available_protocols():
                raise InvalidOptionError(
                    f"result storage {self.url!r}: unknown protocol {protocol!r}; use a folder, s3://bucket/prefix, "
                    "memory:// or another fsspec URL"
                ) from exc
            raise InvalidOptionError(f"result storage {self.url!r}: bad storage_options {shareable_options(options)!r}: {exc}") from exc
        self.root = self.root.rstrip("/")
        self.protocol = protocol
        self.local = protocol == "file"
        key = dask.config.get("daskflow.storage.signing-key", None)
        self._signing_key = key.encode() if isinstance(key, str) and key else key if isinstance(key, bytes) and key else None
        add_secrets(_credentials(options))
        if self._signing_key is not None:
            add_secrets([self._signing_key])
        #: False once :meth:`probe` finds that the backend ignores create-only writes.
        self.create_only_honoured = True
        # Whole-or-nothing does not need fsync (rename is atomic for readers);
        # fsync adds durability across power loss, at about 2 ms per entry on ext4.
        # Without it a torn entry after a power cut fails verification and is
        # recomputed, never read as a wrong value.
        self.fsync = bool(dask.config.get("daskflow.storage.fsync", False))

    # ------------------------------------------------------------- identity
    @property
    def signed(self) -> bool:
        """Whether entries are signed and verified with a key."""
        return self._signing_key is not None

    def __reduce__(self) -> tuple[Any, ...]:
        # Workers rebuild the filesystem from the URL; credentials stay here.
        return (_store_from_url, (self.url, _freeze(shareable_options(self.storage_options)), self.key_id))

    def __repr__(self) -> str:
        return f"Store({self.url!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Store) and other.url == self.url

    def __hash__(self) -> int:
        return hash(self.url)

    def _full(self, path: str) -> str:
        return f"{self.root}/{_check_path(path)}"

    def describe(self, path: str = "") -> str:
        """A URL for ``path`` in this store, for messages."""
        base = self.url.rstrip("/")
        return f"{base}/{path}" if path else base

    # -------------------------------------------------------------- bytes
    def put(self, path: str, data: bytes, *, create_only: bool = False) -> None:
        """Write ``data`` at ``path`` atomically (whole or not at all).

        Like every I/O method here, a transient error (timeout, throttling, 5xx,
        broken connection) is tried again per config ``daskflow.storage.retries``
        (:mod:`daskflow.storage.retry`); a create-only write tried again after
        its first try landed unseen finds its own bytes and succeeds.

        Raises
        ------
        FileExistsError
            With ``create_only=True`` when ``path`` already exists.
        StorageError
            When the backend refuses or cannot be reached.
        """
        full = self._full(path)

        def once() -> None:
            if self.local:
                self._put_local(full, data, create_only)
            elif create_only:
                self._put_create_only(full, data)
            else:
                self.fs.pipe_file(full, data)

        tries = retry.Tries()
        try:
            retry.call(once, what=f"write of {self.describe(path)}", tries=tries)
        except FileExistsError:
            # A retried create-only write whose earlier try landed (its answer was
            # lost: a timeout after the server committed) finds our own bytes.
            if tries.count > 1 and self._holds(full, data):
                return
            raise
        except Exception as exc:
            raise self._error(exc, "write", path, tries) from exc

    def _holds(self, full: str, data: bytes) -> bool:
        """Whether the object at ``full`` is exactly ``data``."""
        try:
            return self.fs.cat_file(full, **self._read_options()) == data
        except Exception:
            return False

    def _put_local(self, full: str, data: bytes, create_only: bool) -> None:
        folder = os.path.dirname(full)
        try:
            # Most writes go to a folder that exists: try first, make it on a miss
            # (a mkdir per write costs as much as the write on some filesystems).
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-")
        except FileNotFoundError:
            try:
                os.makedirs(folder, exist_ok=True)
            except FileExistsError as exc:
                # A file where a folder belongs: not "the object already exists",
                # which put() reports to create-only callers as losing a race.
                raise NotADirectoryError(exc.errno, "a file stands where a folder is needed", exc.filename) from exc
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-")
        try:
            if _fchmod is not None:  # mkstemp makes 0600; a shared folder needs the umask's mode
                _fchmod(fd, 0o666 & ~_UMASK)
            with os.fdopen(fd, "wb") as file:
                file.write(data)
                file.flush()
                if self.fsync:
                    os.fsync(file.fileno())
            if create_only:
                os.link(tmp, full)  # fails with EEXIST: first writer wins
            else:
                os.replace(tmp, full)
        finally:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
        if self.fsync:
            _fsync_dir(folder)

    def _put_create_only(self, full: str, data: bytes) -> None:
        if self.protocol == "memory":
            with _MEMORY_LOCK:  # one process owns every memory store: a lock is exact
                if self.fs.exists(full):
                    raise FileExistsError(full)
                self.fs.pipe_file(full, data)
            return
        for attempt in range(3):
            try:
                self.fs.pipe_file(full, data, mode="create")
                return
            except TypeError:  # a backend without create-only support: best effort
                break
            except Exception as exc:
                # S3 answers 409 ConditionalRequestConflict when two create-only
                # writes of one key overlap; AWS says to retry (the retry then
                # gets 412, i.e. FileExistsError, if the other one won).
                if "conditionalrequestconflict" not in str(exc).lower() or attempt == 2:
                    raise
        if self.fs.exists(full):
            raise FileExistsError(full)
        self.fs.pipe_file(full, data)

    def _read_options(self, large: bool = False) -> dict[str, Any]:
        """s3fs reads an object with a HEAD (for its size) and then the GET, unless
        told not to split it; a missing object then costs a HEAD, a 404 and a LIST.
        Manifests and ordinary results are small: read them with one GET."""
        if self.protocol in ("s3", "s3a") and not large:
            return {"max_concurrency": 1}
        return {}

    def get(self, path: str, *, large: bool = False) -> bytes:
        """The bytes at ``path``.

        Raises
        ------
        FileNotFoundError
            If nothing is there (a miss, not an error).
        StorageError
            For every other failure.
        """
        full = self._full(path)  # an invalid path is the caller's error, not storage's
        tries = retry.Tries()
        try:
            return retry.call(lambda: self.fs.cat_file(full, **self._read_options(large)), what=f"read of {self.describe(path)}", tries=tries)
        except FileNotFoundError as exc:
            if _missing_bucket(exc):
                raise self._error(exc, "read", path) from exc
            raise
        except Exception as exc:
            raise self._error(exc, "read", path, tries) from exc

    def get_many(self, paths: Iterable[str]) -> dict[str, bytes | None]:
        """Read many small objects at once (concurrently where the backend can);
        ``None`` for a missing one.

        Raises
        ------
        StorageError
            On the first failure other than a missing object.
        """
        paths = list(paths)
        if not paths:
            return {}
        full = {self._full(p): p for p in paths}
        if self.local or self.protocol == "memory":
            out: dict[str, bytes | None] = {}
            for path in paths:
                try:
                    out[path] = self.get(path)
                except FileNotFoundError:
                    out[path] = None
            return out

        def batch(names: list[str]) -> dict[str, Any]:
            found = self.fs.cat(names, on_error="return", **self._read_options())
            if not isinstance(found, dict):  # a single path comes back bare
                found = {names[0]: found}
            # Keyed by our full names (the backend may strip or add a protocol).
            return {(n if n in full else self._full_name(n, full)): v for n, v in found.items()}

        tries = retry.Tries()
        try:
            found = retry.retry_each(batch, list(full), what=f"read of {len(full)} objects in {self.url}", tries=tries)
        except Exception as exc:
            raise self._error(exc, "read", paths[0], tries) from exc
        result: dict[str, bytes | None] = {}
        for name, value in found.items():
            path = full.get(name) or name
            if isinstance(value, FileNotFoundError) and not _missing_bucket(value):
                result[path] = None
            elif isinstance(value, BaseException):
                raise self._error(value, "read", path, tries) from value
            else:
                result[path] = value
        for path in paths:
            result.setdefault(path, None)
        return result

    def _full_name(self, name: str, full: Mapping[str, str]) -> str:
        stripped = self.fs._strip_protocol(name)
        return stripped if stripped in full else name

    def exists(self, path: str) -> bool:
        """Whether ``path`` exists, asked of the backend (never a listing cache)."""
        full = self._full(path)
        tries = retry.Tries()
        try:
            retry.call(lambda: self.fs.info(full), what=f"read of {self.describe(path)}", tries=tries)
            return True
        except FileNotFoundError as exc:
            if _missing_bucket(exc):
                raise self._error(exc, "read", path) from exc
            return False
        except Exception as exc:
            raise self._error(exc, "read", path, tries) from exc

    def delete(self, path: str) -> None:
        """Remove ``path``; a missing one is fine."""
        full = self._full(path)
        tries = retry.Tries()
        try:
            retry.call(lambda: self.fs.rm_file(full), what=f"delete of {self.describe(path)}", tries=tries)
        except FileNotFoundError:
            pass
        except Exception as exc:
            raise self._error(exc, "delete", path, tries) from exc

    def list(self, prefix: str = "") -> list[str]:
        """Every object under ``prefix`` (recursive), as paths relative to the root, sorted."""
        base = self._full(prefix) if prefix else self.root
        tries = retry.Tries()
        try:
            if self.local and not os.path.exists(base):
                return []
            found = retry.call(lambda: self.fs.find(base, withdirs=False), what=f"listing of {self.describe(prefix)}", tries=tries)
        except FileNotFoundError as exc:
            if _missing_bucket(exc):  # a mistyped bucket is an error, not an empty store
                raise self._error(exc, "list", prefix) from exc
            return []
        except Exception as exc:
            raise self._error(exc, "list", prefix, tries) from exc
        root = self.fs._strip_protocol(self.root).rstrip("/") + "/"
        out = []
        for name in found:
            name = self.fs._strip_protocol(name)
            relative = name.removeprefix(root)
            if not os.path.basename(relative).startswith(".tmp-"):
                out.append(relative)
        return sorted(out)

    def files(self, prefix: str = "") -> dict[str, dict[str, Any]]:
        """Every object under folder ``prefix`` (recursive) with fsspec's info about
        it (``size``, a modification time...), as paths relative to the root, in one
        listing: sizes come with it, where :meth:`list` plus a request per object
        would not. Writers' ``.tmp-`` files are included.

        Raises
        ------
        StorageError
            If the store cannot be listed, or its bucket does not exist.
        """
        base = self._full(prefix) if prefix else self.root
        tries = retry.Tries()
        try:
            if self.local and not os.path.isdir(base):
                return {}
            found = retry.call(lambda: self.fs.find(base, withdirs=False, detail=True), what=f"listing of {self.describe(prefix)}", tries=tries)
        except FileNotFoundError as exc:
            if _missing_bucket(exc):  # a typo in the URL, not an empty store
                raise self._error(exc, "list", prefix) from exc
            return {}  # nothing stored yet
        except Exception as exc:
            raise self._error(exc, "list", prefix, tries) from exc
        root = self.fs._strip_protocol(self.root).rstrip("/") + "/"
        return {self.fs._strip_protocol(name).removeprefix(root): info for name, info in found.items() if info.get("type") != "directory"}

    def usage(self) -> dict[str, int]:
        """Bytes stored under each top-level folder of the store (one recursive
        listing): ``{"results": ..., "runs": ..., "hpo_kfold": ...}``; files at the
        root count under ``""``.

        Raises
        ------
        StorageError
            If the store cannot be listed.
        """
        out: dict[str, int] = {}
        for relative, info in self.files().items():
            folder = relative.split("/", 1)[0] if "/" in relative else ""
            out[folder] = out.get(folder, 0) + int(info.get("size") or 0)
        return out

    def children(self, prefix: str) -> list[str]:
        """Names directly under folder ``prefix`` (files and folders, one level), sorted.

        One listing request on object stores (a delimiter listing), however many
        objects lie deeper: ``runs/`` holds thousands of run folders.
        """
        base = self._full(prefix)

        def once() -> list[str]:
            if self.local:
                return sorted(name for name in os.listdir(base) if not name.startswith(".tmp-"))
            return self.fs.ls(base, detail=False, refresh=True) if self.protocol in ("s3", "s3a") else self.fs.ls(base, detail=False)

        tries = retry.Tries()
        try:
            found = retry.call(once, what=f"listing of {self.describe(prefix)}", tries=tries)
            if self.local:
                return found
        except (FileNotFoundError, NotADirectoryError) as exc:
            if _missing_bucket(exc):
                raise self._error(exc, "list", prefix) from exc
            return []
        except Exception as exc:
            raise self._error(exc, "list", prefix, tries) from exc
        base_stripped = self.fs._strip_protocol(base).rstrip("/")
        names = set()
        for name in found:
            name = self.fs._strip_protocol(name).rstrip("/")
            if name == base_stripped:
                continue
            names.add(name.rsplit("/", 1)[-1])
        return sorted(n for n in names if not n.startswith(".tmp-"))

    # ------------------------------------------------------------ entries
    def manifest_path(self, key: str) -> str:
        return f"{_shard(_check_key(key))}/{key}.json"

    def payload_path(self, manifest: Manifest) -> str:
        return f"{_shard(manifest.key)}/{manifest.payload}"

    def write_result(
        self,
        key: str,
        value: Any,
        *,
        serializer: str = "pickle",
        expires: float | None = None,
        meta: Mapping[str, Any] | None = None,
        overwrite: bool = False,
    ) -> tuple[Manifest, bool]:
        """Serialise ``value`` and commit it as entry ``key``.

        Returns
        -------
        manifest, adopted
            ``adopted`` is True when another writer committed ``key`` first: the
            returned manifest is theirs, and their value is the one to use.

        Raises
        ------
        SerializationError
            If the serializer cannot handle ``value``; nothing is written.
        StorageError
            If the backend fails; no manifest is published.
        """
        _check_key(key)
        codec = get_serializer(serializer)
        try:
            data = codec.dumps(value)
        except SerializationError:
            raise
        except Exception as exc:
            raise SerializationError(
                f"cannot serialise a result of type {type(value).__module__}.{type(value).__qualname__} "
                f"with {serializer!r}: {type(exc).__name__}: {exc}"
            ) from exc
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise SerializationError(f"serializer {serializer!r} returned {type(data).__name__}, not bytes")
        return self.commit(key, bytes(data), serializer=serializer, expires=expires, meta=meta, overwrite=overwrite)

    def commit(
        self,
        key: str,
        data: bytes,
        *,
        serializer: str = "pickle",
        expires: float | None = None,
        meta: Mapping[str, Any] | None = None,
        overwrite: bool = False,
    ) -> tuple[Manifest, bool]:
        """Commit serialised bytes as entry ``key`` (see :meth:`write_result`)."""
        _check_key(key)
        digest = hashlib.sha256(data).hexdigest()
        manifest = Manifest(
            key=key,
            serializer=serializer,
            size=len(data),
            sha256=digest,
            payload=f"{key}.{digest[:16]}",
            created=time.time(),
            expires=expires,
            meta=dict(meta or {}),
        )
        manifest = self._sign(manifest)
        previous = None
        if overwrite:
            try:
                previous = self.read_manifest(key)
            except (CorruptedResultError, StorageError):
                previous = None
        self.put(self.payload_path(manifest), data)
        try:
            self.put(self.manifest_path(key), manifest.to_bytes(), create_only=not overwrite)
        except FileExistsError:
            try:
                winner = self.read_manifest(key)
            except CorruptedResultError as exc:
                self.quarantine(key, str(exc))
                winner = None
            if winner is None:  # gone or bad: ours replaces it
                self.put(self.manifest_path(key), manifest.to_bytes())
                return manifest, False
            if winner.payload != manifest.payload:
                self.delete(self.payload_path(manifest))
            return winner, True
        if previous is not None and previous.payload != manifest.payload:
            self.delete(self.payload_path(previous))
        return manifest, False

    def read_manifest(self, key: str) -> Manifest | None:
        """The manifest of ``key``, or ``None`` if there is no entry.

        Raises
        ------
        CorruptedResultError
            If it is malformed or, with a signing key, does not verify.
        """
        try:
            data = self.get(self.manifest_path(key))
        except FileNotFoundError:
            return None
        return self._verified_manifest(key, data)

    def lookup(self, keys: Iterable[str]) -> dict[str, Manifest | None]:
        """Manifests of many keys in one batch: ``None`` for a miss or an expired
        entry. Corrupted or unsigned entries are quarantined (with a warning) and
        count as misses. Payloads are not read.

        Raises
        ------
        StorageError
            If the backend fails (a miss is not a failure).
        """
        keys = list(dict.fromkeys(keys))
        paths = {self.manifest_path(k): k for k in keys}
        raw = self.get_many(paths)
        now = time.time()
        out: dict[str, Manifest | None] = {}
        for path, data in raw.items():
            key = paths[path]
            if data is None:
                out[key] = None
                continue
            try:
                manifest = self._verified_manifest(key, data)
            except CorruptedResultError as exc:
                self.quarantine(key, str(exc), seen=data)
                out[key] = None
                continue
            out[key] = None if manifest.expired(now) else manifest
        return out

    def read_result(self, key: str, manifest: Manifest | None = None) -> Any:
        """Load entry ``key``: size, digest (and signature) are checked before the
        payload is deserialised.

        Raises
        ------
        FileNotFoundError
            If there is no entry.
        CorruptedResultError
            If the entry fails a check; it is quarantined first.
        SerializationError
            If the verified payload cannot be deserialised.
        """
        try:
            if manifest is None:
                manifest = self.read_manifest(key)
            if manifest is None:
                raise FileNotFoundError(f"no entry {key} in {self.url}")
            try:
                # Above s3fs's block size a parallel ranged download pays for its HEAD.
                data = self.get(self.payload_path(manifest), large=manifest.size > _LARGE_READ)
            except FileNotFoundError:
                raise CorruptedResultError(f"entry {key} in {self.url}: the manifest's payload is missing") from None
            if len(data) != manifest.size:
                raise CorruptedResultError(f"entry {key} in {self.url}: payload has {len(data)} bytes, the manifest says {manifest.size}")
            if hashlib.sha256(data).hexdigest() != manifest.sha256:
                raise CorruptedResultError(f"entry {key} in {self.url}: payload sha256 does not match the manifest")
        except CorruptedResultError as exc:
            # Only if the entry still is the one that failed: a reader holding
            # an older manifest (the entry was overwritten meanwhile) must not
            # move the new, good entry away.
            self.quarantine(key, str(exc), seen=manifest)
            raise
        codec = get_serializer(manifest.serializer)
        try:
            return codec.loads(data)
        except Exception as exc:
            raise SerializationError(
                f"entry {key} in {self.url} verified but cannot be loaded with {manifest.serializer!r}: "
                f"{type(exc).__name__}: {exc} (a class or package the result needs may be missing here)"
            ) from exc

    def quarantine(self, key: str, reason: str, seen: Manifest | bytes | None = None) -> None:
        """Move entry ``key`` aside so it reads as a miss and gets recomputed.

        ``seen`` is what the caller found wrong (the manifest, or its raw bytes):
        when given and the entry no longer matches it (another writer replaced
        it meanwhile), the entry is left alone.
        """
        manifest_path = self.manifest_path(key)
        try:
            data = self.get(manifest_path)
        except FileNotFoundError:
            return  # someone else moved it already
        except StorageError:
            logger.warning("cannot read %s to quarantine it", self.describe(manifest_path), exc_info=True)
            return
        if not _still_the_entry(key, data, seen):
            logger.info("entry %s in %s was replaced since it failed (%s); leaving the new one", key, self.url, reason)
            return
        logger.warning("corrupted entry %s in %s (%s); moving it to quarantine/ and recomputing", key, self.url, reason)
        target = f"quarantine/{key}-{int(time.time())}-{secrets.token_hex(4)}"
        try:
            self.put(f"{target}/manifest.json", data)
            payload = _payload_name(key, data)
            if payload is not None:  # never follow a damaged manifest to another entry's payload
                try:
                    self.put(f"{target}/payload", self.get(f"{_shard(key)}/{payload}"))
                    self.delete(f"{_shard(key)}/{payload}")
                except FileNotFoundError:
                    pass
        except Exception:  # a failed copy must not keep the bad manifest in place
            logger.debug("quarantine of %s incomplete", key, exc_info=True)
        self.delete(manifest_path)

    @property
    def key_id(self) -> str | None:
        """A fingerprint of the signing key (not the key): lets a worker check it
        holds the same key as the driver."""
        if self._signing_key is None:
            return None
        return hashlib.sha256(b"daskflow-key-id:" + self._signing_key).hexdigest()[:12]

    def _check_signing_key(self) -> None:
        """Refuse to work on a store whose creator signs entries with a key this
        process does not have (raised on use, never while unpickling, which would
        break the worker's connection)."""
        expected = getattr(self, "_expected_key_id", None)
        if expected is not None and expected != self.key_id:
            problem = "has no signing key" if self.key_id is None else "has a different signing key"
            raise StorageError(
                f"entries in {self.url} are signed, but this process {problem}; set the same "
                "DASK_DASKFLOW__STORAGE__SIGNING_KEY (config daskflow.storage.signing-key) on the driver and every worker",
                self.url, "read",
            )

    def signature(self, data: bytes) -> str | None:
        """An HMAC-SHA256 of ``data`` with the signing key (``None`` without a key)."""
        self._check_signing_key()
        if self._signing_key is None:
            return None
        return hmac.new(self._signing_key, b"daskflow-bytes:" + data, hashlib.sha256).hexdigest()

    def verify_signature(self, data: bytes, signature: str | None) -> bool:
        """Whether ``signature`` is this store's signature of ``data`` (always True without a key)."""
        expected = self.signature(data)
        return expected is None or (isinstance(signature, str) and hmac.compare_digest(expected, signature))

    def _sign(self, manifest: Manifest) -> Manifest:
        self._check_signing_key()
        if self._signing_key is None:
            return manifest
        digest = hmac.new(self._signing_key, manifest.signed_bytes(), hashlib.sha256).hexdigest()
        return Manifest(**{**asdict(manifest), "hmac": digest})

    def _verified_manifest(self, key: str, data: bytes) -> Manifest:
        self._check_signing_key()
        manifest = Manifest.from_bytes(key, data)
        if self._signing_key is not None:
            expected = hmac.new(self._signing_key, manifest.signed_bytes(), hashlib.sha256).hexdigest()
            if manifest.hmac is None or not hmac.compare_digest(expected, manifest.hmac):
                raise CorruptedResultError(
                    f"entry {key} in {self.url} is not signed with this store's signing key; it will not be deserialised"
                )
        return manifest

    # -------------------------------------------------------------- probe
    def probe(self) -> None:
        """Check, before any task runs, that this store can be written, read and deleted.

        Also learns whether the backend honours create-only writes (some S3
        look-alikes accept ``If-None-Match`` and ignore it); if not, two runs of one
        key may both commit and a warning says so.

        Raises
        ------
        StorageError
            Naming the URL, the operation that failed and the likely fix.
        """
        path = f"probe/{secrets.token_hex(8)}"
        token = secrets.token_bytes(16)
        with retry.not_retrying("connection"):  # a refused first contact: a wrong endpoint, said at once
            self.put(path, token, create_only=True)
        try:
            if self.get(path) != token:
                raise StorageError(f"result storage {self.url}: a probe object read back different bytes", self.url, "probe")
            try:
                self.put(path, b"again", create_only=True)
            except FileExistsError:
                self.create_only_honoured = True
            else:
                self.create_only_honoured = False
                logger.warning(
                    "result storage %s ignores create-only writes; two runs computing one key at once "
                    "may both commit it (the later entry wins)", self.url,
                )
        finally:
            self.delete(path)

    # -------------------------------------------------------------- errors
    def _endpoint(self) -> str | None:
        client_kwargs = self.storage_options.get("client_kwargs") or {}
        configured = client_kwargs.get("endpoint_url") or self.storage_options.get("endpoint_url")
        if configured or self.protocol not in ("s3", "s3a"):
            return configured
        # botocore's own settings, which s3fs leaves it to read.
        return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None

    def _error(self, exc: BaseException, operation: str, path: str, tries: retry.Tries | None = None) -> StorageError:
        """Wrap a backend failure in a StorageError naming the URL, the operation and
        the likely fix (s3fs's own messages name neither the bucket nor the key);
        ``tries`` says how often a transient error was retried before giving up."""
        if isinstance(exc, StorageError):
            return exc
        where = self.describe(path)
        kind = retry.transient_kind(exc)
        gave_up = tries.describe() if tries is not None else ""
        # An endpoint that stays away through every retry is an outage, said first.
        lead = "storage unreachable: " if kind == "connection" and self._remote else ""
        return StorageError(
            f"{lead}{operation} of {where} failed: {self._hint(exc, operation, kind)}"
            + (f"; {gave_up}" if gave_up else "")
            + f" ({type(exc).__name__}: {exc})",
            where,
            operation,
        )

    @property
    def _remote(self) -> bool:
        return not self.local and self.protocol != "memory"

    def _bucket(self) -> str:
        return self.root.split("/", 1)[0]

    def _hint(self, exc: BaseException, operation: str, kind: str | None = None) -> str:
        endpoint = self._endpoint()
        at = f" at endpoint {endpoint}" if endpoint else ""
        squashed = str(exc).lower().replace(" ", "")
        codes = retry.error_codes(exc)
        remote = self._remote
        if type(exc).__name__ == "NoCredentialsError":
            return (
                "no credentials were found in this process: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
                "AWS_PROFILE or an instance role here (workers need their own; daskflow never sends credentials)"
            )
        denied = ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch")
        if isinstance(exc, PermissionError) or codes & set(denied) or any(code.lower() in squashed for code in denied):
            if not remote:
                return "permission denied: make the folder writable or choose another result_storage"
            return (
                f"access was denied to bucket {self._bucket()!r}{at} (permission or credentials, not retried): check the "
                "credentials this process uses (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE or the instance role) "
                f"and the bucket policy allows the {operation}"
            )
        if remote and ("NoSuchBucket" in codes or "bucketdoesnotexist" in squashed
                       or (isinstance(exc, FileNotFoundError) and operation in ("write", "probe"))):
            return f"bucket {self._bucket()!r} does not exist{at}: create it or fix the storage URL"
        if kind == "timeout":
            # Not "cannot reach": a timeout says the endpoint answered too slowly
            # (or the network dropped the answer), and the fix is a longer timeout.
            if any("ConnectTimeout" in name for name in _class_names(exc)):
                target = endpoint or f"(the default for {self.protocol}://)"
                return (
                    f"timed out connecting to the storage endpoint {target}: check the network, or raise the connect "
                    "timeout (for S3: storage_options config_kwargs={'connect_timeout': 60})"
                )
            return (
                f"the {operation} timed out{at}: raise the backend's timeout (for S3: storage_options "
                "config_kwargs={'read_timeout': 120}) or the retries (config daskflow.storage.retries.attempts, max-delay)"
            )
        if kind == "throttled":
            return (
                f"the storage service is throttling requests (SlowDown){at}: fewer tasks writing at once, or more "
                "retries (config daskflow.storage.retries.attempts, max-delay)"
            )
        if kind == "server":
            return f"the storage service answered with a server error{at}: it may be degraded or restarting; try again later"
        if kind == "connection" or _is_connection_error(exc):
            target = endpoint or f"(the default for {self.protocol}://)"
            return (
                f"cannot reach the storage endpoint {target}: check the network, or set the endpoint with "
                "AWS_ENDPOINT_URL=http://HOST:PORT or config daskflow.storage.options: "
                "{client_kwargs: {endpoint_url: http://HOST:PORT}} (the README's S3 section)"
            )
        if kind == "busy":
            return "the filesystem stayed busy: try again later"
        if isinstance(exc, (NotADirectoryError, IsADirectoryError)) or (self.local and isinstance(exc, FileExistsError)):
            return "a file stands where the store needs a folder: choose another result_storage"
        return "see the cause above"


def _missing_bucket(exc: BaseException) -> bool:
    """s3fs raises FileNotFoundError for a missing bucket as for a missing key;
    only the former is a failure (every lookup would silently miss)."""
    return bool(retry.error_codes(exc) & {"NoSuchBucket"})


def _is_connection_error(exc: BaseException) -> bool:
    names = {type(e).__name__ for e in retry.exception_chain(exc)}
    return bool(names & {
        "EndpointConnectionError", "ClientConnectorError", "ServerDisconnectedError", "ConnectionRefusedError", "ConnectionError",
    })


def _class_names(exc: BaseException) -> set[str]:
    return {cls.__name__ for e in retry.exception_chain(exc) for cls in type(e).__mro__}


def _read_umask() -> int:
    """This process's umask, read without changing it where the OS allows
    (``os.umask`` sets it process-wide, racing with other threads)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()
_fchmod = getattr(os, "fchmod", None)  # absent on Windows before Python 3.13


def _fsync_dir(folder: str) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _freeze(options: Mapping[str, Any]) -> str:
    return json.dumps(options, sort_keys=True, default=repr)


@functools.lru_cache(maxsize=64)
def _store_from_url(url: str, frozen_options: str, key_id: str | None) -> Store:
    """Rebuild a store on a worker from its URL (one per process, filesystem reused)."""
    store = Store(url, json.loads(frozen_options))
    store._expected_key_id = key_id
    return store


def resolve_store(value: Store | str | os.PathLike[str] | None) -> Store:
    """A :class:`Store` from a store, a URL or folder, or ``None`` (the configured default)."""
    if isinstance(value, Store):
        return value
    if value is None or isinstance(value, (str, os.PathLike)):
        return Store(value)
    raise InvalidOptionError(
        f"result_storage must be a URL like 's3://bucket/prefix', a folder, or a daskflow Store, got {type(value).__name__}: {value!r}"
    )
