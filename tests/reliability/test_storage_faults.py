"""Storage faults (RELIABILITY.md section 6, scenarios 7, 8, 9, 13, 14 and 17), through flow runs.

Transient errors come from :class:`~tests.reliability.faulty_fs.FaultyFS` (the
exceptions s3fs raises once its own retries are spent) on a real cluster of
worker processes; the outage is a moto server stopped mid-run and started again
on its port (moto keeps its buckets in this process: they survive the restart);
damaged and planted entries are written into the store between two runs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import pickle
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cloudpickle
import dask
import pytest
from click.testing import CliRunner

from daskflow import DaskTaskRunner, SequentialTaskRunner, Store, flow, task
from daskflow.cli import cli
from daskflow.exceptions import SerializationError, StorageError
from daskflow.pipeline.context import FLOW_RUN_CONTEXT
from daskflow.storage import register_serializer
from daskflow.storage.records import History
from daskflow.storage.retry import RetryPolicy

from ..conftest import wait_until
from ..s3 import bucket_keys, denied_user_keys, moto_authentication, s3_client, use_dummy_credentials
from ..tasks import add, block_until, counted, runs_of
from . import faulty_fs
from .conftest import FAULT_CONFIG

pytestmark = pytest.mark.slow

SEED = 7  # the retry jitter is random; the fault pattern is fixed
#: Short waits, so a test's retries take a fraction of a second (the defaults wait up to 1.75 s per call).
RETRIES = {"daskflow.storage.retries.attempts": 4, "daskflow.storage.retries.base-delay": 0.05, "daskflow.storage.retries.max-delay": 0.2}
POLICY = RetryPolicy(4, 0.05, 0.2)


@pytest.fixture(scope="module")
def cluster() -> Iterator[tuple[Any, Any]]:
    """Two nanny-managed worker processes; they inherit the retry settings and know faulty://."""
    from distributed import Client, LocalCluster

    use_dummy_credentials()  # workers take S3 credentials from their own environment
    with dask.config.set({**FAULT_CONFIG, **RETRIES}), LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address="127.0.0.1:0",
    ) as local, Client(local, set_as_default=False) as client:
        client.register_plugin(faulty_fs.FaultyFSPlugin())
        assert set(client.run(lambda: dask.config.get("daskflow.storage.retries.max-delay")).values()) == {0.2}
        yield local, client


@pytest.fixture(autouse=True)
def _retries(fault_config: dict[str, Any]) -> Iterator[None]:
    with dask.config.set(RETRIES):
        yield


def _runner(cluster: tuple[Any, Any]) -> DaskTaskRunner:
    local, client = cluster
    client.wait_for_workers(2, timeout=60)
    return DaskTaskRunner(address=local.scheduler_address)


def _faulty(tmp_path: Path, faults: list[dict[str, Any]], target: str = "file", target_options: dict[str, Any] | None = None,
            root: str | None = None) -> tuple[Store, Path]:
    """A store on ``faulty://`` over a local folder (or ``target``), and its fault state folder."""
    state = tmp_path / "faults"
    options = {
        "target_protocol": target,
        "target_options": target_options if target_options is not None else {"auto_mkdir": True},
        "state": str(state),
        "faults": faults,
    }
    return Store(f"faulty://{root or tmp_path / 'store'}", storage_options=options), state


def _retry_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "daskflow.storage" and " try " in r.getMessage()]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ---------------------------------------------------------------- scenario 7: transient errors
@flow
def adds(n: int) -> list[int]:
    return add.map(range(n)).result()


def test_s07_a_slowdown_at_the_probe_is_retried(cluster, tmp_path, scenario_report, caplog):
    store, state = _faulty(tmp_path, [{"method": "pipe_file", "match": "/probe/", "calls": [1], "error": "slowdown"}])
    started = time.monotonic()
    result = adds.with_options(task_runner=_runner(cluster), result_storage=store)(3, return_state=True)
    elapsed = time.monotonic() - started
    assert result.name == "Completed", result.message
    assert result.result() == [1, 2, 3]
    probe_writes = [c for c in faulty_fs.calls_of(state, "pipe_file", "/probe/") if c["o"] != "target raised FileExistsError"]
    # The first create-only write raised SlowDown, the second landed, the third is the create-only check.
    assert [c["o"] for c in probe_writes] == ["raised OSError", "ok"]
    assert any("throttled" in m and "/probe/" in m for m in _retry_warnings(caplog))
    scenario_report(7, "SlowDown at the start-up probe", f"probe tries 2 (SlowDown, ok); run Completed in {elapsed:.1f} s",
                    backend="local", seed=SEED)


