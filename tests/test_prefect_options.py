"""Prefect 3's task and flow options: run names, result_storage_key,
cache_result_in_memory, hooks with Prefect's signatures, runner classes and
the setting that selects Prefect's default cache policy."""

from __future__ import annotations

import inspect
import threading

import dask.config
import pytest

from daskflow import INPUTS, NONE, DaskTaskRunner, flow, task
from daskflow.exceptions import InvalidOptionError
from daskflow.pipeline.hooks import HookList
from daskflow.pipeline.task import Task
from daskflow.runners.local import SequentialTaskRunner, ThreadPoolTaskRunner

from .conftest import wait_until


def _task_runs(state):
    return sorted(state.run.task_runs.values(), key=lambda r: r.seq)


# ------------------------------------------------------------------ run names
def test_task_run_name_template_and_callables():
    @task(task_run_name="fit-{c}-{fold}")
    def fit(c, fold=0):
        return c

    @task(task_run_name=lambda: "plain")
    def plain(x):
        return x

    @task(task_run_name=lambda parameters: f"given-{parameters['x']}")
    def given(x):
        return x

    @flow(task_runner=SequentialTaskRunner())
    def names():
        return fit(0.5), fit(2, fold=3), plain(1), given(7)

    state = names(return_state=True)
    assert state.result() == (0.5, 2, 1, 7)
    assert [r.name for r in _task_runs(state)] == ["fit-0.5-0", "fit-2-3", "plain", "given-7"]


def test_a_hostile_parameter_value_cannot_break_names():
    @task(task_run_name="load-{path}")
    def load(path):
        return len(path)

    @flow(task_runner=SequentialTaskRunner())
    def hostile():
        return load("a\nb\x1b[31m\u202e" + "x" * 500)

    state = hostile(return_state=True)
    [record] = _task_runs(state)
    assert record.name.startswith("load-a?b?[31m?x")
    assert len(record.name) == 200 and "\n" not in record.name


def test_task_run_name_missing_field_names_it_and_the_parameters():
    @task(task_run_name="fit-{alpha}")
    def fit(c):
        return c

    @flow(task_runner=SequentialTaskRunner())
    def bad():
        return fit(1)

    state = bad(return_state=True)
    assert state.is_failed()
    error = state.result(raise_on_failure=False)
    assert isinstance(error, InvalidOptionError)
    assert "{alpha}" in str(error) and "['c']" in str(error)


def test_flow_run_name_template_callable_with_options_and_missing_field():
    @flow(flow_run_name="train-{day}", task_runner=SequentialTaskRunner())
    def train(day: str, n: int = 1):
        return n

    state = train("monday", return_state=True)
    assert state.run.name == "train-monday"
    assert train.with_options(flow_run_name=lambda: "by-callable")("x", return_state=True).run.name == "by-callable"
    with pytest.raises(InvalidOptionError, match=r"\{week\}.*\['day', 'n'\]"):  # Prefect raises too, even with return_state
        train.with_options(flow_run_name="train-{week}")("x", return_state=True)
    with pytest.raises(InvalidOptionError, match="flow_run_name"):
        flow(flow_run_name=3)(lambda: None)


# ---------------------------------------------------------- result storage key
def test_result_storage_key_decides_the_entry_across_runs_and_tasks():
    calls = []

    @task(result_storage_key="model-{parameters[name]}")
    def train(name, seed):
        calls.append((name, seed))
        return f"{name}/{seed}"

    @task(result_storage_key="model-{parameters[name]}", cache_policy=INPUTS)  # the key wins, as in Prefect
    def other(name):
        calls.append(("other", name))
        return "other"

    @flow(task_runner=SequentialTaskRunner())
    def models(seed):
        return train("a", seed), train("b", seed), other("a")

    assert models(1) == ("a/1", "b/1", "a/1")  # other("a") reads train("a")'s entry
    assert models(2) == ("a/1", "b/1", "a/1")  # the same keys: loaded, whatever the seed
    assert calls == [("a", 1), ("b", 1)]


def test_result_storage_key_fields_and_errors():
    @task(result_storage_key="{flow_run.name}-{task_run.name}")
    def step(x):
        return x

    @flow(flow_run_name="run-{x}", task_runner=SequentialTaskRunner())
    def runs(x):
        return step(x)

    assert runs(1) == 1
    assert runs(2) == 2  # another flow run name: another key
    missing = step.with_options(result_storage_key="{parameters[y]}")

    @flow(task_runner=SequentialTaskRunner())
    def bad():
        return missing(1)

    state = bad(return_state=True)
    assert state.is_failed() and "'y'" in state.message and "['x']" in state.message
    with pytest.raises(InvalidOptionError, match="persisted"):
        task(result_storage_key="k", persist_result=False)(lambda: 1)


