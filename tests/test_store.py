"""One conformance suite for the Store, run against memory://, a local folder and
S3 (a moto server on 127.0.0.1, spoken to over HTTP by s3fs), then the errors a
misconfigured store must give before any task runs."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib
import json
import os
import pickle
import socket
import stat
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import cloudpickle
import dask
import pytest

from daskflow import CorruptedResultError, SerializationError, StorageError, Store
from daskflow.exceptions import InvalidOptionError
from daskflow.storage import Manifest, register_serializer

from .s3 import bucket_keys, denied_user_keys, make_s3_store, moto_authentication

T = TypeVar("T")

KEY = "0123456789abcdef0123456789abcdef"
SAME_SHARD = "0123" + "f" * 28  # shares KEY's folder results/01/23/
OTHER = "f" * 32


# ------------------------------------------------------------------ backends
@dataclass
class Backend:
    """One fresh store root, and a view of the container around it."""

    kind: str
    url: str
    options: dict[str, Any]
    everything: Callable[[], list[str]]  # every object in the container, inside the root or not
    local_root: Path | None = None

    def store(self, **extra_options: Any) -> Store:
        """A new Store instance on the root."""
        return Store(self.url, storage_options={**self.options, **extra_options})


def _memory_backend() -> Backend:
    from fsspec.implementations.memory import MemoryFileSystem

    return Backend("memory", f"memory://conformance-{uuid.uuid4().hex}", {}, lambda: sorted(MemoryFileSystem.store))


def _local_backend(tmp_path: Path) -> Backend:
    def everything() -> list[str]:
        return sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())

    return Backend("local", str(tmp_path / "store"), {}, everything, local_root=tmp_path / "store")


def _s3_backend(request: pytest.FixtureRequest) -> Backend:
    url, options = request.getfixturevalue("s3_store_url")
    endpoint = options["client_kwargs"]["endpoint_url"]
    bucket = url.removeprefix("s3://").split("/", 1)[0]
    return Backend("s3", url, options, lambda: bucket_keys(endpoint, bucket))


@pytest.fixture(params=["memory", "local", "s3"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """A fresh, empty root on each backend. Afterwards: no temporary file left in a
    local root (open multipart uploads on S3 are checked by ``s3_store_url``)."""
    if request.param == "memory":
        chosen = _memory_backend()
    elif request.param == "local":
        chosen = _local_backend(tmp_path)
    else:
        chosen = _s3_backend(request)
    yield chosen
    if chosen.local_root is not None:
        assert not list(chosen.local_root.rglob(".tmp-*")), "a temporary file was left behind"
    if chosen.kind == "memory":  # memory:// lives as long as the process
        store = chosen.store()
        if store.fs.exists(store.root):
            store.fs.rm(store.root, recursive=True)


@pytest.fixture
def store(backend: Backend) -> Store:
    """A Store on the backend's fresh root."""
    return backend.store()


@pytest.fixture
def loads_calls() -> list[bytes]:
    """Registers serializer ``counted-pickle``, whose loads() records each call:
    damaged bytes must never reach a deserialiser."""
    calls: list[bytes] = []

    def loads(data: bytes) -> Any:
        calls.append(data)
        return pickle.loads(data)

    register_serializer("counted-pickle", pickle.dumps, loads)
    return calls


# ------------------------------------------------------------------ bytes API
def test_put_get_exists_delete_list(store: Store) -> None:
    store.put("a/b/c.bin", b"one")
    store.put("a/d.bin", b"two")
    store.put("ab.bin", b"sibling")  # shares the prefix "a" but is not under a/
    store.put("z.bin", b"three")
    assert store.get("a/b/c.bin") == b"one"
    assert store.exists("a/d.bin") and not store.exists("a/nope.bin")
    assert store.list() == ["a/b/c.bin", "a/d.bin", "ab.bin", "z.bin"]
    assert store.list("a") == ["a/b/c.bin", "a/d.bin"]
    assert store.list("missing-prefix") == []
    store.put("a/d.bin", b"replaced")
    assert store.get("a/d.bin") == b"replaced"
    store.delete("a/d.bin")
    store.delete("a/d.bin")  # deleting a missing object is fine
    assert not store.exists("a/d.bin")
    with pytest.raises(FileNotFoundError):
        store.get("a/d.bin")


