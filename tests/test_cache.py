"""Persisted results and input-keyed caching, end to end through flows.

Executions are counted in files (tasks may run in worker processes), and stored
entries are inspected and damaged through the store itself.
"""

from __future__ import annotations

import copy
import enum
import hashlib
import json
import pickle
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import dask
import pytest

from daskflow import (
    INPUTS,
    NONE,
    RUN_ID,
    TASK_SOURCE,
    CacheKeyError,
    CacheKeyWarning,
    SerializationError,
    Store,
    flow,
    task,
    task_input_hash,
)
from daskflow.storage import register_serializer

from .tasks import combine, counted, runs_of

SOME_RUNNERS = ["sequential", "concurrent", "dask-threads", "dask-processes", "dask-cli"]


def run(flow_obj, runner, *args, **kwargs):
    return flow_obj.with_options(task_runner=runner)(*args, return_state=True, **kwargs)


@flow
def diamond(marker_dir: str, x: int = 1, y: int = 2):
    """a(x) and b(y) feed c; the flow returns c."""
    a = counted.submit(marker_dir, "a", x)
    b = counted.submit(marker_dir, "b", y)
    return combine.submit(marker_dir, "c", a, b)


def states(state) -> dict[str, str]:
    return {tr.name: tr.state.name for tr in state.run.task_runs.values()}


def entries(store_root: Path) -> list[Path]:
    return sorted(store_root.glob("results/*/*/*.json"))


def entry_of(state, task_run_name: str) -> tuple[Store, str]:
    record = state.run.task_run(task_run_name)
    assert record.cache_key, f"{task_run_name} has no cache key"
    return Store(state.run.result_storage), record.cache_key


@pytest.mark.parametrize("runner", SOME_RUNNERS, indirect=True)
def test_rerun_is_fully_cached_and_runs_nothing(runner, tmp_path, _result_storage):
    first = run(diamond, runner, str(tmp_path))
    assert first.result() == 3
    assert set(states(first).values()) == {"Completed"}
    assert len(entries(_result_storage)) == 3
    second = run(diamond, runner, str(tmp_path))
    assert second.result() == 3
    assert set(states(second).values()) == {"Cached"}
    assert [runs_of(str(tmp_path), n) for n in "abc"] == [1, 1, 1]
    assert all(tr.cache_hit and tr.result_url for tr in second.run.task_runs.values())


@pytest.mark.parametrize("runner", ["sequential", "dask-processes"], indirect=True)
def test_changed_input_reruns_exactly_that_task_and_its_downstream(runner, tmp_path):
    run(diamond, runner, str(tmp_path), 1, 2)
    state = run(diamond, runner, str(tmp_path), 1, 5)
    assert state.result() == 6
    assert states(state) == {"counted-0": "Cached", "counted-1": "Completed", "combine-0": "Completed"}
    assert [runs_of(str(tmp_path), n) for n in "abc"] == [1, 2, 2]


def _write_module(path: Path, body: str) -> None:
    path.write_text(
        "from daskflow import flow, task, SequentialTaskRunner\n"
        "from pathlib import Path\n"
        "import os, json, sys\n\n"
        "def mark(name):\n"
        "    with open(Path(os.environ['MARKS'], name), 'a') as f:\n"
        "        f.write('x\\n')\n\n"
        "@task\n"
        "def load(n):\n"
        "    mark('load')\n"
        "    return list(range(n))\n\n"
        "@task\n"
        "def transform(xs):\n"
        "    mark('transform')\n"
        f"    {body}\n\n"
        "@task\n"
        "def report(xs):\n"
        "    mark('report')\n"
        "    return sum(xs)\n\n"
        "@task\n"
        "def side(n):\n"
        "    mark('side')\n"
        "    return n\n\n"
        "@flow(task_runner=SequentialTaskRunner())\n"
        "def pipeline(n: int = 4):\n"
        "    data = load.submit(n)\n"
        "    side.submit(n)\n"
        "    return report.submit(transform.submit(data))\n\n"
        "if __name__ == '__main__':\n"
        "    state = pipeline(return_state=True)\n"
        "    print(json.dumps({'value': state.result(),"
        " 'states': {t.name: t.state.name for t in state.run.task_runs.values()}}))\n"
    )


