"""Deployments on a real cluster: a ``dask scheduler`` and two ``dask worker`` processes on
127.0.0.1 (one serving the ``gpu`` queue), ``daskflow serve`` as a real process.

The workers run in a folder of their own with only daskflow on their path: every
scheduled run they execute comes from the code snapshot in the store.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from daskflow import History, Store, deploy
from daskflow.cli import cli
from daskflow.pipeline.entrypoints import load_flow

from .conftest import DaskCLICluster, stop_session, wait_until, worker_env

pytestmark = pytest.mark.slow

FLOWS = '''
import os
import time
from pathlib import Path

from daskflow import NONE, flow, task


@task(cache_policy=NONE)
def where(i: int) -> str:
    from distributed import get_worker

    return get_worker().address


@task(cache_policy=NONE)
def pause(seconds: float, marker: str, i: int) -> list:
    start = time.time()
    time.sleep(seconds)
    Path(marker).mkdir(parents=True, exist_ok=True)
    return [start, time.time()]


@task(tags=["db"], persist_result=False)
def query(marker: str, i: int, seconds: float = 0.4) -> list:
    start = time.time()
    time.sleep(seconds)
    return [start, time.time()]


@flow
def fan(n: int = 3, salt: str = "") -> list:
    return where.map(range(n)).result()


@flow
def slow(seconds: float = 2.0, marker: str = "") -> list:
    return pause(seconds, marker, time.time_ns())


@flow
def queries(marker: str = "", n: int = 2) -> list:
    return query.map([marker] * n, range(n)).result()


@flow
def broken(n: int = 1) -> None:
    raise ValueError("the scheduled job broke")


@flow
def quick(n: int = 1) -> int:
    return n


def record_failure(flow, flow_run, state):
    """A deployment's on_failure hook: runs on the worker that drove the flow."""
    Path(flow_run.parameters["marker"], f"{flow_run.id}.failed").write_text(state.name)


@flow
def broken_marked(marker: str = "") -> None:
    raise ValueError("broke with a marker")