def test_s07_transient_errors_on_two_of_every_five_puts(cluster, tmp_path, scenario_report):
    """2 of every 5 result writes fail: a SlowDown before the write, and a timeout
    after it (the object landed, its answer was lost: the retried create-only
    write of a manifest finds its own bytes)."""
    n = 10
    faults = [
        {"method": "pipe_file", "match": "/results/", "every": 5, "at": [2], "error": "slowdown"},
        {"method": "pipe_file", "match": "/results/", "every": 5, "at": [4], "error": "timeout", "after": True},
    ]
    store, state = _faulty(tmp_path, faults)
    result = adds.with_options(task_runner=_runner(cluster), result_storage=store)(n, return_state=True)
    assert result.name == "Completed", result.message
    assert result.result() == list(range(1, n + 1))
    writes = list(faulty_fs.calls_of(state, "pipe_file", "/results/"))
    injected = [c for c in writes if "raised" in c["o"] and "target" not in c["o"]]
    # Every call at a fault's position got its error, except an "after" fault on a
    # call whose target raised first (a retried create-only manifest write that
    # finds its own bytes): the target's error is the one raised then.
    # Each fault numbers the calls itself (``n``: the SlowDown's, then the timeout's).
    at_fault = [c for c in writes if (c["n"][0] - 1) % 5 + 1 == 2 or ((c["n"][1] - 1) % 5 + 1 == 4 and "target" not in c["o"])]
    assert len(writes) >= 2 * n and sorted(c["n"][0] for c in writes) == list(range(1, len(writes) + 1))
    assert len(injected) == len(at_fault) and all("raised" in c["o"] for c in at_fault), [(c["n"], c["o"]) for c in at_fault]
    # Each key committed once: one manifest write landed per key, and every entry verifies.
    landed: dict[str, int] = {}
    for call in writes:
        if call["p"].endswith(".json") and call["o"] in ("ok", "done, then raised ReadTimeoutError"):
            landed[call["p"]] = landed.get(call["p"], 0) + 1
    assert len(landed) == n and set(landed.values()) == {1}, landed
    records = {tr.name: tr for tr in result.run.task_runs.values()}
    for tr in records.values():
        assert tr.state.name == "Completed" and store.read_result(tr.cache_key) == int(tr.name.rsplit("-", 1)[1]) + 1
    # Retries counted in the task runs' records (the history's too), and logged in the tasks' logs.
    retries = sum(tr.storage_retries for tr in records.values())
    assert retries == len(injected)
    history = History(Store(str(tmp_path / "store")))
    entry = history.resolve(result.run.id)
    assert sum(t["storage_retries"] for t in history.tasks(entry)) == retries
    assert sum(1 for line in history.logs(entry) if " of 4 in " in line["m"]) == retries
    assert history.run(entry)["state"]["name"] == "Completed"
    scenario_report(7, "transient errors on 2 of 5 puts", f"{n}/{n} Completed; {len(injected)} SlowDown/timeouts, "
                    f"{retries} retries counted; commits per key 1; duplicate commits 0", backend="local", n=n, seed=SEED)


@flow
def outage_pipeline(marker_dir: str, fast: int, slow: int) -> list[int]:
    OUTAGE_RUNS.append(FLOW_RUN_CONTEXT.get().flow_run)
    first = [counted.submit(marker_dir, f"fast{i}", i) for i in range(fast)]
    gated = [block_until.submit(marker_dir, f"slow{i}", wait_for=first) for i in range(slow)]
    for future in gated:
        future.wait()  # every gated task ends (Failed) before the body raises the first failure
    return [f.result() for f in first] + [g.result() for g in gated]


OUTAGE_RUNS: list = []


class _Seen(logging.Handler):
    def __init__(self, fragment: str) -> None:
        super().__init__()
        self.fragment = fragment
        self.event = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.fragment in record.getMessage():
            self.event.set()


