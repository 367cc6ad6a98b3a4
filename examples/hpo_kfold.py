"""Hyperparameter search x k-fold cross-validation on Dask, with every model kept in storage.

The main job daskflow is for. On scikit-learn's handwritten digits (shipped with
scikit-learn, no download) it fans out a grid of 18 settings over four model
families x 5 folds, as one ``fit`` and one ``score`` task per (setting, fold);
aggregates the fold scores per setting into a CV table (a table artifact); picks
the best setting, refits it on all the data, and writes the CV table, a metrics
JSON and the best model next to the results. Every fitted model is a stored task
result, so a second run reuses all of them and says so.

The published files are a side effect outside the store's entries, so they are
written the way such a task must be: under a folder named by what determines
them (the CV table, the seed, the folds), never at fixed paths. A cached
``publish`` then returns paths that still hold its own files, whatever other runs
published since; the flow body (which runs every time) points
``hpo_kfold/latest.json`` at the run's folder.

Run it (it starts a LocalCluster on 127.0.0.1 and stores in ./.daskflow)::

    python examples/hpo_kfold.py
    python examples/hpo_kfold.py --address tcp://127.0.0.1:8786 --storage s3://bucket/sweeps

It prints where the status page, the results and the artifacts are.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import statistics
import time
from typing import Any

# scikit-learn is imported in the tasks that use it, not here: a rerun whose results
# are all stored never runs them, and then never pays scikit-learn's 1-2 s import.
if importlib.util.find_spec("sklearn") is None:  # the example's own extra, not daskflow's
    raise SystemExit("this example needs scikit-learn: pip install 'daskflow[examples]'")

import cloudpickle
import numpy as np

from daskflow import (
    DaskTaskRunner,
    Store,
    create_link_artifact,
    create_table_artifact,
    flow,
    task,
    unmapped,
)

#: The grid: (family, parameters) settings, each cross-validated on every fold.
GRID: list[tuple[str, dict[str, Any]]] = [
    *[("logistic_regression", {"C": c}) for c in (0.01, 0.1, 1.0, 10.0)],
    *[("svc", {"C": c, "gamma": g}) for c in (1.0, 10.0) for g in (0.0005, 0.001, 0.005)],
    *[("random_forest", {"n_estimators": n, "max_depth": d}) for n in (100, 200) for d in (None, 12)],
    *[("knn", {"n_neighbors": k}) for k in (1, 3, 5, 9)],
]
#: Where the published files go, under the store's root: one folder per result.
OUTPUT_PREFIX = "hpo_kfold"


def make_model(family: str, params: dict[str, Any], seed: int) -> Any:
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    if family == "logistic_regression":
        return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, **params))
    if family == "svc":
        return SVC(**params)
    if family == "random_forest":
        return RandomForestClassifier(random_state=seed, n_jobs=1, **params)
    if family == "knn":
        return KNeighborsClassifier(**params)
    raise ValueError(f"unknown model family {family!r}; use one of logistic_regression, svc, random_forest, knn")


def setting_name(family: str, params: dict[str, Any]) -> str:
    return family + "(" + ", ".join(f"{k}={v}" for k, v in sorted(params.items())) + ")"


@task
def load_data() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    # Contiguous copies: an array read back from storage is contiguous, and a cache
    # that hashes input values (Prefect's) would see the stored copy as new input.
    return np.ascontiguousarray(digits.data), np.ascontiguousarray(digits.target)


def _split(y: np.ndarray, fold: int, folds: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import StratifiedKFold

    splits = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed).split(np.zeros(len(y)), y)
    return list(splits)[fold]


@task
def fit(family: str, params: dict[str, Any], data: tuple[np.ndarray, np.ndarray], fold: int, folds: int, seed: int) -> Any:
    """One model fitted on the training part of one fold (the stored result is the model)."""
    X, y = data
    train, _ = _split(y, fold, folds, seed)
    return make_model(family, params, seed).fit(X[train], y[train])


@task
def score(model: Any, family: str, params: dict[str, Any], data: tuple[np.ndarray, np.ndarray], fold: int, folds: int, seed: int) -> dict[str, Any]:
    X, y = data
    _, test = _split(y, fold, folds, seed)
    accuracy = float(model.score(X[test], y[test]))
    print(f"fold {fold} of {setting_name(family, params)}: accuracy {accuracy:.4f}")  # a log line: the flow has log_prints=True
    return {"family": family, "params": params, "fold": fold, "accuracy": accuracy}


@task
def cv_table(scores: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Fold scores aggregated per setting, best first."""
    by_setting: dict[str, list[dict[str, Any]]] = {}
    for row in scores:
        by_setting.setdefault(setting_name(row["family"], row["params"]), []).append(row)
    rows = []
    for name, fold_rows in by_setting.items():
        accuracies = [r["accuracy"] for r in sorted(fold_rows, key=lambda r: r["fold"])]
        rows.append({
            "setting": name,
            "family": fold_rows[0]["family"],
            "params": json.dumps(fold_rows[0]["params"], sort_keys=True),
            "mean_accuracy": round(statistics.fmean(accuracies), 5),
            "std_accuracy": round(statistics.pstdev(accuracies), 5),
            **{f"fold_{i}": round(a, 5) for i, a in enumerate(accuracies)},
        })
    rows.sort(key=lambda r: (-r["mean_accuracy"], r["std_accuracy"], r["setting"]))
    for rank, row in enumerate(rows, 1):
        row["rank"] = rank
    return rows


@task
def refit(table: list[dict[str, Any]], data: tuple[np.ndarray, np.ndarray], seed: int) -> Any:
    """The best setting fitted on all the data."""
    best = table[0]
    X, y = data
    return make_model(best["family"], json.loads(best["params"]), seed).fit(X, y)


