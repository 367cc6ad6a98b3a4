"""Cache keys and inputs (RELIABILITY.md section 6, scenarios 15, 16 and 23; issue 12 defect 1).

The cross-process tests run small generated scripts in fresh interpreters
(``sys.executable``) with different ``PYTHONHASHSEED`` values against one store,
as a user rerunning a job does, and read the verdict from the run history the
runs left behind. Where the process boundary is not the point (scenario 16) the
flows run in this process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from daskflow import SequentialTaskRunner, Store, flow, task
from daskflow.storage.records import History

from ..conftest import REPO


# ------------------------------------------------------------------ helpers
def run_script(folder: Path, store: Path, seed: int, *, code: str | None = None, script: str = "job.py") -> dict[str, Any]:
    """Run ``folder/script`` (or ``python -c code`` in ``folder``) in a fresh
    interpreter with ``PYTHONHASHSEED=seed``; returns the JSON its last line prints."""
    env = {
        **os.environ,
        "PYTHONHASHSEED": str(seed),
        "DASK_DASKFLOW__STORAGE__URL": str(store),
        "DASK_DASKFLOW__LOGGING__CONSOLE": "false",
        "MARKS": str(folder / "marks"),
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
    }
    (folder / "marks").mkdir(exist_ok=True)
    argv = [sys.executable, "-c", code] if code is not None else [sys.executable, script]
    out = subprocess.run(argv, cwd=folder, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def history_states(store: Path) -> list[dict[str, str]]:
    """Per run in the store's history (oldest first): task run name -> state name."""
    history = History(Store(str(store)))
    return [{t["name"]: t["state"]["name"] for t in history.tasks(entry)} for entry in history.entries()]


def executions(folder: Path, name: str) -> int:
    marks = folder / "marks" / name
    return len(marks.read_text().splitlines()) if marks.exists() else 0


#: Runs the flow ``main`` with every warning recorded; prints states and warnings as JSON.
RUNNER_FOOTER = '''
def report(flow_obj):
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        state = flow_obj(return_state=True)
    return json.dumps({
        "flow": state.name,
        "states": {t.name: t.state.name for t in state.run.task_runs.values()},
        "keys": {t.name: t.cache_key for t in state.run.task_runs.values()},
        "warnings": [f"{w.category.__name__}: {w.message}" for w in seen],
    })

if __name__ == "__main__":
    print(report(main))
'''


# ---------------------------------------------------- scenario 15: code changes
def pipeline_script(clean_body: str, pinned_version: str) -> str:
    return textwrap.dedent('''
        import json, os, warnings
        from pathlib import Path
        from daskflow import SequentialTaskRunner, flow, task


        def mark(name):
            with open(Path(os.environ["MARKS"], name), "a") as f:
                f.write("x\\n")


        @task
        def load(n):
            mark("load")
            return list(range(n))


        @task
        def clean(xs):
            mark("clean")
            {clean_body}


        @task
        def score(xs):
            mark("score")
            return sum(xs)


        @task
        def side(n):
            mark("side")
            return -n


        @task(version="{pinned_version}")
        def pinned(n):
            mark("pinned")
            return n * 10


        @flow(task_runner=SequentialTaskRunner())
        def main(n: int = 5):
            side.submit(n)
            pinned.submit(n)
            return score.submit(clean.submit(load.submit(n)))
    ''').format(clean_body=clean_body, pinned_version=pinned_version) + RUNNER_FOOTER


