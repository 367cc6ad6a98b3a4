"""Task runs a task's body submits: their flow run links to its parent and ends with it.

See daskflow/pipeline/nested.py. In-process tests run on ThreadPoolTaskRunner;
the Dask ones share one 2-worker LocalCluster (processes), where the parent
runs on a worker and learns of its cancellation from the worker's state.
"""

from __future__ import annotations

import threading

import pytest
from click.testing import CliRunner
from distributed import Client, LocalCluster
from distributed import Event as DaskEvent

from daskflow import DaskTaskRunner, History, Store, flow, runtime, task
from daskflow.cache_policies import NONE
from daskflow.cli import cli
from daskflow.exceptions import CancelledRun
from daskflow.pipeline.context import FLOW_RUN_CONTEXT
from daskflow.runners.local import ThreadPoolTaskRunner

from .conftest import wait_until


@task
def add(x: int) -> int:
    return x + 1


@task
def fan(x: int) -> list[int]:
    return add.map([x, x + 1]).result()


@task
def parent_seen() -> str | None:
    return runtime.flow_run.parent_flow_run_id


@task
def asks_for_parent() -> str | None:
    return parent_seen.submit().result()


def _history(store) -> History:
    return History(Store(str(store)))


def _by_flow(history: History) -> dict[str, list[dict]]:
    runs: dict[str, list[dict]] = {}
    for record in history.runs(limit=None):
        runs.setdefault(record["flow_name"], []).append(record)
    return runs


def test_nested_run_names_its_parent_and_the_parent_lists_it(_result_storage):
    @flow(task_runner=ThreadPoolTaskRunner())
    def parent() -> tuple[list[int], str | None]:
        return fan(1), asks_for_parent()

    # A nested run is no subflow: its tasks see no parent flow run, as on Dask
    # (and as in Prefect, where they are task runs of the same flow run).
    assert parent() == ([2, 3], None)
    history = _history(_result_storage)
    runs = _by_flow(history)
    (top,), (nested,) = runs["parent"], runs["fan-0"]  # the nested run is in history once
    (fan_record,) = [t for t in history.tasks(history.resolve(top["id"])) if t["name"] == "fan-0"]
    assert nested["parent_flow_run_id"] == top["id"] and nested["parent_flow_run_name"] == top["name"]
    assert nested["parent_task_run_id"] == fan_record["id"] and nested["parent_task_run_name"] == "fan-0"
    assert fan_record["nested_runs"] == [[nested["id"], nested["name"]]]
    assert nested["result_storage"] == top["result_storage"]  # the parent's store

    shown = CliRunner().invoke(cli, ["runs", "show", nested["id"][:8]])
    assert shown.exit_code == 0, shown.output
    assert f"started by  task run fan-0 of run {top['name']} ({top['id']})" in shown.output
    shown = CliRunner().invoke(cli, ["runs", "show", top["id"][:8]])
    assert f"nested runs  {nested['name']} ({nested['id']}) from fan-0" in shown.output

    from daskflow.status.page import _run_header  # the status page's run view

    header = _run_header(nested)
    assert f"<td>{top['name']} ({top['id']})</td>" in header and "Started by task run</th><td>fan-0</td>" in header


def _blocking_flow(runner, started, release, engines):
    """A parent whose task body runs one child that blocks and queues another after it."""

    @task(cache_policy=NONE)
    def block() -> None:
        started()
        release()

    @task(cache_policy=NONE)
    def starts_children() -> None:
        first = block.submit()
        block.submit(wait_for=[first])  # waits for the first: Pending when cancelled
        first.result()

    @flow(task_runner=runner)
    def cancelled_parent() -> None:
        engines.append(FLOW_RUN_CONTEXT.get().engine)
        starts_children.submit().result()

    return cancelled_parent


def _assert_nested_cancelled(store) -> None:
    history = _history(store)

    def final_nested():
        runs = _by_flow(history).get("starts_children-0") or []
        return runs and runs[0]["state"]["type"] == "CANCELLED" and runs[0]

    nested = wait_until(final_nested, timeout=30, message="the nested run to end Cancelled")
    tasks = history.tasks(history.resolve(nested["id"]))
    assert sorted(t["state"]["name"] for t in tasks) == ["Cancelled", "Cancelled"]
    assert [h[1] for h in tasks[1]["history"]] == ["Pending", "Cancelled"]  # the waiting one never ran
    assert "starts_children-0" in nested["state"]["message"]


def _run_in_thread(parent) -> tuple[threading.Thread, list]:
    states: list = []
    thread = threading.Thread(target=lambda: states.append(parent(return_state=True)), daemon=True)
    thread.start()
    return thread, states


