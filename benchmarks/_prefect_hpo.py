"""The Prefect side of ``benchmarks/hpo.py``: the main job's workload as a Prefect 3 flow.

Run inside the peers' virtualenv (``benchmarks/requirements-peers.txt``, plus
scikit-learn), with daskflow's source directory on ``PYTHONPATH`` so the example's
own functions (``examples/hpo_kfold.py``: the same ``make_model``, fold split,
scoring and CV table) run unchanged under Prefect's ``@task``. Caching is made
equal to daskflow's: ``INPUTS + TASK_SOURCE`` with results persisted, the cache
records in ``--results`` (a fresh folder makes a first run; the same folder again,
Prefect's cached rerun). Prints one JSON line: ``{"runner", "seconds", "cached"}``.

    /path/to/peers-venv/bin/python benchmarks/_prefect_hpo.py --runner dask \\
        --address tcp://127.0.0.1:PORT --results /tmp/prefect-results
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path

from prefect import flow, task, unmapped
from prefect.cache_policies import INPUTS, TASK_SOURCE
from prefect.task_runners import ThreadPoolTaskRunner
from prefect_dask import DaskTaskRunner

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "hpo_kfold.py"


def _example():
    spec = importlib.util.spec_from_file_location("hpo_kfold", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    sys.modules["hpo_kfold"] = module
    spec.loader.exec_module(module)
    import cloudpickle

    cloudpickle.register_pickle_by_value(module)  # Dask workers cannot import it by name
    return module


def build(job, results: str):
    # Cache records in ``results`` (a fresh folder: a first run; the same again: the cached
    # rerun); the results themselves in Prefect's default local storage.
    options = {"cache_policy": (INPUTS + TASK_SOURCE).configure(key_storage=results), "persist_result": True}
    load = task(job.load_data.fn, name="load_data", **options)
    fit = task(job.fit.fn, name="fit", **options)
    score = task(job.score.fn, name="score", **options)
    cv_table = task(job.cv_table.fn, name="cv_table", **options)
    refit = task(job.refit.fn, name="refit", **options)

    @flow(name="hpo-kfold-prefect")
    def hpo(folds: int = 5, seed: int = 0) -> str:
        data = load.submit()
        settings = [(family, params, fold) for family, params in job.GRID for fold in range(folds)]
        families = [s[0] for s in settings]
        params = [s[1] for s in settings]
        fold_ids = [s[2] for s in settings]
        models = fit.map(families, params, unmapped(data), fold_ids, unmapped(folds), unmapped(seed))
        scores = score.map(models, families, params, unmapped(data), fold_ids, unmapped(folds), unmapped(seed))
        table = cv_table.submit(scores).result()
        refit.submit(table, data, seed).result()
        return table[0]["setting"]

    return hpo


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runner", choices=("thread", "dask"), required=True)
    parser.add_argument("--address", help="the Dask scheduler (for --runner dask)")
    parser.add_argument("--results", required=True, help="Prefect's result folder (the same one again: the cached rerun)")
    parser.add_argument("--folds", type=int, default=5)
    args = parser.parse_args(argv)
    if args.runner == "dask" and not args.address:
        parser.error("--runner dask needs --address")
    runner = DaskTaskRunner(address=args.address) if args.runner == "dask" else ThreadPoolTaskRunner()
    hpo = build(_example(), args.results).with_options(task_runner=runner)
    start = time.perf_counter()
    best = hpo(args.folds, 0)
    seconds = time.perf_counter() - start
    print(json.dumps({"runner": args.runner, "seconds": seconds, "best": best}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