@pytest.mark.slow
def test_s15_a_code_change_or_version_bump_invalidates_that_task_only(tmp_path, scenario_report):
    store = tmp_path / "store"
    script = tmp_path / "job.py"
    steps = [
        ("baseline", "return [x for x in xs if x % 2 == 0]", "1", set()),
        ("clean edited", "return [x for x in xs if x % 2 == 1]", "1", {"clean", "score"}),  # score: its input changed
        ("pinned version bumped", "return [x for x in xs if x % 2 == 1]", "2", {"pinned"}),
    ]
    stale, untouched_hits, untouched = 0, 0, 0
    for i, (label, body, version, changed) in enumerate(steps):
        script.write_text(pipeline_script(body, version))
        report = run_script(tmp_path, store, seed=i + 1)
        assert report["flow"] == "Completed" and report["warnings"] == [], report
        if i == 0:
            assert set(report["states"].values()) == {"Completed"}
            continue
        states = {name.rsplit("-", 1)[0]: state for name, state in history_states(store)[i].items()}
        stale += sum(states[t] == "Cached" for t in changed)
        untouched_hits += sum(states[t] == "Cached" for t in states if t not in changed)
        untouched += len(states) - len(changed)
        assert {t for t, s in states.items() if s != "Cached"} == changed, (label, states)
    assert stale == 0 and untouched_hits == untouched
    assert [executions(tmp_path, t) for t in ("load", "clean", "score", "side", "pinned")] == [1, 2, 2, 1, 2]
    scenario_report(
        15, "code change and version bump invalidate",
        f"stale hits {stale}; untouched tasks hit {untouched_hits}/{untouched} (100%) after an edit and a version= bump",
        backend="local", n=len(steps),
    )


# ------------------------------------------------ scenario 16: failures uncached
@task
def fragile(flag: str, n: int) -> int:
    with Path(flag).with_suffix(".runs").open("a") as runs:
        runs.write("x\n")
    if Path(flag).exists():
        raise RuntimeError("failing on purpose while the flag is set")
    return 2 * n


@task
def steady(n: int) -> int:
    return n + 1


@flow(task_runner=SequentialTaskRunner())
def sometimes_failing(flag: str, n: int = 3):
    return fragile.submit(flag, n), steady.submit(n)


def test_s16_a_failure_is_never_cached(tmp_path, _result_storage, scenario_report):
    flag = tmp_path / "fail-now"
    flag.write_text("1")
    first = sometimes_failing(str(flag), return_state=True)
    assert first.name == "Failed"
    failed = first.run.task_run("fragile-0")
    assert failed.state.name == "Failed" and failed.cache_key
    store = Store(str(_result_storage))
    cached_failures = int(store.read_manifest(failed.cache_key) is not None)  # nothing at the failing task's key

    flag.unlink()
    second = sometimes_failing(str(flag), return_state=True)
    assert second.name == "Completed"
    rerun = second.run.task_run("fragile-0")
    assert rerun.cache_key == failed.cache_key  # same key: only the absence of an entry makes it run
    assert rerun.state.name == "Completed" and not rerun.cache_hit and second.result()[0] == 6
    cached_failures += int(rerun.cache_hit)
    assert second.run.task_run("steady-0").state.name == "Cached"
    assert len(flag.with_suffix(".runs").read_text().splitlines()) == 2  # it ran again

    history = History(store)
    entry = history.resolve(first.run.id)
    assert history.run(entry)["state"]["name"] == "Failed"
    [task_row] = [t for t in history.tasks(entry) if t["name"] == "fragile-0"]
    assert task_row["state"]["name"] == "Failed" and "failing on purpose" in (task_row["error"] or "")
    assert cached_failures == 0
    scenario_report(
        16, "failures are never cached",
        "cached failures 0; the rerun executed the task (2 executions, same key); run 1 still Failed in history",
        backend="local",
    )


