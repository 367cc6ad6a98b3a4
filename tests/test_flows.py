"""The same flows against every runner: in-process, Dask threads, Dask processes,
and a ``dask scheduler`` + two ``dask worker`` processes."""

from __future__ import annotations

import logging
import time

import pytest

from daskflow import (
    ParameterValidationError,
    StateType,
    TaskTimeoutError,
    UpstreamFailedError,
    as_completed,
    flow,
    get_run_logger,
    task,
    unmapped,
    wait,
)
from daskflow.exceptions import MappingLengthMismatch, MissingContextError

from .tasks import add, chatty, describe, fail, flaky, sleepy, spin, stamp, total, touch


def run(flow_obj, runner, *args, **kwargs):
    """Run ``flow_obj`` on ``runner`` and return its final state."""
    return flow_obj.with_options(task_runner=runner)(*args, return_state=True, **kwargs)


def test_submit_map_and_direct_calls(runner):
    @flow
    def pipeline(n: int):
        first = add.submit(1)  # 2
        mapped = add.map(range(n), unmapped(first))  # i + 2
        direct = add(10, 5)  # a direct call returns the value
        return total(mapped), direct, first

    state = run(pipeline, runner, 4)
    assert state.is_completed(), state
    assert state.result() == (sum(i + 2 for i in range(4)), 15, 2)
    counts = state.run.state_counts()
    assert counts == {"Completed": 1 + 4 + 1 + 1}


def test_futures_inside_containers_are_resolved(runner):
    @flow
    def pipeline():
        a, b = add.submit(1), add.submit(2)
        return describe.submit({"list": [a, b], "tuple": (a, 5), "nested": {"b": b}})

    state = run(pipeline, runner)
    assert state.result() == repr({"list": [2, 3], "tuple": (2, 5), "nested": {"b": 3}})


def test_task_outside_a_flow_is_a_plain_call():
    assert add(1, 2) == 3
    with pytest.raises(MissingContextError, match="inside a flow run"):
        add.submit(1)


def test_failure_is_reported_and_downstream_never_runs(runner, tmp_path):
    @flow
    def pipeline(marker_dir: str):
        bad = fail.submit("no good")
        after = touch.submit(marker_dir, "after-bad", bad)
        independent = touch.submit(marker_dir, "independent")
        return after, independent

    state = run(pipeline, runner, str(tmp_path))
    assert state.is_failed()
    with pytest.raises(UpstreamFailedError, match="upstream task run 'fail-0' ended Failed") as info:
        state.result()
    assert isinstance(info.value.__cause__, ValueError)
    flow_run = state.run
    assert flow_run.task_run("fail-0").state.name == "Failed"
    after = flow_run.task_run("touch-0")
    assert after.state.name == "UpstreamFailed" and after.state.type is StateType.SKIPPED
    assert "fail-0" in after.state.message
    assert flow_run.task_run("touch-1").state.is_completed()
    assert not (tmp_path / "after-bad").exists()
    assert (tmp_path / "independent").exists()


def test_flow_returning_nothing_fails_when_a_task_failed(runner):
    @flow
    def pipeline():
        fail.submit("quiet failure")
        add.submit(1)

    state = run(pipeline, runner)
    assert state.is_failed()
    assert "1 of 2 task runs did not complete" in state.message
    with pytest.raises(ValueError, match="quiet failure"):
        state.result()


def test_upstream_failure_raises_in_the_body_as_upstream_error(runner):
    @flow
    def pipeline():
        return add(fail.submit())

    state = run(pipeline, runner)
    assert state.is_failed()
    error = state.result(raise_on_failure=False)
    assert isinstance(error, UpstreamFailedError)
    assert isinstance(error.__cause__, ValueError)