# ----------------------------------------------------- cache_result_in_memory
def test_cache_result_in_memory_false_fetches_the_value_each_time(processes_cluster):
    @task
    def kept():
        return [1, 2]

    # On a cluster each fetch deserialises a new copy: only a kept value is the same object.
    @flow(task_runner=DaskTaskRunner(address=processes_cluster.scheduler_address))
    def values():
        held = kept.submit()
        fresh = kept.with_options(cache_result_in_memory=False).submit()
        return held.result() is held.result(), fresh.result() is fresh.result(), fresh.result()

    assert values() == (True, False, [1, 2])
    with pytest.raises(InvalidOptionError, match="cache_result_in_memory"):
        task(cache_result_in_memory="no")(lambda: 1)


# ----------------------------------------------------------------------- hooks
def test_hooks_get_prefects_arguments_and_decorators_add_hooks():
    events = []
    lock = threading.Lock()

    def note(*event):
        with lock:
            events.append(event)

    @task(on_running=lambda t, tr, s: note("task running", t.name, tr.name, s.name))
    def double(x):
        return 2 * x

    @double.on_completion
    def task_done(t, tr, s):
        note("task done", tr.parameters, tuple(tr.tags), s.name)
        tr.name = "changed"  # read-only: raises, is logged, changes nothing

    @flow(task_runner=ThreadPoolTaskRunner(2), on_running=lambda f, fr, s: note("flow running", f.name, fr.parameters, s.name))
    def doubled(x: int):
        return double(x)

    @doubled.on_completion
    def flow_done(f, fr, s):
        note("flow done", fr.state.name, s.name)

    assert isinstance(doubled.on_completion, HookList) and flow_done in doubled.on_completion
    state = doubled(4, return_state=True)
    assert state.is_completed() and state.result() == 8
    wait_until(lambda: len(events) == 4, message="all hooks")
    assert events[0] == ("flow running", "doubled", {"x": 4}, "Running")
    assert ("task running", "double", "double-0", "Running") in events
    assert ("task done", {"x": 4}, (), "Completed") in events
    assert events[-1] == ("flow done", "Completed", "Completed")
    [record] = _task_runs(state)
    assert record.name == "double-0" and record.state.is_completed()


def test_flow_hooks_for_failure_and_a_raising_hook_keeps_the_state():
    seen = []

    @flow(task_runner=SequentialTaskRunner())
    def broken():
        raise ValueError("boom")

    @broken.on_failure
    def first(f, fr, s):
        raise RuntimeError("hook bug")

    @broken.on_failure
    def second(f, fr, s):
        seen.append((f.name, fr.name, s.name))

    state = broken(return_state=True)
    assert state.is_failed() and "boom" in state.message
    assert seen == [("broken", state.run.name, "Failed")]


# -------------------------------------------------------------- runner classes
@pytest.mark.parametrize("runner_class", [ThreadPoolTaskRunner, SequentialTaskRunner, DaskTaskRunner])
def test_a_runner_class_is_made_into_a_runner(runner_class):
    @flow(task_runner=runner_class)
    def body():
        return 1

    assert type(body.task_runner) is runner_class
    if runner_class is not DaskTaskRunner:  # that one would start a LocalCluster of its own
        assert body() == 1
    with pytest.raises(InvalidOptionError, match="DaskTaskRunner"):
        flow(task_runner=int)(lambda: None)