def test_s07_the_endpoint_stops_mid_run_and_comes_back(cluster, tmp_path, scenario_report):
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    bucket = f"outage-{uuid.uuid4().hex[:8]}"
    seen = _Seen("retrying its final record")
    logging.getLogger("daskflow.runs").addHandler(seen)
    try:
        s3_client(endpoint).create_bucket(Bucket=bucket)
        options = {
            "client_kwargs": {"endpoint_url": endpoint},
            # One botocore try per daskflow try: the retry budget is daskflow's alone.
            "config_kwargs": {"connect_timeout": 1, "read_timeout": 2, "retries": {"max_attempts": 1}},
        }
        store = Store(f"s3://{bucket}/runs", storage_options=options)
        fast, slow = 2, 2
        pipeline = outage_pipeline.with_options(task_runner=_runner(cluster), result_storage=store)
        outcome: dict[str, Any] = {}
        OUTAGE_RUNS.clear()
        driver = threading.Thread(target=lambda: outcome.update(state=pipeline(str(tmp_path), fast, slow, return_state=True)))
        driver.start()
        wait_until(lambda: len(list(tmp_path.glob("slow*.pid.*"))) == slow, 60, message="the gated tasks to start")
        committed = [k for k in bucket_keys(endpoint, bucket) if k.startswith("runs/results/") and k.endswith(".json")]
        assert len(committed) == fast
        server.stop()  # k = 2 commits; the endpoint is gone
        released = time.time()
        for i in range(slow):
            Path(tmp_path, f"slow{i}.go").write_text("go")
        flow_run = wait_until(lambda: OUTAGE_RUNS and OUTAGE_RUNS[0], 30, message="the flow run")
        wait_until(lambda: flow_run.state.is_final(), 60, message="the flow run to end")
        assert seen.event.wait(60), "the driver never retried its final record"
        down_for = time.time() - released
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        server.start()
        driver.join(90)
        assert not driver.is_alive()
        state = outcome["state"]
        assert state.name == "Failed"
        budget = POLICY.budget
        fail_times = []
        for i in range(slow):
            tr = state.run.task_run(f"block_until-{i}")
            assert tr.state.name == "Failed", tr.state
            assert "storage unreachable: write of s3://" in tr.error
            assert f"s3://{bucket}/runs/results/" in tr.error and f"cannot reach the storage endpoint {endpoint}" in tr.error
            assert "gave up after 4 attempts" in tr.error
            assert tr.storage_retries >= 3
            fail_times.append(tr.end_time - released)
        # No task reported Completed without a committed, verifiable result.
        completed_without = 0
        for tr in state.run.task_runs.values():
            if tr.state.is_completed():
                try:
                    store.read_result(tr.cache_key)
                except (FileNotFoundError, StorageError):
                    completed_without += 1
        assert completed_without == 0
        # The final record was written once the endpoint was back: Failed, not Running (later "Crashed").
        history = History(store)
        record = history.run(history.resolve(state.run.id))
        assert record["state"]["name"] == "Failed"
        assert not history.active_runs()
        # The rerun reuses the two committed results and computes the rest.
        for stale in tmp_path.glob("slow*.pid.*"):
            stale.unlink()
        rerun = pipeline(str(tmp_path), fast, slow, return_state=True)
        assert rerun.name == "Completed", rerun.message
        assert sum(tr.cache_hit for tr in rerun.run.task_runs.values()) == fast
        assert all(runs_of(str(tmp_path), f"fast{i}") == 1 for i in range(fast))
    finally:
        logging.getLogger("daskflow.runs").removeHandler(seen)
        server.stop()
    scenario_report(
        7, "endpoint stopped mid-run, restarted",
        f"Completed-without-object 0; time to fail {max(fail_times):.1f} s vs retry budget {budget:.2f} s of waits "
        f"(4 tries); final record Failed after {down_for:.1f} s down; rerun {fast} hits", backend="moto", seed=SEED,
    )


# ---------------------------------------------------------------- scenario 8: damaged entries
DAMAGE = ["truncated", "byte-flipped", "garbage", "empty", "manifest-deleted"]


@flow
def five_values(marker_dir: str) -> list[list[int]]:
    return [counted.submit(marker_dir, f"v{i}", list(range(i * 10, i * 10 + 50))).result() for i in range(len(DAMAGE))]