def test_retries_with_delays_then_success(runner, tmp_path):
    patient = flaky.with_options(retries=3, retry_delay_seconds=[0.05, 0.2])

    @flow
    def pipeline(marker_dir: str):
        return patient.submit(marker_dir, "f", 2)

    state = run(pipeline, runner, str(tmp_path))
    assert state.result() == "f ok after 3"
    task_run = state.run.task_run("flaky-0")
    assert task_run.attempts == 3
    names = [s.name for s in task_run.state_history]
    assert names.count("AwaitingRetry") == 2 and names.count("Failed") == 2
    assert names[-1] == "Completed"
    # Each attempt had its own Dask key; no key was reused.
    assert len(task_run.dask_keys) == 3 == len(set(task_run.dask_keys))
    # The second delay (0.2 s) was honoured between attempts 2 and 3.
    t2, t3 = (float((tmp_path / f"f.attempt{n}").read_text()) for n in (2, 3))
    assert t3 - t2 >= 0.2


def test_retries_exhausted_ends_failed(runner, tmp_path):
    stubborn = flaky.with_options(retries=1)

    @flow
    def pipeline(marker_dir: str):
        return stubborn.submit(marker_dir, "s", 5)

    state = run(pipeline, runner, str(tmp_path))
    assert state.is_failed()
    assert state.run.task_run("flaky-0").attempts == 2
    assert len(list(tmp_path.glob("s.attempt*"))) == 2


def test_retry_condition_fn_can_refuse(runner, tmp_path):
    seen = []

    def only_timeouts(task, task_run, state):
        seen.append(state.name)
        return isinstance(state.data, TimeoutError)

    picky = flaky.with_options(retries=3, retry_condition_fn=only_timeouts)

    @flow
    def pipeline(marker_dir: str):
        return picky.submit(marker_dir, "p", 5)

    state = run(pipeline, runner, str(tmp_path))
    assert state.is_failed()
    assert state.run.task_run("flaky-0").attempts == 1
    assert seen == ["Failed"]


def test_dependents_wait_for_a_retried_upstream(runner, tmp_path):
    patient = flaky.with_options(retries=2, retry_delay_seconds=0.1)

    @flow
    def pipeline(marker_dir: str):
        up = patient.submit(marker_dir, "u", 1)
        mid = describe.submit([up])
        return describe.submit((mid, up))

    state = run(pipeline, runner, str(tmp_path))
    assert state.result() == repr((repr(["u ok after 2"]), "u ok after 2"))
    assert state.run.state_counts() == {"Completed": 3}


def test_timeout_is_enforced_and_downstream_skipped(runner, tmp_path):
    short = spin.with_options(timeout_seconds=0.5)

    @flow
    def pipeline(marker_dir: str):
        slow = short.submit(30)
        return touch.submit(marker_dir, "after-timeout", slow)

    started = time.monotonic()
    state = run(pipeline, runner, str(tmp_path))
    assert time.monotonic() - started < 20
    assert state.is_failed()
    spin_run = state.run.task_run("spin-0")
    assert spin_run.state.name == "TimedOut"
    assert isinstance(spin_run.state.data, TaskTimeoutError)
    assert state.run.task_run("touch-0").state.name == "UpstreamFailed"
    assert not (tmp_path / "after-timeout").exists()


def test_return_state_for_tasks(runner):
    @flow
    def pipeline():
        bad = fail(return_state=True)
        good = add(1, return_state=True)
        return bad.is_failed(), good.is_completed(), good.result()

    assert run(pipeline, runner).result() == (True, True, 2)


def test_subflow_has_its_own_linked_run(runner):
    @flow
    def child(x: int) -> int:
        return add(x, 100)

    @flow
    def parent():
        return child(1) + add(1)

    state = run(parent, runner)
    assert state.result() == 103
    parent_run = state.run
    assert len(parent_run.subflow_runs) == 1
    child_run = parent_run.subflow_runs[0]
    assert child_run.parent_flow_run_id == parent_run.id
    assert child_run.state.is_completed()
    assert [t.name for t in child_run.task_runs.values()] == ["add-0"]
    assert [t.name for t in parent_run.task_runs.values()] == ["add-0"]


