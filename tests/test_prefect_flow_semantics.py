"""Flow semantics that follow Prefect 3: async flows and tasks, flows and tasks on
methods, generators, and the final state of a flow whose body handled a failure.

Most tests run on ThreadPoolTaskRunner (cheap); one module-scoped LocalCluster
runs the async tasks on Dask workers and the CLI's import error check.
"""

from __future__ import annotations

import asyncio

import pytest
from click.testing import CliRunner

from daskflow import DaskTaskRunner, SequentialTaskRunner, ThreadPoolTaskRunner, flow, task
from daskflow.cli import cli
from daskflow.pipeline.states import Completed, Failed


@task
def boom(x: int = 1) -> int:
    raise ValueError(f"boom {x}")


@task
def add_one(x: int) -> int:
    return x + 1


@task
async def times_ten(x: int) -> int:
    await asyncio.sleep(0.01)
    return x * 10


@task
def count_to(n: int):
    yield from range(n)


def _read_state(future):
    assert future.wait().is_final()
    return future.state


def local_flow(fn):
    return flow(task_runner=ThreadPoolTaskRunner())(fn)


# ------------------------------------------------------------------ final states
@pytest.mark.parametrize(
    "handle",
    [
        lambda: boom(return_state=True),
        lambda: _read_state(boom.submit()),
        lambda: boom.submit().result(raise_on_failure=False),
        lambda: boom.map([1, 2]).result(raise_on_failure=False),
    ],
    ids=["return_state", "state", "raise_on_failure", "map"],
)
def test_a_failure_the_body_saw_does_not_fail_the_flow(handle):
    @local_flow
    def handled():
        handle()

    state = handled(return_state=True)
    assert state.is_completed(), state
    assert state.run.state_counts().get("Failed", 0) >= 1


def test_a_caught_task_exception_is_handled():
    @local_flow
    def handled():
        try:
            boom(3)
        except ValueError as exc:
            assert str(exc) == "boom 3"
        root = boom.submit(4)
        add_one.submit(root)  # UpstreamFailed because of a failure the body catches below
        try:
            root.result()
        except ValueError:
            pass

    assert handled(return_state=True).is_completed()


def test_a_failure_nobody_looked_at_still_fails_a_flow_returning_none():
    @local_flow
    def careless():
        boom.submit(7).wait()  # waiting is not looking
        add_one.submit(1)

    state = careless(return_state=True)
    assert state.is_failed()
    assert "never" not in state.message and "neither returned nor looked at" in state.message
    assert isinstance(state.result(raise_on_failure=False), ValueError)


def test_upstream_failed_runs_count_when_their_root_was_not_seen():
    @local_flow
    def partly_seen():
        root = boom.submit(1)
        add_one.submit(root)  # skipped; root unseen
        boom(return_state=True)  # another failure, seen

    state = partly_seen(return_state=True)
    assert state.is_failed()
    assert "boom-0" in state.message and "add_one-0" in state.message and "boom-1" not in state.message


def test_a_returned_state_is_the_final_state():
    @local_flow
    def chooses(ok: bool):
        boom.submit()  # not looked at: the returned state still decides
        if ok:
            return Completed(message="I am happy with this result")
        return Failed(message="How did this happen")

    done = chooses(True, return_state=True)
    assert done.is_completed() and done.message == "I am happy with this result"
    failed = chooses(False, return_state=True)
    assert failed.is_failed() and failed.message == "How did this happen"
    with pytest.raises(RuntimeError, match="How did this happen"):
        chooses(False)

    @local_flow
    def custom_name():
        return Completed(message="No work to do", name="Skipped")

    skipped = custom_name(return_state=True)
    assert skipped.is_completed() and skipped.name == "Skipped"

    @local_flow
    def task_state():
        return add_one(1, return_state=True)

    assert task_state() == 2


# ------------------------------------------------------------------- async
def test_async_flow_returns_a_coroutine_and_runs_async_tasks():
    @local_flow
    async def pipeline(x: int) -> int:
        a = await times_ten(x)
        b, c = await asyncio.gather(times_ten(1), times_ten(2))
        d = times_ten.submit(3).result()  # .submit() of an async task: a future
        state = await times_ten(4, return_state=True)
        return a + b + c + d + state.result()

    call = pipeline(5)
    assert asyncio.iscoroutine(call)
    assert asyncio.run(call) == 50 + 10 + 20 + 30 + 40
    state = asyncio.run(pipeline(1, return_state=True))
    assert state.is_completed() and state.result() == 110
    assert len(state.run.task_runs) == 5 and all(r.state.is_completed() for r in state.run.task_runs.values())


def test_async_subflow_is_awaited_in_an_async_flow():
    @flow
    async def child(x: int) -> int:
        return await times_ten(x)

    @local_flow
    async def parent() -> list[int]:
        return list(await asyncio.gather(child(1), child(2)))

    state = asyncio.run(parent(return_state=True))
    assert state.result() == [10, 20]
    assert [r.flow_name for r in state.run.subflow_runs] == ["child", "child"]
    assert all(r.parent_flow_run_id == state.run.id for r in state.run.subflow_runs)


def test_async_flow_failure_and_sequential_runner():
    @flow(task_runner=SequentialTaskRunner())
    async def failing():
        await times_ten(1)  # an async task on the sequential runner
        await boom.submit(2).result()

    with pytest.raises(ValueError, match="boom 2"):
        asyncio.run(failing())


