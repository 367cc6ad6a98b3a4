"""``runtime.flow_run`` inside tasks on Dask worker processes: parameters, tags and the
flow run's lineage (``root_flow_run_id``, ``parent_flow_run_id``), read where Prefect
code reads them, in Prefect's import style (``prefect`` -> ``daskflow``).

Parameters do not travel with tasks: the first task of a worker process to read them
asks the run's driver once. These tests count the asks on the scheduler's event log.
"""

from __future__ import annotations

import os
import threading
import time

import pytest
from pydantic import SecretStr

from daskflow import flow, get_run_logger, tags, task
from daskflow.cache_policies import NO_CACHE
from daskflow.exceptions import SerializationError
from daskflow.runners.dask import REPORT_TOPIC
from daskflow.runners.run_facts import RUN_FACTS_TIMEOUT
from daskflow.runners.run_facts import variable_name as run_facts_variable
from daskflow.runtime import deployment, flow_run
from daskflow.task_runners import DaskTaskRunner, ThreadPoolTaskRunner

from .conftest import wait_until

SECRET = "s3cr3t-value-nobody-may-see"


@pytest.fixture(scope="module")
def cluster():
    from distributed import Client, LocalCluster

    # One worker process with two threads: two tasks reading at once share one ask.
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=True, dashboard_address=":0") as local:
        with Client(local) as client:
            yield local, client


@task(cache_policy=NO_CACHE)
def read_runtime(i: int) -> dict:
    return {
        "pid": os.getpid(),
        "id": flow_run.id,
        "tags": sorted(flow_run.tags),
        "parameters": flow_run.parameters,
        "root": flow_run.root_flow_run_id,
        "parent": flow_run.parent_flow_run_id,
        "parent_deployment": flow_run.parent_deployment_id,
        "version": flow_run.flow_version,
        "deployment": deployment.id,
    }


@task(cache_policy=NO_CACHE)
def read_tags_only(i: int) -> tuple[int, list[str], str]:
    return os.getpid(), sorted(flow_run.tags), flow_run.name


@task(cache_policy=NO_CACHE)
def log_the_token() -> str:
    token = flow_run.parameters["token"]
    get_run_logger().info("token is %s", token.get_secret_value())
    return type(token).__name__


def _asks(client, flow_run_id: str) -> int:
    return sum(1 for _, msg in client.get_events(REPORT_TOPIC) if isinstance(msg, dict) and msg.get("ev") == "facts" and msg.get("fr") == flow_run_id)


def _variables(client) -> list[str]:
    return client.run_on_scheduler(lambda dask_scheduler: sorted(dask_scheduler.extensions["variables"].variables))


def test_a_task_on_a_worker_reads_its_flow_runs_parameters_tags_and_lineage(cluster):
    local, client = cluster

    @flow(task_runner=DaskTaskRunner(address=local.scheduler_address), version="7", tags=["nightly"])
    def inner(n: int, label: str = "x") -> list[dict]:
        return [f.result() for f in read_runtime.map(range(n))]

    @flow(task_runner=ThreadPoolTaskRunner(max_workers=1))
    def outer(n: int):
        seen = (flow_run.id, flow_run.root_flow_run_id, flow_run.parent_flow_run_id)
        with tags("ad-hoc"):
            state = inner(n, return_state=True)
        return seen, state.run.id, state.result()

    (outer_id, outer_root, outer_parent), inner_id, reads = outer(3)
    assert outer_root == outer_id and outer_parent is None  # a run without a parent is its own root
    assert {r["pid"] for r in reads} != {os.getpid()}  # really another process
    for read in reads:
        assert read["id"] == inner_id
        assert read["tags"] == ["ad-hoc", "nightly"]
        assert read["parameters"] == {"n": 3, "label": "x"}
        assert read["root"] == outer_id and read["parent"] == outer_id
        assert read["parent_deployment"] is None and read["deployment"] is None
        assert read["version"] == "7"
    # Asked by the worker process, at most once per task (once while tasks of the run overlap there).
    assert 1 <= _asks(client, inner_id) <= 3
    # The driver removes the answer at the run's end.
    wait_until(lambda: run_facts_variable(inner_id) not in _variables(client), message="the run's facts removed from the scheduler")


def test_tasks_that_read_no_parameters_cost_no_ask(cluster):
    local, client = cluster

    @flow(task_runner=DaskTaskRunner(address=local.scheduler_address), tags=["cheap"])
    def cheap(n: int) -> list:
        return [f.result() for f in read_tags_only.map(range(n))]

    state = cheap(4, return_state=True)
    reads = state.result()
    assert [r[1] for r in reads] == [["cheap"]] * 4  # tags travel with the task
    assert {r[2] for r in reads} == {state.run.name}
    assert _asks(client, state.run.id) == 0
    assert run_facts_variable(state.run.id) not in _variables(client)


def test_secret_parameters_read_on_a_worker_stay_masked_and_leave_no_trace(cluster):
    local, client = cluster

    @flow(task_runner=DaskTaskRunner(address=local.scheduler_address))
    def uses_a_token(token: SecretStr, region: str = "eu") -> str:
        return log_the_token()

    state = uses_a_token(SecretStr(SECRET), return_state=True)
    assert state.result() == "SecretStr"
    run = state.run
    logged = run.logs_of(next(iter(run.task_runs.values())).name)
    assert logged == ["token is **********"]
    # Masked on the worker already (the report carries the line), and the ask names only the run.
    assert SECRET not in repr(client.get_events(REPORT_TOPIC))
    assert SECRET not in repr(client.get_worker_logs()) and SECRET not in repr(client.get_scheduler_logs())
    wait_until(lambda: run_facts_variable(run.id) not in _variables(client), message="the run's facts removed from the scheduler")


@task(cache_policy=NO_CACHE)
def read_parameters() -> dict:
    return flow_run.parameters


def test_parameters_that_cannot_leave_the_driver_fail_the_reading_task_at_once(cluster):
    local, client = cluster

    @flow(task_runner=DaskTaskRunner(address=local.scheduler_address))
    def holds_a_lock(lock: object) -> dict:
        return read_parameters()

    started = time.monotonic()
    state = holds_a_lock(threading.Lock(), return_state=True)
    assert state.is_failed()
    with pytest.raises(SerializationError, match="cannot be sent to a worker .*pass the value to the task as an argument"):
        state.result()
    assert time.monotonic() - started < RUN_FACTS_TIMEOUT  # told, not left to time out


def test_lineage_and_tags_in_the_driver_process():
    @task
    def in_thread() -> tuple:
        return flow_run.root_flow_run_id, flow_run.parent_flow_run_id, sorted(flow_run.tags), flow_run.parameters

    @flow(task_runner=ThreadPoolTaskRunner(max_workers=2), tags=["child"])
    def child(k: int) -> tuple:
        return in_thread(), flow_run.root_flow_run_id

    @flow(task_runner=ThreadPoolTaskRunner(max_workers=2))
    def parent() -> tuple:
        return flow_run.id, child(5)

    parent_id, ((root, parent_of_child, child_tags, params), body_root) = parent()
    assert root == body_root == parent_of_child == parent_id
    assert child_tags == ["child"] and params == {"k": 5}
    assert flow_run.root_flow_run_id is None  # outside a run, as in Prefect
