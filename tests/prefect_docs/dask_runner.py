"""docs/integrations/prefect-dask/index.mdx and concepts/task-runners.mdx (Dask).

The harness sets DASK_SCHEDULER_ADDRESS to its shared cluster's address,
where a user would write their own scheduler address.
"""

import os
from pathlib import Path

import dask
from prefect import flow, task


def ex_dask_pinned_threads_cluster():
    """'Why use Dask?': DaskTaskRunner(cluster_kwargs={'processes': False}) and .submit in a loop."""
    from prefect_dask import DaskTaskRunner

    @task
    def fetch(year: int, month: int, directory: Path) -> Path:
        path = directory / f"{year:04d}{month:02d}.txt"
        return path

    @flow(task_runner=DaskTaskRunner(cluster_kwargs={"processes": False, "n_workers": 1}))
    def download(year: int):
        directory = Path("data")
        futures = [fetch.submit(year, month, directory) for month in range(1, 13)]
        return [f.result() for f in futures]

    paths = download(2022)
    assert [p.name for p in paths][:2] == ["202201.txt", "202202.txt"] and len(paths) == 12


def ex_dask_address():
    """'Run tasks on Dask': DaskTaskRunner(address=...) joins a running scheduler."""
    from prefect_dask import DaskTaskRunner
    from prefect_dask.task_runners import DaskTaskRunner as DaskTaskRunnerFromModule
    assert DaskTaskRunnerFromModule is DaskTaskRunner

    @task
    def where():
        return os.getpid()

    @flow(task_runner=DaskTaskRunner(address=os.environ["DASK_SCHEDULER_ADDRESS"]))
    def g():
        return [fut.result() for fut in [where.submit() for _ in range(4)]]

    pids = g()
    assert os.getpid() not in pids


def ex_dask_annotate():
    """'Use Dask annotations': dask.annotate(priority=...) around .submit."""
    from prefect_dask import DaskTaskRunner

    @task
    def show(x):
        return x

    @flow(task_runner=DaskTaskRunner(address=os.environ["DASK_SCHEDULER_ADDRESS"]))
    def f():
        with dask.annotate(priority=-10):
            low = show.submit(1)
        with dask.annotate(priority=10):
            high = show.submit(2)
        return low.result() + high.result()

    assert f() == 3


def ex_dask_get_dask_client():
    """'Distributing Dask collections across workers': get_dask_client() inside a task."""
    from prefect_dask import DaskTaskRunner, get_dask_client

    @task
    def compute_on_cluster():
        with get_dask_client() as client:
            return client.submit(lambda: 21 * 2).result()

    @flow(task_runner=DaskTaskRunner(address=os.environ["DASK_SCHEDULER_ADDRESS"]))
    def f():
        return compute_on_cluster.submit().result()

    assert f() == 42