# ------------------------------------------------------ default cache policy
def test_prefect_default_policy_caches_persisted_results_within_a_run_only():
    """``default-policy: prefect`` is Prefect 3's rule: only a task that persists its
    result (it or its flow asks) is cached, and then only within one flow run."""
    calls = []

    @task
    def work(x):
        calls.append(("work", x))
        return x + 1

    @task(persist_result=True)
    def kept(x):
        calls.append(("kept", x))
        return x + 1

    @flow(task_runner=SequentialTaskRunner())
    def twice(x):
        return work(x), work(x), kept(x), kept(x)

    @flow(task_runner=SequentialTaskRunner(), persist_result=True)
    def flow_asks(x):
        return work(x), work(x)

    with dask.config.set({"daskflow.cache.default-policy": "prefect"}):
        state = twice(1, return_state=True)
        assert state.result() == (2, 2, 2, 2)
        assert calls == [("work", 1), ("work", 1), ("kept", 1)]  # only the persisted task hit, within the run
        assert [r.state.name for r in _task_runs(state)] == ["Completed", "Completed", "Completed", "Cached"]
        calls.clear()
        assert twice(1) == (2, 2, 2, 2)
        assert calls == [("work", 1), ("work", 1), ("kept", 1)]  # a new flow run recomputes
        calls.clear()
        assert flow_asks(3) == (4, 4)
        assert calls == [("work", 3)]  # the flow's persist_result=True reaches its tasks
    calls.clear()
    assert twice(5) == (6, 6, 6, 6)
    assert twice(5) == (6, 6, 6, 6)
    assert calls == [("work", 5), ("kept", 5)]  # daskflow's default: every repeat hits, reruns too
    with dask.config.set({"daskflow.cache.default-policy": "sometimes"}):
        state = twice(9, return_state=True)
    assert state.is_failed() and "'sometimes'" in state.message and "prefect" in state.message


def test_cache_policy_none_means_no_cache_as_in_prefect():
    calls = []

    def work(x):
        calls.append(x)
        return x

    plain = task(work)
    off = task(cache_policy=None)(work)

    @flow(task_runner=SequentialTaskRunner())
    def body(t, x):
        return t(x)

    for t in (off, plain.with_options(cache_policy=None), off.with_options(retries=1)):
        calls.clear()
        body(t, 11)
        body(t, 11)
        assert calls == [11, 11], t  # never reused, in a run or across runs
    calls.clear()
    kept = plain.with_options(retries=1)  # left out stays left out: the default policy
    body(kept, 12)
    body(kept, 12)
    assert calls == [12]
    assert off.cache_policy is NONE and plain.cache_policy is None and repr(inspect.signature(Task).parameters["cache_policy"].default) == "NotSet"


# ------------------------------------------------------ default task runner
def test_task_runner_setting_picks_the_runner_of_a_flow_without_one():
    seen = []

    @task(cache_policy=NONE)
    def where():
        seen.append(threading.current_thread().name)
        return threading.current_thread().name

    @flow
    def body():
        return where(), threading.current_thread().name

    with dask.config.set({"daskflow.task-runner": "threads"}):
        task_thread, body_thread = body()
        assert task_thread != body_thread and task_thread.startswith("daskflow-task")
    with dask.config.set({"daskflow.task-runner": "Sequential"}):
        task_thread, body_thread = body()
        assert task_thread == body_thread
    with dask.config.set({"daskflow.task-runner": "fast"}):
        with pytest.raises(InvalidOptionError, match=r"'fast'.*threads.*DASK_DASKFLOW__TASK_RUNNER"):
            body()
    assert len(seen) == 2  # the bad setting failed before any task ran


def test_task_runner_dask_uses_the_scheduler_address_setting(processes_cluster):
    import os

    @task(cache_policy=NONE)
    def pid():
        return os.getpid()

    @flow
    def body():
        return pid()

    with dask.config.set({"daskflow.task-runner": "dask", "scheduler-address": processes_cluster.scheduler_address}):
        state = body(return_state=True)
    assert state.is_completed(), state.message
    from distributed import Client

    with Client(processes_cluster.scheduler_address, set_as_default=False) as client:
        pids = set(client.run(os.getpid).values())
    assert state.result() in pids  # it ran on the named cluster, not on a LocalCluster of its own


# ---------------------------------------------------------------------- Dask
def test_names_and_hooks_on_a_dask_cluster(processes_cluster):
    events = []

    @task(task_run_name="square-{x}", on_running=lambda t, tr, s: events.append(("running", tr.name)))
    def square(x):
        return x * x

    @square.on_completion
    def done(t, tr, s):
        events.append(("done", tr.name, tr.parameters["x"], s.name))

    @flow(flow_run_name="squares-{n}", task_runner=DaskTaskRunner(address=processes_cluster.scheduler_address))
    def squares(n: int):
        return [f.result() for f in square.map(range(n))]

    state = squares(3, return_state=True)
    assert state.result() == [0, 1, 4] and state.run.name == "squares-3"
    assert [r.name for r in _task_runs(state)] == ["square-0", "square-1", "square-2"]
    wait_until(lambda: len(events) == 6, message="hooks")
    assert {e for e in events if e[0] == "done"} == {("done", f"square-{i}", i, "Completed") for i in range(3)}
    assert {e for e in events if e[0] == "running"} == {("running", f"square-{i}") for i in range(3)}
