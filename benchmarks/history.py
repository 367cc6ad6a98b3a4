"""How fast the history commands read a large local history.

Builds, in a temporary folder, a store holding:

* ``--runs`` real flow runs (default 1000): a small flow of three tasks, each run
  recorded by daskflow's own recorder, as any flow run is;
* one real flow run of ``--tasks`` task runs (default 10,000): no-op mapped tasks
  plus a fan-in, run with ``persist_result=False`` so only its history is written.

Then times, as a user would run them (a fresh ``daskflow`` process each time, so
interpreter start-up and imports are included), the median of ``--repeats``:

* ``daskflow runs ls --limit N``  listing every run (N = --runs + 1);
* ``daskflow runs show RUN``      the 10,000-task run with its task table;
* ``daskflow logs RUN`` and ``daskflow runs graph RUN`` on the same run.

The baseline in the same run is ``python -c "import daskflow.cli"``: the fixed
cost of any ``daskflow`` command on this machine, so the rest is the command's
own work. The target (from the issue): each command under 2 s on a local store.

Run from the repository root::

    python benchmarks/history.py                       # 1000 runs, 10,000 tasks, 3 repeats
    python benchmarks/history.py --runs 100 --tasks 1000 --repeats 1   # quick check
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import dask

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from machine import cpu_model, daskflow_revision  # noqa: E402

import daskflow  # noqa: E402
from daskflow import SequentialTaskRunner, flow, task  # noqa: E402

TARGET_SECONDS = 2.0


@task
def step(x: int) -> int:
    return x + 1


@task
def gather(values: list[int]) -> int:
    return sum(values)


@flow(task_runner=SequentialTaskRunner(), persist_result=False)
def small(i: int = 0) -> int:
    return gather([step(i), step(i + 1)])


@flow(task_runner=SequentialTaskRunner(), persist_result=False)
def wide(n: int = 10_000) -> int:
    return gather(step.map(range(n)))


def _timed(cmd: list[str], env: dict[str, str], repeats: int) -> tuple[float, float, float, int]:
    times = []
    size = 0
    for _ in range(repeats):
        start = time.perf_counter()
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        times.append(time.perf_counter() - start)
        if done.returncode != 0:
            sys.exit(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr.strip()}")
        size = len(done.stdout.splitlines())
    return statistics.median(times), min(times), max(times), size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=1000, help="small flow runs in the history (default 1000)")
    parser.add_argument("--tasks", type=int, default=10_000, help="task runs of the large run (default 10,000)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    root = tempfile.mkdtemp(prefix="daskflow-history-bench-")
    store = os.path.join(root, "store")
    exe = shutil.which("daskflow", path=os.path.dirname(sys.executable)) or "daskflow"
    env = {**os.environ, "DASK_DASKFLOW__STORAGE__URL": store}
    try:
        with dask.config.set({"daskflow.storage.url": store, "daskflow.logging.console": False}):
            start = time.perf_counter()
            for i in range(args.runs):
                small(i)
            build_small = time.perf_counter() - start
            start = time.perf_counter()
            state = wide(args.tasks, return_state=True)
            build_wide = time.perf_counter() - start
        assert state.is_completed(), state
        run_id = state.run.id
        print(f"daskflow {daskflow.__version__} at {daskflow_revision()}, dask {dask.__version__}, Python {platform.python_version()}")
        print(f"{os.cpu_count()} CPUs ({cpu_model()}), {platform.platform()}")
        print(f"built {args.runs} runs in {build_small:.1f} s and one run of {args.tasks + 1} task runs in {build_wide:.1f} s")
        print(f"medians of {args.repeats}, each a fresh process (start-up included); target < {TARGET_SECONDS:g} s\n")

        rows = [
            ("python -c 'import daskflow.cli' (baseline)", [sys.executable, "-c", "import daskflow.cli"], None),
            (f"daskflow runs ls --limit {args.runs + 1}", [exe, "runs", "ls", "--limit", str(args.runs + 1)], args.runs + 2),
            (f"daskflow runs show ({args.tasks + 1} tasks)", [exe, "runs", "show", run_id], None),
            ("daskflow runs show --json", [exe, "runs", "show", run_id, "--json"], None),
            ("daskflow runs graph", [exe, "runs", "graph", run_id], None),
            ("daskflow logs", [exe, "logs", run_id], None),
        ]
        print(f"{'command':<46} {'median':>8} {'min':>8} {'max':>8} {'lines':>7}  target")
        for label, cmd, expect_lines in rows:
            median, low, high, lines = _timed(cmd, env, args.repeats)
            if expect_lines is not None and lines != expect_lines:
                sys.exit(f"{label}: expected {expect_lines} lines of output, got {lines}")
            verdict = "" if "baseline" in label else ("PASS" if median < TARGET_SECONDS else "FAIL")
            print(f"{label:<46} {median:>7.2f}s {low:>7.2f}s {high:>7.2f}s {lines:>7}  {verdict}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