@task
def publish(store_url: str | None, table: list[dict[str, Any]], model: Any, folds: int, seed: int) -> dict[str, str]:
    """Writes the CV table, the metrics and the best model as plain files next to the results.

    They go to ``hpo_kfold/<digest>/``, the digest of what determines them: files at
    fixed paths would be overwritten by the next run with other parameters while
    this task's cached result still pointed at them.
    """
    store = Store(store_url)
    best = table[0]
    cv_results = json.dumps(table, indent=2).encode()
    folder = f"{OUTPUT_PREFIX}/{hashlib.sha256(cv_results + f'|{folds}|{seed}'.encode()).hexdigest()[:16]}"
    metrics = {
        "best_setting": best["setting"],
        "best_mean_accuracy": best["mean_accuracy"],
        "best_std_accuracy": best["std_accuracy"],
        "settings": len(table),
        "folds": folds,
        "seed": seed,
        "families": sorted({row["family"] for row in table}),
        "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    files = {
        "cv_results.json": cv_results,
        "best_model.pkl": cloudpickle.dumps(model),
        "metrics.json": json.dumps(metrics, indent=2).encode(),
    }
    for name, payload in files.items():
        # The metrics file last: a folder with metrics.json is complete (a task may
        # run twice, and a killed attempt leaves a folder without it).
        store.put(f"{folder}/{name}", payload)
    return {"folder": folder} | {name: store.describe(f"{folder}/{name}") for name in files}


def point_latest(store_url: str | None, files: dict[str, str]) -> None:
    """``hpo_kfold/latest.json``: which folder the latest run published (or reused)."""
    Store(store_url).put(f"{OUTPUT_PREFIX}/latest.json", json.dumps(files, indent=2).encode())


@flow(name="hpo-kfold", log_prints=True)
def hpo_kfold(folds: int = 5, seed: int = 0, store_url: str | None = None) -> dict[str, Any]:
    """Cross-validate every setting of :data:`GRID` on ``folds`` folds, refit the best, publish."""
    data = load_data.submit()
    settings = [(family, params, fold) for family, params in GRID for fold in range(folds)]
    families = [s[0] for s in settings]
    params = [s[1] for s in settings]
    fold_ids = [s[2] for s in settings]
    models = fit.map(families, params, unmapped(data), fold_ids, unmapped(folds), unmapped(seed))
    scores = score.map(models, families, params, unmapped(data), fold_ids, unmapped(folds), unmapped(seed))
    table = cv_table(scores)
    best_model = refit.submit(table, data, seed)
    files = publish(store_url, table, best_model, folds, seed)
    point_latest(store_url, files)
    best = table[0]
    # Artifacts are made in the flow body, not in the (cached) tasks: a rerun that
    # reuses every result still gets them.
    create_table_artifact(table, key="cv-results", description=f"{len(table)} settings x {folds} folds, best first")
    create_link_artifact(files["best_model.pkl"], link_text=f"best model: {best['setting']}", key="best-model")
    create_link_artifact(files["metrics.json"], link_text="metrics", key="metrics")
    print(f"best of {len(table)} settings: {best['setting']}, mean accuracy {best['mean_accuracy']:.4f} (+/- {best['std_accuracy']:.4f})")
    return {"best": best, "files": files}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", help="a running Dask scheduler, e.g. tcp://127.0.0.1:8786 (default: start a local cluster)")
    parser.add_argument("--workers", type=int, default=2, help="workers of the local cluster (default 2, one thread each)")
    parser.add_argument("--storage", help="where results, models and history go: a folder or s3://bucket/prefix (default ./.daskflow)")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.folds < 2:
        parser.error(f"--folds {args.folds}: cross-validation needs at least 2 folds")
    runner = DaskTaskRunner(address=args.address) if args.address else DaskTaskRunner(cluster_kwargs={"n_workers": args.workers, "threads_per_worker": 1})
    job = hpo_kfold.with_options(task_runner=runner, result_storage=args.storage)
    state = job(args.folds, args.seed, args.storage, return_state=True)
    run = state.run
    took = (run.end_time or time.time()) - run.start_time
    counts = run.state_counts()
    print(f"\nflow run {run.name}: {state.name} in {took:.1f} s, task runs {dict(sorted(counts.items()))}")
    if not state.is_completed():
        print(f"it did not complete: {state.message}")
        return 1
    reused, total = run.cache_hits(), len(run.task_runs)
    if reused == total:
        print(f"all {total} task runs were reused from storage: nothing was recomputed (change --seed or --folds to compute anew)")
    else:
        print(f"{total - reused} task runs computed, {reused} reused from storage; run it again and all are reused")
    storage = f" --storage {run.result_storage}" if args.storage else ""
    files = state.result()["files"]
    print(f"results and models:  {run.result_storage}  (daskflow cache ls{storage})")
    print(f"CV table, metrics:   {files['cv_results.json']}, {files['metrics.json']}")
    print(f"best model:          {files['best_model.pkl']}")
    print(f"artifacts:           daskflow artifacts show {run.id[:12]} cv-results{storage}")
    if run.status_link and args.address:
        # The scheduler at --address outlives the run: its page goes on showing it.
        print(f"status page:         {run.status_link} (live on the scheduler at {args.address}; also: daskflow ui{storage})")
    elif run.status_link:
        print(f"status page:         {run.status_link} while the run went; now: daskflow ui{storage}")
    return 0


if __name__ == "__main__":  # the LocalCluster starts worker processes: keep this guard
    raise SystemExit(main())