# ---------------------------------------------------- defect 1: script classes
SCRIPT_CLASSES = '''
import collections, dataclasses, enum, json, warnings
import pydantic
from daskflow import SequentialTaskRunner, flow, task


@dataclasses.dataclass(frozen=True)
class Window:
    start: int
    tags: frozenset


class Plain:
    def __init__(self, rate, names):
        self.rate = rate
        self.names = names  # a set of strings: its pickle order follows the salted hash


class Mode(enum.Enum):
    FAST = "fast"
    SLOW = "slow"


class Slotted:
    __slots__ = ("depth", "labels")

    def __init__(self, depth, labels):
        self.depth = depth
        self.labels = labels


class Params(pydantic.BaseModel):
    lr: float
    layers: list[int]
    mode: Mode


class Reported(pydantic.BaseModel):
    name: str
    scale: float

    @pydantic.model_serializer
    def _dump(self):
        return {"name": self.name.upper(), "scale": self.scale}


Point = collections.namedtuple("Point", "x y")


@dataclasses.dataclass
class Nested:
    window: Window
    plain: Plain
    mode: Mode
    points: list


INPUTS = {
    "dataclass": Window(3, frozenset({"train", "eval", "holdout"})),
    "plain": Plain(0.5, {"alpha", "beta", "gamma"}),
    "enum": Mode.SLOW,
    "slots": Slotted(4, {"x", "y", "z"}),
    "pydantic": Params(lr=0.1, layers=[8, 4], mode=Mode.FAST),
    "serializer": Reported(name="run", scale=2.0),
    "namedtuple": Point(1, 2),
    "class": Mode,
    "nested": Nested(Window(1, frozenset({"a", "b"})), Plain(1.0, {"p", "q", "r"}), Mode.FAST, [Point(0, 1)]),
    "keyed": {Mode.FAST: Window(0, frozenset({"k", "l"})), Mode.SLOW: Window(1, frozenset())},
}


@task
def use(value):
    return type(value).__name__


@flow(task_runner=SequentialTaskRunner())
def main():
    return {name: use.with_options(name=f"use_{name}").submit(value) for name, value in INPUTS.items()}
''' + RUNNER_FOOTER


@pytest.mark.slow
def test_s23_script_classes_hash_the_same_in_fresh_interpreters(tmp_path, scenario_report):
    """Defect 1: inputs whose classes live in the script (``__main__``) must give
    the same keys in every interpreter, and in an import of the script."""
    store = tmp_path / "store"
    (tmp_path / "job.py").write_text(SCRIPT_CLASSES)
    first = run_script(tmp_path, store, seed=1)
    assert first["flow"] == "Completed" and set(first["states"].values()) == {"Completed"}, first
    assert first["warnings"] == [], first["warnings"]  # every one of them is hashable
    assert all(first["keys"].values()), first["keys"]

    t0 = time.perf_counter()
    second = run_script(tmp_path, store, seed=2)
    rerun_seconds = time.perf_counter() - t0
    imported = run_script(tmp_path, store, seed=3, code="import job; print(job.report(job.main))")

    runs = history_states(store)
    assert len(runs) == 3
    n = len(runs[0])
    missed = {name: state for name, state in runs[1].items() if state != "Cached"}
    assert not missed, f"rerun with PYTHONHASHSEED=2 missed: {missed} (keys {first['keys']} vs {second['keys']})"
    assert set(runs[2].values()) == {"Cached"}, runs[2]  # ``import job`` names the classes as ``python job.py`` does
    assert second["keys"] == first["keys"] == imported["keys"]
    assert second["warnings"] == imported["warnings"] == []
    scenario_report(
        23, "script-defined classes across interpreters",
        f"rerun hits {n - len(missed)}/{n} with PYTHONHASHSEED 1->2 (and 3 as an import); "
        f"silent misses 0; rerun {rerun_seconds:.1f} s",
        backend="local", n=n, seed=2,
    )


# ------------------------------------------------------- scenario 23: bad inputs
SCRIPT_BAD_INPUTS = '''
import dataclasses, json, threading, time, warnings
from daskflow import SequentialTaskRunner, flow, task


class Holder:
    """Holds a lock in its state."""

    def __init__(self, n):
        self.n = n
        self.lock = threading.Lock()


class DropsOnPickle:
    """Its pickle drops state: __reduce__ rebuilds it from n alone, the lock it holds is
    not sent. It hashes by what its pickle keeps, the value a worker process receives."""

    def __init__(self, n):
        self.n = n
        self.guard = threading.Lock()

    def __reduce__(self):
        return (DropsOnPickle, (self.n,))


class Drifting:
    """Its declared state differs at every call."""

    def __init__(self, n):
        self.n = n

    def __getstate__(self):
        return {"n": self.n, "at": time.perf_counter_ns()}


class Declared:
    """Declares its state without its lock: hashable."""

    def __init__(self, n):
        self.n = n
        self._lock = threading.Lock()

    def __getstate__(self):
        return {"n": self.n}

    def __setstate__(self, state):
        self.n = state["n"]
        self._lock = threading.Lock()


@dataclasses.dataclass
class Config:
    name: str
    sizes: set


@dataclasses.dataclass
class Logfile:
    name: str
    handle: object


def closing_over(value):
    return lambda x: (x, value)


UNHASHABLE = {
    "lock_holder": Holder(1),
    "lock_lambda": closing_over(threading.Lock()),
    "open_file": Logfile("log", open(__file__)),
    "drifting_state": Drifting(3),
}
HASHABLE = {
    "plain_lambda": closing_over(7),
    "declared_state": Declared(4),
    "pickle_drops_state": DropsOnPickle(2),
    "pickle_drops_state_9": DropsOnPickle(9),
    "config": Config("c", {"s", "m", "l"}),
    "numbers": [1, 2.5, "three"],
}


@task
def use(value):
    return type(value).__name__


@flow(task_runner=SequentialTaskRunner())
def main():
    return {
        name: use.with_options(name=f"use_{name}").submit(value)
        for name, value in {**UNHASHABLE, **HASHABLE}.items()
    }
''' + RUNNER_FOOTER

