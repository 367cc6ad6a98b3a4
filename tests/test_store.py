"""One conformance suite for the Store, run against memory://, a local folder and
S3 (a moto server on 127.0.0.1, through s3fs)."""

from __future__ import annotations

import hashlib
import json
import pickle
import threading
import time
import uuid
from pathlib import Path

import dask
import pytest

from daskflow import CorruptedResultError, SerializationError, StorageError, Store
from daskflow.exceptions import InvalidOptionError
from daskflow.storage import register_serializer

BACKENDS = ["memory", "local", "s3"]


@pytest.fixture(params=BACKENDS)
def backend(request, tmp_path):
    """``(make_store, kind)``: ``make_store()`` opens a new Store on one fresh root."""
    kind = request.param
    if kind == "memory":
        url, options = f"memory://conformance-{uuid.uuid4().hex}", {}
    elif kind == "local":
        url, options = str(tmp_path / "store"), {}
    else:
        url, options = request.getfixturevalue("s3_store_url")

    def make_store() -> Store:
        return Store(url, storage_options=options)

    yield make_store, kind
    if kind == "local":  # nothing half-written may be left behind
        assert not list((tmp_path / "store").rglob(".tmp-*"))


@pytest.fixture
def store(backend) -> Store:
    return backend[0]()


KEY = "0123456789abcdef0123456789abcdef"


def test_put_get_exists_delete_list(store):
    store.put("a/b/c.bin", b"one")
    store.put("a/d.bin", b"two")
    store.put("z.bin", b"three")
    assert store.get("a/b/c.bin") == b"one"
    assert store.exists("a/d.bin") and not store.exists("a/nope.bin")
    assert store.list() == ["a/b/c.bin", "a/d.bin", "z.bin"]
    assert store.list("a") == ["a/b/c.bin", "a/d.bin"]
    store.put("a/d.bin", b"replaced")
    assert store.get("a/d.bin") == b"replaced"
    store.delete("a/d.bin")
    store.delete("a/d.bin")  # a second delete is fine
    assert not store.exists("a/d.bin")
    with pytest.raises(FileNotFoundError):
        store.get("a/d.bin")
    assert store.list("missing-prefix") == []


def test_get_many_mixes_hits_and_misses(store):
    store.put("x/1", b"1")
    store.put("x/3", b"3")
    assert store.get_many(["x/1", "x/2", "x/3"]) == {"x/1": b"1", "x/2": None, "x/3": b"3"}
    assert store.get_many([]) == {}


def test_create_only_refuses_an_existing_object(store):
    store.put("once", b"first", create_only=True)
    with pytest.raises(FileExistsError):
        store.put("once", b"second", create_only=True)
    assert store.get("once") == b"first"


@pytest.mark.parametrize("path", ["../x", "/abs", "a//b", "a/./b", "a\\b", "a/\x00b", "", "a/../../b"])
def test_paths_cannot_leave_the_root(store, path, tmp_path):
    with pytest.raises(InvalidOptionError):
        store.put(path, b"x")
    assert not (tmp_path / "x").exists() and not (tmp_path / "b").exists()


@pytest.mark.parametrize("serializer, value", [("pickle", {"w": [1.5, 2], "t": (1, "a")}), ("json", {"w": [1.5, 2], "n": None})])
def test_entries_round_trip(store, serializer, value):
    manifest, adopted = store.write_result(KEY, value, serializer=serializer, meta={"task": "fit"})
    assert not adopted
    assert manifest.serializer == serializer and manifest.meta == {"task": "fit"}
    assert store.read_manifest(KEY) == manifest
    assert store.read_result(KEY) == value
    assert store.lookup([KEY, "f" * 32]) == {KEY: manifest, "f" * 32: None}


def test_unknown_serializer_is_named_with_the_known_ones(store):
    with pytest.raises(InvalidOptionError, match=r"unknown result serializer 'yaml'.*json.*pickle"):
        store.write_result(KEY, 1, serializer="yaml")


def test_an_unserializable_value_writes_nothing(store):
    with pytest.raises(SerializationError, match="lock"):
        store.write_result(KEY, threading.Lock())
    with pytest.raises(SerializationError, match="json cannot serialise"):
        store.write_result(KEY, {1, 2}, serializer="json")
    assert store.list() == []


def test_expired_entries_are_misses(store):
    store.write_result(KEY, 1, expires=time.time() - 1)
    assert store.lookup([KEY]) == {KEY: None}
    store.write_result("b" * 32, 2, expires=time.time() + 3600)
    assert store.lookup(["b" * 32])["b" * 32] is not None


@pytest.fixture
def counting_loads():
    """A serializer whose loads() counts its calls: corrupted bytes must never reach it."""
    calls = []
    register_serializer("counted-pickle", pickle.dumps, lambda data: calls.append(1) or pickle.loads(data))
    return calls


