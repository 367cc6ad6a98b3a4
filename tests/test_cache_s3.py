"""Flows whose results live on S3, through a moto server on 127.0.0.1 (the real
S3 protocol over HTTP, spoken by s3fs in the driver and in worker processes)."""

from __future__ import annotations

import socket
import threading

import dask
import pytest

from daskflow import SequentialTaskRunner, Store, flow

from .conftest import wait_until
from .tasks import block_until, combine, counted, runs_of

pytestmark = pytest.mark.slow


@flow
def diamond(marker_dir: str, x: int = 1, y: int = 2):
    a = counted.submit(marker_dir, "a", x)
    b = counted.submit(marker_dir, "b", y)
    return combine.submit(marker_dir, "c", a, b)


@pytest.mark.parametrize("runner", ["sequential", "dask-processes"], indirect=True)
def test_results_on_s3_are_reused_by_the_next_run(runner, tmp_path, s3_store_url):
    url, options = s3_store_url
    store = Store(url, storage_options=options)
    pipeline = diamond.with_options(task_runner=runner, result_storage=store)
    first = pipeline(str(tmp_path), return_state=True)
    assert first.result() == 3
    assert first.run.result_storage == url
    manifests = [p for p in store.list("results") if p.endswith(".json")]
    assert len(manifests) == 3
    second = pipeline(str(tmp_path), return_state=True)
    assert second.result() == 3
    assert second.run.state_counts() == {"Cached": 3}
    assert [runs_of(str(tmp_path), n) for n in "abc"] == [1, 1, 1]
    key = second.run.task_run("combine-0").cache_key
    assert Store(url, storage_options=options).read_result(key) == 3  # loads back from a fresh client


@pytest.mark.parametrize("runner", ["sequential"], indirect=True)
def test_a_missing_bucket_fails_the_run_before_any_task(runner, tmp_path, s3_store_url):
    from daskflow.exceptions import StorageError

    _, options = s3_store_url
    store = Store("s3://no-such-bucket-daskflow/results", storage_options=options)
    state = diamond.with_options(task_runner=runner, result_storage=store)(str(tmp_path), return_state=True)
    assert state.name == "Failed"
    error = state.result(raise_on_failure=False)
    assert isinstance(error, StorageError)
    assert "no-such-bucket-daskflow" in str(error) and "does not exist" in str(error)
    assert not state.run.task_runs
    assert runs_of(str(tmp_path), "a") == 0


def test_an_endpoint_that_goes_away_fails_the_task_and_the_rerun_resumes(tmp_path):
    """RELIABILITY scenario 7: the S3 endpoint dies mid-run. The task whose write
    fails ends Failed with an error naming the endpoint (never Completed without
    a committed result); once the endpoint is back, a rerun reuses what was
    committed and computes the rest."""
    boto3 = pytest.importorskip("boto3")
    ThreadedMotoServer = pytest.importorskip("moto.server").ThreadedMotoServer

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    endpoint = f"http://127.0.0.1:{port}"
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket="outage")
        options = {
            "client_kwargs": {"endpoint_url": endpoint},
            "config_kwargs": {"connect_timeout": 1, "read_timeout": 2, "retries": {"max_attempts": 1}},
            "skip_instance_cache": True,
        }
        store = Store("s3://outage/results", storage_options=options)

        @flow(task_runner=SequentialTaskRunner(), result_storage=store)
        def pipeline(marker_dir: str):
            first = counted.submit(marker_dir, "a", 1)
            gate = block_until.submit(marker_dir, "gate", wait_for=[first])
            return combine.submit(marker_dir, "b", first, wait_for=[gate])

        outcome: dict = {}

        def first_run() -> None:
            # The final run record is not retried for a minute here (tests/reliability's
            # scenario 7 checks that it is, and reads Failed once the endpoint is back).
            with dask.config.set({"daskflow.history.final-write-budget": 0}):
                outcome.update(state=pipeline(str(tmp_path), return_state=True))

        runner = threading.Thread(target=first_run)
        runner.start()
        wait_until(lambda: list(tmp_path.glob("gate.pid.*")), 60, message="the gate task to start")
        server.stop()  # a and nothing else committed; the endpoint is gone
        (tmp_path / "gate.go").write_text("go")
        runner.join(120)
        assert not runner.is_alive()
        state = outcome["state"]
        assert state.name == "Failed"
        gate_run = state.run.task_run("block_until-0")
        assert gate_run.state.name == "Failed" and "cannot reach the storage endpoint" in gate_run.error
        assert endpoint in gate_run.error
        assert state.run.task_run("combine-0").state.name == "UpstreamFailed"
        assert runs_of(str(tmp_path), "b") == 0

        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        server.start()  # moto keeps its buckets in this process: a's entry is still there
        for stale in tmp_path.glob("gate.pid.*"):
            stale.unlink()
        rerun = pipeline(str(tmp_path), return_state=True)
        assert rerun.result() == 1
        assert rerun.run.task_run("counted-0").state.name == "Cached"
        assert runs_of(str(tmp_path), "a") == 1 and runs_of(str(tmp_path), "b") == 1
    finally:
        server.stop()
