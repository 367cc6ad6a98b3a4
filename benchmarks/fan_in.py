"""The cost of submitting one task over N futures (a fan-in), against N.

A flow maps a no-op over N inputs and then submits one task that takes the list of
all N futures. The figure is the wall time of that one ``.submit`` call, on the
driver, beside raw Dask's ``client.submit(len, futures)`` over N futures, measured in
the same run. Both run in threads of this process (daskflow on its
ConcurrentTaskRunner, Dask on an in-process LocalCluster): the submission is the
driver's work whatever runs the tasks, and 100,000 no-op tasks on worker processes
would take minutes on a small machine without changing that figure. Submission is linear in N
when the time per input stays flat as N grows (issue 15: it was quadratic, 0.64 s
at 10,000 inputs and 5.0 s at 30,000).

Run from the repository root::

    python benchmarks/fan_in.py                          # N = 10000 30000 100000
    python benchmarks/fan_in.py --n 1000 3000            # quick check
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time

import dask
from distributed import Client, LocalCluster, wait

from daskflow import ConcurrentTaskRunner, flow, task


@task(persist_result=False)
def noop(i: int) -> int:
    return i


@task(persist_result=False)
def count(values: list[int]) -> int:
    return len(values)


def daskflow_submit(n: int) -> float:
    """Seconds of the fan-in ``.submit`` over ``n`` futures, inside a daskflow flow."""
    took: dict[str, float] = {}

    @flow(task_runner=ConcurrentTaskRunner(max_workers=2), persist_result=False)
    def fan_in(n: int) -> int:
        futures = noop.map(range(n))
        started = time.perf_counter()
        total = count.submit(futures)
        took["submit"] = time.perf_counter() - started
        return total.result()

    assert fan_in(n) == n
    return took["submit"]


def dask_submit(client: Client, n: int) -> float:
    futures = client.map(lambda i: i, range(n), pure=False)
    wait(futures)
    started = time.perf_counter()
    total = client.submit(len, futures, pure=False)
    took = time.perf_counter() - started
    assert total.result() == n
    del futures, total
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[10_000, 30_000, 100_000])
    args = parser.parse_args()
    print(f"fan-in submission, Python {platform.python_version()}, 2 threads each")
    print(f"{'N':>8}  {'daskflow':>10}  {'per input':>10}  {'raw Dask':>10}  {'per input':>10}")
    with tempfile.TemporaryDirectory(prefix="daskflow-fan-in-") as history, \
            dask.config.set({"daskflow.storage.url": history, "daskflow.logging.console": False}), \
            LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        for n in args.n:
            ours = daskflow_submit(n)
            raw = dask_submit(client, n)
            print(f"{n:>8}  {ours:>9.3f}s  {ours / n * 1e6:>8.1f}us  {raw:>9.3f}s  {raw / n * 1e6:>8.1f}us")


if __name__ == "__main__":
    main()