def _damage(store: Store, key: str, how: str) -> None:
    manifest = store.read_manifest(key)
    payload = store.payload_path(manifest)
    data = store.get(payload)
    if how == "truncated":
        store.put(payload, data[: len(data) // 2])
    elif how == "flipped":
        store.put(payload, data[:10] + bytes([data[10] ^ 0x40]) + data[11:])
    elif how == "empty":
        store.put(payload, b"")
    elif how == "garbage-payload":
        store.put(payload, b"garbage")
    elif how == "payload-missing":
        store.delete(payload)
    elif how == "garbage-manifest":
        store.put(store.manifest_path(key), b"garbage")
    else:
        raise AssertionError(how)


@pytest.mark.parametrize("how", ["truncated", "flipped", "empty", "garbage-payload", "payload-missing"])
def test_a_damaged_payload_is_caught_before_deserialising_and_quarantined(store, counting_loads, how):
    store.write_result(KEY, list(range(100)), serializer="counted-pickle")
    _damage(store, KEY, how)
    with pytest.raises(CorruptedResultError, match=KEY):
        store.read_result(KEY)
    assert counting_loads == []
    assert store.read_manifest(KEY) is None  # moved away: now a miss
    assert any(p.startswith(f"quarantine/{KEY}") for p in store.list("quarantine"))
    manifest, adopted = store.write_result(KEY, [1], serializer="counted-pickle")  # recomputed and stored again
    assert not adopted and store.read_result(KEY) == [1]


def test_a_garbled_manifest_is_quarantined_by_lookup(store):
    store.write_result(KEY, 1)
    _damage(store, KEY, "garbage-manifest")
    assert store.lookup([KEY]) == {KEY: None}
    assert store.list("quarantine")
    assert store.read_manifest(KEY) is None


def test_a_deleted_manifest_is_a_plain_miss(store):
    store.write_result(KEY, 1)
    store.delete(store.manifest_path(KEY))
    assert store.lookup([KEY]) == {KEY: None}
    with pytest.raises(FileNotFoundError):
        store.read_result(KEY)


class _Canary:
    """Unpickling this creates a file: proof that tampered bytes were unpickled."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.write_text, (Path(self.path), "unpickled"))


def _plant(store: Store, key: str, payload: bytes) -> None:
    """An attacker with write access swaps the payload and fixes up the manifest's
    size, digest and payload name (but cannot compute the HMAC)."""
    manifest = json.loads(store.get(store.manifest_path(key)))
    digest = hashlib.sha256(payload).hexdigest()
    manifest.update(size=len(payload), sha256=digest, payload=f"{key}.{digest[:16]}")
    store.put(f"{store.manifest_path(key).rsplit('/', 1)[0]}/{key}.{digest[:16]}", payload)
    store.put(store.manifest_path(key), json.dumps(manifest).encode())


def test_signed_entries_refuse_tampering_unsigned_and_foreign_keys(backend, tmp_path):
    make_store, _ = backend
    canary = tmp_path / "canary"
    with dask.config.set({"daskflow.storage.signing-key": "k1"}):
        signed = make_store()
        signed.write_result(KEY, {"ok": True})
        assert signed.read_result(KEY) == {"ok": True}
        _plant(signed, KEY, pickle.dumps(_Canary(str(canary))))
        assert signed.lookup([KEY]) == {KEY: None}  # refused at lookup, before any read
        with pytest.raises(FileNotFoundError):
            signed.read_result(KEY)
    assert not canary.exists()
    # An unsigned entry (written without a key) is refused by a signed store.
    make_store().write_result("c" * 32, 1)
    with dask.config.set({"daskflow.storage.signing-key": "k1"}):
        with pytest.raises(CorruptedResultError, match="not signed"):
            make_store().read_result("c" * 32)
    # An entry signed with another key too.
    with dask.config.set({"daskflow.storage.signing-key": "k2"}):
        make_store().write_result("d" * 32, 2)
    with dask.config.set({"daskflow.storage.signing-key": "k1"}):
        with pytest.raises(CorruptedResultError, match="not signed"):
            make_store().read_result("d" * 32)
    # (Without a key the planted entry would verify: its digest was fixed up. The
    # sha256 catches corruption, only the HMAC catches tampering.)


def test_two_writers_of_one_key_commit_once(backend):
    make_store, _ = backend
    first, second = make_store(), make_store()
    winner, adopted_first = first.write_result(KEY, "first")
    manifest, adopted_second = second.write_result(KEY, "second")
    assert (adopted_first, adopted_second) == (False, True)
    assert manifest == winner
    assert second.read_result(KEY, manifest) == "first"
    payloads = [p for p in first.list("results") if not p.endswith(".json")]
    assert payloads == [first.payload_path(winner)]  # the loser's bytes were removed


def test_racing_threads_agree_on_one_value(backend):
    make_store, _ = backend
    for round_ in range(10):
        key = f"{round_:02d}" + "e" * 30
        stores = [make_store(), make_store()]
        barrier = threading.Barrier(2)
        results: list = [None, None]

        def write(i: int) -> None:
            barrier.wait()
            results[i] = stores[i].write_result(key, f"value-{i}")

        threads = [threading.Thread(target=write, args=(i,)) for i in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        (m0, a0), (m1, a1) = results
        assert m0 == m1 and sorted([a0, a1]) == [False, True]
        assert stores[0].read_result(key) == stores[1].read_result(key)
    manifests = [p for p in make_store().list("results") if p.endswith(".json")]
    payloads = [p for p in make_store().list("results") if not p.endswith(".json")]
    assert len(manifests) == 10 and len(payloads) == 10


def test_another_writer_is_seen_at_once(backend):
    """A lookup never answers from a listing cache: a store that listed the folder
    before another process wrote still finds the new entry."""
    make_store, kind = backend
    reader, writer = make_store(), make_store()
    reader.list("results")
    assert reader.lookup([KEY]) == {KEY: None}
    writer.write_result(KEY, 7)
    assert reader.lookup([KEY])[KEY] is not None
    assert reader.read_result(KEY) == 7


def test_probe_writes_reads_and_deletes(store):
    store.probe()
    assert store.create_only_honoured
    assert store.list("probe") == []


def test_overwrite_replaces_the_entry_and_its_old_payload(store):
    old, _ = store.write_result(KEY, "old")
    new, adopted = store.write_result(KEY, "new", overwrite=True)
    assert not adopted and new != old
    assert store.read_result(KEY) == "new"
    assert not store.exists(store.payload_path(old))


def test_a_pickled_store_carries_no_credentials(s3_store_url):
    url, options = s3_store_url
    secret_options = {**options, "key": "testing", "secret": "sk-canary-9f3", "token": "AKIAFAKECANARY123"}
    store = Store(url, storage_options=secret_options)
    blob = pickle.dumps(store)
    assert b"sk-canary-9f3" not in blob and b"AKIAFAKECANARY123" not in blob
    assert "sk-canary-9f3" not in repr(store)
    clone = pickle.loads(blob)  # a worker: credentials from its environment
    clone.put("ping", b"pong")
    assert clone.get("ping") == b"pong"


def test_a_missing_bucket_is_named_by_the_probe(s3_server):
    store = Store("s3://no-such-bucket-here/prefix", storage_options={"client_kwargs": {"endpoint_url": s3_server}})
    with pytest.raises(StorageError, match=r"bucket 'no-such-bucket-here' does not exist at endpoint") as info:
        store.probe()
    assert info.value.operation == "write"


def test_an_unreachable_endpoint_is_named_quickly():
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    endpoint = f"http://127.0.0.1:{port}"
    store = Store(
        "s3://bucket/prefix",
        storage_options={
            "client_kwargs": {"endpoint_url": endpoint},
            "config_kwargs": {"connect_timeout": 1, "retries": {"max_attempts": 1}},
        },
    )
    started = time.monotonic()
    with pytest.raises(StorageError, match=rf"cannot reach the storage endpoint at endpoint {endpoint}"):
        store.probe()
    assert time.monotonic() - started < 20


def test_refused_credentials_are_named_without_the_secret(s3_server, monkeypatch):
    """moto's server checks credentials once authentication is switched on (its
    INITIAL_NO_AUTH_ACTION_COUNT); keys it does not know are then refused."""
    import boto3
    import requests

    bucket = f"auth-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1").create_bucket(Bucket=bucket)
    response = requests.post(f"{s3_server}/moto-api/reset-auth", data=b"0", timeout=10)
    if response.status_code != 200:
        pytest.skip(f"this moto cannot switch authentication on ({response.status_code})")
    try:
        store = Store(
            f"s3://{bucket}/x",
            storage_options={"key": "AKIAWRONGKEY0000", "secret": "sk-canary-9f3", "client_kwargs": {"endpoint_url": s3_server},
                             "skip_instance_cache": True},
        )
        with pytest.raises(StorageError) as info:
            store.probe()
        message = str(info.value)
        assert "access was denied" in message and bucket in message and "write" in message
        assert "sk-canary-9f3" not in message
    finally:
        requests.post(f"{s3_server}/moto-api/reset-auth", data=b"-1", timeout=10)


def test_an_unwritable_local_folder_is_permission_denied(tmp_path):
    import os

    if os.geteuid() == 0:
        pytest.skip("root can write anywhere")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    with pytest.raises(StorageError, match="permission denied"):
        Store(str(locked / "store")).probe()


def test_an_unknown_protocol_is_named():
    with pytest.raises(InvalidOptionError, match=r"unknown protocol 'nope'"):
        Store("nope://bucket/prefix")