def _run_script(script: Path, store: Path, marks: Path) -> dict:
    import os
    import subprocess
    import sys

    env = {**os.environ, "MARKS": str(marks), "DASK_DASKFLOW__STORAGE__URL": str(store), "DASK_DASKFLOW__LOGGING__CONSOLE": "false"}
    out = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120, cwd=script.parent, check=False)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_changed_task_body_reruns_that_task_and_downstream_across_processes(tmp_path):
    """Each run is a fresh interpreter, as after an edit: keys must be stable
    across processes, and only the edited task and what depends on it rerun."""
    script, store, marks = tmp_path / "job.py", tmp_path / "store", tmp_path / "marks"
    marks.mkdir()
    _write_module(script, "return [x * 2 for x in xs]")
    assert _run_script(script, store, marks)["value"] == 12
    # Comments and formatting are not the code: still cached.
    _write_module(script, "# doubles\n    return [ x*2  for x in xs ]  # a comment")
    again = _run_script(script, store, marks)
    assert set(again["states"].values()) == {"Cached"}
    _write_module(script, "return [x * 3 for x in xs]")
    changed = _run_script(script, store, marks)
    assert changed["value"] == 18
    assert changed["states"] == {"load-0": "Cached", "side-0": "Cached", "transform-0": "Completed", "report-0": "Completed"}
    counts = {p.name: len(p.read_text().splitlines()) for p in marks.iterdir()}
    assert counts == {"load": 1, "side": 1, "transform": 2, "report": 2}


def test_a_fully_cached_flow_loads_only_what_it_returns(tmp_path):
    from daskflow import SequentialTaskRunner

    loads = []
    register_serializer("counting", pickle.dumps, lambda data: loads.append(1) or pickle.loads(data))

    @task(result_serializer="counting")
    def step(x):
        return x + 1

    @flow(task_runner=SequentialTaskRunner())
    def chain(n: int):
        value = step.submit(0)
        for _ in range(n - 1):
            value = step.submit(value)
        return value

    assert chain(5) == 5
    loads.clear()
    state = chain(5, return_state=True)
    assert state.result() == 5
    assert set(states(state).values()) == {"Cached"}
    assert len(loads) == 1  # the returned value only; none of the four intermediates


@pytest.mark.parametrize("runner", ["sequential"], indirect=True)
def test_opting_out_persist_result_false_and_cache_policy_none(runner, tmp_path, _result_storage):
    @task(persist_result=False)
    def volatile(marker_dir: str):
        return counted.fn(marker_dir, "volatile", 1)

    @task(cache_policy=NONE)
    def uncached(marker_dir: str):
        return counted.fn(marker_dir, "uncached", 2)

    @flow
    def pipeline(marker_dir: str):
        return volatile(marker_dir) + uncached(marker_dir)

    for _ in range(2):
        assert run(pipeline, runner, str(tmp_path)).result() == 3
    assert runs_of(str(tmp_path), "volatile") == 2 and runs_of(str(tmp_path), "uncached") == 2
    # NONE is still persisted (one entry per run), persist_result=False never is.
    manifests = [json.loads(p.read_text()) for p in entries(_result_storage)]
    assert [m["meta"]["task"] for m in manifests] == ["uncached", "uncached"]


@pytest.mark.parametrize("runner", ["sequential"], indirect=True)
def test_policies_inputs_minus_an_argument_and_run_id(runner, tmp_path):
    @task(cache_policy=INPUTS - "verbose" + TASK_SOURCE)
    def quiet(marker_dir: str, x: int, verbose: bool = False):
        return counted.fn(marker_dir, "quiet", x)

    @task(cache_policy=RUN_ID + INPUTS)
    def per_run(marker_dir: str, x: int):
        return counted.fn(marker_dir, "per_run", x)

    @flow
    def pipeline(marker_dir: str, verbose: bool):
        return quiet(marker_dir, 1, verbose=verbose) + per_run(marker_dir, 1) + per_run(marker_dir, 1)

    run(pipeline, runner, str(tmp_path), False)
    state = run(pipeline, runner, str(tmp_path), True)
    assert runs_of(str(tmp_path), "quiet") == 1  # verbose is not part of the key
    # RUN_ID: reused within a run (the second call of a run is a hit only once the
    # first has committed, so it may run too), never across runs.
    assert runs_of(str(tmp_path), "per_run") >= 2
    assert state.run.task_run("per_run-0").state.name == "Completed"


