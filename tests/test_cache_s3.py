"""Flows whose results live on S3, through a moto server on 127.0.0.1 (the real
S3 protocol over HTTP, spoken by s3fs in the driver and in worker processes)."""

from __future__ import annotations

import pytest

from daskflow import Store, flow

from .tasks import combine, counted, runs_of

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
