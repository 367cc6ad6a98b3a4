"""Prefect 3's run-context names: ``daskflow.context``, ``daskflow.runtime``,
``daskflow.artifacts``, ``daskflow.logging``, ``tags()``, ``CacheKeyFnPolicy``,
``PrefectFuture``. Written in Prefect's import style (``prefect`` -> ``daskflow``)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
import uuid
from pathlib import Path

import pytest

from daskflow import (
    DaskTaskRunner,
    PrefectFuture,
    TaskFuture,
    ThreadPoolTaskRunner,
    flow,
    get_run_logger,
    tags,
    task,
)
from daskflow.artifacts import (
    acreate_progress_artifact,
    create_image_artifact,
    create_markdown_artifact,
    create_progress_artifact,
    update_progress_artifact,
)
from daskflow.cache_policies import INPUTS, NO_CACHE, TASK_SOURCE, CacheKeyFnPolicy
from daskflow.context import FlowRunContext, TaskRunContext, get_run_context
from daskflow.exceptions import InvalidOptionError, MissingContextError
from daskflow.logging import disable_run_logger, flow_run_logger, get_logger
from daskflow.pipeline.artifacts import ArtifactCursor
from daskflow.pipeline.context import FLOW_RUN_CONTEXT
from daskflow.pipeline.runs import Artifact, RunPlan
from daskflow.runtime import deployment, flow_run, task_run
from daskflow.status.page import _artifact_views
from daskflow.status.state import LiveRuns
from daskflow.storage import Store
from daskflow.storage.records import History

from .conftest import wait_until

THREADS = ThreadPoolTaskRunner(max_workers=2)


@task
def describe_task(x: int, scale: float = 1.0) -> dict:
    context = get_run_context()
    return {
        "kind": type(context).__name__,
        "id": context.task_run.id,
        "name": context.task_run.name,
        "tags": sorted(context.task_run.tags),
        "parameters": dict(context.parameters),
        "runtime": (task_run.id, task_run.name, task_run.task_name, task_run.run_count, sorted(task_run.tags), task_run.parameters),
        "flow_run": (flow_run.id, flow_run.name),
        "flow_parameters": flow_run.parameters,
    }


@task(tags=["own"], cache_policy=NO_CACHE)
def tagged() -> list[str]:
    return sorted(task_run.tags)


@task
def progress_in_task(n: int) -> str:
    bar = create_progress_artifact(0.0, key="crunch", description="starting")
    for done in range(1, n + 1):
        update_progress_artifact(bar, 100 * done / n)
    return bar


def test_get_run_context_in_flow_and_task():
    @flow(task_runner=THREADS, tags=["team"])
    def report(n: int = 2):
        context = get_run_context()
        assert isinstance(context, FlowRunContext)
        assert FlowRunContext.get() is not None and TaskRunContext.get() is None
        inner = describe_task.submit(n, scale=2.0).result()
        return context.flow.name, context.flow_run.name, dict(context.flow_run.parameters), context.flow_run.tags, inner

    state = report(return_state=True)
    flow_name, run_name, parameters, run_tags, inner = state.result()
    run = state.run
    assert (flow_name, run_name, parameters, run_tags) == ("report", run.name, {"n": 2}, ["team"])
    record = next(iter(run.task_runs.values()))
    assert inner["kind"] == "TaskRunContext"
    assert (inner["id"], inner["name"]) == (record.id, record.name)
    assert inner["parameters"] == {"x": 2, "scale": 2.0}
    assert inner["runtime"] == (record.id, record.name, "describe_task", 1, [], {"x": 2, "scale": 2.0})
    assert inner["flow_run"] == (run.id, run.name)
    assert inner["flow_parameters"] == {"n": 2} and type(inner["flow_parameters"]) is dict  # read in a pool thread


def test_run_context_is_a_snapshot_not_the_engine_record():
    @flow(task_runner=THREADS)
    def body(x: int = 1):
        context = get_run_context()
        context.flow_run.parameters["x"] = 5  # a copy: the run's record keeps its value
        with pytest.raises(AttributeError):
            context.flow_run.name = "other"  # frozen
        return flow_run.parameters

    state = body(return_state=True)
    assert state.result() == {"x": 1}
    assert state.run.parameters == {"x": 1}


def test_outside_a_run_context_raises_and_runtime_reads_prefect_defaults(monkeypatch):
    with pytest.raises(MissingContextError, match="outside a flow or task run"):
        get_run_context()
    assert FlowRunContext.get() is None and TaskRunContext.get() is None
    assert (flow_run.id, flow_run.name, flow_run.tags, flow_run.parameters, flow_run.run_count) == (None, None, [], {}, 0)
    assert flow_run.scheduled_start_time is not None  # Prefect: now
    assert (task_run.id, task_run.name, task_run.tags, task_run.parameters, task_run.run_count) == (None, None, [], {}, 0)
    assert (deployment.id, deployment.name, deployment.parameters, deployment.flow_run_id) == (None, None, {}, None)
    monkeypatch.setenv("DASKFLOW__RUNTIME__FLOW_RUN__NAME", "pretend")
    monkeypatch.setenv("DASKFLOW__RUNTIME__TASK_RUN__TAGS", "a, b")
    assert flow_run.name == "pretend" and task_run.tags == ["a", "b"]
    monkeypatch.setenv("DASKFLOW__RUNTIME__TASK_RUN__FAKE_KEY", "foo")
    monkeypatch.setenv("DASKFLOW__RUNTIME__FLOW_RUN__RUN_COUNT", "3")
    monkeypatch.setenv("DASKFLOW__RUNTIME__FLOW_RUN__SCHEDULED_START_TIME", "2024-01-02T03:04:05+00:00")
    assert (task_run.fake_key, flow_run.run_count, flow_run.scheduled_start_time.year) == ("foo", 3, 2024)
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        flow_run.nope  # noqa: B018


def test_tags_context_adds_nested_tags_to_task_and_flow_runs():
    seen: dict[str, object] = {}

    @flow(task_runner=THREADS)
    def tagging():
        with tags("a", "b") as current:
            seen["current"] = current
            outer = tagged.submit()
            with tags("c"):
                inner = tagged.submit()
            plain = tagged()
        after = tagged.submit()
        return outer.result(), inner.result(), plain, after.result()

    assert tagging() == (["a", "b", "own"], ["a", "b", "c", "own"], ["a", "b", "own"], ["own"])
    assert seen["current"] == {"a", "b"}

    with tags("nightly"):
        state = tagging(return_state=True)
    assert state.run.tags == ("nightly",)
    assert sorted(next(iter(state.run.task_runs.values())).tags) == ["a", "b", "nightly", "own"]


def test_tags_follow_the_tag_rule():
    with pytest.raises(InvalidOptionError, match="tag"):
        with tags("bad\ntag"):
            pass
    with pytest.raises(InvalidOptionError, match="tag strings"):
        with tags(3):  # type: ignore[arg-type]
            pass


def test_deployment_runtime_in_a_planned_run():
    @flow(task_runner=THREADS)
    def scheduled(day: str = "mon"):
        return deployment.id, deployment.name, deployment.parameters, deployment.flow_run_id, flow_run.scheduled_start_time.timestamp()

    run_id = uuid.uuid4().hex
    plan = RunPlan(id=run_id, name="scheduled-run", created=time.time(), deployment_id="dep-1", deployment_name="nightly", scheduled_time=1_700_000_000.0)
    state = scheduled._run_planned(plan, {"day": "tue"})
    assert state.result() == ("dep-1", "nightly", {"day": "tue"}, run_id, 1_700_000_000.0)
    assert scheduled() == (None, None, {}, None, pytest.approx(time.time(), abs=60))


def test_progress_and_image_artifacts_in_process():
    @flow(task_runner=THREADS)
    def arts():
        bar = create_progress_artifact(10, key="load")
        update_progress_artifact(bar, 55.5, description="half")
        image = create_image_artifact("https://example.com/plot.png", key="plot")
        with pytest.raises(InvalidOptionError, match="0 to 100"):
            create_progress_artifact(150)
        with pytest.raises(InvalidOptionError, match="no progress artifact"):
            update_progress_artifact(image, 1)
        return bar, image, progress_in_task.submit(4).result(), asyncio.run(acreate_progress_artifact(1.0))

    state = arts(return_state=True)
    bar, image, task_bar, async_bar = state.result()
    by_id = {a.id: a for a in state.run.artifacts}
    assert (by_id[bar].type, by_id[bar].data, by_id[bar].description) == ("progress", 55.5, "half")
    assert (by_id[image].type, by_id[image].data) == ("image", {"url": "https://example.com/plot.png"})
    assert (by_id[task_bar].data, by_id[task_bar].task_run_name) == (100.0, "progress_in_task-0")
    assert by_id[async_bar].data == 1.0
    with pytest.raises(MissingContextError):
        create_progress_artifact(1)


def test_status_page_draws_progress_and_images_without_injection():
    views = _artifact_views(
        [
            {"type": "progress", "key": "p", "data": 42.0},
            {"type": "image", "key": "i", "data": {"url": "https://x.test/a.png?a=1&b=\"><script>"}},
            {"type": "image", "key": "j", "data": {"url": "javascript:alert(1)"}},
        ]
    )
    texts = [getattr(v, "text", "") for v in views]
    assert any('<progress max="100" value="42.0"' in t and "42.0%" in t for t in texts)
    image = next(t for t in texts if "<img" in t)
    assert "<script>" not in image and "&quot;&gt;&lt;script&gt;" in image
    assert not any("<img" in t and "javascript:" in t for t in texts)
    assert any("<code>javascript:alert(1)</code>" in t for t in texts)


def test_cache_key_fn_policy_composes():
    calls = []

    def by_label(context, parameters):
        calls.append(parameters["label"])
        return parameters["label"].lower()

    @task(cache_policy=CacheKeyFnPolicy(cache_key_fn=by_label) + INPUTS - "label" + TASK_SOURCE)
    def fetch(label: str, n: int) -> int:
        calls.append("ran")
        return n

    @flow(task_runner=THREADS)
    def twice():
        return fetch("A", 1), fetch("a", 1), fetch("a", 2)

    assert twice() == (1, 1, 2)
    assert calls.count("ran") == 2  # "A" and "a" share a key; n=2 does not
    assert CacheKeyFnPolicy(cache_key_fn=by_label).cache_key_fn is by_label
    with pytest.raises(InvalidOptionError, match="cache_key_fn"):
        CacheKeyFnPolicy(cache_key_fn=3)  # type: ignore[arg-type]


def test_logging_module_names_and_prefect_future_alias(caplog):
    assert PrefectFuture is TaskFuture
    assert get_logger("mine").name == "daskflow.mine"
    with disable_run_logger():
        get_run_logger().info("silenced")  # no MissingContextError, like Prefect's testing helper
    with pytest.raises(MissingContextError):
        get_run_logger()

    @flow(task_runner=THREADS)
    def logs():
        flow_run_logger(get_run_context().flow_run).info("via flow_run_logger")
        with disable_run_logger():
            get_run_logger().info("hidden line")
        return isinstance(describe_task.submit(1), PrefectFuture)

    state = logs(return_state=True)
    assert state.result() is True
    messages = [line.message for line in state.run.logs]
    assert "via flow_run_logger" in messages and "hidden line" not in messages
    assert logging.getLogger is not None  # the stdlib module is not shadowed inside daskflow


# --------------------------------------------------------------- on a Dask worker


@pytest.fixture(scope="module")
def cluster():
    from distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=2, processes=True, dashboard_address=":0") as local:
        yield local


def test_runtime_task_run_and_progress_on_a_worker(cluster):
    runner = DaskTaskRunner(address=cluster.scheduler_address)

    @flow(task_runner=runner)
    def remote():
        with tags("remote"):
            info = describe_task.submit(3)
            bar = progress_in_task.submit(5)
        return info.result(), bar.result()

    state = remote(return_state=True)
    info, bar = state.result()
    run = state.run
    record = next(t for t in run.task_runs.values() if t.task_name == "describe_task")
    assert info["kind"] == "TaskRunContext"
    assert info["runtime"] == (record.id, record.name, "describe_task", 1, ["remote"], {"x": 3, "scale": 1.0})
    assert info["flow_run"] == (run.id, run.name)
    artifact = next(a for a in run.artifacts if a.id == bar)
    assert (artifact.type, artifact.data, artifact.key) == ("progress", 100.0, "crunch")


@task(cache_policy=NO_CACHE)
def hold(seconds: float) -> tuple[float, float]:
    started = time.time()
    time.sleep(seconds)  # the work whose overlap the limit forbids
    return started, time.time()


def test_tags_from_the_context_count_for_tag_concurrency_limits(cluster, _result_storage):
    from daskflow.storage.limits import Limits

    Limits(Store(str(_result_storage))).set("tag", "db", 1)

    @flow(task_runner=DaskTaskRunner(address=cluster.scheduler_address))
    def queries():
        with tags("db"):
            futures = [hold.submit(0.3) for _ in range(3)]
        return [f.result() for f in futures]

    intervals = sorted(queries())
    assert all(a[1] <= b[0] for a, b in zip(intervals, intervals[1:])), intervals  # 2 threads, one at a time


@task(cache_policy=NO_CACHE)
def half_then_wait(marker: str) -> str:
    bar = create_progress_artifact(progress=0.0, key="batches")
    deadline = time.monotonic() + 60
    while not Path(marker).exists():  # released by the flow once it saw 50%
        if time.monotonic() > deadline:
            raise TimeoutError("the flow never saw the progress update")
        update_progress_artifact(artifact_id=bar, progress=50)
        time.sleep(0.05)
    update_progress_artifact(artifact_id=bar, progress=100)
    return bar


def test_progress_from_a_worker_reaches_the_run_while_the_task_runs(cluster, tmp_path, _result_storage):
    marker = tmp_path / "go"

    @flow(task_runner=DaskTaskRunner(address=cluster.scheduler_address))
    def batches():
        future = half_then_wait.submit(str(marker))
        artifacts = FLOW_RUN_CONTEXT.get().flow_run.artifacts
        wait_until(lambda: any(a.type == "progress" and a.data == 50 for a in list(artifacts)), 30, message="50% on the driver")
        marker.write_text("go")
        return future.result()

    state = batches(return_state=True)
    bar = state.result()
    assert [(a.id, a.data) for a in state.run.artifacts] == [(bar, 100.0)]  # replaced, not appended
    history = History(Store(str(_result_storage)))
    recorded = history.artifacts(history.resolve(state.run.id))
    assert [(a["id"], a["data"]) for a in recorded] == [(bar, 100.0)]  # the last copy, once


def test_a_replaced_artifact_is_written_again_and_read_once():
    cursor = ArtifactCursor()
    first = Artifact("p1", "progress", None, None, 10.0, 1.0)
    other = Artifact("m1", "markdown", None, None, "# hi", 2.0)
    artifacts = [first, other]
    assert cursor.due(artifacts) == [first, other]
    cursor.sent(artifacts)
    assert cursor.due(artifacts) == []
    artifacts[0] = dataclasses.replace(first, data=80.0)
    assert cursor.due(artifacts) == [artifacts[0]]

    live = LiveRuns()
    record = {"id": "run-1", "state": {"type": "RUNNING"}}
    live.update({"run": record, "artifacts": [{"id": "p1", "data": 10.0}, {"id": "m1", "data": "# hi"}]})
    live.update({"run": record, "artifacts": [{"id": "p1", "data": 80.0}]})
    assert [(a["id"], a["data"]) for a in live.get("run-1").artifacts] == [("p1", 80.0), ("m1", "# hi")]


def test_markdown_artifact_name_still_works():
    @flow(task_runner=THREADS)
    def md():
        return create_markdown_artifact("# hi")

    state = md(return_state=True)
    assert [a.type for a in state.run.artifacts] == ["markdown"]
