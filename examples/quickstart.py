"""A first daskflow flow: a Monte Carlo estimate of pi, fanned out on a local Dask cluster.

Run it with ``python examples/quickstart.py``; ``--help`` lists the options.
It starts an embedded LocalCluster (on 127.0.0.1), maps a sampling task over
seeds, retries a deliberately flaky task, reduces the estimates and prints the
run's summary.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

from daskflow import DaskTaskRunner, flow, get_run_logger, task


@task
def sample(seed: int, n: int) -> int:
    """How many of ``n`` random points in the unit square fall in the quarter circle."""
    rng = random.Random(seed)
    return sum(rng.random() ** 2 + rng.random() ** 2 <= 1.0 for _ in range(n))


@task(retries=2, retry_delay_seconds=0.5)
def flaky_average(hits: list[int], n: int, marker: str) -> float:
    """Fails on its first attempt (to show a retry), then averages the samples."""
    path = Path(marker)
    if not path.exists():
        path.write_text("tried once")
        raise RuntimeError("a transient failure, retried by daskflow")
    path.unlink()
    return 4.0 * sum(hits) / (n * len(hits))


@flow(log_prints=True)
def estimate_pi(batches: int = 16, points: int = 200_000, marker: str = ".quickstart-retry-marker") -> float:
    """Sample ``batches`` x ``points`` points in parallel and average them."""
    logger = get_run_logger()
    logger.info("sampling %d batches of %d points", batches, points)
    hits = sample.map(range(batches), points)
    pi = flaky_average(hits, points, marker)
    print(f"pi is about {pi:.5f}")
    return pi


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=16)
    parser.add_argument("--points", type=int, default=200_000)
    parser.add_argument("--address", help="a running Dask scheduler, e.g. tcp://127.0.0.1:8786 (default: start a local cluster)")
    parser.add_argument("--workers", type=int, default=2, help="workers of the local cluster (default 2)")
    args = parser.parse_args()
    runner = DaskTaskRunner(address=args.address) if args.address else DaskTaskRunner(cluster_kwargs={"n_workers": args.workers})
    state = estimate_pi.with_options(task_runner=runner)(args.batches, args.points, return_state=True)
    run = state.run
    print(f"\nflow run {run.name}: {state.name}, task runs {run.state_counts()}, {run.end_time - run.start_time:.1f} s")
    retried = run.task_run("flaky_average-0")
    if retried.cache_hit:
        print(f"every result was reused from {run.result_storage}; change --batches or --points to compute new ones")
    else:
        print(f"flaky_average took {retried.attempts} attempts: {' -> '.join(s.name for s in retried.state_history)}")
        print(f"results are stored in {run.result_storage}; run again and nothing is recomputed")
        print(f"its retry warning:   daskflow logs {run.id[:12]} --task flaky_average-0")
    print("this run and others: daskflow runs ls; daskflow ui (the status page)")
    raise SystemExit(0 if state.is_completed() else 1)


if __name__ == "__main__":  # LocalCluster starts worker processes: keep this guard
    main()
