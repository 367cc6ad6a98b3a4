"""Driver faults and driver load (RELIABILITY.md section 6, scenarios 6 and 24a).

6: the driver is a subprocess SIGKILLed after k of N results are committed; its
workers must go, the history must show the run Crashed (the stale-heartbeat
sweep), and a rerun must find the k results. 24a: a 200 MB array as a flow
parameter passed to several tasks must cross to the cluster once, not per task.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
import warnings

import dask
import psutil
import pytest

from daskflow import DaskTaskRunner, flow, task
from daskflow.storage.records import History
from daskflow.storage.store import Store

from ..conftest import wait_until, worker_env

pytestmark = pytest.mark.slow

SEED = 6

_DRIVER = """
import json, os, sys, time
from daskflow import DaskTaskRunner, flow, task, unmapped

@task
def step(i: int, gate_dir: str, fast: int) -> int:
    if i >= fast:
        while not os.path.exists(os.path.join(gate_dir, "go")):
            time.sleep(0.02)
    return i * 10

@flow(task_runner=DaskTaskRunner(cluster_kwargs={"n_workers": 2, "threads_per_worker": 1, "dashboard_address": None}))
def steps(n: int, gate_dir: str, fast: int) -> int:
    return sum(step.map(range(n), unmapped(gate_dir), unmapped(fast)).result())

if __name__ == "__main__":
    state = steps(int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), return_state=True)
    print(json.dumps({"value": state.result(), "counts": state.run.state_counts()}))
"""


def test_s06_killed_driver_leaves_no_orphans_shows_crashed_and_resumes(tmp_path, _result_storage, scenario_report):
    script = tmp_path / "driver.py"
    script.write_text(textwrap.dedent(_DRIVER))
    gate = tmp_path / "gate"
    gate.mkdir()
    n, k, crashed_after = 4, 2, 3
    env = {
        **worker_env(), "DASK_DASKFLOW__STORAGE__URL": str(_result_storage), "DASK_DASKFLOW__LOGGING__CONSOLE": "false",
        "DASK_DASKFLOW__HISTORY__HEARTBEAT": "1", "DASK_DASKFLOW__HISTORY__CRASHED_AFTER": str(crashed_after),
    }
    args = [sys.executable, str(script), str(n), str(gate), str(k)]
    started = time.monotonic()
    driver = subprocess.Popen(args, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_until(lambda: len(list(_result_storage.glob("results/*/*/*.json"))) >= k, 90, message=f"{k} committed results")
        children = psutil.Process(driver.pid).children(recursive=True)
        assert children, "the driver's cluster processes"
        driver.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        driver.wait(30)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait(30)
    full_run_until_kill = killed - started
    wait_until(lambda: not [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE], 10,
               interval=0.1, message="the killed driver's worker processes to exit within 10 s")
    orphans_gone = time.monotonic() - killed
    store = Store(str(_result_storage))
    history = History(store, stale_after=crashed_after)
    (killed_run,) = history.runs()
    wait_until(lambda: History(store, stale_after=crashed_after).runs()[0]["state"]["name"] == "Crashed", crashed_after + 10,
               interval=0.1, message="the killed run to read as Crashed")
    detected = time.monotonic() - killed

    (gate / "go").write_text("go")
    rerun_started = time.monotonic()
    rerun = subprocess.run(args, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False)
    rerun_time = time.monotonic() - rerun_started
    assert rerun.returncode == 0, rerun.stderr
    result = json.loads(rerun.stdout.strip().splitlines()[-1])
    assert result["value"] == sum(i * 10 for i in range(n))
    assert result["counts"] == {"Cached": k, "Completed": n - k}
    # The rerun's start swept the stale run: its record itself now says Crashed.
    records = {r["id"]: r for r in History(store, stale_after=3600).runs()}
    assert records[killed_run["id"]]["state"]["name"] == "Crashed"
    scenario_report(6, "driver SIGKILLed mid-flow, then rerun", f"orphans 0 (gone {orphans_gone:.1f} s after the kill), "
                    f"read as Crashed after {detected:.1f} s (crashed-after {crashed_after} s), cache hits {k}/{k}, "
                    f"rerun {rerun_time:.1f} s vs {full_run_until_kill:.1f} s to the kill", backend="local", n=1, seed=SEED)


@task
def column_sum(data, column: int) -> float:
    return float(data[:, column].sum())


@flow
def wide(data, columns: int) -> list[float]:
    return [column_sum.submit(data, c) for c in range(columns)]


_SIZE = re.compile(r"Sending large graph of size ([0-9.]+ [kMGT]?i?B)")


def test_s24a_a_large_parameter_crosses_to_the_cluster_once(tmp_path, scenario_report):
    np = pytest.importorskip("numpy")
    from distributed import LocalCluster

    data = np.ones((25_000_000 // 8, 8))  # 200 MB of float64
    tasks = 3
    process = psutil.Process()
    peak = {"rss": 0}
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak["rss"] = max(peak["rss"], process.memory_info().rss)
            stop.wait(0.01)

    with LocalCluster(n_workers=1, threads_per_worker=2, processes=True, host="127.0.0.1", dashboard_address="127.0.0.1:0") as local:
        run = wide.with_options(task_runner=DaskTaskRunner(address=local.scheduler_address), persist_result=False)
        before = process.memory_info().rss
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        # Every graph sent is reported with its size (the threshold is one byte).
        with dask.config.set({"distributed.admin.large-graph-warning-threshold": "1B"}), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            sums = run(data, tasks)
        stop.set()
        sampler.join()
    assert sums == [float(len(data))] * tasks
    graph_bytes = sum(dask.utils.parse_bytes(m.group(1)) for w in caught if (m := _SIZE.search(str(w.message))))
    peak_extra = peak["rss"] - before
    # Sent once per run (as the value of one task the attempts depend on), not once per task.
    assert graph_bytes < 1.1 * data.nbytes, f"graphs carried {graph_bytes / 1e6:.0f} MB for a {data.nbytes / 1e6:.0f} MB parameter"
    assert peak_extra < 1.5 * data.nbytes
    scenario_report(24, "(a) 200 MB array as a flow parameter to 3 tasks", f"graph bytes {graph_bytes / 1e6:.2f} MB, driver peak "
                    f"RSS +{peak_extra / 1e6:.0f} MB over the array (sent once per run)", backend="local", n=1, seed=SEED, part="a")