def test_get_many_mixes_hits_and_misses(store: Store) -> None:
    store.put("x/1", b"1")
    store.put("x/deep/3", b"3")
    wanted = ["x/1", "x/2", "x/deep/3", "y/4"]
    assert store.get_many(wanted) == {"x/1": b"1", "x/2": None, "x/deep/3": b"3", "y/4": None}
    assert store.get_many([]) == {}


def test_create_only_refuses_an_existing_object(store: Store) -> None:
    store.put("once", b"first", create_only=True)
    with pytest.raises(FileExistsError):
        store.put("once", b"second", create_only=True)
    assert store.get("once") == b"first"


@pytest.mark.parametrize(
    "path",
    ["../x", "a/../../x", "/abs", "a//b", "a/./b", "a\\b", "a/\x00b", "a/b\n", "a\x1fb", "a\x7fb", ""],
)
def test_paths_cannot_leave_the_root(backend: Backend, store: Store, path: str) -> None:
    before = backend.everything()
    for attempt in (
        lambda: store.put(path, b"x"),
        lambda: store.put(path, b"x", create_only=True),
        lambda: store.get(path),
        lambda: store.exists(path),
        lambda: store.delete(path),
        lambda: store.get_many([path]),
    ):
        with pytest.raises(InvalidOptionError, match="must be relative"):
            attempt()
    assert backend.everything() == before  # the local check covers the root's parent folder


# ------------------------------------------------------------------ entries
@pytest.mark.parametrize(
    "serializer, value",
    [("pickle", {"w": [1.5, 2], "t": (1, "a"), "b": b"\x00"}), ("json", {"w": [1.5, 2], "n": None, "s": "é"})],
)
def test_entries_round_trip(store: Store, serializer: str, value: Any) -> None:
    manifest, adopted = store.write_result(KEY, value, serializer=serializer, meta={"task": "fit"})
    assert not adopted
    assert (manifest.serializer, manifest.meta, manifest.key) == (serializer, {"task": "fit"}, KEY)
    assert store.read_manifest(KEY) == manifest
    assert store.read_result(KEY) == value
    assert store.read_result(KEY, manifest) == value


def test_lookup_of_many_keys(store: Store) -> None:
    keys = [f"key{i:03d}" + "a" * 26 for i in range(40)]
    written = {key: store.write_result(key, i)[0] for i, key in enumerate(keys) if i % 3 == 0}
    found = store.lookup(keys + keys[:5])  # repeated keys are looked up once
    assert list(found) == keys
    assert found == {key: written.get(key) for key in keys}
    assert store.lookup([]) == {}


def test_an_unknown_serializer_is_named_with_the_known_ones(store: Store) -> None:
    with pytest.raises(InvalidOptionError, match=r"unknown result serializer 'yaml'; known: .*json.*pickle"):
        store.write_result(KEY, 1, serializer="yaml")
    assert store.list() == []


def test_an_unserializable_value_writes_nothing(backend: Backend, store: Store) -> None:
    before = backend.everything()
    with pytest.raises(SerializationError, match=r"_thread\.lock"):
        store.write_result(KEY, threading.Lock())
    with pytest.raises(SerializationError, match="json cannot serialise set"):
        store.write_result(KEY, {1, 2}, serializer="json")
    # No manifest, no payload, and (locally) no temporary file, even a hidden one.
    assert backend.everything() == before
    assert store.lookup([KEY]) == {KEY: None}


def test_expired_entries_are_misses(store: Store) -> None:
    store.write_result(KEY, 1, expires=time.time() - 1)
    store.write_result(OTHER, 2, expires=time.time() + 3600)
    found = store.lookup([KEY, OTHER])
    assert found[KEY] is None
    assert found[OTHER] is not None and store.read_result(OTHER, found[OTHER]) == 2


def test_overwrite_replaces_the_entry_and_its_old_payload(store: Store) -> None:
    old, _ = store.write_result(KEY, "old")
    new, adopted = store.write_result(KEY, "new", overwrite=True)
    assert not adopted and new.payload != old.payload
    assert store.read_result(KEY) == "new"
    assert not store.exists(store.payload_path(old))


def test_a_reader_with_a_stale_manifest_leaves_the_new_entry_alone(store: Store) -> None:
    """The entry was overwritten between a lookup and the read: the read fails, but
    must not quarantine the new, good entry."""
    stale, _ = store.write_result(KEY, "old")
    store.write_result(KEY, "new", overwrite=True)
    with pytest.raises(CorruptedResultError, match="payload is missing"):
        store.read_result(KEY, stale)
    assert store.read_result(KEY) == "new"
    assert store.list("quarantine") == []