def _damage(store: Store, key: str, how: str) -> None:
    manifest = store.read_manifest(key)
    payload = store.payload_path(manifest)
    data = store.get(payload)
    if how == "truncated":
        store.put(payload, data[: len(data) // 2])
    elif how == "byte-flipped":
        store.put(payload, data[:20] + bytes([data[20] ^ 0x01]) + data[21:])
    elif how == "garbage":
        store.put(payload, b"garbage")
    elif how == "empty":
        store.put(payload, b"")
    elif how == "manifest-deleted":
        store.delete(store.manifest_path(key))
    else:
        raise AssertionError(how)


@pytest.mark.parametrize("backend", ["local", "moto"])
def test_s08_damaged_entries_are_caught_before_unpickling_and_recomputed(backend, tmp_path, scenario_report, caplog, request):
    loaded: list[bytes] = []

    def loads(data: bytes) -> Any:
        loaded.append(data)
        return pickle.loads(data)

    register_serializer("scenario8-pickle", cloudpickle.dumps, loads)
    if backend == "moto":
        url, options = request.getfixturevalue("s3_store_url")
        store = Store(url, storage_options=options)
    else:
        store = Store(str(tmp_path / "store"))
    marker = tmp_path / "marks"
    marker.mkdir()
    pipeline = five_values.with_options(task_runner=SequentialTaskRunner(), result_storage=store, result_serializer="scenario8-pickle")
    first = pipeline(str(marker), return_state=True)
    expected = first.result()
    keys = {tr.name: tr.cache_key for tr in first.run.task_runs.values()}
    good = {store.read_manifest(k).sha256 for k in keys.values()}
    for i, how in enumerate(DAMAGE):
        _damage(store, keys[f"counted-{i}"], how)
    loaded.clear()
    caplog.set_level(logging.WARNING, "daskflow.storage")
    second = pipeline(str(marker), return_state=True)
    assert second.name == "Completed", second.message
    assert second.result() == expected
    bad_loads = [d for d in loaded if hashlib.sha256(d).hexdigest() not in good]
    assert bad_loads == []
    detected = 0
    for i, how in enumerate(DAMAGE):
        key = keys[f"counted-{i}"]
        assert runs_of(str(marker), f"v{i}") == 2, how  # recomputed exactly once
        assert store.read_result(key) == expected[i]  # a clean entry again
        if how == "manifest-deleted":
            detected += 1  # a plain miss: nothing corrupted to quarantine
            continue
        warned = any("corrupted entry" in r.getMessage() and key in r.getMessage() for r in caplog.records)
        quarantined = any(p.startswith(f"quarantine/{key}-") for p in store.list("quarantine"))
        assert warned and quarantined, how
        detected += 1
    scenario_report(8, "corrupted or truncated entry", f"detection {detected}/5 kinds; loads() on bad bytes {len(bad_loads)}; "
                    "extra recomputes 1 per entry", backend=backend, n=len(DAMAGE), seed=SEED)


# ---------------------------------------------------------------- scenario 9: failing serialisation
class Unpicklable:
    """A large result whose pickling raises."""

    def __init__(self, n: int) -> None:
        self.data = bytes(n)

    def __reduce__(self) -> tuple[Any, ...]:
        raise RuntimeError("this object refuses to be pickled")


@task
def make_unpicklable(n: int) -> Unpicklable:
    return Unpicklable(n)


@flow
def unpicklable_flow(n: int) -> Any:
    return make_unpicklable.submit(n)


@pytest.mark.parametrize("backend", ["local", "moto"])
def test_s09_a_result_that_fails_to_serialise_leaves_nothing_behind(backend, cluster, tmp_path, scenario_report, request):
    if backend == "moto":
        url, options = request.getfixturevalue("s3_store_url")
        store = Store(url, storage_options=options)
    else:
        store = Store(str(tmp_path / "store"))
    started = time.monotonic()
    state = unpicklable_flow.with_options(task_runner=_runner(cluster), result_storage=store)(2_000_000, return_state=True)
    elapsed = time.monotonic() - started
    assert state.name == "Failed"
    tr = state.run.task_run("make_unpicklable-0")
    assert tr.state.name == "Failed"
    assert isinstance(tr.state.result(raise_on_failure=False), SerializationError)
    assert "task run 'make_unpicklable-0'" in tr.error and f"{__name__}.Unpicklable" in tr.error and "refuses to be pickled" in tr.error
    assert "persist_result=False" in tr.error
    assert store.read_manifest(tr.cache_key) is None
    partial = [p for p in store.list("results") if tr.cache_key in p]
    assert partial == []
    if backend == "local":
        leftovers = [p for p in Path(store.root).rglob(".tmp-*")]
    else:
        bucket = url.split("/")[2]
        leftovers = s3_client(options["client_kwargs"]["endpoint_url"]).list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    assert leftovers == []
    scenario_report(9, "exception mid-serialisation", f"partial objects at final key 0; leftover temps/uploads 0; "
                    f"Failed in {elapsed:.1f} s", backend=backend, seed=SEED)


# ---------------------------------------------------------------- scenario 13: missing bucket
FLOW_FILE = '''
from pathlib import Path
from daskflow import flow, task

@task
def mark(marker_dir: str) -> int:
    Path(marker_dir, "ran").write_text("ran")
    return 1

@flow
def pipeline(marker_dir: str) -> int:
    return mark(marker_dir)
'''


def test_s13_a_missing_bucket_fails_before_any_task(s3_server, tmp_path, scenario_report, caplog):
    bucket = f"no-such-bucket-{uuid.uuid4().hex[:6]}"
    flow_file = tmp_path / "missing_bucket_flow.py"
    flow_file.write_text(FLOW_FILE)
    started = time.monotonic()
    with dask.config.set({"daskflow.storage.options": {"client_kwargs": {"endpoint_url": s3_server}}}):
        result = CliRunner().invoke(cli, ["run", f"{flow_file}:pipeline", "-p", f"marker_dir={tmp_path}",
                                          "--storage", f"s3://{bucket}/x"])
    elapsed = time.monotonic() - started
    assert result.exit_code != 0, result.output
    assert f"bucket '{bucket}' does not exist at endpoint {s3_server}" in result.output
    assert not (tmp_path / "ran").exists()
    assert _retry_warnings(caplog) == []  # a missing bucket is never retried
    scenario_report(13, "missing bucket", f"tasks executed 0; exit code {result.exit_code}; error in {elapsed:.1f} s; "
                    "message names bucket and endpoint: y", backend="moto", seed=SEED)


# ---------------------------------------------------------------- scenario 14: access denied
@flow
def two_counted(marker_dir: str) -> list[int]:
    first, second = counted.submit(marker_dir, "first", 1), counted.submit(marker_dir, "second", 2)
    return [first.result(), second.result()]


def test_s14_access_denied_is_not_retried_nor_a_silent_recompute(cluster, s3_store_url, tmp_path, scenario_report, caplog):
    url, options = s3_store_url
    bucket, prefix = url.removeprefix("s3://").split("/", 1)
    marker = str(tmp_path)
    store = Store(url, storage_options=options)
    runner = _runner(cluster)
    baseline = two_counted.with_options(task_runner=runner, result_storage=store)(marker, return_state=True)
    assert baseline.name == "Completed"
    key = baseline.run.task_run("counted-0").cache_key
    # Reading the first entry's manifest is denied (the lookup), then writing any result.
    faults = [
        {"method": "cat", "match": f"{key}.json", "calls": [1], "error": "denied"},
        {"method": "pipe_file", "match": "/results/", "every": 1, "at": [1], "error": "denied"},
    ]
    faulty, state = _faulty(tmp_path, faults, target="s3", target_options=options, root=f"{bucket}/{prefix}")
    caplog.set_level(logging.WARNING, "daskflow.storage")
    second = two_counted.with_options(task_runner=runner, result_storage=faulty)(marker, return_state=True)
    assert second.name == "Failed"
    denied = second.run.task_run("counted-0")
    assert denied.state.name == "Failed"
    message = f"{denied.error} {denied.state.message}"
    for fragment in (f"bucket '{bucket}'", f"{key}.json", "read of faulty://", "permission or credentials", "access was denied"):
        assert fragment in message, (fragment, message)
    assert runs_of(marker, "first") == 1 and runs_of(marker, "second") == 1  # not recomputed silently
    assert len(list(faulty_fs.calls_of(state, "cat", f"{key}.json"))) == 1  # one try
    # A write that is denied: tried once, the task Failed, nothing committed.
    with dask.config.set({"daskflow.cache.refresh": True}):
        third = two_counted.with_options(task_runner=runner, result_storage=faulty, refresh_cache=True)(marker, return_state=True)
    refused = third.run.task_run("counted-0")
    assert refused.state.name == "Failed" and "write of faulty://" in refused.error and "permission or credentials" in refused.error
    assert runs_of(marker, "first") == 2  # it ran (refresh), and its write was refused
    payload_writes = [c for c in faulty_fs.calls_of(state, "pipe_file", "/results/") if key in c["p"]]
    assert len(payload_writes) == 1
    assert _retry_warnings(caplog) == []
    secret = "sk-canary-9f3-" + uuid.uuid4().hex[:8]
    # moto checking credentials: an unknown key, and an IAM user whose policy denies s3:*.
    endpoint = options["client_kwargs"]["endpoint_url"]
    user_key, user_secret = denied_user_keys(endpoint)
    outputs = []
    for access_key, secret_key in (("AKIAUNKNOWN000000000", secret), (user_key, user_secret)):
        bad = Store(url, storage_options={**options, "key": access_key, "secret": secret_key, "skip_instance_cache": True})
        with moto_authentication(endpoint):
            refused_run = two_counted.with_options(task_runner=runner, result_storage=bad)(marker, return_state=True)
        assert refused_run.name == "Failed" and not refused_run.run.task_runs
        assert "access was denied" in refused_run.message and "permission or credentials" in refused_run.message
        outputs.append(refused_run.message + repr(refused_run.result(raise_on_failure=False)))
        outputs.extend(r.getMessage() for r in caplog.records)
        assert all(secret_key not in text for text in outputs)
    assert runs_of(marker, "first") == 2 and runs_of(marker, "second") == 2  # baseline + the refresh run's second task
    assert _retry_warnings(caplog) == []
    scenario_report(14, "access denied (FaultyFS and moto auth)", "retries on 403: 0 (1 try each); silent recomputes 0; "
                    "message names bucket, key, operation, permission/credentials; secret occurrences 0", backend="moto", seed=SEED)


# ---------------------------------------------------------------- scenario 17: planted pickles
class Canary:
    """Unpickling this creates ``path``: proof that planted bytes were unpickled."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.write_text, (Path(self.path), "unpickled"))


@flow
def one_value(marker_dir: str) -> list[int]:
    return counted.submit(marker_dir, "value", [1, 2, 3]).result()


def _plant(store: Store, key: str, payload: bytes, fix_manifest: bool) -> None:
    """An attacker with write access replaces the payload (and, with ``fix_manifest``,
    fixes up the manifest's size, digest and payload name; the HMAC it cannot make)."""
    manifest_path = store.manifest_path(key)
    fields = json.loads(store.get(manifest_path))
    if not fix_manifest:
        store.put(f"{manifest_path.rsplit('/', 1)[0]}/{fields['payload']}", payload)
        return
    digest = hashlib.sha256(payload).hexdigest()
    fields.update(size=len(payload), sha256=digest, payload=f"{key}.{digest[:16]}")
    store.put(f"{manifest_path.rsplit('/', 1)[0]}/{key}.{digest[:16]}", payload)
    store.put(manifest_path, json.dumps(fields).encode())


@pytest.mark.parametrize("case", ["payload-only", "payload-and-digest-signed", "payload-only-signed"])
def test_s17_a_planted_pickle_is_refused_before_unpickling(case, tmp_path, scenario_report, caplog):
    canary = tmp_path / "canary"
    marker = tmp_path / "marks"
    marker.mkdir()
    signing = {"daskflow.storage.signing-key": "s17-key"} if "signed" in case else {}
    with dask.config.set(signing):
        store = Store(str(tmp_path / "store"))
        pipeline = one_value.with_options(task_runner=SequentialTaskRunner(), result_storage=store)
        first = pipeline(str(marker), return_state=True)
        key = first.run.task_run("counted-0").cache_key
        _plant(store, key, pickle.dumps(Canary(str(canary))), fix_manifest="digest" in case)
        # Lookups and listings never read a payload, let alone unpickle one.
        assert store.exists(store.manifest_path(key))
        store.lookup([key])
        listing = CliRunner().invoke(cli, ["cache", "ls", "--storage", store.url])
        assert not canary.exists()
        caplog.set_level(logging.WARNING, "daskflow.storage")
        second = pipeline(str(marker), return_state=True)
    assert second.name == "Completed" and second.result() == [1, 2, 3]
    assert not canary.exists()
    assert runs_of(str(marker), "value") == 2  # refused, quarantined, recomputed
    # Caught by the signature (a fixed-up digest), or by the size and digest (payload only); then quarantined.
    reason = "not signed with this store's signing key" if "digest" in case else "the manifest says"
    assert any("corrupted entry" in r.getMessage() and reason in r.getMessage() for r in caplog.records)
    assert listing.exit_code == 0, listing.output
    scenario_report(17, f"malicious pickle planted ({case})", "canary executions 0; unpickles during lookup/exists/cache ls 0; "
                    "refused before unpickling, recomputed", backend="local", seed=SEED)


def test_s17_without_a_key_a_fixed_up_digest_is_not_enough_to_run_on_lookup(tmp_path):
    """The documented limit: an unsigned store trusts a manifest's digest, so a
    writer who fixes it up gets the pickle run when the value is read; but never by
    a lookup, exists() or a listing."""
    canary = tmp_path / "canary"
    store = Store(str(tmp_path / "store"))
    manifest, _ = store.write_result("planted-key-000", [1])
    _plant(store, "planted-key-000", pickle.dumps(Canary(str(canary))), fix_manifest=True)
    assert store.lookup(["planted-key-000"])["planted-key-000"] is not None
    assert store.exists(store.manifest_path("planted-key-000"))
    assert CliRunner().invoke(cli, ["cache", "ls", "--storage", store.url]).exit_code == 0
    assert not canary.exists()


# ---------------------------------------------------------------- what is retried, and what is said
def _client_error(code: str, status: int) -> BaseException:
    from botocore.exceptions import ClientError
    from s3fs.errors import translate_boto_error

    return translate_boto_error(ClientError({"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "PutObject"))


def test_s07_transient_errors_are_told_from_permanent_ones():
    from aiohttp import ServerDisconnectedError
    from botocore.exceptions import ConnectTimeoutError, EndpointConnectionError, ReadTimeoutError

    from daskflow.storage.retry import transient_kind

    kinds = {
        "SlowDown": transient_kind(_client_error("SlowDown", 503)),
        "InternalError": transient_kind(_client_error("InternalError", 500)),
        "RequestTimeout": transient_kind(_client_error("RequestTimeout", 400)),
        "read timeout": transient_kind(ReadTimeoutError(endpoint_url="http://x")),
        "connect timeout": transient_kind(ConnectTimeoutError(endpoint_url="http://x")),
        "refused": transient_kind(EndpointConnectionError(endpoint_url="http://x")),
        "reset": transient_kind(ConnectionResetError(104, "Connection reset by peer")),
        "disconnected": transient_kind(ServerDisconnectedError()),
        "AccessDenied": transient_kind(_client_error("AccessDenied", 403)),
        "InvalidAccessKeyId": transient_kind(_client_error("InvalidAccessKeyId", 403)),
        "NoSuchBucket": transient_kind(_client_error("NoSuchBucket", 404)),
        "NoSuchKey": transient_kind(_client_error("NoSuchKey", 404)),
        "local permission": transient_kind(PermissionError(13, "Permission denied")),
        "exists": transient_kind(FileExistsError("x")),
        "disk I/O": transient_kind(OSError(5, "Input/output error")),
    }
    assert kinds == {
        "SlowDown": "throttled", "InternalError": "server", "RequestTimeout": "timeout", "read timeout": "timeout",
        "connect timeout": "timeout", "refused": "connection", "reset": "connection", "disconnected": "connection",
        "AccessDenied": None, "InvalidAccessKeyId": None, "NoSuchBucket": None, "NoSuchKey": None,
        "local permission": None, "exists": None, "disk I/O": None,
    }


@pytest.mark.parametrize("fault, expected, not_expected", [
    ("timeout", ["the write timed out", "config_kwargs={'read_timeout': 120}", "gave up after 4 attempts"], ["cannot reach"]),
    ("slowdown", ["throttling requests (SlowDown)", "daskflow.storage.retries", "gave up after 4 attempts"], ["cannot reach"]),
    ("reset", ["storage unreachable: write of faulty://", "cannot reach the storage endpoint", "gave up after 4 attempts"], []),
    ("denied", ["access was denied to bucket", "permission or credentials, not retried"], ["gave up", "storage unreachable"]),
])
def test_s07_an_error_that_outlasts_the_retries_says_what_it_is(tmp_path, fault, expected, not_expected):
    store, state = _faulty(tmp_path, [{"method": "pipe_file", "every": 1, "at": [1], "error": fault}])
    with pytest.raises(StorageError) as info:
        store.put("probe/x", b"1")
    message = str(info.value)
    assert info.value.operation == "write" and info.value.url == store.describe("probe/x")
    for fragment in expected:
        assert fragment in message, (fragment, message)
    for fragment in not_expected:
        assert fragment not in message, (fragment, message)
    assert len(list(faulty_fs.calls_of(state, "pipe_file"))) == (1 if fault == "denied" else 4)