def test_logs_and_prints_from_tasks_reach_the_flow_run(runner):
    @flow(log_prints=True)
    def pipeline():
        get_run_logger().info("flow says hi")
        print("flow printed")
        return chatty.map([1, 2]).result()

    state = run(pipeline, runner)
    assert state.result() == [1, 2]
    flow_run = state.run
    assert flow_run.logs_of(None) == ["flow says hi", "flow printed"]
    assert flow_run.logs_of("chatty-0") == ["working on 1", "careful with 1", "printed 1"]
    levels = [line.level for line in flow_run.logs if line.task_run_name == "chatty-1"]
    assert levels == [logging.INFO, logging.WARNING, logging.INFO]
    chatty_run = flow_run.task_run("chatty-0")
    assert chatty_run.worker and chatty_run.start_time <= chatty_run.end_time


def test_hooks_run_on_the_driver(runner):
    events = []
    good = add.with_options(on_completion=lambda task, tr, state: events.append(("task ok", tr.name, state.name)))
    bad = fail.with_options(on_failure=[lambda task, tr, state: events.append(("task failed", tr.name, state.name))])

    @flow(on_failure=lambda fl, fr, state: events.append(("flow failed", fl.name, state.name)))
    def pipeline():
        good.submit(1).wait()
        bad.submit().wait()

    state = run(pipeline, runner)
    assert state.is_failed()
    assert sorted(events) == [("flow failed", "pipeline", "Failed"), ("task failed", "fail-0", "Failed"), ("task ok", "add-0", "Completed")]


def test_crashed_and_cancelled_flows_call_their_own_hooks():
    from daskflow import CancelledRun, CrashedError, SequentialTaskRunner

    events = []

    def hook(label):
        return lambda fl, fr, state: events.append((label, fr.name.rsplit("-", 1)[0], state.name))

    options = {
        "task_runner": SequentialTaskRunner(), "on_completion": hook("completion"), "on_failure": hook("failure"),
        "on_crashed": hook("crashed"), "on_cancellation": hook("cancellation"),
    }

    @flow(**options)
    def crashing():
        raise CrashedError("the machine went away")

    @flow(**options)
    def cancelled():
        raise CancelledRun("stopped from the page")

    @flow(**options)
    def fine():
        return 1

    assert crashing(return_state=True).is_crashed()
    assert cancelled(return_state=True).is_cancelled()
    assert fine() == 1
    assert events == [
        ("failure", "crashing", "Crashed"), ("crashed", "crashing", "Crashed"),
        ("cancellation", "cancelled", "Cancelled"),
        ("completion", "fine", "Completed"),
    ]


def test_wait_and_as_completed(runner, tmp_path):
    @flow
    def pipeline(marker_dir: str):
        slow = stamp.submit(marker_dir, "slow", 0.5)
        fast = stamp.submit(marker_dir, "fast", 0.0)
        done, not_done = wait([slow, fast], timeout=60)
        assert not not_done and done == {slow, fast}
        return [f.task_run.name for f in as_completed([slow, fast], timeout=60)]

    order = run(pipeline, runner, str(tmp_path)).result()
    assert sorted(order) == ["stamp-0", "stamp-1"]


def test_keys_are_unique_per_run(runner):
    @flow
    def pipeline():
        return add.submit(1)

    first, second = run(pipeline, runner), run(pipeline, runner)
    key1 = first.run.task_run("add-0").dask_keys
    key2 = second.run.task_run("add-0").dask_keys
    assert key1 != key2
    assert key1[0].startswith("add-") and first.run.id[:12] in key1[0]