'''


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("serve-cluster")
    cluster = DaskCLICluster(tmp, workers=(("--resources", "queue-gpu=1"), ()))
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.fixture(scope="module")
def flows(tmp_path_factory):
    folder = tmp_path_factory.mktemp("project")
    (folder / "scheduled_flows.py").write_text(textwrap.dedent(FLOWS))
    return {name: load_flow(f"{folder / 'scheduled_flows.py'}:{name}") for name in ("fan", "slow", "queries", "broken", "quick", "broken_marked")}


def _worker_addresses(cluster: DaskCLICluster) -> dict[str, str]:
    from distributed import Client

    with Client(cluster.address, timeout=30) as client:
        return {info["name"]: address for address, info in client.scheduler_info(n_workers=-1)["workers"].items()}


@contextlib.contextmanager
def serving(cluster: DaskCLICluster, store: Path, log: Path, *extra: str, env: dict[str, str] | None = None):
    """``daskflow serve --address ... --storage ...`` as a process; yields the Popen."""
    process = _start_serve(cluster, store, log, *extra, env=env)
    try:
        yield process
    finally:
        stop_session(process)


def _start_serve(cluster: DaskCLICluster, store: Path, log: Path, *extra: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    settings = {
        "DASK_DASKFLOW__DEPLOYMENTS__REFRESH": "1",
        "DASK_DASKFLOW__DEPLOYMENTS__LATE_AFTER": "3",
        "DASK_DASKFLOW__DEPLOYMENTS__TAKEOVER_AFTER": "2",
    }
    daskflow = str(Path(sys.executable).parent / "daskflow")
    handle = open(log, "ab")
    return subprocess.Popen(
        [daskflow, "serve", "--address", cluster.address, "--storage", str(store), *extra],
        stdout=handle, stderr=subprocess.STDOUT, env={**worker_env(), **settings, **(env or {})}, start_new_session=True,
    )


def _runs(store: Path, deployment: str | None = None) -> list[dict]:
    records = History(Store(store)).runs(limit=None)
    return [r for r in records if deployment is None or r.get("deployment_name") == deployment]


def _finished(store: Path, deployment: str, count: int) -> list[dict]:
    runs = [r for r in _runs(store, deployment) if r["state"]["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")]
    return runs if len(runs) >= count else []


def _intervals_overlap(intervals: list[tuple[float, float]]) -> bool:
    ordered = sorted(intervals)
    return any(b[0] < a[1] for a, b in zip(ordered, ordered[1:]))


def test_scheduled_runs_go_to_their_queues_workers_and_run_from_the_stored_snapshot(cluster, flows, tmp_path):
    from distributed import Client

    workers = _worker_addresses(cluster)
    with Client(cluster.address, timeout=30) as client:
        # The workers have no copy of the flow file: only the snapshot can run it.
        assert set(client.run(lambda: __import__("importlib").util.find_spec("scheduled_flows") is None).values()) == {True}
    store = tmp_path / "store"
    deploy(
        flows["fan"].to_deployment("gpu-fan", interval=1, parameters={"n": 4, "salt": "gpu"}, work_queue_name="gpu"),
        flows["fan"].to_deployment("any-fan", interval=1, parameters={"n": 4, "salt": "any"}),
        storage=str(store),
    )
    with serving(cluster, store, tmp_path / "serve.log"):
        wait_until(lambda: _finished(store, "gpu-fan", 3) and _finished(store, "any-fan", 2), 120, 0.2, "three gpu runs and two others")
    gpu_runs = _finished(store, "gpu-fan", 3)
    assert all(r["state"]["name"] == "Completed" for r in gpu_runs), [r["state"] for r in gpu_runs]
    history = History(Store(store))
    for record in gpu_runs:
        entry = history.resolve(record["id"])
        task_workers = {t["worker"] for t in history.tasks(entry)}
        assert task_workers == {workers["w0"]}, task_workers  # every task on the gpu queue's worker
        assert record["work_queue"] == "gpu" and record["deployment_name"] == "gpu-fan"
        names = [s["name"] for s in record["state_history"]]
        # A run that waited for the queue's one worker past its start turns Late first (1 s interval, a loaded machine).
        assert names[0] == "Scheduled" and "Late" not in names[2:], names
        assert [n for n in names if n != "Late"][:3] == ["Scheduled", "Pending", "Running"], names
    # The flow itself was driven from a worker process, not from the serve process.
    worker_pids = set(cluster.worker_pids())
    assert {r["pid"] for r in gpu_runs} <= worker_pids
    log = (tmp_path / "serve.log").read_text()
    assert "created run 'gpu-fan-" in log


def test_a_run_for_a_queue_without_workers_stays_scheduled_says_why_and_turns_late(cluster, flows, tmp_path):
    store = tmp_path / "store"
    deploy(flows["quick"].to_deployment("tpu-job", interval=3600, work_queue_name="tpu"), storage=str(store))
    runner = CliRunner()
    with serving(cluster, store, tmp_path / "serve.log"):
        result = runner.invoke(cli, ["deployments", "run", "tpu-job", "--address", cluster.address, "--storage", str(store), "--no-watch"])
        assert result.exit_code == 0, result.output
        [record] = wait_until(lambda: _runs(store, "tpu-job"), 60, 0.2, "the ad-hoc run")
        assert record["state"]["name"] == "Scheduled"
        # Ad-hoc runs are watched by the loop that adopts them at its next start; the
        # loop's own scheduled slot is an hour away: give it one to watch.
    deploy(flows["quick"].to_deployment("tpu-job", interval=1, work_queue_name="tpu"), storage=str(store))
    with serving(cluster, store, tmp_path / "serve.log"):
        late = wait_until(lambda: [r for r in _runs(store, "tpu-job") if r["state"]["name"] == "Late"], 60, 0.2, "a Late run")
    message = late[0]["state"]["message"]
    assert "no worker serves queue 'tpu'" in message and "--resources queue-tpu=1" in message
    shown = runner.invoke(cli, ["runs", "ls", "--state", "Late", "--storage", str(store)])
    assert shown.exit_code == 0 and late[0]["id"][:12] in shown.output
    queues = runner.invoke(cli, ["queues", "ls", "--address", cluster.address, "--storage", str(store)])
    assert queues.exit_code == 0, queues.output
    tpu_line = next(line for line in queues.output.splitlines() if line.startswith("tpu "))
    assert " 0 " in tpu_line  # no workers
    assert "no worker serves queue 'tpu'" in queues.output
    gpu_line = next(line for line in queues.output.splitlines() if line.startswith("gpu "))
    assert "w0" in gpu_line
    preview = runner.invoke(cli, ["queues", "preview", "tpu", "--hours", "0.01", "--storage", str(store)])
    assert preview.exit_code == 0 and "tpu-job" in preview.output and "Late" in preview.output


def test_a_concurrency_limit_of_one_keeps_runs_from_overlapping(cluster, flows, tmp_path):
    store = tmp_path / "store"
    marker = str(tmp_path / "marks")
    deploy(
        flows["slow"].to_deployment("one-at-a-time", interval=1, parameters={"seconds": 1.5, "marker": marker}, concurrency_limit=1),
        flows["slow"].to_deployment("cancel-extra", interval=1, parameters={"seconds": 2.5, "marker": marker},
                                    concurrency_limit=1, collision_strategy="cancel-new"),
        storage=str(store),
    )
    with serving(cluster, store, tmp_path / "serve.log"):
        wait_until(lambda: len([r for r in _finished(store, "one-at-a-time", 3) if r["state"]["name"] == "Completed"]) >= 3, 120, 0.2,
                   "three completed runs of one-at-a-time")
        wait_until(lambda: [r for r in _runs(store, "cancel-extra") if r["state"]["name"] == "Cancelled"], 60, 0.2, "a cancelled extra run")
    completed = [r for r in _runs(store, "one-at-a-time") if r["state"]["name"] == "Completed"]
    assert not _intervals_overlap([(r["start_time"], r["end_time"]) for r in completed]), [(r["start_time"], r["end_time"]) for r in completed]
    cancelled = [r for r in _runs(store, "cancel-extra") if r["state"]["name"] == "Cancelled"]
    assert "cancel-new" in cancelled[0]["state"]["message"]
    ran = [r for r in _runs(store, "cancel-extra") if r["state"]["name"] == "Completed"]
    assert not _intervals_overlap([(r["start_time"], r["end_time"]) for r in ran])


def test_a_queue_limit_of_one_keeps_the_queues_runs_from_overlapping(cluster, flows, tmp_path):
    store = tmp_path / "store"
    runner = CliRunner()
    assert runner.invoke(cli, ["limits", "set", "gpu", "1", "--queue", "--storage", str(store)]).exit_code == 0
    marker = str(tmp_path / "marks")
    deploy(*(flows["slow"].to_deployment(f"gpu-slow-{i}", interval=1, parameters={"seconds": 0.8, "marker": marker}, work_queue_name="gpu")
             for i in range(2)), storage=str(store))
    with serving(cluster, store, tmp_path / "serve.log"):
        wait_until(lambda: _finished(store, "gpu-slow-0", 2) and _finished(store, "gpu-slow-1", 2), 120, 0.2, "two runs of each")
    ran = [r for r in _runs(store) if r["state"]["name"] == "Completed"]
    assert not _intervals_overlap([(r["start_time"], r["end_time"]) for r in ran]), sorted((r["start_time"], r["end_time"]) for r in ran)
    waited = [r for r in _runs(store) if any("concurrency limit of queue 'gpu'" in s.get("message", "") for s in r["state_history"])]
    assert waited  # a run that met the full queue said why it waited
    assert runner.invoke(cli, ["limits", "rm", "gpu", "--queue", "--storage", str(store)]).exit_code == 0


def test_a_task_tag_limit_holds_across_runs(cluster, flows, tmp_path):
    store = tmp_path / "store"
    runner = CliRunner()
    assert runner.invoke(cli, ["limits", "set", "db", "1", "--storage", str(store)]).exit_code == 0
    listing = runner.invoke(cli, ["limits", "ls", "--storage", str(store)])
    assert "db" in listing.output and "1" in listing.output
    deploy(flows["queries"].to_deployment("db-job", interval=1, parameters={"marker": str(tmp_path), "n": 2}), storage=str(store))
    with serving(cluster, store, tmp_path / "serve.log"):
        wait_until(lambda: _finished(store, "db-job", 3), 120, 0.2, "three db runs")
    history = History(Store(store))
    intervals = []
    for record in _finished(store, "db-job", 3):
        assert record["state"]["name"] == "Completed"
        intervals += [(t["start_time"], t["end_time"]) for t in history.tasks(history.resolve(record["id"])) if t["task_name"] == "query"]
    assert len(intervals) >= 6
    assert not _intervals_overlap(intervals), sorted(intervals)  # 2 workers, several runs, one query at a time
    assert runner.invoke(cli, ["limits", "rm", "db", "--storage", str(store)]).exit_code == 0


def _fires(store: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in (store / "fires").rglob("*.json") if p.name != "cursor.json"]


def _check_every_slot_once(store: Path, deployment: str, interval: float = 1.0) -> int:
    fires = [f for f in _fires(store) if f["request"]["deployment"]["name"] == deployment]
    slots = sorted(f["request"]["scheduled_time"] for f in fires)
    assert len(slots) == len(set(slots)), "a slot was fired twice"
    gaps = [b - a for a, b in zip(slots, slots[1:])]
    assert all(abs(g - interval) < 1e-6 for g in gaps), f"a slot was skipped: gaps {gaps}"
    runs = _runs(store, deployment)
    by_slot: dict[float, int] = {}
    for run in runs:
        by_slot[run["scheduled_time"]] = by_slot.get(run["scheduled_time"], 0) + 1
    assert all(n == 1 for n in by_slot.values()), "two runs for one slot"
    assert sorted(by_slot) == slots, "a fired slot has no run"
    return len(slots)


def test_kill_9_of_serve_mid_loop_and_a_restart_neither_duplicates_nor_drops_a_slot(cluster, flows, tmp_path):
    store = tmp_path / "store"
    deploy(*(flows["quick"].to_deployment(f"every-second-{i}", interval=1, parameters={"n": i}) for i in range(3)), storage=str(store))
    log = tmp_path / "serve.log"
    for _ in range(3):
        process = _start_serve(cluster, store, log)
        time.sleep(2.3)  # mid-loop: slots fire every second
        stop_session(process, signal.SIGKILL)
    with serving(cluster, store, log):
        time.sleep(4)  # past the takeover grace: slots orphaned by the kills get their runs
    counts = [_check_every_slot_once(store, f"every-second-{i}") for i in range(3)]
    assert min(counts) >= 6, counts
    wait_until(lambda: all(r["state"]["type"] != "SCHEDULED" for r in _runs(store)), 120, 0.3, "every run to start")


def test_two_serve_processes_on_one_store_fire_each_slot_once(cluster, flows, tmp_path):
    store = tmp_path / "store"
    deploy(*(flows["quick"].to_deployment(f"shared-{i}", interval=1, parameters={"n": i}) for i in range(3)), storage=str(store))
    with serving(cluster, store, tmp_path / "a.log"), serving(cluster, store, tmp_path / "b.log"):
        time.sleep(6)
    counts = [_check_every_slot_once(store, f"shared-{i}") for i in range(3)]
    assert min(counts) >= 4, counts
    created = [(tmp_path / name).read_text().count("created run") for name in ("a.log", "b.log")]
    assert sum(created) == sum(counts)


class _Webhook(http.server.BaseHTTPRequestHandler):
    received: list[dict] = []

    def do_POST(self):  # noqa: N802
        type(self).received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_a_failed_scheduled_run_posts_to_the_webhook_and_the_url_is_never_printed(cluster, flows, tmp_path):
    _Webhook.received = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Webhook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/services/T0/B0/canary-webhook-secret"
    store = tmp_path / "store"
    deploy(flows["broken"].to_deployment("nightly-broken", interval=2), storage=str(store))
    try:
        with serving(cluster, store, tmp_path / "serve.log", env={"DASK_DASKFLOW__NOTIFICATIONS__WEBHOOK_URL": url}):
            wait_until(lambda: [p for p in _Webhook.received if p["state"] == "Failed"], 120, 0.2, "a Failed notification")
    finally:
        server.shutdown()
        server.server_close()
    posted = next(p for p in _Webhook.received if p["state"] == "Failed")
    assert posted["deployment"] == "nightly-broken" and "the scheduled job broke" in posted["message"]
    assert posted["text"].startswith("daskflow: run ") and "is Failed" in posted["text"]
    [run] = [r for r in _runs(store, "nightly-broken") if r["id"] == posted["run_id"]]
    assert run["state"]["name"] == "Failed"
    assert "canary-webhook-secret" not in (tmp_path / "serve.log").read_text()


def test_backfill_creates_one_run_per_slot_once(cluster, flows, tmp_path):
    store = tmp_path / "store"
    deploy(flows["quick"].to_deployment("hourly", cron="0 * * * *", timezone="Europe/Berlin"), storage=str(store))
    runner = CliRunner()
    args = ["backfill", "hourly", "--start", "2026-11-01T00:00", "--end", "2026-11-01T05:00", "--address", cluster.address, "--storage", str(store)]
    first = runner.invoke(cli, [*args, "--no-watch"])
    assert first.exit_code == 0, first.output
    assert "6 run(s) created" in first.output
    again = runner.invoke(cli, [*args, "--watch"])
    assert again.exit_code == 0, again.output
    assert "0 run(s) created, 6 slot(s) fired before" in again.output
    runs = wait_until(lambda: _finished(store, "hourly", 6), 120, 0.3, "six backfilled runs")
    assert sorted(r["scheduled_time"] for r in runs) == [1793487600.0 + 3600 * i for i in range(6)]  # 00:00-05:00 Berlin (CET)
    assert all(r["state"]["name"] == "Completed" for r in runs)
    too_many = runner.invoke(cli, ["backfill", "hourly", "--start", "2026-01-01", "--end", "2026-12-31", "--address", cluster.address, "--storage", str(store)])
    assert too_many.exit_code == 2 and "--max-runs" in too_many.output


def test_deployments_run_watch_follows_the_run_to_its_end(cluster, flows, tmp_path):
    store = tmp_path / "store"
    deploy(flows["fan"].to_deployment("on-demand", parameters={"n": 2}), storage=str(store))
    result = CliRunner().invoke(cli, ["deployments", "run", "on-demand", "-p", "n=3", "-p", "salt=watch", "--address", cluster.address,
                                      "--storage", str(store), "--watch"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("created run 'on-demand-")
    states = [line.split()[2] for line in lines[1:] if len(line.split()) > 2]
    assert states[0] == "Scheduled" and states[-1] == "Completed" and "Running" in states
    [run] = _runs(store, "on-demand")
    assert run["parameters"] == {"n": 3, "salt": "watch"} and run["task_runs"] == 3
    failed = CliRunner().invoke(cli, ["deployments", "run", "on-demand", "-p", "n=oops", "--address", cluster.address, "--storage", str(store), "--watch"])
    assert failed.exit_code == 1
    assert "Failed" in failed.output


def test_a_deployments_hook_runs_on_the_worker_from_the_snapshot(cluster, flows, tmp_path):
    import sys as _sys

    store = tmp_path / "store"
    hook = _sys.modules[flows["broken_marked"].fn.__module__].record_failure
    deploy(flows["broken_marked"].to_deployment("hooked", parameters={"marker": str(tmp_path)}, on_failure=hook), storage=str(store))
    [record] = [r for r in __import__("daskflow").deployments.registry.Registry(Store(store)).all()]
    assert record["hooks"] == {"on_failure": ["scheduled_flows:record_failure"]}
    result = CliRunner().invoke(cli, ["deployments", "run", "hooked", "--address", cluster.address, "--storage", str(store), "--watch"])
    assert result.exit_code == 1, result.output
    [run] = _runs(store, "hooked")
    assert (tmp_path / f"{run['id']}.failed").read_text() == "Failed"


def test_sigterm_stops_serve_between_passes_without_a_half_created_run(cluster, flows, tmp_path):
    store = tmp_path / "store"
    deploy(*(flows["quick"].to_deployment(f"burst-{i}", interval=1, parameters={"n": i}) for i in range(40)), storage=str(store))
    process = _start_serve(cluster, store, tmp_path / "serve.log")
    try:
        wait_until(lambda: len(_fires(store)) >= 80, 60, 0.05, "two seconds of slots")
        time.sleep(0.37)  # somewhere inside a second: a pass may be firing
    finally:
        assert stop_session(process) == 0  # a clean exit, within the wait
    fires = _fires(store)
    missing = [f["run_id"] for f in fires if not (store / "runs" / f["folder"] / "run.json").exists()]
    assert not missing, f"{len(missing)} of {len(fires)} fired slots have no run"
    assert "stopped;" in (tmp_path / "serve.log").read_text()


def test_a_concurrency_slot_held_by_a_worker_that_dies_is_given_back(flows, tmp_path, monkeypatch):
    # Leases expire 3 s after their holder stops refreshing them, checked every second
    # (distributed's defaults: 30 s, checked every 10 s).
    monkeypatch.setenv("DASK_DISTRIBUTED__SCHEDULER__LOCKS__LEASE_TIMEOUT", "3s")
    monkeypatch.setenv("DASK_DISTRIBUTED__SCHEDULER__LOCKS__LEASE_VALIDATION_INTERVAL", "1s")
    (tmp_path / "cluster").mkdir()
    cluster = DaskCLICluster(tmp_path / "cluster")
    try:
        store = tmp_path / "store"
        marker = str(tmp_path / "marks")
        deploy(flows["slow"].to_deployment("one-slot", parameters={"seconds": 4.0, "marker": marker}, concurrency_limit=1), storage=str(store))
        runner = CliRunner()
        args = ["deployments", "run", "one-slot", "--address", cluster.address, "--storage", str(store), "--no-watch"]
        assert runner.invoke(cli, args).exit_code == 0
        holder = wait_until(lambda: [r for r in _runs(store, "one-slot") if r["state"]["name"] == "Running"], 60, 0.1, "the first run holding the slot")[0]
        assert runner.invoke(cli, args).exit_code == 0
        wait_until(lambda: [r for r in _runs(store, "one-slot") if "waiting for a free slot" in r["state"].get("message", "")], 60, 0.1,
                   "the second run waiting for the slot")
        os.kill(holder["pid"], signal.SIGKILL)  # the worker process driving the first run, with its lease
        done = wait_until(lambda: len([r for r in _runs(store, "one-slot") if r["state"]["name"] == "Completed"]) == 2, 120, 0.3,
                          "both runs to complete")
        assert done
    finally:
        cluster.close()


def test_flow_serve_registers_and_serves_from_its_own_process_until_sigterm(cluster, tmp_path):
    store = tmp_path / "store"
    script = tmp_path / "serve_me.py"
    script.write_text(textwrap.dedent(f'''
        from daskflow import flow

        @flow
        def heartbeat(n: int = 1) -> int:
            return n

        if __name__ == "__main__":
            heartbeat.serve("heartbeat", interval=1, parameters={{"n": 7}}, storage={str(store)!r}, address={cluster.address!r})
    '''))
    process = subprocess.Popen([sys.executable, str(script)], cwd=tmp_path, env=worker_env(), stdout=open(tmp_path / "serve.log", "wb"),
                               stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until(lambda: _finished(store, "heartbeat", 2), 120, 0.2, "two completed runs of the served flow")
    finally:
        assert stop_session(process) == 0
    runs = _finished(store, "heartbeat", 2)
    assert all(r["state"]["name"] == "Completed" and r["parameters"] == {"n": 7} for r in runs)
    from daskflow.deployments.registry import Registry

    assert Registry(Store(store)).get("heartbeat")["entrypoint"].endswith("serve_me.py:heartbeat")