# ------------------------------------------------------------------ damage
def _damage_payload(store: Store, key: str, how: str) -> None:
    payload = store.payload_path(store.read_manifest(key))
    data = store.get(payload)
    if how == "truncated":
        store.put(payload, data[: len(data) // 2])
    elif how == "byte-flipped":
        store.put(payload, data[:10] + bytes([data[10] ^ 0x01]) + data[11:])
    elif how == "empty":
        store.put(payload, b"")
    elif how == "garbage":
        store.put(payload, b"garbage")
    elif how == "deleted":
        store.delete(payload)
    else:
        raise AssertionError(how)


@pytest.mark.parametrize("how", ["truncated", "byte-flipped", "empty", "garbage", "deleted"])
def test_a_damaged_payload_is_caught_before_deserialising(store: Store, loads_calls: list[bytes], how: str) -> None:
    store.write_result(KEY, list(range(100)), serializer="counted-pickle")
    _damage_payload(store, KEY, how)
    with pytest.raises(CorruptedResultError, match=KEY):
        store.read_result(KEY)
    assert loads_calls == []
    # Quarantined: a miss from now on, kept for inspection, and written again cleanly.
    assert store.lookup([KEY]) == {KEY: None}
    assert any(p.startswith(f"quarantine/{KEY}-") and p.endswith("/manifest.json") for p in store.list("quarantine"))
    assert not any(p.startswith("results/") for p in store.list())
    _, adopted = store.write_result(KEY, [1], serializer="counted-pickle")
    assert not adopted and store.read_result(KEY) == [1]


def _damage_manifest(store: Store, key: str, how: str) -> None:
    path = store.manifest_path(key)
    fields = json.loads(store.get(path))
    if how == "garbage":
        store.put(path, b"garbage")
    elif how == "truncated":
        store.put(path, store.get(path)[:20])
    elif how == "json-list":
        store.put(path, b"[1, 2]")
    elif how == "wrong-type":  # valid JSON, but expires is a string
        store.put(path, json.dumps({**fields, "expires": "soon"}).encode())
    elif how == "another-entry":  # the manifest of SAME_SHARD, copied over KEY's
        store.put(path, store.get(store.manifest_path(SAME_SHARD)))
    else:
        raise AssertionError(how)


@pytest.mark.parametrize("how", ["garbage", "truncated", "json-list", "wrong-type", "another-entry"])
def test_a_damaged_manifest_is_quarantined_as_a_miss(store: Store, loads_calls: list[bytes], how: str) -> None:
    store.write_result(KEY, 1, serializer="counted-pickle")
    store.write_result(SAME_SHARD, 2, serializer="counted-pickle")
    _damage_manifest(store, KEY, how)
    with pytest.raises(CorruptedResultError, match=KEY):
        store.read_result(KEY)
    assert store.lookup([KEY]) == {KEY: None}
    assert any(p.startswith(f"quarantine/{KEY}-") for p in store.list("quarantine"))
    assert loads_calls == []
    # The neighbour is untouched, even when KEY's damaged manifest named its payload.
    assert store.read_result(SAME_SHARD) == 2


def test_a_deleted_manifest_is_a_plain_miss(store: Store) -> None:
    store.write_result(KEY, 1)
    store.delete(store.manifest_path(KEY))
    assert store.lookup([KEY]) == {KEY: None}
    assert store.read_manifest(KEY) is None
    with pytest.raises(FileNotFoundError):
        store.read_result(KEY)
    assert store.list("quarantine") == []  # nothing was wrong: nothing quarantined


# ------------------------------------------------------------------ signing
class _Canary:
    """Unpickling this writes a file: proof that tampered bytes were unpickled."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.write_text, (self.path, "unpickled"))


def _plant(store: Store, key: str, payload: bytes) -> None:
    """An attacker with write access swaps the payload and fixes up the manifest's
    size, digest and payload name (but cannot compute the HMAC)."""
    path = store.manifest_path(key)
    fields = json.loads(store.get(path))
    digest = hashlib.sha256(payload).hexdigest()
    fields.update(size=len(payload), sha256=digest, payload=f"{key}.{digest[:16]}")
    store.put(f"{path.rsplit('/', 1)[0]}/{key}.{digest[:16]}", payload)
    store.put(path, json.dumps(fields).encode())


def _signing(key: str | None) -> contextlib.AbstractContextManager[Any]:
    return dask.config.set({"daskflow.storage.signing-key": key})


def test_signed_entries_round_trip(backend: Backend) -> None:
    with _signing("k1"):
        store = backend.store()
        manifest, _ = store.write_result(KEY, {"ok": True})
        assert store.signed and manifest.hmac
        assert store.lookup([KEY]) == {KEY: manifest}
        assert store.read_result(KEY) == {"ok": True}


def test_a_tampered_entry_is_refused_before_unpickling(backend: Backend, tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    with _signing("k1"):
        signed = backend.store()  # a Store keeps the key it was made with
    signed.write_result(KEY, {"ok": True})
    _plant(signed, KEY, pickle.dumps(_Canary(canary)))
    with pytest.raises(CorruptedResultError, match="not signed with this store's signing key"):
        signed.read_result(KEY)
    assert not canary.exists()
    assert signed.lookup([KEY]) == {KEY: None}  # quarantined: a miss from now on
    # The canary works, and only the HMAC stops it: without a key the fixed-up
    # digest verifies and the planted pickle runs.
    unsigned = backend.store()
    unsigned.write_result(OTHER, "x")
    _plant(unsigned, OTHER, pickle.dumps(_Canary(canary)))
    unsigned.read_result(OTHER)
    assert canary.read_text() == "unpickled"


@pytest.mark.parametrize("writer_key", [None, "k2"], ids=["unsigned", "other-key"])
def test_a_signed_store_refuses_entries_it_did_not_sign(backend: Backend, loads_calls: list[bytes], writer_key: str | None) -> None:
    with _signing(writer_key):
        backend.store().write_result(KEY, 1, serializer="counted-pickle")
    with _signing("k1"):
        signed = backend.store()
    with pytest.raises(CorruptedResultError, match="not signed with this store's signing key"):
        signed.read_result(KEY)
    assert signed.lookup([KEY]) == {KEY: None}
    assert loads_calls == []


# ------------------------------------------------------------------ concurrency
def test_two_writers_of_one_key_commit_once(backend: Backend) -> None:
    first, second = backend.store(), backend.store(skip_instance_cache=True)
    winner, adopted_first = first.write_result(KEY, "first")
    manifest, adopted_second = second.write_result(KEY, "second")
    assert (adopted_first, adopted_second) == (False, True)
    assert manifest == winner
    assert second.read_result(KEY, manifest) == first.read_result(KEY) == "first"
    assert [p for p in first.list("results") if not p.endswith(".json")] == [first.payload_path(winner)]


@contextlib.contextmanager
def _frequent_thread_switches(enabled: bool) -> Iterator[None]:
    """Switch threads every microsecond instead of every 5 ms, so that a create-only
    write that is really check-then-write loses the race within a few rounds
    (per-Store locks on memory:// did, in ~14% of rounds)."""
    previous = sys.getswitchinterval()
    if enabled:
        sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(previous)


def _race(work: Callable[[int], T], timeout: float = 30.0) -> list[T]:
    """Run ``work(0)`` and ``work(1)`` in two threads released at the same instant."""
    barrier = threading.Barrier(2, timeout=timeout)
    results: list[Any] = [None, None]

    def run(i: int) -> None:
        try:
            barrier.wait()
            results[i] = work(i)
        except BaseException as exc:  # noqa: BLE001  (re-raised in the test thread below)
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
        assert not thread.is_alive(), "a racing writer hung"
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results


def _write(stores: list[Store], key: str, i: int) -> tuple[Manifest, bool]:
    return stores[i].write_result(key, f"value-{i}")


@pytest.mark.parametrize("sharing", ["one-store", "two-stores"])
def test_racing_threads_commit_one_value(backend: Backend, sharing: str) -> None:
    rounds = 20 if backend.kind == "s3" else 200  # local rounds take ~1 ms: more chances to lose a race
    first = backend.store()
    stores = [first, first] if sharing == "one-store" else [first, backend.store(skip_instance_cache=True)]
    # Not on S3: moto's own If-None-Match is a check then a put (moto/s3/responses.py),
    # so at a 1 µs switch interval ~3% of rounds commit twice inside moto; real S3
    # is atomic. At the default interval moto held in 1500 of 1500 trial rounds.
    with _frequent_thread_switches(backend.kind != "s3"):
        for round_ in range(rounds):
            key = f"race{round_:03d}" + "0" * 25
            (m0, a0), (m1, a1) = _race(functools.partial(_write, stores, key))
            assert sorted([a0, a1]) == [False, True], f"round {round_}: adopted {a0}, {a1}"
            assert m0 == m1, f"round {round_}: the writers hold different manifests"
            winner = 1 if a0 else 0
            assert first.read_result(key) == stores[1].read_result(key) == f"value-{winner}"
    manifests = [p for p in first.list("results") if p.endswith(".json")]
    payloads = [p for p in first.list("results") if not p.endswith(".json")]
    assert len(manifests) == rounds
    referenced = sorted(first.payload_path(m) for m in first.lookup(p.rsplit("/", 1)[1][:-5] for p in manifests).values())
    assert payloads == referenced  # no orphan payload from a losing writer


def test_a_write_by_another_store_is_seen_at_once(backend: Backend) -> None:
    """A lookup never answers from a listing cache: a Store that listed the folder
    before another one (another process: its own filesystem instance) wrote in it
    still finds the new entry."""
    reader = backend.store()
    writer = backend.store(skip_instance_cache=True)
    reader.write_result(KEY, 1)
    shard = reader.manifest_path(KEY).rsplit("/", 1)[0]
    assert len(reader.list(shard)) == 2  # the folder has been listed (and cached, if a cache were on)
    assert not reader.exists(reader.manifest_path(SAME_SHARD))
    writer.write_result(SAME_SHARD, 7)
    assert reader.exists(reader.manifest_path(SAME_SHARD))
    assert reader.lookup([SAME_SHARD])[SAME_SHARD] is not None
    assert reader.read_result(SAME_SHARD) == 7


# ------------------------------------------------------------------ probe, pickling
def test_probe_writes_reads_and_deletes(backend: Backend, store: Store) -> None:
    before = backend.everything()
    store.probe()
    # moto honours If-None-Match on a PUT (checked sequentially here), like S3.
    assert store.create_only_honoured
    assert backend.everything() == before


def test_a_pickled_store_carries_no_credentials(s3_store_url: tuple[str, dict[str, Any]]) -> None:
    url, options = s3_store_url
    store = Store(url, storage_options={**options, "key": "AKIAFAKECANARY123", "secret": "sk-canary-9f3"})
    store.put("from-driver", b"1")  # moto accepts any credentials by default
    assert "sk-canary-9f3" not in repr(store)
    for dumps in (pickle.dumps, cloudpickle.dumps):
        blob = dumps(store)
        assert b"AKIAFAKECANARY123" not in blob and b"sk-canary-9f3" not in blob
        clone = pickle.loads(blob)  # as on a worker: credentials come from its environment
        assert "sk-canary-9f3" not in json.dumps(clone.storage_options, default=str)
        assert clone.url == store.url
        clone.write_result(KEY, "from a worker", overwrite=True)
        assert store.read_result(KEY) == "from a worker"


def test_s3_without_s3fs_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    # Make "import s3fs" fail, and make fsspec forget the class it may have loaded
    # already (its registry of loaded implementations is private: no public reset;
    # the attribute fsspec.registry is a read-only view, not the module).
    loaded = importlib.import_module("fsspec.registry")._registry
    monkeypatch.setitem(sys.modules, "s3fs", None)
    for protocol in ("s3", "s3a"):
        monkeypatch.delitem(loaded, protocol, raising=False)
    with pytest.raises(InvalidOptionError, match=r"'s3://bucket/prefix' needs .* install it with: pip install 'daskflow\[s3\]'"):
        Store("s3://bucket/prefix")


def test_an_unknown_protocol_is_named() -> None:
    with pytest.raises(InvalidOptionError, match=r"unknown protocol 'nope'"):
        Store("nope://bucket/prefix")


# ------------------------------------------------------------------ errors before any task
def test_a_missing_bucket_is_named(s3_server: str) -> None:
    bucket = f"missing-{uuid.uuid4().hex[:8]}"
    store = Store(f"s3://{bucket}/prefix", storage_options={"client_kwargs": {"endpoint_url": s3_server}})
    with pytest.raises(StorageError) as info:
        store.probe()
    assert f"bucket '{bucket}' does not exist at endpoint {s3_server}" in str(info.value)
    assert info.value.operation == "write"
    # Nor is a lookup a silent miss: a missing bucket is not a missing entry.
    with pytest.raises(StorageError, match=f"bucket '{bucket}' does not exist"):
        store.lookup([KEY])
    # Nor do listings read it as an empty store.
    for listing in (store.list, store.children):
        with pytest.raises(StorageError, match=f"bucket '{bucket}' does not exist"):
            listing("results")


def _closed_port() -> int:
    with socket.socket() as sock:  # bound, never listening: connections are refused
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize(
    "config_kwargs, attempts, limit",
    [
        # botocore's default (legacy) retry mode sleeps rand() * 2**n s between
        # its 5 attempts: at most 15 s, 7.5 s on average. daskflow's own retries
        # (4 tries by default) do not repeat a refused connection at the probe:
        # a first contact that is refused is a wrong endpoint, said at once.
        (None, 4, 20.0),
        ({"connect_timeout": 1, "retries": {"max_attempts": 1}}, 4, 5.0),
    ],
    ids=["botocore-defaults", "fast-timeouts"],
)
def test_an_unreachable_endpoint_is_named_quickly(config_kwargs: dict[str, Any] | None, attempts: int, limit: float) -> None:
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    options: dict[str, Any] = {"client_kwargs": {"endpoint_url": endpoint}}
    if config_kwargs:
        options["config_kwargs"] = config_kwargs
    store = Store("s3://bucket/prefix", storage_options=options)
    started = time.monotonic()
    with dask.config.set({"daskflow.storage.retries.attempts": attempts}), pytest.raises(
        StorageError, match=rf"write of s3://bucket/prefix/probe/\S+ failed: cannot reach the storage endpoint {endpoint}:"
    ):
        store.probe()
    assert time.monotonic() - started < limit


@pytest.mark.parametrize("refusal", ["unknown-key", "denied-by-policy"])
def test_refused_credentials_are_named_without_the_secret(
    s3_server: str, s3_store_url: tuple[str, dict[str, Any]], refusal: str
) -> None:
    """moto checks credentials once its server-side authentication is on: an
    unknown key is InvalidAccessKeyId, an IAM user denied s3:* gets AccessDenied."""
    if refusal == "denied-by-policy":
        key, secret = denied_user_keys(s3_server)
    else:
        key, secret = "AKIAUNKNOWN000000000", "sk-canary-9f3"
    store = make_s3_store(s3_store_url, key=key, secret=secret, skip_instance_cache=True)
    with moto_authentication(s3_server), pytest.raises(StorageError) as info:
        store.probe()
    message = str(info.value)
    assert "access was denied" in message
    assert f"write of {store.url}/probe/" in message
    assert secret not in message and secret not in repr(info.value.__cause__)


def test_an_unwritable_local_folder_is_permission_denied(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    try:  # root (CAP_DAC_OVERRIDE) writes through permission bits: nothing to test then
        (locked / "overridden").touch()
    except PermissionError:
        pass
    else:
        pytest.skip("this process writes through permission bits (root)")
    store = Store(str(locked / "store"))
    with pytest.raises(StorageError, match=rf"write of {locked}/store/probe/\S+ failed: permission denied"):
        store.probe()


def test_a_file_where_a_folder_belongs_is_not_a_lost_race(tmp_path: Path) -> None:
    """makedirs raises FileExistsError when a file blocks the way; a create-only
    writer must not take that for another writer's object."""
    root = tmp_path / "store"
    root.mkdir()
    (root / "results").write_text("a file, not a folder")
    store = Store(str(root))
    for create_only in (False, True):
        with pytest.raises(StorageError, match="a file stands where the store needs a folder"):
            store.put("results/x", b"1", create_only=create_only)
    with pytest.raises(StorageError, match="a file stands where the store needs a folder"):
        store.write_result(KEY, 1)


def test_local_files_get_the_umask_mode(tmp_path: Path) -> None:
    """Other users sharing a results folder can read it as they could any file the
    process writes (a temporary file alone would be 0600)."""
    mask = os.umask(0o022)
    os.umask(mask)
    store = Store(str(tmp_path / "store"))
    store.write_result(KEY, 1)
    modes = {stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "store").rglob("*") if p.is_file()}
    assert modes == {0o666 & ~mask}
