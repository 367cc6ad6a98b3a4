"""The main job's workload (``examples/hpo_kfold.py``) through raw Dask and daskflow.

On a LocalCluster of ``W`` worker processes x 1 thread (127.0.0.1), for each
``--workers`` count, times the median of ``--repeats``:

* **raw Dask**: the same functions (load, 90 fits, 90 scores, the CV table, the
  refit) as ``client.submit`` calls with futures as arguments, waited on; nothing
  stored (what a user writes without daskflow);
* **daskflow, first run**: the example's flow into an empty local store (every
  fitted model, score and table persisted, the run recorded, artifacts made);
* **daskflow, cached rerun**: the same flow again on the same store (all 184
  task runs reused).

The cluster is started before the timed runs and shared by them (its start-up is
not part of a run). Targets (from the issue): the cached rerun under 10% of the
first run; 2 workers at least 1.7x faster than 1 worker (daskflow, first run).
Prefect on this workload is not measured yet (see ``benchmarks/README.md``).

Run from the repository root (needs scikit-learn: ``pip install -e '.[examples]'``)::

    python benchmarks/hpo.py                     # 1 and 2 workers, 3 repeats
    python benchmarks/hpo.py --workers 2 --repeats 1   # quick check
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cloudpickle
import dask
import distributed
from distributed import Client, LocalCluster, wait

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from machine import cpu_model, daskflow_revision  # noqa: E402

import daskflow  # noqa: E402
from daskflow import DaskTaskRunner  # noqa: E402

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "hpo_kfold.py"
CACHED_TARGET = 0.10
SCALING_TARGET = 1.7


def _load_example():
    spec = importlib.util.spec_from_file_location("hpo_kfold", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    sys.modules["hpo_kfold"] = module
    spec.loader.exec_module(module)
    # Workers cannot import a module loaded from a path: ship its functions by value.
    cloudpickle.register_pickle_by_value(module)
    return module


def raw_dask(client: Client, job, folds: int, seed: int) -> None:
    data = client.submit(job.load_data.fn, pure=False)
    scores = []
    for family, params in job.GRID:
        for fold in range(folds):
            model = client.submit(job.fit.fn, family, params, data, fold, folds, seed, pure=False)
            scores.append(client.submit(job.score.fn, model, family, params, data, fold, folds, seed, pure=False))
    table = client.submit(job.cv_table.fn, scores, pure=False)
    best = client.submit(job.refit.fn, table, data, seed, pure=False)
    wait([table, best])
    table.result()


def _wait_idle(client: Client, timeout: float = 60) -> None:
    """Until the scheduler holds no tasks: one run's clean-up must not land in the next."""
    deadline = time.monotonic() + timeout
    while client.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks)):
        if time.monotonic() > deadline:
            raise TimeoutError("the scheduler still holds tasks")
        time.sleep(0.05)


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--folds", type=int, default=5)
    args = parser.parse_args()
    job = _load_example()
    root = Path(tempfile.mkdtemp(prefix="daskflow-hpo-bench-"))
    results: dict[int, dict[str, list[float]]] = {}
    try:
        with dask.config.set({"daskflow.logging.console": False}):
            for workers in args.workers:
                times: dict[str, list[float]] = {"raw": [], "first": [], "cached": []}
                with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address="127.0.0.1:0") as cluster, Client(cluster) as client:
                    runner = DaskTaskRunner(address=cluster.scheduler_address)
                    raw_dask(client, job, args.folds, 0)  # warm: imports on the workers, the first pickles
                    _wait_idle(client)
                    for repeat in range(args.repeats):
                        times["raw"].append(_timed(lambda: raw_dask(client, job, args.folds, 0)))
                        _wait_idle(client)
                        store = root / f"w{workers}-r{repeat}"
                        flow_ = job.hpo_kfold.with_options(task_runner=runner, result_storage=str(store))
                        for label in ("first", "cached"):
                            state = None

                            def run() -> None:
                                nonlocal state
                                state = flow_(args.folds, 0, str(store), return_state=True)

                            times[label].append(_timed(run))
                            assert state.is_completed(), state
                            hits = state.run.cache_hits()
                            assert hits == (len(state.run.task_runs) if label == "cached" else 0), (label, hits)
                            _wait_idle(client)
                results[workers] = times
    finally:
        shutil.rmtree(root, ignore_errors=True)

    print(f"daskflow {daskflow.__version__} at {daskflow_revision()}, dask {dask.__version__}, distributed {distributed.__version__}, "
          f"Python {platform.python_version()}")
    print(f"{os.cpu_count()} CPUs ({cpu_model()}), {platform.platform()}")
    print(f"workload: {len(job.GRID)} settings x {args.folds} folds ({len(job.GRID) * args.folds * 2 + 4} task runs); "
          f"medians of {args.repeats}; LocalCluster of W processes x 1 thread\n")
    print(f"{'W':>2} {'raw Dask':>9} {'daskflow first':>15} {'cached rerun':>13} {'first/raw':>10} {'cached/first':>13}  runs (raw; first; cached)")
    medians = {}
    for workers, times in results.items():
        raw, first, cached = (statistics.median(times[k]) for k in ("raw", "first", "cached"))
        medians[workers] = first
        runs = "; ".join(", ".join(f"{t:.2f}" for t in times[k]) for k in ("raw", "first", "cached"))
        print(f"{workers:>2} {raw:>8.2f}s {first:>14.2f}s {cached:>12.2f}s {first / raw:>10.2f} {cached / first:>13.3f}  {runs}")
    print()
    for workers, times in results.items():
        ratio = statistics.median(times["cached"]) / statistics.median(times["first"])
        print(f"target cached/first < {CACHED_TARGET:.2f} at W={workers}: {'MET' if ratio < CACHED_TARGET else 'NOT MET'} ({ratio:.3f})")
    if 1 in medians and 2 in medians:
        speedup = medians[1] / medians[2]
        print(f"target 2 workers >= {SCALING_TARGET}x faster than 1 (daskflow first run): {'MET' if speedup >= SCALING_TARGET else 'NOT MET'} ({speedup:.2f}x)")


if __name__ == "__main__":  # LocalCluster starts worker processes: keep this guard
    main()
