"""docs/v3/how-to-guides/workflows/state-change-hooks.mdx and concepts/states.mdx (hooks).

Task hooks run where the task runs (a Dask worker process): they write to a
file so the driver can see that they ran.
"""

import json
import os
import tempfile
from functools import partial

from prefect import flow, task


def ex_hooks_flow_on_failure_after_retries():
    """'Send a notification when a workflow run fails': @flow.on_failure runs once, after the last retry."""
    calls = []

    @flow(retries=1)
    def failing_flow():
        raise ValueError("oops!")

    @failing_flow.on_failure
    def notify(flow, flow_run, state):
        calls.append((flow.name, flow_run.name is not None, state.name))

    assert failing_flow(return_state=True).is_failed()
    assert calls == [("failing-flow", True, "Failed")]


def ex_hooks_task_on_running():
    """'Execute code when a task starts running': on_running=[...] and the @task.on_running decorator."""
    fd, path = tempfile.mkstemp(suffix=".log")
    os.close(fd)

    def record_start(task, task_run, state):
        with open(path, "a") as out:
            out.write(f"{task.name} {state.name}\n")

    @task(on_running=[record_start])
    def my_task():
        return "hello"

    @task
    def another_task():
        return "world"

    @another_task.on_running
    def log_start(task, task_run, state):
        with open(path, "a") as out:
            out.write(f"starting {task.name}\n")

    @flow
    def my_flow():
        return my_task(), another_task()

    assert my_flow() == ("hello", "world")
    with open(path) as lines:
        assert sorted(lines.read().splitlines()) == ["my_task Running", "starting another_task"]
    os.unlink(path)


def ex_hooks_logger_in_hook():
    """'Log from state change hooks': flow_run_logger(flow_run, flow) inside an on_failure hook."""
    from prefect.logging.loggers import flow_run_logger
    seen = []

    def my_hook(flow, flow_run, state):
        logger = flow_run_logger(flow_run, flow)
        logger.info(f"Flow {flow_run.name} entered state {state.name}")
        seen.append(state.name)

    @flow(on_failure=[my_hook])
    def failing_flow():
        raise ValueError("oops!")

    assert failing_flow(return_state=True).is_failed()
    assert seen == ["Failed"]


def ex_hooks_partial_kwargs():
    """'Pass kwargs to state change hooks': functools.partial binds extra arguments to a task hook."""
    fd, path = tempfile.mkstemp(suffix=".json")
    os.close(fd)

    def my_hook(task, task_run, state, **kwargs):
        with open(path, "w") as out:
            json.dump({"state": state.name, **kwargs}, out)

    @task
    def bad_task():
        raise ValueError("meh")

    @flow
    def ok_with_failure_flow(x: str = "foo", y: int = 42):
        hooked = bad_task.with_options(on_failure=[partial(my_hook, **dict(x=x, y=y))])
        return "bar", hooked(return_state=True)

    value, state = ok_with_failure_flow()
    assert value == "bar" and state.is_failed()
    with open(path) as data:
        assert json.load(data) == {"state": "Failed", "x": "foo", "y": 42}
    os.unlink(path)


def ex_hooks_flow_completion_and_cancel_kinds():
    """concepts/states 'State change hooks': on_completion on a flow gets (flow, flow_run, state)."""
    calls = []

    @flow(on_completion=[lambda f, r, s: calls.append(("done", s.is_completed()))],
          on_failure=[lambda f, r, s: calls.append(("failed", s.name))])
    def fine():
        return 1

    assert fine() == 1
    assert calls == [("done", True)]
