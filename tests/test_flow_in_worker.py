"""A flow driven from inside a Dask task runs its tasks on the cluster it is on.

This is how a deployment's scheduled run executes: a flow-run task on a worker
drives the flow, and its tasks run as ordinary Dask tasks beside it.
"""

from __future__ import annotations

import pytest
from distributed import Client, LocalCluster

from daskflow import DaskTaskRunner
from daskflow.exceptions import InvalidOptionError

from .tasks import drive_fan_out, drive_fan_out_on

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def one_slot_cluster():
    """One worker process with one thread: a flow that kept its slot while
    waiting for its own tasks would deadlock here."""
    with LocalCluster(
        n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address="127.0.0.1:0"
    ) as cluster, Client(cluster, set_as_default=False) as client:
        yield cluster, client


def test_flows_inside_tasks_of_a_one_thread_worker_run_on_that_cluster(one_slot_cluster, tmp_path):
    cluster, client = one_slot_cluster
    workers = set(client.scheduler_info()["workers"])
    # Three flows at once on one slot: each secedes while it waits for its tasks.
    futures = [client.submit(drive_fan_out, n, str(tmp_path), pure=False) for n in (2, 3, 4)]
    results = client.gather(futures, errors="raise")
    for n, (state, where, task_workers, logs) in zip((2, 3, 4), results):
        assert state == "Completed"
        assert len(where) == n and set(where) <= workers  # no cluster started inside the worker
        # Reports of concurrent runs on one shared client reach their own run:
        # every task run knows its worker, and every chatty task's two log lines arrived.
        assert all(w in workers for w in task_workers), task_workers
        assert logs >= 2 * n, (n, logs)


def test_a_run_level_resource_sends_every_task_to_the_workers_that_have_it(tmp_path):
    with LocalCluster(
        n_workers=0, processes=False, dashboard_address="127.0.0.1:0", worker_dashboard_address="127.0.0.1:0"
    ) as cluster, Client(cluster, set_as_default=False) as client:
        cluster.scale(0)
        from distributed import Worker

        async def start(**kwargs):
            return await Worker(cluster.scheduler_address, nthreads=1, **kwargs)

        plain = client.sync(start)
        gpu = client.sync(start, resources={"queue-gpu": 1})
        try:
            state, where = client.submit(drive_fan_out_on, 6, str(tmp_path), {"queue-gpu": 0}, pure=False).result(timeout=60)
            assert state == "Completed"
            assert set(where) == {gpu.address}, where
        finally:
            client.sync(plain.close)
            client.sync(gpu.close)


@pytest.mark.parametrize("resources", [{"queue-gpu": -1}, {"queue-gpu": True}, {3: 1}, ["queue-gpu"]])
def test_bad_run_level_resources_are_refused(resources):
    with pytest.raises(InvalidOptionError, match="resources"):
        DaskTaskRunner(resources=resources)