def test_async_task_in_a_sync_flow_returns_its_value():
    @local_flow
    def pipeline():
        return times_ten(2)

    assert pipeline() == 20


# ------------------------------------------------------------------ methods
class Model:
    def __init__(self, k: int) -> None:
        self.k = k

    @flow(task_runner=ThreadPoolTaskRunner())
    def fit(self, x: int) -> int:
        return self.scale(x) + self.k

    @flow(task_runner=ThreadPoolTaskRunner())
    @classmethod
    def describe(cls, x: int) -> str:
        return f"{cls.__name__}-{x}"

    @flow(task_runner=ThreadPoolTaskRunner())
    @staticmethod
    def double(x: int) -> int:
        return add_one(x) * 2

    @task
    def scale(self, x: int) -> int:
        return self.k * x


def test_flows_and_tasks_on_methods():
    assert Model(3).fit(2) == 9
    assert Model.describe(4) == "Model-4"
    assert Model.double(1) == 4
    assert Model(3).double(1) == 4
    state = Model(3).fit(x="2", return_state=True)  # coerced: x is the only parameter
    assert state.result() == 9 and state.run.parameters == {"x": 2}
    assert Model.describe.with_options(name="other")(1) == "Model-1"


# ---------------------------------------------------------------- generators
def test_generators_are_consumed():
    @local_flow
    def returns_generator():
        return (add_one(i) for i in range(3))

    assert returns_generator() == [1, 2, 3]

    @local_flow
    def yields():
        for i in range(3):
            yield add_one(i)

    values = yields()
    assert not isinstance(values, list) and list(values) == [1, 2, 3]
    with pytest.raises(Exception, match="generator"):
        yields(return_state=True)

    @local_flow
    def uses_generator_task():
        direct = count_to(3)
        return next(direct), list(direct), count_to.submit(2).result()

    assert uses_generator_task() == (0, [1, 2], [0, 1])


# ---------------------------------------------------------------- on Dask
@pytest.fixture(scope="module")
def cluster_address():
    from distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=2, processes=True, dashboard_address=":0") as cluster:
        yield cluster.scheduler_address


def test_async_tasks_run_on_dask_workers(cluster_address):
    @flow(task_runner=DaskTaskRunner(address=cluster_address))
    async def pipeline() -> list[int]:
        return [await times_ten(1), *times_ten.map([2, 3]).result(), *count_to.submit(2).result()]

    assert asyncio.run(pipeline()) == [10, 20, 30, 0, 1]


def test_cli_reports_a_wrong_import_as_the_import_error(tmp_path, cluster_address):
    script = tmp_path / "wrong_import.py"
    script.write_text("from daskflow import flow\nimport no_such_module_anywhere\n\n@flow\ndef pipe():\n    return 1\n")
    result = CliRunner().invoke(cli, ["run", f"{script}:pipe", "--address", cluster_address, "--no-progress"])
    assert result.exit_code == 1, result.output
    assert "ModuleNotFoundError: No module named 'no_such_module_anywhere'" in result.output
    assert "Crashed" not in result.output


def test_a_script_calling_its_flow_without_a_main_guard_runs_on_a_local_cluster(tmp_path):
    # Prefect's examples often call the flow at the top level; a LocalCluster's
    # spawned workers import that script again and must not run the flow there.
    import os
    import subprocess
    import sys

    script = tmp_path / "no_guard.py"
    script.write_text(
        "from daskflow import DaskTaskRunner, flow, task\n\n"
        "@task\ndef one():\n    return 1\n\n"
        "@flow(task_runner=DaskTaskRunner(cluster_kwargs={'n_workers': 1, 'threads_per_worker': 1}))\n"
        "def pipe():\n    return one() + 1\n\n"
        "print('RESULT', pipe())\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (os.environ.get("PYTHONPATH"), os.getcwd()) if p)}
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "RESULT 2" in done.stdout  # (the worker's import prints "RESULT None": its call is skipped)
    assert (done.stdout + done.stderr).count("finished in state Completed") == 1
    assert "Failed to start process" not in done.stderr


def test_a_local_module_the_cluster_cannot_import_is_named(tmp_path):
    # The flow file is shipped by value; a module beside it that it imports is
    # not, and Dask's own error does not say which import failed.
    from daskflow.pipeline.entrypoints import load_flow

    from .conftest import DaskCLICluster

    code = tmp_path / "code"
    code.mkdir()
    (code / "only_on_driver_helper.py").write_text("X = 5\n")
    (code / "uses_local_helper.py").write_text(
        "from daskflow import flow, task\nimport only_on_driver_helper\n\n"
        "@task(persist_result=False)\ndef one():\n    return only_on_driver_helper.X\n\n"
        "@flow(persist_result=False)\ndef pipe():\n    return one()\n"
    )
    (tmp_path / "cluster").mkdir()
    cluster = DaskCLICluster(tmp_path / "cluster", workers=((),))
    try:
        pipe = load_flow(f"{code / 'uses_local_helper.py'}:pipe")
        state = pipe.with_options(task_runner=DaskTaskRunner(address=cluster.address))(return_state=True)
    finally:
        cluster.close()
    assert not state.is_completed()
    assert "cannot import 'only_on_driver_helper'" in state.message and "client.upload_file()" in state.message
