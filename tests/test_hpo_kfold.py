"""The main job, ``examples/hpo_kfold.py``, run as a user runs it: against S3 (moto on 127.0.0.1)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import cloudpickle
import pytest

from daskflow import Store
from daskflow.storage.records import History

from .conftest import REPO, worker_env
from .hints import activated_env, printed_commands, run_printed
from .s3 import bucket_keys

pytestmark = pytest.mark.slow

pytest.importorskip("sklearn", reason="the main job needs scikit-learn: pip install '.[test]'")


def _run_example(storage: str, endpoint: str, cwd) -> subprocess.CompletedProcess:
    env = worker_env()
    # The store's endpoint as a user sets it: config, read by the driver and by
    # the LocalCluster's worker processes alike (credentials: the AWS_* test dummies).
    env["DASK_DASKFLOW__STORAGE__OPTIONS"] = json.dumps({"client_kwargs": {"endpoint_url": endpoint}})
    # The example's own main() on 6 of its 18 settings and 3 folds (40 task runs, not 184): the
    # S3 round trips are what is tested here; the full grid is the README's main command.
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "examples"), env["PYTHONPATH"]])  # workers import hpo_kfold too
    small_grid = f"import sys, hpo_kfold; hpo_kfold.GRID = hpo_kfold.GRID[:{SETTINGS}]; sys.exit(hpo_kfold.main(sys.argv[1:]))"
    return subprocess.run(
        [sys.executable, "-c", small_grid, "--storage", storage, "--workers", "2", "--folds", str(FOLDS)],
        env=env, cwd=cwd, capture_output=True, text=True, timeout=600,
    )


SETTINGS, FOLDS = 6, 3
TASK_RUNS = 2 * SETTINGS * FOLDS + 4  # fit and score per (setting, fold); load, table, refit, publish


def test_the_main_job_keeps_every_model_and_the_cv_table_on_s3_and_reruns_from_them(s3_server, s3_store_url, tmp_path):
    url, options = s3_store_url
    first = _run_example(url, s3_server, tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    assert f"{TASK_RUNS} task runs computed, 0 reused" in first.stdout
    assert "daskflow artifacts show" in first.stdout and "status page:" in first.stdout

    store = Store(url, storage_options=options)
    bucket = url.split("/")[2]
    keys = bucket_keys(s3_server, bucket)
    folder = json.loads(store.get("hpo_kfold/latest.json"))["folder"]
    assert {f"prefix/{folder}/{name}" for name in ("metrics.json", "cv_results.json", "best_model.pkl")} <= set(keys)
    history = History(store)
    (entry,) = history.entries()
    tasks = history.tasks(entry)
    fits = [t for t in tasks if t["task_name"] == "fit"]
    assert len(fits) == SETTINGS * FOLDS and all(t["state"]["name"] == "Completed" for t in tasks)

    import numpy as np
    from sklearn.datasets import load_digits

    X = load_digits().data[:20]
    for record in fits:  # every fold's model is in the bucket and predicts
        model = store.read_result(record["cache_key"])
        assert np.asarray(model.predict(X)).shape == (20,)
    table = json.loads(store.get(f"{folder}/cv_results.json"))
    assert len(table) == SETTINGS and table[0]["rank"] == 1
    assert table[0]["mean_accuracy"] == max(row["mean_accuracy"] for row in table) > 0.9
    (artifact,) = [a for a in history.artifacts(entry) if a["key"] == "cv-results"]
    assert len(artifact["data"]["rows"]) == SETTINGS  # the same table, attached to the run
    metrics = json.loads(store.get(f"{folder}/metrics.json"))
    assert metrics["best_setting"] == table[0]["setting"] and metrics["folds"] == FOLDS
    best = cloudpickle.loads(store.get(f"{folder}/best_model.pkl"))
    assert np.asarray(best.predict(X)).shape == (20,)

    second = _run_example(url, s3_server, tmp_path)
    assert second.returncode == 0, second.stdout + second.stderr
    assert f"all {TASK_RUNS} task runs were reused from storage" in second.stdout
    latest = History(store).entries()[-1]
    assert History(store).run(latest)["task_counts"] == {"Cached": TASK_RUNS}
    assert [a["key"] for a in History(store).artifacts(latest)] == ["cv-results", "best-model", "metrics"]


def _printed_path(output: str, label: str) -> str:
    (line,) = [line for line in output.splitlines() if line.startswith(label)]
    return line.split(label, 1)[1].split(",")[-1].strip()


def test_a_rerun_publishes_and_prints_its_own_files_not_the_last_runs(tmp_path):
    """Defaults, then ``--seed 1``, then the defaults again: the third run is fully
    cached, and the metrics and model it prints are the first run's, not seed 1's."""
    storage = tmp_path / "store"
    env = worker_env()
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "examples"), env["PYTHONPATH"]])  # workers import hpo_kfold too
    # The example's own main(), on two of its 18 settings: the publishing is what
    # is tested here, and three runs of the whole grid would take half a minute.
    small_grid = "import sys, hpo_kfold; hpo_kfold.GRID = hpo_kfold.GRID[:2]; sys.exit(hpo_kfold.main(sys.argv[1:]))"

    def run(*extra: str) -> subprocess.CompletedProcess:
        done = subprocess.run(
            [sys.executable, "-c", small_grid, "--storage", str(storage), "--folds", "2", *extra],
            env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done

    first, _, third = run(), run("--seed", "1"), run()
    # Every command it prints works as printed, in the shell the README's quick start leaves.
    commands = printed_commands(first.stdout)
    assert [c.split()[1] for c in commands] == ["cache", "artifacts", "ui"], first.stdout
    shell = activated_env(env)
    outputs = [run_printed(command, shell, tmp_path) for command in commands]
    assert "fit" in outputs[0] and "mean_accuracy" in outputs[1]
    assert "task runs were reused from storage" in third.stdout
    # The embedded LocalCluster starts when a task run first has to execute: a
    # fully cached run in a new process starts none (no dashboard, no workers).
    assert "starting the local Dask cluster" in first.stderr and "Dask dashboard:" in first.stderr
    assert "starting the local Dask cluster" not in third.stderr and "Dask dashboard:" not in third.stderr
    assert "status page:" not in third.stdout  # no live page to point at; the run is in history
    store = Store(str(storage))
    metrics_path = _printed_path(third.stdout, "CV table, metrics:")
    assert metrics_path == _printed_path(first.stdout, "CV table, metrics:")
    relative = metrics_path.split(str(storage), 1)[1].lstrip("/")
    metrics = json.loads(store.get(relative))
    assert (metrics["seed"], metrics["folds"]) == (0, 2)
    latest = json.loads(store.get("hpo_kfold/latest.json"))
    assert latest["metrics.json"] == metrics_path  # the pointer follows the latest run
    folders = {key.split("/")[1] for key in store.list("hpo_kfold") if key.count("/") == 2}
    assert len(folders) == 2  # one per result: seed 0 and seed 1, neither overwritten
