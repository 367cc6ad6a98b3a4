"""Task calls behave as in Prefect 3: outside a flow, inside a task, refresh_cache, wait_for.

Checked against Prefect 3.8.8: a task called at a script's top level is a task
run (retries, states, logs); ``.submit()``/``.map()`` outside a flow raise a
RuntimeError; a task's body may call, submit and map tasks; two refreshing
calls of one cache key in a run both compute; ``wait_for`` ignores plain values,
walks nested lists, and a Failed state in it stops the task.
"""

from __future__ import annotations

import itertools
import os
import threading

import pytest
from distributed import LocalCluster

from daskflow import DaskTaskRunner, History, Store, flow, get_run_logger, task
from daskflow.cache_policies import NONE
from daskflow.exceptions import MissingContextError, UpstreamFailedError
from daskflow.pipeline.states import Completed, Failed
from daskflow.runners.local import SequentialTaskRunner, ThreadPoolTaskRunner

_counter = itertools.count()


@task(retries=2, cache_policy=NONE)
def flaky(x: int, failures: int) -> int:
    n = next(_counter)
    get_run_logger().info("attempt at %d", n)
    if n < failures:
        raise ValueError(f"failure {n}")
    return x * 10


@task
def add(x: int) -> int:
    return x + 1


@task
def fan(x: int) -> tuple[int, int, list[int]]:
    """Calls, submits and maps tasks from its own body."""
    future = add.submit(x)
    return add(x + 10), future.result(), add.map([x, x + 1]).result()


@task
def where_nested(n: int) -> list[str]:
    from distributed import get_worker

    @task
    def where(i: int) -> str:
        return get_worker().address

    return where.map(range(n)).result()


@task
def thread_of_call() -> tuple[int, int]:
    return os.getpid(), threading.get_ident()


@task
def calls_directly() -> tuple[tuple[int, int], tuple[int, int]]:
    """A direct call in a task body runs in the body's own thread (Prefect 3
    runs it inline), not on another worker slot."""
    return (os.getpid(), threading.get_ident()), thread_of_call()


def _runs(store):
    return History(Store(str(store))).runs(limit=None)


def test_lone_task_call_is_a_recorded_task_run_with_retries_and_logs(_result_storage):
    global _counter
    _counter = itertools.count()
    assert flaky(4, 2) == 40  # two failures spent two retries
    state = flaky(5, 0, return_state=True)
    assert state.is_completed() and state.result() == 50

    runs = {r["name"]: r for r in _runs(_result_storage)}
    assert len(runs) == 2 and {r["flow_name"] for r in runs.values()} == {"flaky"}
    assert {r["state"]["name"] for r in runs.values()} == {"Completed"}
    history = History(Store(str(_result_storage)))
    first = min(history.entries(), key=lambda e: e.started)
    (record,) = history.tasks(first)
    assert record["name"] == "flaky-0" and record["attempts"] == 3
    messages = [line["m"] for line in history.logs(first)]
    assert sum("attempt at" in m for m in messages) == 3


def test_lone_task_caches_raises_and_times_out_like_a_task_run(_result_storage):
    calls = []

    @task
    def counted(x: int) -> int:
        calls.append(x)
        return x

    assert counted(3) == 3 and counted(3) == 3
    assert calls == [3]  # the second call is Cached by the store's rules
    assert counted(3, return_state=True).name == "Cached"

    release = threading.Event()

    @task(timeout_seconds=0.2, cache_policy=NONE)
    def stuck() -> None:
        release.wait(30)

    try:
        assert stuck(return_state=True).name == "TimedOut"
    finally:
        release.set()

    failures = []

    @task(cache_policy=NONE, on_failure=[lambda *args: failures.append(args)])
    def boom() -> None:
        raise KeyError("nope")

    with pytest.raises(KeyError, match="nope"):
        boom()
    assert boom(return_state=True).is_failed()
    assert len(failures) == 2  # its hooks ran, once per task run


def test_submit_and_map_outside_a_flow_raise_like_prefect():
    with pytest.raises(MissingContextError, match=r"submit\(\) works inside a flow run") as info:
        add.submit(1)
    assert isinstance(info.value, RuntimeError)  # Prefect raises a RuntimeError
    with pytest.raises(MissingContextError, match=r"map\(\)"):
        add.map([1, 2])