UNHASHABLE = ["lock_holder", "lock_lambda", "open_file", "drifting_state"]
HASHABLE = ["plain_lambda", "declared_state", "pickle_drops_state", "pickle_drops_state_9", "config", "numbers"]


@pytest.mark.slow
def test_s23_unhashable_inputs_warn_by_name_and_hashable_ones_hit(tmp_path, scenario_report):
    """An object holding a Lock, a lambda closing over one, an open file, a state
    that differs at each call: each run warns naming the task and input (never a
    silent miss). The hashable inputs beside them, objects whose pickle drops
    their lock included, hit on the rerun in a fresh interpreter."""
    store = tmp_path / "store"
    (tmp_path / "job.py").write_text(SCRIPT_BAD_INPUTS)
    reports = [run_script(tmp_path, store, seed=seed) for seed in (1, 2)]
    for report in reports:
        assert report["flow"] == "Completed", report
        for name in UNHASHABLE:
            named = [w for w in report["warnings"] if w.startswith("CacheKeyWarning") and f"task 'use_{name}'" in w]
            assert len(named) == 1 and "input 'value'" in named[0] and "runs uncached" in named[0], (name, report["warnings"])
            assert report["keys"][f"use_{name}-0"] is None
    # The message says where in the input the problem sits, and what it is.
    said = {n: next(w for w in reports[0]["warnings"] if f"'use_{n}'" in w) for n in UNHASHABLE}
    assert "value.lock: TypeError: cannot pickle '_thread.lock'" in said["lock_holder"]
    assert "value.<closure value>: TypeError: cannot pickle '_thread.lock'" in said["lock_lambda"]
    assert "value.handle: TypeError: cannot pickle '_io.TextIOWrapper'" in said["open_file"]
    assert "__getstate__ gives a different state at each call" in said["drifting_state"]
    # What a pickle drops does not hide what it keeps: other n, other key.
    assert reports[0]["keys"]["use_pickle_drops_state-0"] != reports[0]["keys"]["use_pickle_drops_state_9-0"]
    assert not [w for w in reports[0]["warnings"] if any(f"use_{n}'" in w for n in HASHABLE)]

    rerun = history_states(store)[1]
    hits = [n for n in HASHABLE if rerun[f"use_{n}-0"] == "Cached"]
    # A silent miss: a task that did not hit on the rerun and was not warned about.
    warned = {n for n in UNHASHABLE + HASHABLE if any(f"task 'use_{n}'" in w for w in reports[1]["warnings"])}
    silent = [n for n in UNHASHABLE + HASHABLE if rerun[f"use_{n}-0"] != "Cached" and n not in warned]
    assert silent == [], silent
    assert hits == HASHABLE, rerun
    scenario_report(
        23, "un-tokenizable and non-deterministic inputs",
        f"silent misses {len(silent)}; named warnings {len(UNHASHABLE)}/{len(UNHASHABLE)} per run; "
        f"hashable inputs hit {len(hits)}/{len(HASHABLE)} (100%) on the rerun",
        backend="local", n=len(UNHASHABLE) + len(HASHABLE), seed=2,
    )