@pytest.mark.parametrize("runner", ["sequential", "dask-processes"], indirect=True)
def test_cache_key_fn_and_task_input_hash(runner, tmp_path):
    @task(cache_key_fn=lambda context, parameters: f"by-name-{parameters['name']}")
    def named(marker_dir: str, name: str, noise: int):
        return counted.fn(marker_dir, "named", noise)

    @task(cache_key_fn=task_input_hash)
    def hashed(marker_dir: str, x):
        return counted.fn(marker_dir, "hashed", x)

    @flow
    def pipeline(marker_dir: str, noise: int):
        first = named.submit(marker_dir, "model", noise)
        return hashed.submit(marker_dir, first)  # a future: hashed as its task's key

    assert run(pipeline, runner, str(tmp_path), 1).result() == 1
    state = run(pipeline, runner, str(tmp_path), 2)
    assert state.result() == 1  # same name: the stored result, noise ignored
    assert set(states(state).values()) == {"Cached"}
    assert runs_of(str(tmp_path), "named") == 1 and runs_of(str(tmp_path), "hashed") == 1


@pytest.mark.parametrize("runner", ["sequential"], indirect=True)
def test_expired_entries_are_recomputed(runner, tmp_path, _result_storage):
    @task(cache_expiration=timedelta(seconds=0.2))
    def short_lived(marker_dir: str):
        return counted.fn(marker_dir, "short", 1)

    @task(cache_expiration=3600)
    def long_lived(marker_dir: str):
        return counted.fn(marker_dir, "long", 2)

    @flow
    def pipeline(marker_dir: str):
        return short_lived(marker_dir) + long_lived(marker_dir)

    first = run(pipeline, runner, str(tmp_path))
    store, key = entry_of(first, "short_lived-0")
    expires = store.read_manifest(key).expires
    assert expires is not None
    while time.time() < expires:  # waiting for a clock, not for a race
        time.sleep(expires - time.time())
    second = run(pipeline, runner, str(tmp_path))
    assert states(second) == {"short_lived-0": "Completed", "long_lived-0": "Cached"}
    assert runs_of(str(tmp_path), "short") == 2 and runs_of(str(tmp_path), "long") == 1


@pytest.mark.parametrize("runner", ["sequential", "dask-processes"], indirect=True)
def test_refresh_cache_per_task_per_run_and_global(runner, tmp_path):
    import uuid

    @task
    def fresh():
        return uuid.uuid4().hex

    @flow
    def pipeline():
        return fresh()

    first = run(pipeline, runner).result()
    assert run(pipeline, runner).result() == first
    refreshed = fresh.with_options(refresh_cache=True)

    @flow
    def refreshing():
        return refreshed()

    second = run(refreshing, runner).result()
    assert second != first
    assert run(pipeline, runner).result() == second  # the entry was overwritten
    third = run(pipeline.with_options(refresh_cache=True), runner).result()
    assert third != second
    with dask.config.set({"daskflow.cache.refresh": True}):
        fourth = run(pipeline, runner).result()
    assert fourth != third
    assert run(pipeline, runner).result() == fourth


