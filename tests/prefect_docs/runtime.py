"""docs/v3/how-to-guides/workflows/access-runtime-info.mdx and concepts/runtime-context.mdx."""

from prefect import flow, task


def ex_runtime_flow_run_name():
    """prefect.runtime.flow_run.name inside a flow; flow_run_name= sets it."""
    from prefect.runtime import flow_run

    @flow(flow_run_name="moody-{name}")
    def moody_workflow(name: str):
        return f"I wish I were called {name}, not {flow_run.name}."

    assert moody_workflow("marvin") == "I wish I were called marvin, not moody-marvin."


def ex_runtime_outside_run():
    """Outside a run, flow_run.name is None."""
    from prefect.runtime import flow_run
    assert flow_run.name is None


def ex_runtime_task_run_fields():
    """prefect.runtime.task_run and flow_run fields inside a task."""
    from prefect.runtime import flow_run, task_run

    @task(task_run_name="reader")
    def reader():
        return task_run.name, task_run.run_count, flow_run.flow_name

    @flow(name="runtime-demo")
    def f():
        return reader()

    assert f() == ("reader", 1, "runtime-demo")


def ex_runtime_get_run_context():
    """concepts/runtime-context: get_run_context() gives the flow run / task run context."""
    from prefect.context import get_run_context

    @task
    def in_task():
        return get_run_context().task_run.name

    @flow(flow_run_name="ctx-run")
    def f():
        ctx = get_run_context()
        return ctx.flow_run.name, ctx.flow.name, in_task()

    name, flow_name, task_name = f()
    assert (name, flow_name) == ("ctx-run", "f")
    assert task_name.startswith("in_task-")
