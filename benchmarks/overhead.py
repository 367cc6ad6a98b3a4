"""Per-task overhead of daskflow against raw ``client.submit`` on the same LocalCluster.

Shapes (N no-op tasks each):

* ``independent``      N calls ``noop(i)``; daskflow ``noop.submit(i)`` vs ``client.submit``.
* ``independent-map``  the same N calls in one batch; daskflow ``noop.map(range(N))`` vs ``client.map``.
* ``fan-in``           N independent ``noop(i)`` then one ``reduce(list_of_all_N)``.
* ``chain``            ``noop(i)`` takes the result of ``noop(i - 1)``.

Raw Dask is timed from the first submit until ``distributed.wait`` returns on the
final futures (and, for fan-in and chain, the final value is fetched). daskflow is
timed around the whole flow call, which includes the engine start/stop and the
flow's own Client connecting to the shared scheduler (its fixed cost is reported
separately as the ``empty`` flow). Between timed runs the script waits until the
scheduler holds no tasks, so one run's cleanup does not land in the next.

The flows run with ``persist_result=False``: this measures the engine against raw
Dask, which persists nothing (and a persisted rerun would be a cache hit).
``benchmarks/cache.py`` measures what persistence and caching cost and save.

Run from the repository root::

    python benchmarks/overhead.py                      # N = 1000 5000, 3 repeats
    python benchmarks/overhead.py --n 200 --repeats 1  # quick check
    python benchmarks/overhead.py --profile fan-in --n 2000   # cProfile the driver
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shlex
import statistics
import sys
import time

import dask
import distributed
from distributed import Client, LocalCluster
from distributed import wait as dask_wait
from machine import (  # benchmarks/machine.py, beside this script
    cpu_model,
    daskflow_revision,
)

import daskflow
from daskflow import DaskTaskRunner, flow, task
from daskflow import wait as flow_wait

SHAPES = ("independent", "independent-map", "fan-in", "chain")
TARGET_RATIO = 1.5
TARGET_SHAPES = ("independent", "fan-in")
TARGET_N = 5000


# --------------------------------------------------------------------------- task functions
# Module level so workers can unpickle them (cloudpickle ships __main__ functions by value).
def noop(x):
    return x


def reduce_fn(xs):
    return len(xs)


noop_task = task(name="noop")(noop)
reduce_task = task(name="reduce")(reduce_fn)


# --------------------------------------------------------------------------- raw Dask
def raw_independent(client: Client, n: int):
    futures = [client.submit(noop, i, pure=False) for i in range(n)]
    dask_wait(futures)
    return None


def raw_independent_map(client: Client, n: int):
    futures = client.map(noop, range(n), pure=False)
    dask_wait(futures)
    return None


def raw_fan_in(client: Client, n: int):
    futures = [client.submit(noop, i, pure=False) for i in range(n)]
    total = client.submit(reduce_fn, futures, pure=False)
    dask_wait([total])
    return total.result()


def raw_chain(client: Client, n: int):
    future = client.submit(noop, 0, pure=False)
    for _ in range(1, n):
        future = client.submit(noop, future, pure=False)
    dask_wait([future])
    return future.result()


RAW = {
    "independent": raw_independent,
    "independent-map": raw_independent_map,
    "fan-in": raw_fan_in,
    "chain": raw_chain,
}


# --------------------------------------------------------------------------- daskflow
@flow(name="bench-empty", persist_result=False)
def flow_empty(n: int) -> None:
    return None


@flow(name="bench-independent", persist_result=False)
def flow_independent(n: int) -> None:
    futures = [noop_task.submit(i) for i in range(n)]
    flow_wait(futures)
    return None


@flow(name="bench-independent-map", persist_result=False)
def flow_independent_map(n: int) -> None:
    futures = noop_task.map(range(n))
    flow_wait(futures)
    return None


@flow(name="bench-fan-in", persist_result=False)
def flow_fan_in(n: int) -> int:
    futures = [noop_task.submit(i) for i in range(n)]
    return reduce_task.submit(futures).result()


@flow(name="bench-chain", persist_result=False)
def flow_chain(n: int) -> int:
    future = noop_task.submit(0)
    for _ in range(1, n):
        future = noop_task.submit(future)
    return future.result()


FLOWS = {
    "independent": flow_independent,
    "independent-map": flow_independent_map,
    "fan-in": flow_fan_in,
    "chain": flow_chain,
}


def expected(shape: str, n: int):
    return {"fan-in": n, "chain": 0}.get(shape)  # noop passes its argument through


# --------------------------------------------------------------------------- harness
def _scheduler_task_count(dask_scheduler=None) -> int:
    return len(dask_scheduler.tasks)


def settle(client: Client, timeout: float = 60.0) -> None:
    """Wait until the scheduler has forgotten every task of the previous run."""
    gc.collect()
    deadline = time.monotonic() + timeout
    while client.run_on_scheduler(_scheduler_task_count) and time.monotonic() < deadline:
        time.sleep(0.02)


def time_raw(client: Client, shape: str, n: int) -> float:
    settle(client)
    start = time.perf_counter()
    value = RAW[shape](client, n)
    elapsed = time.perf_counter() - start
    if value != expected(shape, n):
        raise AssertionError(f"raw {shape} n={n} returned {value!r}")
    return elapsed


def time_flow(client: Client, flows: dict, shape: str, n: int) -> float:
    settle(client)
    start = time.perf_counter()
    value = flows[shape](n)
    elapsed = time.perf_counter() - start
    if value != expected(shape, n):
        raise AssertionError(f"daskflow {shape} n={n} returned {value!r}")
    return elapsed


def print_header(argv: list[str]) -> None:
    print(f"command:     {shlex.join([os.path.basename(sys.executable)] + argv)}")
    print(f"python:      {platform.python_version()} ({sys.executable})")
    print(f"dask:        {dask.__version__}")
    print(f"distributed: {distributed.__version__}")
    print(f"daskflow:    {daskflow.__version__} from {os.path.dirname(daskflow.__file__)}, git {daskflow_revision()}")
    print(f"cpus:        {os.cpu_count()} ({cpu_model()})")
    print(f"platform:    {platform.platform()}")
    sys.stdout.flush()


def profile_driver(client: Client, flows: dict, shape: str, n: int, limit: int) -> None:
    """cProfile the driver's main thread (the flow body) during one daskflow run, and
    sample which driver threads burn CPU (engine, client loop, scheduler, callbacks)."""
    import cProfile
    import pstats

    import psutil

    settle(client)
    proc = psutil.Process()
    before = {t.id: t.user_time + t.system_time for t in proc.threads()}
    import threading

    names_before = {t.native_id: t.name for t in threading.enumerate()}
    profiler = cProfile.Profile()
    start = time.perf_counter()
    profiler.enable()
    value = flows[shape](n)
    profiler.disable()
    elapsed = time.perf_counter() - start
    after = {t.id: t.user_time + t.system_time for t in proc.threads()}
    names = {**names_before, **{t.native_id: t.name for t in threading.enumerate()}}
    print(f"\nprofile: daskflow {shape} n={n}: {elapsed:.3f} s wall (under cProfile), value={value!r}")
    print("driver-process CPU seconds by thread during the run (threads alive at the end):")
    rows = sorted(((after[i] - before.get(i, 0.0), names.get(i, f"tid {i}")) for i in after), reverse=True)
    for cpu, name in rows[:8]:
        print(f"  {cpu:8.3f} s  {name}")
    stats = pstats.Stats(profiler, stream=sys.stdout)
    stats.sort_stats("cumulative").print_stats(limit)
    stats.sort_stats("tottime").print_stats(limit)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, nargs="+", default=[1000, 5000], help="task counts (default: 1000 5000)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per path and shape; the median is reported")
    parser.add_argument("--shapes", nargs="+", choices=SHAPES, default=list(SHAPES))
    parser.add_argument("--warmup-n", type=int, default=None, help="tasks per warm-up run (default: the smallest --n)")
    parser.add_argument("--json", metavar="PATH", help="also write every timing to this JSON file")
    parser.add_argument("--profile", choices=SHAPES, help="instead of the table, cProfile one daskflow run of this shape at the largest --n")
    parser.add_argument("--profile-limit", type=int, default=30)
    args = parser.parse_args(argv)
    if args.repeats < 1 or any(n < 1 for n in args.n):
        parser.error("--repeats and --n must be >= 1")

    print_header([sys.argv[0]] + argv)
    dask.config.set({"daskflow.logging.console": False})
    with LocalCluster(
        n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address="127.0.0.1:0"
    ) as cluster, Client(cluster) as client:
        client.wait_for_workers(2)
        runner = DaskTaskRunner(address=cluster.scheduler_address)
        flows = {shape: f.with_options(task_runner=runner) for shape, f in FLOWS.items()}
        empty = flow_empty.with_options(task_runner=runner)
        print(f"cluster:     LocalCluster(n_workers=2, threads_per_worker=1, processes=True) at {cluster.scheduler_address}\n")

        if args.profile:
            time_flow(client, flows, args.profile, min(args.n))  # warm-up
            profile_driver(client, flows, args.profile, max(args.n), args.profile_limit)
            return 0

        warmup_n = args.warmup_n or min(args.n)
        t0 = time.perf_counter()
        for shape in args.shapes:
            time_raw(client, shape, warmup_n)
            time_flow(client, flows, shape, warmup_n)
        settle(client)
        empty(0)
        print(f"warm-up (n={warmup_n}, every shape, both paths): {time.perf_counter() - t0:.1f} s")

        # Fixed cost of a flow call on an existing scheduler: Client connect, worker check,
        # topic subscription, engine thread start/stop, Client close.
        empty_times = []
        for _ in range(max(args.repeats, 5)):
            settle(client)
            start = time.perf_counter()
            empty(0)
            empty_times.append(time.perf_counter() - start)
        empty_median = statistics.median(empty_times)
        print(f"empty flow call (fixed cost): median {empty_median * 1e3:.1f} ms over {len(empty_times)} runs\n")
        sys.stdout.flush()

        results = []
        for n in args.n:
            for shape in args.shapes:
                raw_times, flow_times = [], []
                for rep in range(args.repeats):
                    # Alternate the order too, so a slow moment does not always hit the same path.
                    if rep % 2 == 0:
                        raw_times.append(time_raw(client, shape, n))
                        flow_times.append(time_flow(client, flows, shape, n))
                    else:
                        flow_times.append(time_flow(client, flows, shape, n))
                        raw_times.append(time_raw(client, shape, n))
                raw_med, flow_med = statistics.median(raw_times), statistics.median(flow_times)
                row = {
                    "shape": shape,
                    "n": n,
                    "raw_s": raw_med,
                    "daskflow_s": flow_med,
                    "ratio": flow_med / raw_med,
                    "overhead_us_per_task": (flow_med - raw_med) / n * 1e6,
                    "raw_runs": raw_times,
                    "daskflow_runs": flow_times,
                }
                results.append(row)
                print(
                    f"  {shape:<16} N={n:<6} raw {raw_med:8.3f} s  daskflow {flow_med:8.3f} s  ratio {row['ratio']:.2f}"
                    f"   (raw runs {', '.join(f'{t:.2f}' for t in raw_times)}; daskflow runs {', '.join(f'{t:.2f}' for t in flow_times)})"
                )
                sys.stdout.flush()

    print()
    header = f"| {'shape':<16} | {'N':>5} | {'raw s (median)':>14} | {'daskflow s (median)':>19} | {'daskflow/raw':>12} | {'overhead us/task':>16} |"
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    for row in results:
        print(
            f"| {row['shape']:<16} | {row['n']:>5} | {row['raw_s']:>14.3f} | {row['daskflow_s']:>19.3f} | "
            f"{row['ratio']:>12.2f} | {row['overhead_us_per_task']:>16.0f} |"
        )
    print(f"\nmedian of {args.repeats} repeats; empty-flow fixed cost {empty_median * 1e3:.1f} ms (included in daskflow times)")

    checked = [r for r in results if r["shape"] in TARGET_SHAPES and r["n"] == TARGET_N]
    if checked:
        met = all(r["ratio"] <= TARGET_RATIO for r in checked)
        detail = ", ".join(f"{r['shape']} {r['ratio']:.2f}" for r in checked)
        print(f"target (daskflow/raw <= {TARGET_RATIO} for {' and '.join(TARGET_SHAPES)} at N={TARGET_N}): "
              f"{'MET' if met else 'NOT MET'} ({detail})")
    else:
        print(f"target not checked: needs N={TARGET_N} and shapes {', '.join(TARGET_SHAPES)}")

    if args.json:
        with open(args.json, "w") as fh:
            json.dump(
                {
                    "command": [sys.argv[0]] + argv,
                    "versions": {
                        "python": platform.python_version(),
                        "dask": dask.__version__,
                        "distributed": distributed.__version__,
                        "daskflow": daskflow.__version__,
                        "daskflow_git": daskflow_revision(),
                    },
                    "cpus": os.cpu_count(),
                    "empty_flow_s": empty_times,
                    "results": results,
                },
                fh,
                indent=2,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