def test_parameters_are_validated_before_anything_runs(runner, tmp_path):
    @flow
    def pipeline(marker_dir: str, n: int, rate: float = 0.5):
        touch(marker_dir, "ran")
        return n * rate

    assert run(pipeline, runner, str(tmp_path), "4").result() == 2.0  # "4" coerced to 4
    (tmp_path / "ran").unlink()
    state = run(pipeline, runner, str(tmp_path), n="four", rate=[1], colour="red")
    assert state.is_failed()
    error = state.result(raise_on_failure=False)
    assert isinstance(error, ParameterValidationError)
    fields = {e["field"] for e in error.errors}
    assert fields == {"colour", "n", "rate"}  # unknown names and bad values together (issue 12 defect 3)
    assert "'four'" in str(state.result(raise_on_failure=False))
    with pytest.raises(ParameterValidationError, match="missing required parameter"):
        pipeline.with_options(task_runner=runner)(str(tmp_path))
    assert not (tmp_path / "ran").exists()
    assert state.run.task_runs == {}


def test_map_rejects_unequal_lengths(runner):
    @flow
    def pipeline():
        add.map([1, 2], [1, 2, 3])

    state = run(pipeline, runner)
    assert isinstance(state.result(raise_on_failure=False), MappingLengthMismatch)
    assert "{'x': 2, 'y': 3}" in state.message


def test_wrong_task_arguments_fail_at_the_call(runner):
    @flow
    def pipeline():
        add.submit(1, 2, 3)

    state = run(pipeline, runner)
    error = state.result(raise_on_failure=False)
    assert isinstance(error, TypeError) and "add" in str(error)
    assert state.run.task_runs == {}


def test_flow_timeout_cancels_open_task_runs(runner):
    @flow(timeout_seconds=1)
    def pipeline():
        sleepy.submit(10)
        sleepy.submit(10).wait()

    started = time.monotonic()
    state = run(pipeline, runner)
    assert time.monotonic() - started < 9
    assert state.name == "TimedOut"
    assert all(tr.state.is_final() for tr in state.run.task_runs.values())


def test_flow_retries_rerun_the_body(runner, tmp_path):
    calls = []

    @flow(retries=1, retry_delay_seconds=0)
    def pipeline(marker_dir: str):
        calls.append(1)
        return flaky(marker_dir, "fl", 1)

    state = run(pipeline, runner, str(tmp_path))
    assert state.result() == "fl ok after 2" and len(calls) == 2
    assert [tr.name for tr in state.run.task_runs.values()] == ["flaky-0", "flaky-1"]


@pytest.mark.parametrize("persist", [True, False], ids=["persisted", "not-persisted"])
def test_results_outlive_the_run_when_persisted_or_returned(runner, persist):
    kept = []

    @flow(persist_result=persist)
    def pipeline():
        returned, dropped = add.submit(1), add.submit(2)
        kept.extend([returned, dropped])
        dropped.wait()
        return returned

    assert run(pipeline, runner).result() == 2
    assert kept[0].result() == 2  # fetched when the flow returned it
    if persist or "Dask" not in type(runner).__name__:
        assert kept[1].result() == 3  # read back from storage (or still in this process)
    else:
        with pytest.raises(RuntimeError, match="return it from the flow"):
            kept[1].result()


def test_a_large_task_function_is_shipped_once_per_run(threads_cluster):
    from distributed.diagnostics.plugin import SchedulerPlugin

    from daskflow import DaskTaskRunner

    class CountShipments(SchedulerPlugin):
        name = "count-shipments"

        def __init__(self):
            self.shipped = []

        def update_graph(self, scheduler, *, keys, **kwargs):
            self.shipped.extend(str(k) for k in keys if str(k).startswith("daskflow-fn-"))

    plugin = CountShipments()
    threads_cluster.scheduler.add_plugin(plugin)
    try:

        table = list(range(10_000))  # makes the function's pickle large

        @task
        def lookup(i: int) -> int:
            return table[i]

        @flow(task_runner=DaskTaskRunner(address=threads_cluster.scheduler_address))
        def pipeline():
            singles = [lookup.submit(i) for i in range(10)]
            return total(singles + lookup.map(range(10)))

        assert pipeline() == 2 * sum(range(10))
    finally:
        threads_cluster.scheduler.remove_plugin(name=plugin.name)
    # The big closure crossed once; total (importable, pickled by reference) rides along.
    assert [k.split("-")[2] for k in plugin.shipped] == ["lookup"]