@pytest.mark.parametrize("runner", [ThreadPoolTaskRunner(max_workers=1), SequentialTaskRunner()], ids=["threads1", "sequential"])
def test_a_task_body_calls_submits_and_maps_tasks(runner, _result_storage):
    @flow(task_runner=runner)
    def parent() -> tuple[int, int, list[int]]:
        return fan(1)

    # One pool thread held by the parent: its children run in a nested run of their own.
    assert parent() == (12, 2, [2, 3])
    runs = {r["flow_name"]: r for r in _runs(_result_storage)}
    assert set(runs) == {"parent", "fan-0"}
    assert runs["fan-0"]["state"]["name"] == "Completed"
    history = History(Store(str(_result_storage)))
    nested = next(e for e in history.entries() if history.run(e)["flow_name"] == "fan-0")
    assert sorted(t["name"] for t in history.tasks(nested)) == ["add-0", "add-1", "add-2", "add-3"]


def test_a_lone_task_body_may_submit_too():
    assert fan(5) == (16, 6, [6, 7])


def test_refresh_cache_recomputes_every_call_within_a_run():
    values = itertools.count()

    @task(cache_key_fn=lambda context, inputs: "one-key", refresh_cache=True)
    def fresh() -> int:
        return next(values)

    @flow(task_runner=ThreadPoolTaskRunner())
    def twice() -> tuple[int, int]:
        return fresh(), fresh()

    # Both refreshing calls compute (Prefect 3.8.8 gives 0, 1 too), in every run.
    assert twice() == (0, 1)
    assert twice() == (2, 3)


def test_wait_for_takes_plain_values_nested_futures_and_states():
    order = []

    @task(cache_policy=NONE)
    def step(name: str) -> str:
        order.append(name)
        return name

    @flow(task_runner=ThreadPoolTaskRunner())
    def ordered():
        first = step.submit("first")
        second = step.submit("second", wait_for=[5, None, "text", [first], {"k": (first,)}])
        blocked = step("blocked", wait_for=[Failed(message="upstream said no")], return_state=True)
        with pytest.raises(UpstreamFailedError, match="upstream said no"):
            blocked.result()
        freed = step("freed", wait_for=[Completed(), second])
        return second.result(), blocked.name, freed

    assert ordered() == ("second", "UpstreamFailed", "freed")
    assert order.index("first") < order.index("second") < order.index("freed")
    assert "blocked" not in order


@pytest.fixture(scope="module")
def one_slot_cluster():
    """One worker process with one thread: a parent task that kept its slot
    while waiting for its own children would deadlock here."""
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address="127.0.0.1:0") as cluster:
        yield cluster


@pytest.mark.slow
def test_nested_submission_on_dask_runs_on_the_same_one_thread_worker(one_slot_cluster, _result_storage):
    @flow(task_runner=DaskTaskRunner(address=one_slot_cluster.scheduler_address))
    def on_dask() -> tuple[list[str], tuple[int, int, list[int]]]:
        return where_nested.submit(3).result(), fan(2), calls_directly()

    addresses, fanned, (parent, child) = on_dask()
    assert parent == child and parent[0] != os.getpid()
    worker = next(iter(one_slot_cluster.scheduler_info["workers"]))
    assert addresses == [worker] * 3 and fanned == (13, 3, [3, 4])
    runs = {r["flow_name"]: r for r in _runs(_result_storage)}
    assert {"on-dask", "where_nested-0", "fan-0", "calls_directly-0"} <= set(runs)  # the flow on-dask; runs named after task runs
    assert all(r["state"]["name"] == "Completed" for r in runs.values())


def test_a_flow_called_in_a_task_body_runs_its_tasks_itself(_result_storage):
    @flow(task_runner=SequentialTaskRunner())
    def inner(x: int) -> int:
        return add.submit(x).result() + add(x + 1)

    @task(cache_policy=NONE)  # its source holds the flow object, which has no stable hash
    def drives(x: int) -> int:
        return inner(x)

    @flow(task_runner=SequentialTaskRunner())
    def outer() -> int:
        return drives(1)

    assert outer() == 5
    history = History(Store(str(_result_storage)))
    tasks = {history.run(e)["flow_name"]: sorted(t["name"] for t in history.tasks(e)) for e in history.entries()}
    # inner's tasks are its own, not a nested run of drives
    assert tasks == {"inner": ["add-0", "add-1"], "outer": ["drives-0"]}
