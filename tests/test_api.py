"""The public surface: exports, decorator options and their errors, Prefect compatibility."""

from __future__ import annotations

import asyncio
import builtins
import textwrap

import dask
import pytest

import daskflow
from daskflow import (
    ConcurrentTaskRunner,
    SequentialTaskRunner,
    State,
    StateType,
    Task,
    ThreadPoolTaskRunner,
    exponential_backoff,
    flow,
    get_run_logger,
    task,
)
from daskflow.exceptions import InvalidOptionError, MissingContextError
from daskflow.pipeline.retries import retry_delay


def test_all_is_sorted_and_complete():
    assert daskflow.__all__ == sorted(daskflow.__all__)
    public = {name for name in vars(daskflow) if not name.startswith("_")}
    modules = {"cli", "config", "deployments", "exceptions", "masking", "pipeline", "runners", "status", "storage"}
    # Prefect's module paths (issue 13); present once imported.
    modules |= {"artifacts", "cache_policies", "context", "flows", "futures", "logging", "runtime", "states", "task_runners", "tasks"}
    assert public - modules == set(daskflow.__all__)
    assert daskflow.Task.__module__ == "daskflow"


def test_decorators_bare_and_called():
    @task
    def bare(x):
        """Doubles."""
        return 2 * x

    @task(name="renamed", tags=["ml"], retries=1)
    def called(x):
        return x

    assert isinstance(bare, Task) and bare.name == "bare" and bare.description == "Doubles."
    assert called.name == "renamed" and called.tags == ("ml",) and called.retries == 1
    assert bare(2) == 4  # no flow: a plain call
    assert bare.__doc__ == "Doubles." and bare.__name__ == "bare"

    changed = called.with_options(retries=3, timeout_seconds=5)
    assert (changed.retries, changed.timeout_seconds, changed.name) == (3, 5.0, "renamed")
    assert called.retries == 1  # the original is untouched
    with pytest.raises(InvalidOptionError, match="unknown options \\['retires'\\]"):
        called.with_options(retires=3)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"retries": -1}, "retries must be an integer >= 0, got -1"),
        ({"retries": 1.5}, "retries must be an integer"),
        ({"retry_delay_seconds": "10"}, "retry_delay_seconds must be a number"),
        ({"retry_delay_seconds": []}, "empty list"),
        ({"retry_jitter_factor": -0.1}, "retry_jitter_factor must be a number >= 0"),
        ({"timeout_seconds": 0}, "timeout_seconds must be a number > 0, got 0"),
        ({"resources": {"GPU": 0}}, "positive numbers, got 'GPU': 0"),
        ({"resources": ["GPU"]}, "resources must be a dict"),
        ({"on_failure": "notify"}, "on_failure takes a callable"),
        ({"retry_condition_fn": 3}, "retry_condition_fn must be callable"),
        ({"name": ""}, "task name must be a non-empty string"),
        ({"tags": [1]}, "tags must be strings"),
        ({"log_prints": "yes"}, "log_prints must be True, False or None"),
    ],
)
def test_bad_task_options_fail_at_decoration(options, message):
    with pytest.raises(InvalidOptionError, match=message.replace("[", "\\[")):
        task(**options)(lambda x: x)


def test_bad_flow_options_fail_at_decoration():
    with pytest.raises(InvalidOptionError, match="task_runner must be a runner instance"):
        flow(task_runner="dask")(lambda: None)
    with pytest.raises(InvalidOptionError, match="is async"):

        @flow
        async def not_supported():
            return 1

    with pytest.raises(InvalidOptionError, match="max_workers must be a positive integer"):
        ConcurrentTaskRunner(max_workers=0)


def test_get_run_logger_outside_a_run():
    with pytest.raises(MissingContextError, match="outside a flow or task run"):
        get_run_logger()


def test_retry_delay_rules():
    assert exponential_backoff(2)(4) == [2, 4, 8, 16]
    delays = [retry_delay([1, 5], n, None) for n in (1, 2, 3)]
    assert delays == [1.0, 5.0, 5.0]  # the last delay repeats
    jittered = [retry_delay(10, 1, 0.5) for _ in range(200)]
    assert all(5.0 <= d <= 15.0 for d in jittered) and len(set(jittered)) > 1
    assert task(retries=3, retry_delay_seconds=exponential_backoff(1))(lambda: 0).retry_delay_seconds == [1, 2, 4]


def test_states():
    done = State(StateType.COMPLETED, "Completed", data=5)
    assert done.is_final() and done.result() == 5
    failed = State(StateType.FAILED, "Failed", "bad", data=ValueError("bad"))
    assert isinstance(failed.result(raise_on_failure=False), ValueError)
    with pytest.raises(ValueError, match="bad"):
        failed.result()
    with pytest.raises(RuntimeError, match="still Running"):
        State(StateType.RUNNING, "Running").result()


def test_bad_log_level_fails_before_anything_runs():
    @flow(task_runner=SequentialTaskRunner())
    def pipeline():
        return 1

    with dask.config.set({"daskflow.logging.level": "LOUD"}):
        with pytest.raises(InvalidOptionError, match="daskflow.logging.level is 'LOUD'"):
            pipeline()


def test_async_tasks_run():
    @task
    async def slow_double(x):
        await asyncio.sleep(0.01)
        return 2 * x

    @flow(task_runner=ThreadPoolTaskRunner())
    def pipeline():
        return slow_double.map([1, 2, 3]).result()

    assert pipeline() == [2, 4, 6]


def test_print_is_untouched_without_log_prints(capsys):
    @task(log_prints=True)
    def chatty():
        print("captured")

    @flow(task_runner=SequentialTaskRunner())
    def pipeline():
        chatty()
        print("not captured")

    state = pipeline(return_state=True)
    assert "captured" not in capsys.readouterr().out.replace("not captured", "")
    assert state.run.logs_of("chatty-0") == ["captured"]
    print("plain")
    assert capsys.readouterr().out == "plain\n"
    assert builtins.print.__module__ == "daskflow.runners.execute"  # installed, but transparent


PREFECT_FLOW = '''
from prefect import flow, task, get_run_logger
from prefect.futures import wait
from prefect.task_runners import ThreadPoolTaskRunner


@task(retries=2, retry_delay_seconds=0)
def square(x: int) -> int:
    get_run_logger().info("squaring %d", x)
    return x * x


@task
def add(a: int, b: int) -> int:
    return a + b


@flow(task_runner=ThreadPoolTaskRunner(max_workers=4), log_prints=True)
def prefect_style(n: int = 4) -> int:
    squares = square.map(range(n))
    wait(squares)
    total = add.submit(squares[0], squares[1])
    print("partial", total.result())
    return sum(f.result() for f in squares)
'''


def test_a_prefect_3_flow_runs_by_changing_imports(tmp_path, monkeypatch):
    source = PREFECT_FLOW.replace("from prefect import", "from daskflow import")
    source = source.replace("from prefect.futures import", "from daskflow import")
    source = source.replace("from prefect.task_runners import", "from daskflow import")
    path = tmp_path / "prefect_style.py"
    path.write_text(textwrap.dedent(source))
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib

    module = importlib.import_module("prefect_style")
    state = module.prefect_style(n="5", return_state=True)
    assert state.result() == sum(i * i for i in range(5))
    assert "partial 1" in state.run.logs_of(None)
    assert state.run.logs_of("square-3") == ["squaring 3"]