def test_cancelling_the_parent_flow_run_cancels_the_nested_run(_result_storage):
    running, release = threading.Event(), threading.Event()
    engines: list = []
    parent = _blocking_flow(ThreadPoolTaskRunner(), running.set, lambda: release.wait(30), engines)
    thread, states = _run_in_thread(parent)
    try:
        assert running.wait(30)
        engines[0].cancel(CancelledRun("stopped by the test"))  # what Ctrl-C and `daskflow cancel` do
        _assert_nested_cancelled(_result_storage)
        thread.join(30)
        assert states[0].is_cancelled()
    finally:
        release.set()


def test_a_timed_out_parent_task_cancels_its_nested_run_instead_of_waiting(_result_storage):
    release = threading.Event()

    @task(cache_policy=NONE)
    def stuck() -> None:
        release.wait(30)

    @task(cache_policy=NONE, timeout_seconds=0.5)
    def impatient() -> None:
        first = stuck.submit()
        stuck.submit(wait_for=[first])
        first.result()

    @flow(task_runner=ThreadPoolTaskRunner())
    def times_out() -> str:
        return impatient(return_state=True).name

    try:
        assert times_out() == "TimedOut"  # without waiting for the stuck children
        history = _history(_result_storage)
        (nested,) = _by_flow(history)["impatient-0"]
        assert nested["state"]["name"] == "Cancelled" and "timed out" in nested["state"]["message"]
        assert [t["state"]["name"] for t in history.tasks(history.resolve(nested["id"]))] == ["Cancelled", "Cancelled"]
    finally:
        release.set()


@pytest.fixture(scope="module")
def cluster():
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address="127.0.0.1:0") as cluster:
        yield cluster


@pytest.mark.slow
def test_on_dask_a_cancelled_parent_task_cancels_its_nested_run(cluster, _result_storage):
    name = f"nested-{id(_result_storage)}"

    def started() -> None:
        DaskEvent(f"{name}-started").set()

    def release() -> None:
        DaskEvent(f"{name}-release").wait(30)

    engines: list = []
    parent = _blocking_flow(DaskTaskRunner(address=cluster.scheduler_address), started, release, engines)
    thread, states = _run_in_thread(parent)
    with Client(cluster.scheduler_address, set_as_default=False) as client:
        try:
            assert DaskEvent(f"{name}-started", client=client).wait(60)
            engines[0].cancel(CancelledRun("stopped by the test"))
            _assert_nested_cancelled(_result_storage)  # written by the worker, to the parent's store
            thread.join(30)
            assert states[0].is_cancelled()
            (nested,) = _by_flow(_history(_result_storage))["starts_children-0"]
            top = states[0].run
            assert (nested["parent_flow_run_id"], nested["parent_flow_run_name"]) == (top.id, top.name)
            assert nested["parent_task_run_name"] == "starts_children-0"
            # The worker's report reached the driver: the parent's task run lists it.
            assert top.task_run("starts_children-0").nested_runs == [[nested["id"], nested["name"]]]
        finally:
            DaskEvent(f"{name}-release", client=client).set()


@pytest.mark.slow
def test_on_dask_parents_fan_out_through_the_workers_own_client(cluster, _result_storage):
    @task
    def parent_of_two(x: int) -> list[int]:
        return add.map([x, x]).result()

    @flow(task_runner=DaskTaskRunner(address=cluster.scheduler_address))
    def fans() -> list[list[int]]:
        return parent_of_two.map(range(4)).result()

    assert fans() == [[x + 1, x + 1] for x in range(4)]
    history = _history(_result_storage)
    runs = _by_flow(history)
    assert sorted(n for n in runs if n != "fans") == [f"parent_of_two-{i}" for i in range(4)]
    assert all(len(r) == 1 and r[0]["state"]["name"] == "Completed" for r in runs.values())
    tasks = {t["name"]: t for t in history.tasks(history.resolve(runs["fans"][0]["id"]))}
    for name, (record,) in runs.items():
        if name != "fans":
            assert record["parent_task_run_id"] == tasks[name]["id"]
            assert tasks[name]["nested_runs"] == [[record["id"], record["name"]]]
    # One client per worker process, none per parent task.
    clients = {r["runner"] for name, (r,) in runs.items() if name != "fans"}
    assert clients == {"DaskTaskRunner()"}


def test_a_flow_called_in_a_task_body_keeps_its_records_in_the_tasks_store(tmp_path, monkeypatch):
    """Not in the folder it happens to run in (a worker's working directory)."""
    from daskflow.runners.local import SequentialTaskRunner, ThreadPoolTaskRunner

    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    store = tmp_path / "store"

    @flow(task_runner=SequentialTaskRunner())
    def inner(x: int) -> int:
        return x * 2

    @task(cache_policy=NONE)
    def outer(x: int) -> int:
        return inner(x)

    @flow(task_runner=ThreadPoolTaskRunner(), result_storage=str(store))
    def main(x: int) -> int:
        return outer(x)

    assert main(21) == 42
    assert not (cwd / ".daskflow").exists()
    assert sorted(r["flow_name"] for r in History(Store(str(store))).runs()) == ["inner", "main"]