def _corrupt(store: Store, key: str, how: str) -> None:
    manifest = store.read_manifest(key)
    payload = store.payload_path(manifest)
    data = store.get(payload)
    if how == "truncated":
        store.put(payload, data[: len(data) // 2])
    elif how == "flipped":
        store.put(payload, data[:-1] + bytes([data[-1] ^ 0x01]))
    elif how == "empty":
        store.put(payload, b"")
    elif how == "garbage":
        store.put(store.manifest_path(key), b"{not json")
    elif how == "manifest-missing":
        store.delete(store.manifest_path(key))
    else:
        raise AssertionError(how)


@pytest.mark.parametrize("how", ["truncated", "flipped", "empty", "garbage", "manifest-missing"])
@pytest.mark.parametrize("runner", ["sequential", "dask-processes"], indirect=True)
def test_a_corrupted_returned_entry_is_detected_and_recomputed(runner, tmp_path, how):
    run(diamond, runner, str(tmp_path))
    store, key = entry_of(run(diamond, runner, str(tmp_path)), "combine-0")
    _corrupt(store, key, how)
    state = run(diamond, runner, str(tmp_path))
    assert state.result() == 3
    assert runs_of(str(tmp_path), "c") == 2  # recomputed once
    assert runs_of(str(tmp_path), "a") == 1 and runs_of(str(tmp_path), "b") == 1
    assert store.read_result(key) == 3  # and stored again, intact
    if how != "manifest-missing":
        assert store.list("quarantine")


@pytest.mark.parametrize("how", ["truncated", "flipped"])
@pytest.mark.parametrize("runner", ["sequential", "concurrent", "dask-processes"], indirect=True)
def test_a_corrupted_input_is_recomputed_for_the_task_that_needs_it(runner, tmp_path, how):
    first = run(diamond, runner, str(tmp_path))
    store, key_a = entry_of(first, "counted-0")
    _, key_c = entry_of(first, "combine-0")
    _corrupt(store, key_a, how)
    store.delete(store.manifest_path(key_c))  # c must run, and load a
    state = run(diamond, runner, str(tmp_path))
    assert state.result() == 3
    assert [runs_of(str(tmp_path), n) for n in "abc"] == [2, 1, 2]
    assert state.run.task_run("counted-0").state.name == "Completed"  # recomputed, no longer Cached
    assert store.read_result(key_a) == 1


def _set_signing_key(value):
    dask.config.set({"daskflow.storage.signing-key": value})


class signing_key:
    """Sets the signing key here and on the workers of a Dask runner (as a user
    sets DASK_DASKFLOW__STORAGE__SIGNING_KEY on every machine)."""

    def __init__(self, runner, value: str | None, workers: bool = True) -> None:
        self.address = getattr(runner, "address", None) if workers else None
        self.value = value

    def _everywhere(self, value):
        _set_signing_key(value)
        if self.address:
            from distributed import Client

            with Client(self.address) as client:
                client.run(_set_signing_key, value)

    def __enter__(self):
        self._everywhere(self.value)

    def __exit__(self, *exc):
        self._everywhere(None)


@pytest.mark.parametrize("runner", ["sequential", "dask-processes"], indirect=True)
def test_a_tampered_signed_pickle_is_never_loaded(runner, tmp_path):
    canary = tmp_path / "canary"

    class Evil:
        def __reduce__(self):
            return (Path.write_text, (canary, "pwned"))

    with signing_key(runner, "test-signing-key"):
        first = run(diamond, runner, str(tmp_path))
        store, key = entry_of(first, "combine-0")
        # The attacker can write the store but does not have the key: they swap the
        # payload and fix up size, digest and payload name in the manifest.
        evil = pickle.dumps(Evil())
        digest = hashlib.sha256(evil).hexdigest()
        manifest = json.loads(store.get(store.manifest_path(key)))
        manifest.update(size=len(evil), sha256=digest, payload=f"{key}.{digest[:16]}")
        store.put(f"{store.manifest_path(key).rsplit('/', 1)[0]}/{key}.{digest[:16]}", evil)
        store.put(store.manifest_path(key), json.dumps(manifest).encode())
        state = run(diamond, runner, str(tmp_path))
    assert state.result() == 3
    assert not canary.exists()
    assert runs_of(str(tmp_path), "c") == 2
    assert store.list("quarantine")


def test_a_worker_without_the_signing_key_fails_the_task_clearly(processes_cluster, tmp_path):
    from daskflow import DaskTaskRunner

    runner = DaskTaskRunner(address=processes_cluster.scheduler_address)
    with signing_key(runner, "driver-only-key", workers=False):
        state = run(diamond, runner, str(tmp_path))
    assert state.name == "Failed"
    error = state.run.task_run("counted-0").error
    assert "no signing key" in error and "DASK_DASKFLOW__STORAGE__SIGNING_KEY" in error
    assert "driver-only-key" not in error
    assert runs_of(str(tmp_path), "a") == 1  # it ran; the entry was refused, not written unsigned


@pytest.mark.parametrize("runner", ["sequential", "dask-processes"], indirect=True)
def test_failures_are_never_cached(runner, tmp_path):
    flag = tmp_path / "fail-now"
    flag.write_text("1")

    @task
    def fragile(path: str):
        if Path(path).exists():
            raise RuntimeError("failing on purpose")
        return "ok"

    @flow
    def pipeline(path: str):
        return fragile.submit(path)

    assert run(pipeline, runner, str(flag)).name == "Failed"
    flag.unlink()
    state = run(pipeline, runner, str(flag))
    assert state.result() == "ok" and states(state) == {"fragile-0": "Completed"}


@pytest.mark.parametrize("runner", ["sequential", "dask-processes"], indirect=True)
def test_an_unstorable_result_fails_the_task_with_the_remedy(runner, tmp_path, _result_storage):
    @task
    def locked():
        return threading.Lock()

    @flow
    def pipeline(marker_dir: str):
        bad = locked.submit()
        good = counted.submit(marker_dir, "good", 1)
        return bad, good

    state = run(pipeline, runner, str(tmp_path))
    assert state.name == "Failed"
    record = state.run.task_run("locked-0")
    assert record.state.name == "Failed"
    error = record.state.result(raise_on_failure=False)
    assert isinstance(error, SerializationError)
    assert "lock" in str(error).lower() and "persist_result=False" in str(error)
    assert state.run.task_run("counted-0").state.name == "Completed"
    assert len(entries(_result_storage)) == 1  # only the good one; nothing partial
    assert not list(_result_storage.rglob(".tmp-*"))


def test_a_non_tokenizable_input_warns_and_runs_uncached(tmp_path):
    from daskflow import SequentialTaskRunner

    lock = threading.Lock()

    @task
    def use(marker_dir: str, guard):
        return counted.fn(marker_dir, "use", 1)

    @flow(task_runner=SequentialTaskRunner())
    def pipeline(marker_dir: str):
        return use(marker_dir, lock)

    for _ in range(2):
        with pytest.warns(CacheKeyWarning, match=r"input 'guard'.*cache_key_fn"):
            assert pipeline(str(tmp_path)) == 1
    assert runs_of(str(tmp_path), "use") == 2


def test_a_non_tokenizable_input_is_an_error_when_caching_was_asked_for(tmp_path):
    from daskflow import SequentialTaskRunner

    @task(cache_policy=INPUTS + TASK_SOURCE)
    def use(marker_dir: str, guard):
        return counted.fn(marker_dir, "use", 1)

    @flow(task_runner=SequentialTaskRunner(), validate_parameters=False)
    def pipeline(marker_dir: str, guard):
        return use(marker_dir, guard)

    state = pipeline(str(tmp_path), threading.Lock(), return_state=True)
    assert state.name == "Failed"
    with pytest.raises(CacheKeyError, match=r"input 'guard'"):
        state.result()
    assert runs_of(str(tmp_path), "use") == 0


def test_frozenset_inputs_hash_the_same_in_every_process(tmp_path):
    """dask hashes a frozenset through its pickle, whose order follows the salted
    string hash: daskflow normalises it so keys agree across interpreters."""
    import os
    import subprocess
    import sys

    code = (
        "from daskflow.pipeline.cache import _normalise\n"
        "from dask.base import tokenize\n"
        "print(tokenize(_normalise({'s': frozenset('abcdefgh'), 't': {'x', 'y', 'z'}}), ensure_deterministic=True))\n"
    )
    tokens = {
        subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONHASHSEED": seed},
                       capture_output=True, text=True, check=True).stdout
        for seed in ("1", "2", "3")
    }
    assert len(tokens) == 1


def test_bad_storage_options_fail_when_the_decorator_runs():
    from daskflow.exceptions import InvalidOptionError

    with pytest.raises(InvalidOptionError, match="result_storage"):
        task(result_storage=42)(lambda: 1)
    with pytest.raises(InvalidOptionError, match="unknown result serializer 'yaml'"):
        task(result_serializer="yaml")(lambda: 1)
    with pytest.raises(InvalidOptionError, match="cache_policy"):
        task(cache_policy="inputs")(lambda: 1)
    with pytest.raises(InvalidOptionError, match="caching needs a persisted result"):
        task(persist_result=False, cache_policy=INPUTS)(lambda: 1)
    with pytest.raises(InvalidOptionError, match="cache_expiration"):
        task(cache_expiration=-5)(lambda: 1)


def test_an_unwritable_store_fails_the_run_before_any_task(tmp_path):
    import os

    from daskflow import SequentialTaskRunner
    from daskflow.exceptions import StorageError

    if os.geteuid() == 0:
        blocker = tmp_path / "a-file"
        blocker.write_text("not a folder")
        url = str(blocker / "store")
    else:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        url = str(locked / "store")

    @flow(task_runner=SequentialTaskRunner(), result_storage=url)
    def pipeline(marker_dir: str):
        return counted(marker_dir, "never", 1)

    state = pipeline(str(tmp_path), return_state=True)
    assert state.name == "Failed"
    error = state.result(raise_on_failure=False)
    assert isinstance(error, StorageError)
    assert url in str(error) and error.operation == "write"
    assert runs_of(str(tmp_path), "never") == 0
    assert not state.run.task_runs


def test_a_memory_store_is_refused_when_tasks_run_in_other_processes(processes_cluster, tmp_path):
    from daskflow import DaskTaskRunner
    from daskflow.exceptions import InvalidOptionError

    @flow(task_runner=DaskTaskRunner(address=processes_cluster.scheduler_address), result_storage="memory://refused")
    def pipeline(marker_dir: str):
        return counted(marker_dir, "never", 1)

    state = pipeline(str(tmp_path), return_state=True)
    assert state.name == "Failed"
    with pytest.raises(InvalidOptionError, match="memory of this process"):
        state.result()
    assert runs_of(str(tmp_path), "never") == 0


class _Counted:
    """Counts how often it is hashed for a cache key."""

    hashed = 0

    def __dask_tokenize__(self):
        type(self).hashed += 1
        return "counted-input"


def test_a_shared_input_is_hashed_once_per_map(tmp_path):
    from daskflow import SequentialTaskRunner, unmapped

    @task
    def use(i: int, shared) -> int:
        return i

    @flow(task_runner=SequentialTaskRunner(), validate_parameters=False)
    def pipeline(shared):
        return use.map(range(20), unmapped(shared)).result()

    shared = _Counted()
    assert pipeline(shared) == list(range(20))
    assert _Counted.hashed == 1  # not 20: a big array passed to every task is hashed once


def test_a_script_and_an_import_of_it_share_keys(tmp_path):
    """``python job.py`` runs the tasks as ``__main__``; a tool importing ``job``
    (as ``daskflow run job.py:flow`` will) must find the same entries."""
    import os
    import subprocess
    import sys

    (tmp_path / "job.py").write_text(
        "from daskflow import flow, task, SequentialTaskRunner\n"
        "@task\n"
        "def double(x):\n"
        "    return 2 * x\n"
        "@flow(task_runner=SequentialTaskRunner())\n"
        "def pipeline(x: int = 3):\n"
        "    return double(x)\n"
        "if __name__ == '__main__':\n"
        "    print(pipeline(return_state=True).run.state_counts())\n"
    )
    env = {**os.environ, "DASK_DASKFLOW__STORAGE__URL": str(tmp_path / "store"), "DASK_DASKFLOW__LOGGING__CONSOLE": "false"}
    as_script = subprocess.run([sys.executable, "job.py"], cwd=tmp_path, env=env, capture_output=True, text=True, check=True)
    assert "Completed" in as_script.stdout
    imported = subprocess.run(
        [sys.executable, "-c", "import job; print(job.pipeline(return_state=True).run.state_counts())"],
        cwd=tmp_path, env=env, capture_output=True, text=True, check=True,
    )
    assert imported.stdout.strip() == "{'Cached': 1}"


# Classes of an ordinary (imported) module: their instances must hash the same in
# every process too, sets of strings in their state included.
@dataclass(frozen=True)
class Settings:
    name: str
    tags: frozenset


class Tagged:
    def __init__(self, labels, mode):
        self.labels = labels
        self.mode = mode


class Mode(enum.Enum):
    FAST = "fast"
    SLOW = "slow"


SAMPLES = {
    "dataclass": Settings("s", frozenset({"train", "eval", "test"})),
    "plain": Tagged({"a", "b", "c", "d"}, Mode.SLOW),
    "keyed": {Mode.FAST: Settings("k", frozenset({"x", "y"}))},
}


@pytest.mark.slow
def test_instances_of_an_imported_modules_classes_hash_the_same_in_every_process():
    import os
    import subprocess
    import sys

    from daskflow.pipeline.cache import _normalise

    code = (
        "import json\n"
        "from dask.base import tokenize\n"
        "from daskflow.pipeline.cache import _normalise\n"
        "from tests.test_cache import SAMPLES\n"
        "print(json.dumps({k: tokenize(_normalise(v), ensure_deterministic=True) for k, v in SAMPLES.items()}))\n"
    )
    here = {k: dask.base.tokenize(_normalise(v), ensure_deterministic=True) for k, v in SAMPLES.items()}
    repo = Path(__file__).resolve().parent.parent
    for seed in ("1", "2", "3"):
        out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONHASHSEED": seed}, cwd=repo,
                             capture_output=True, text=True, check=True).stdout
        assert json.loads(out) == here, seed


