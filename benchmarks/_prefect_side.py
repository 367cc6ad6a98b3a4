"""The Prefect side of ``benchmarks/vs_prefect.py``: run inside the peers' virtualenv.

Not a benchmark on its own: ``vs_prefect.py`` starts it with the peers' Python, once per
measured run, with ``PREFECT_API_URL`` pointing at a Prefect server it started (so the
server's start-up is never timed) and the other settings from its environment. It runs
the same two shapes as ``vs_prefect.py`` (N no-op tasks, ``noop.submit`` each, then wait
for all; or then one ``reduce`` over all N results) as a Prefect 3 flow with either
``ThreadPoolTaskRunner()`` (Prefect's default pool size) or
``prefect_dask.DaskTaskRunner(address=...)`` on the benchmark's cluster, and prints one
JSON line on stdout.

Two modes:

* ``time``: an untimed warm-up flow run (``--warmup-n`` tasks, same shape and runner),
  then wait until the scheduler holds no tasks (Dask runner), then one flow run timed
  around the flow call.
* ``memory``: exactly one flow run in this fresh process, no warm-up; reports the peak
  RSS of this (driver) process before the run (imports and set-up) and at the end.

Usage (what vs_prefect.py runs)::

    /path/to/peers-venv/bin/python benchmarks/_prefect_side.py --runner dask \\
        --address tcp://127.0.0.1:PORT --shape fan-in --n 1000 --mode time
    /path/to/peers-venv/bin/python benchmarks/_prefect_side.py --versions
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import resource
import sys
import time

import dask
import distributed
import prefect
import prefect_dask
from prefect import flow, task
from prefect.futures import wait
from prefect.task_runners import ThreadPoolTaskRunner
from prefect_dask import DaskTaskRunner

SHAPES = ("independent", "fan-in")


def peak_rss_mb() -> float:
    """Peak RSS of this process in MiB: VmHWM from /proc on Linux. Not ``ru_maxrss``, which
    Linux carries over execve() from the parent (a subprocess would report at least the RSS
    its parent had when it started it)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


def versions() -> dict:
    return {
        "python": platform.python_version(),
        "prefect": prefect.__version__,
        "prefect_dask": prefect_dask.__version__,
        "dask": dask.__version__,
        "distributed": distributed.__version__,
    }


# --------------------------------------------------------------------------- the flows
# Module level, as a user writes them; the task functions are shipped to the workers by
# value (this file runs as __main__), Prefect's task engine by reference (so the workers
# must import prefect).
@task(name="noop", persist_result=False)
def noop(x):
    return x


@task(name="reduce", persist_result=False)
def reduce_(xs):
    return len(xs)


@flow(name="bench-independent", persist_result=False)
def independent(n: int) -> None:
    futures = [noop.submit(i) for i in range(n)]
    wait(futures)
    return None


@flow(name="bench-fan-in", persist_result=False)
def fan_in(n: int) -> int:
    futures = [noop.submit(i) for i in range(n)]
    return reduce_.submit(futures).result()


FLOWS = {"independent": independent, "fan-in": fan_in}


def task_runner(kind: str, address: str | None):
    if kind == "dask":
        return DaskTaskRunner(address=address)
    return ThreadPoolTaskRunner()  # Prefect's default size: PREFECT_TASKS_RUNNER_THREAD_POOL_MAX_WORKERS, else unbounded


def expected(shape: str, n: int):
    return n if shape == "fan-in" else None


def settle(address: str, timeout: float) -> None:
    """Wait until the scheduler has forgotten every task of the warm-up run."""
    from distributed import Client

    def count(dask_scheduler=None) -> int:
        return len(dask_scheduler.tasks)

    gc.collect()
    deadline = time.monotonic() + timeout
    with Client(address, timeout=timeout) as client:
        while client.run_on_scheduler(count):
            if time.monotonic() > deadline:
                raise TimeoutError(f"the scheduler still holds tasks after {timeout} s")
            time.sleep(0.02)


def run(args: argparse.Namespace) -> dict:
    fn = FLOWS[args.shape].with_options(task_runner=task_runner(args.runner, args.address))
    if args.mode == "time":
        fn(min(args.warmup_n, args.n))
        if args.address:
            settle(args.address, timeout=120)
        gc.collect()
    rss_before = peak_rss_mb()
    start = time.perf_counter()
    value = fn(args.n)
    seconds = time.perf_counter() - start
    if value != expected(args.shape, args.n):
        raise AssertionError(f"Prefect {args.runner} {args.shape} n={args.n} returned {value!r}")
    return {
        "runner": args.runner,
        "shape": args.shape,
        "n": args.n,
        "seconds": seconds,
        "peak_rss_before_mb": rss_before,
        "peak_rss_mb": peak_rss_mb(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--versions", action="store_true", help="print the versions as JSON and exit")
    parser.add_argument("--runner", choices=("thread", "dask"))
    parser.add_argument("--address", help="the Dask scheduler (required for --runner dask)")
    parser.add_argument("--shape", choices=SHAPES)
    parser.add_argument("--n", type=int)
    parser.add_argument("--mode", choices=("time", "memory"), default="time")
    parser.add_argument("--warmup-n", type=int, default=10)
    args = parser.parse_args(argv)
    if args.versions:
        print(json.dumps(versions()), flush=True)
        return 0
    if args.runner is None or args.shape is None or args.n is None:
        parser.error("--runner, --shape and --n are required")
    if args.runner == "dask" and not args.address:
        parser.error("--runner dask needs --address")
    print(json.dumps(run(args)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
