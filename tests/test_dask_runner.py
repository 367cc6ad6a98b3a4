"""What only a real Dask cluster shows: worker deaths, resources, where retries wait,
and the cluster a run starts and closes itself."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import psutil
import pytest

from daskflow import NONE, DaskTaskRunner, flow, task
from daskflow.exceptions import InvalidOptionError, RunnerError
from daskflow.pipeline.context import FLOW_RUN_CONTEXT

from .conftest import DaskCLICluster, wait_until
from .tasks import add, block_until, flaky, stamp, total, where

pytestmark = pytest.mark.slow


class Killer(threading.Thread):
    """In the background: once the driver has seen ``block_until`` running (its
    start report arrived) and the task wrote its pid, SIGKILL that worker process,
    then let every later attempt of the task finish."""

    def __init__(self, marker_dir: Path, name: str, runs: list) -> None:
        super().__init__(daemon=True)
        self.marker_dir, self.name_, self.runs = marker_dir, name, runs
        self.killed: int | None = None
        self.start()

    def running(self) -> bool:
        try:
            return bool(self.runs) and self.runs[0].task_run("block_until-0").state.name == "Running"
        except (KeyError, RuntimeError):  # not created yet, or the dict grew while we looked
            return False

    def run(self) -> None:
        wait_until(self.running, 60, message="the driver to see the task running")
        pid_file = wait_until(lambda: next(self.marker_dir.glob(f"{self.name_}.pid.*"), None), 60, message="the task to start")
        self.killed = int(pid_file.read_text())
        os.kill(self.killed, signal.SIGKILL)
        (self.marker_dir / f"{self.name_}.go").write_text("go")


def new_children(before: set[int]) -> list[int]:
    return [p.pid for p in psutil.Process().children(recursive=True) if p.pid not in before and p.status() != psutil.STATUS_ZOMBIE
            and "resource_tracker" not in " ".join(p.cmdline())]


@pytest.fixture
def embedded_runner():
    """What a user gets by default: the run starts a LocalCluster and closes it."""
    return DaskTaskRunner(cluster_kwargs={"n_workers": 2, "threads_per_worker": 1, "dashboard_address": "127.0.0.1:0"})


def test_killed_worker_is_crashed_and_retried_with_right_result(embedded_runner, tmp_path):
    blocking = block_until.with_options(retries=1)

    runs: list = []

    @flow(task_runner=embedded_runner)
    def pipeline(marker_dir: str):
        runs.append(FLOW_RUN_CONTEXT.get().flow_run)
        parts = add.map(range(20))
        victim = blocking.submit(marker_dir, "victim")
        return total.submit([*parts, add.submit(victim, 0)]), victim

    killer = Killer(tmp_path, "victim", runs)
    state = pipeline(str(tmp_path), return_state=True)
    killer.join(5)
    result, survivor_pid = state.result()
    assert result == sum(range(1, 21)) + survivor_pid
    victim_run = state.run.task_run("block_until-0")
    assert killer.killed is not None and survivor_pid != killer.killed
    assert victim_run.attempts == 2
    names = [s.name for s in victim_run.state_history]
    assert "Crashed" in names and names[-1] == "Completed"
    crashed = next(s for s in victim_run.state_history if s.name == "Crashed")
    assert "died" in crashed.message


def test_poison_task_ends_crashed_and_spares_the_rest(embedded_runner, tmp_path):
    @task(retries=1)
    def poison() -> None:
        os._exit(1)

    @flow(task_runner=embedded_runner)
    def pipeline(marker_dir: str):
        # Finished before the poison starts: Dask fails even tasks merely queued on
        # a worker that dies, so a branch running beside the poison could be hit.
        fine = stamp.submit(marker_dir, "independent")
        fine.wait()
        bad = poison.submit()
        after = add.submit(bad)
        return bad, after, fine

    import dask

    started = time.monotonic()
    # One death allowed instead of Dask's 3 (the embedded scheduler reads it at
    # start): the rule is the same, with half the worker restarts to wait for.
    with dask.config.set({"distributed.scheduler.allowed-failures": 1}):
        state = pipeline(str(tmp_path), return_state=True)
    assert time.monotonic() - started < 60
    assert state.is_crashed(), state
    flow_run = state.run
    poison_run = flow_run.task_run("poison-0")
    # A worker killed within milliseconds sends no start report; Dask's own
    # allowed-failures ends each submission with KilledWorker after allowed-failures + 1
    # deaths, each counted as an attempt, and the retry is spent on a second submission.
    per_submission = 1 + 1
    assert poison_run.state.name == "Crashed" and poison_run.attempts == 2 * per_submission
    assert flow_run.task_run("add-0").state.name == "UpstreamFailed"
    assert flow_run.task_run("stamp-0").state.is_completed()
    assert (tmp_path / "independent").exists()


def test_embedded_cluster_listens_on_loopback_and_is_closed(embedded_runner):
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    seen: dict[str, object] = {}

    @flow(task_runner=embedded_runner)
    def pipeline():
        seen["before any task"] = len(new_children(before))  # the cluster starts with the first task run to execute
        value = add.with_options(cache_policy=NONE)(1)
        seen["workers"] = len(new_children(before))
        ours = [psutil.Process(), *(psutil.Process(pid) for pid in new_children(before))]
        seen["listeners"] = {
            c.laddr.ip for p in ours for c in p.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN
        }
        return value

    assert pipeline() == 2
    assert seen["before any task"] == 0 and seen["workers"] >= 2
    assert seen["listeners"] and seen["listeners"] <= {"127.0.0.1"}
    wait_until(lambda: not new_children(before), 30, message="the run's cluster processes to exit")


def test_an_embedded_in_process_cluster_starts_and_listens_on_loopback_only():
    """processes=False: workers in the driver process (inproc://); their HTTP
    servers must still bind loopback, and a host address must not be forced."""
    seen: dict[str, object] = {}

    @flow(task_runner=DaskTaskRunner(cluster_kwargs={"processes": False, "n_workers": 1, "dashboard_address": "127.0.0.1:0"}))
    def pipeline():
        seen["listeners"] = {
            c.laddr.ip for c in psutil.Process().net_connections(kind="inet") if c.status == psutil.CONN_LISTEN
        }
        return add(1)

    assert pipeline() == 2
    assert seen["listeners"] <= {"127.0.0.1"}


def test_retry_delay_waits_on_the_driver_not_in_a_worker_thread(tmp_path):
    from distributed import LocalCluster

    slow_retry = flaky.with_options(retries=1, retry_delay_seconds=2)
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address="127.0.0.1:0") as cluster:

        @flow(task_runner=DaskTaskRunner(address=cluster.scheduler_address))
        def pipeline(marker_dir: str):
            first = slow_retry.submit(marker_dir, "r", 1)
            wait_until(lambda: (Path(marker_dir) / "r.attempt1").exists(), 30)
            # The only worker thread is free while the retry waits, so this runs now.
            other = stamp.submit(marker_dir, "other")
            return first, other

        state = pipeline(str(tmp_path), return_state=True)
    assert state.is_completed(), state
    second_attempt = float((tmp_path / "r.attempt2").read_text())
    other_start, other_end = map(float, (tmp_path / "other").read_text().split())
    assert other_end < second_attempt


@pytest.fixture(scope="module")
def gpu_cluster(tmp_path_factory):
    cluster = DaskCLICluster(tmp_path_factory.mktemp("gpu"), workers=((), ("--resources", "GPU=1")))
    from distributed import Client

    try:
        with Client(cluster.address, timeout=30) as client:
            workers = client.scheduler_info(n_workers=-1)["workers"]
            gpu_address = next(a for a, w in workers.items() if w.get("resources"))
        yield cluster.address, gpu_address
    finally:
        cluster.close()


def test_resources_route_tasks_to_matching_workers(gpu_cluster):
    address, gpu_address = gpu_cluster
    on_gpu = where.with_options(resources={"GPU": 1})

    @flow(task_runner=DaskTaskRunner(address=address))
    def pipeline():
        return on_gpu.map(range(6)), where.submit()

    placed, _ = pipeline()
    assert set(placed) == {gpu_address}


@pytest.mark.parametrize("retries", [1, 0])
def test_worker_death_on_an_external_scheduler_is_a_crashed_attempt(cli_cluster, tmp_path, retries):
    blocking = block_until.with_options(retries=retries)

    runs: list = []

    @flow(task_runner=DaskTaskRunner(address=cli_cluster.address))
    def pipeline(marker_dir: str):
        runs.append(FLOW_RUN_CONTEXT.get().flow_run)
        return blocking.submit(marker_dir, "ext"), add.map(range(5))

    killer = Killer(tmp_path, "ext", runs)
    state = pipeline(str(tmp_path), return_state=True)
    killer.join(5)
    victim = state.run.task_run("block_until-0")
    names = [s.name for s in victim.state_history]
    assert "Crashed" in names and "died while running it" in victim.error
    # With or without a retry to spend, Dask's rerun is the next attempt and completes.
    pid, parts = state.result()
    assert parts == [1, 2, 3, 4, 5]
    assert killer.killed is not None and pid != killer.killed
    assert victim.attempts == 2 and names[-1] == "Completed"
    from distributed import Client

    with Client(cli_cluster.address, timeout=30) as client:  # the nanny restarts the worker
        client.wait_for_workers(2, timeout=60)


def test_unreachable_scheduler_fails_clearly_before_any_task():
    @flow(task_runner=DaskTaskRunner(address="tcp://127.0.0.1:1", client_kwargs={"timeout": 2}))
    def pipeline():
        return add(1)

    state = pipeline(return_state=True)
    assert state.is_crashed()
    error = state.result(raise_on_failure=False)
    assert isinstance(error, RunnerError) and "tcp://127.0.0.1:1" in str(error)
    assert state.run.task_runs == {}


def test_runner_options_are_checked_at_construction():
    with pytest.raises(InvalidOptionError, match="not both"):
        DaskTaskRunner(address="tcp://127.0.0.1:8786", cluster_kwargs={"n_workers": 1})
    with pytest.raises(InvalidOptionError, match="cluster_kwargs must be a dict"):
        DaskTaskRunner(cluster_kwargs=[1])


def test_bad_cluster_class_names_the_fix():
    @flow(task_runner=DaskTaskRunner(cluster_class="no_such_module.Cluster"))
    def pipeline():
        return add(1)

    state = pipeline(return_state=True)
    assert state.is_crashed()
    assert "no_such_module.Cluster" in state.message and "install" in state.message


def test_a_taken_dashboard_port_prints_no_dask_warning_into_the_run(tmp_path):
    """Dask warns on stderr when port 8787 is taken; the run's console says nothing of it
    (its dashboard link names the port used). A script of its own: pytest would catch the warning."""
    import subprocess
    import sys
    import textwrap

    from .conftest import worker_env

    script = tmp_path / "taken.py"
    script.write_text(textwrap.dedent("""
        import socket
        from daskflow import NONE, DaskTaskRunner, flow, task

        taken = socket.socket()
        try:
            taken.bind(("127.0.0.1", 8787))
            taken.listen()
        except OSError:
            pass  # already taken by someone else: the same case

        @task(cache_policy=NONE)
        def add(x, y):
            return x + y

        @flow(task_runner=DaskTaskRunner(cluster_kwargs={"n_workers": 1, "processes": False}))
        def pipeline():
            return add(1, 2)

        if __name__ == "__main__":
            state = pipeline(return_state=True)
            print("result", state.result(), state.run.dashboard_link)
    """))
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=worker_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "result 3 http://127.0.0.1:" in done.stdout and ":8787/" not in done.stdout
    assert "already in use" not in done.stderr and "starting the local Dask cluster" in done.stderr