def test_objects_hash_by_class_and_state():
    """Equal state, equal token; any field changed, another token; plain data as before."""
    import collections
    import functools
    import re

    from daskflow.pipeline.cache import _normalise

    def token(value):
        return dask.base.tokenize(_normalise(value), ensure_deterministic=True)

    class Slotted:
        __slots__ = ("a", "b")

        def __init__(self, a, b):
            self.a, self.b = a, b

    class Rebuilt:  # its pickle keeps n only: it hashes by n (what a worker process receives)
        def __init__(self, n):
            self.n, self.lock = n, threading.Lock()

        def __reduce__(self):
            return (Rebuilt, (self.n,))

    class Node:
        def __init__(self, name, parent=None):
            self.name, self.parent, self.children = name, parent, []

    pairs = [
        (Settings("a", frozenset("xy")), Settings("a", frozenset("xz"))),
        (Tagged({"a"}, Mode.FAST), Tagged({"a"}, Mode.SLOW)),
        (Slotted(1, "x"), Slotted(1, "y")),
        (Rebuilt(1), Rebuilt(2)),
        ({Mode.FAST: 1}, {Mode.SLOW: 1}),
        (functools.partial(int, base=2), functools.partial(int, base=8)),
        (collections.OrderedDict(a=1, b=2), collections.OrderedDict(b=2, a=1)),  # order counts there
        (collections.defaultdict(list, a=[1]), collections.defaultdict(list, a=[2])),
        (ValueError("bad", 3), ValueError("bad", 4)),
        (re.compile("a+"), re.compile("a+", re.I)),  # pickled through copyreg's table
    ]
    for same, other in pairs:
        assert token(same) == token(copy.deepcopy(same)), same
        assert token(same) != token(other), (same, other)
    assert token(Settings) != token(Tagged) and token(Mode.FAST) != token("fast")

    root = Node("root")
    root.children.append(Node("leaf", root))  # a parent pointer: a cycle
    assert token(root) == token(copy.deepcopy(root))

    def make(k):
        return lambda x: x * k

    assert token(make(2)) == token(make(2)) != token(make(3))  # a closure's values count

    plain = {"a": [1, 2.5, (3, "x")], "b": None, (1, "t"): b"raw"}
    assert _normalise(plain) == plain  # plain data is hashed exactly as before


def test_a_non_tokenizable_part_is_named_in_the_warning(tmp_path):
    from daskflow import SequentialTaskRunner

    class Holder:
        def __init__(self):
            self.lock = threading.Lock()

    @task
    def use(marker_dir: str, config):
        return counted.fn(marker_dir, "use", 1)

    @flow(task_runner=SequentialTaskRunner(), validate_parameters=False)
    def pipeline(marker_dir: str, config):
        return use(marker_dir, config)

    with pytest.warns(CacheKeyWarning, match=r"task 'use': input 'config' .*config\['paths'\]\[1\]\.lock: TypeError: cannot pickle"):
        assert pipeline(str(tmp_path), {"paths": ["a", Holder()]}) == 1
