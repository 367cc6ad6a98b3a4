"""Faults around stored results: a dead worker, a SIGKILLed driver, two runs of one key.

Each fault lands at a known point: tasks write pid files and wait on gate files,
and the test polls for those files (never a bare sleep).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading

import psutil
import pytest

from daskflow import DaskTaskRunner, flow

from .conftest import DaskCLICluster, process_gone, wait_until, worker_env
from .tasks import block_until, combine, counted, runs_of

pytestmark = pytest.mark.slow


def test_a_completed_result_lost_with_its_worker_is_loaded_not_recomputed(tmp_path, _result_storage):
    """RELIABILITY scenario 3: the worker holding a finished result dies before
    its consumer runs; Dask recomputes the lost key, and the attempt loads the
    committed entry instead of running the function again."""
    marks = tmp_path / "marks"
    marks.mkdir()
    cluster = DaskCLICluster(tmp_path, workers=(("--resources", "holder=1"), ("--resources", "gate=1")))
    try:
        producer = counted.with_options(resources={"holder": 1})
        gate = block_until.with_options(resources={"gate": 1})

        @flow(task_runner=DaskTaskRunner(address=cluster.address))
        def pipeline(marker_dir: str):
            value = producer.submit(marker_dir, "a", 40)
            opened = gate.submit(marker_dir, "gate")
            return combine.submit(marker_dir, "b", value, 2, wait_for=[opened])

        outcome: dict = {}
        runner = threading.Thread(target=lambda: outcome.update(state=pipeline(str(marks), return_state=True)))
        runner.start()
        wait_until(lambda: list(_result_storage.glob("results/*/*/*.json")), 60, message="the producer's entry")
        wait_until(lambda: list(marks.glob("gate.pid.*")), 60, message="the gate task to start")
        holder_pid = int((marks / "a.runs").read_text().split()[0])
        os.kill(holder_pid, signal.SIGKILL)
        wait_until(lambda: process_gone(holder_pid), 30, message="the holder worker to die")
        (marks / "gate.go").write_text("go")
        runner.join(120)
        assert not runner.is_alive()
        state = outcome["state"]
        assert state.result() == 42
        assert runs_of(str(marks), "a") == 1  # loaded from storage, not run again
        assert state.run.task_run("counted-0").reloads == 1  # Dask did recompute the lost key
        assert runs_of(str(marks), "b") == 1
    finally:
        cluster.close()


_KILLED_DRIVER_SCRIPT = """
import json, os, sys, time
from daskflow import DaskTaskRunner, flow, task, unmapped

@task
def step(i: int, gate_dir: str, fast: int) -> int:
    if i >= fast:
        while not os.path.exists(os.path.join(gate_dir, "go")):
            time.sleep(0.02)
    with open(os.path.join(gate_dir, f"ran-{i}"), "a") as f:
        f.write(f"{os.getpid()}\\n")
    return i * i

@flow(task_runner=DaskTaskRunner(cluster_kwargs={"n_workers": 2, "threads_per_worker": 1, "dashboard_address": None}))
def pipeline(n: int, gate_dir: str, fast: int) -> int:
    return sum(step.map(range(n), unmapped(gate_dir), unmapped(fast)).result())

if __name__ == "__main__":
    state = pipeline(int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), return_state=True)
    print(json.dumps({"value": state.result(), "counts": state.run.state_counts()}))
"""


def test_a_killed_driver_resumes_from_what_was_committed(tmp_path, _result_storage):
    """RELIABILITY scenario 6: SIGKILL the driver after k of n results are
    committed; its workers go away, and a rerun runs only the n - k others."""
    script = tmp_path / "job.py"
    script.write_text(textwrap.dedent(_KILLED_DRIVER_SCRIPT))
    gate = tmp_path / "gate"
    gate.mkdir()
    n, fast = 6, 3
    env = {**worker_env(), "DASK_DASKFLOW__STORAGE__URL": str(_result_storage), "DASK_DASKFLOW__LOGGING__CONSOLE": "false"}
    args = [sys.executable, str(script), str(n), str(gate), str(fast)]
    driver = subprocess.Popen(args, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_until(lambda: len(list(_result_storage.glob("results/*/*/*.json"))) >= fast, 90, message=f"{fast} committed results")
        children = psutil.Process(driver.pid).children(recursive=True)
        assert children, "the embedded cluster's worker processes"
        driver.send_signal(signal.SIGKILL)
        driver.wait(30)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait(30)
    # Its worker processes notice the dead parent and exit (no orphans), so the
    # blocked tasks never finish and commit behind the rerun's back.
    wait_until(lambda: not [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE], 30,
               message="the killed driver's worker processes to exit")
    assert len(list(_result_storage.glob("results/*/*/*.json"))) == fast
    (gate / "go").write_text("go")
    rerun = subprocess.run(args, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False)
    assert rerun.returncode == 0, rerun.stderr
    result = json.loads(rerun.stdout.strip().splitlines()[-1])
    assert result["value"] == sum(i * i for i in range(n))
    assert result["counts"] == {"Cached": fast, "Completed": n - fast}
    for i in range(n):  # each task ran to completion exactly once over both runs
        lines = (gate / f"ran-{i}").read_text().splitlines()
        assert len(lines) == 1, (i, lines)


_RACE_SCRIPT = """
import json, os, sys, time, uuid
from daskflow import SequentialTaskRunner, flow, task

@task
def fit(barrier: str) -> str:
    # Both runs get here (past their cache lookups) before either commits.
    open(os.path.join(barrier, f"arrived-{os.getpid()}"), "w").close()
    deadline = time.monotonic() + 60
    while len(os.listdir(barrier)) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    return uuid.uuid4().hex  # each run computes a different value

@task
def report(model: str) -> str:
    return "model " + model

@flow(task_runner=SequentialTaskRunner())
def pipeline(barrier: str):
    model = fit.submit(barrier)
    return report.submit(model)

if __name__ == "__main__":
    print(json.dumps({"value": pipeline(sys.argv[1])}))
"""


def test_two_runs_of_one_key_commit_once_and_agree(tmp_path, _result_storage):
    """RELIABILITY scenario 11: two drivers compute the same key at once. One
    entry is committed; the other run adopts it, so both runs and everything
    downstream see the same value."""
    script = tmp_path / "race.py"
    script.write_text(textwrap.dedent(_RACE_SCRIPT))
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    env = {**worker_env(), "DASK_DASKFLOW__STORAGE__URL": str(_result_storage), "DASK_DASKFLOW__LOGGING__CONSOLE": "false"}
    procs = [
        subprocess.Popen([sys.executable, str(script), str(barrier)], env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        outputs.append(json.loads(out.strip().splitlines()[-1])["value"])
    assert len(list(barrier.iterdir())) == 2  # both really computed
    assert outputs[0] == outputs[1]
    manifests = sorted(_result_storage.glob("results/*/*/*.json"))
    tasks = sorted(json.loads(p.read_text())["meta"]["task"] for p in manifests)
    assert tasks == ["fit", "report"]  # one entry per key
    payloads = [p for p in _result_storage.glob("results/*/*/*") if p.suffix != ".json"]
    assert len(payloads) == 2  # the loser's payloads were removed
