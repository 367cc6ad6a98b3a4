"""docs/v3/how-to-guides/workflows/write-and-run.mdx (tasks), retries.mdx, concepts/tasks.mdx."""

import asyncio
import datetime

from prefect import flow, task


def ex_tasks_name_description():
    """'Task configuration': name= and description= on a task."""

    @task(name="say-hi", description="Greets.")
    def hi():
        return "hi"

    assert hi.name == "say-hi"
    assert hi.description == "Greets."

    @flow
    def f():
        return hi()

    assert f() == "hi"


def ex_tasks_run_name_template():
    """'Task configuration': task_run_name as a template filled from the arguments."""
    from prefect.runtime import task_run

    @task(task_run_name="hello-{name}-on-{date:%A}")
    def named(name, date):
        return task_run.name

    @flow
    def f():
        return named(name="marvin", date=datetime.datetime(2024, 1, 4))  # a Thursday

    assert f() == "hello-marvin-on-Thursday"


def ex_tasks_run_name_callable():
    """'Task configuration': task_run_name as a function."""
    from prefect.runtime import task_run

    def make_name():
        return "a-lovely-day"

    @task(task_run_name=make_name)
    def named(name):
        return task_run.name

    @flow
    def f():
        return named("x")

    assert f() == "a-lovely-day"


def ex_tasks_outside_flow():
    """'Calling tasks directly': a task called outside any flow just runs."""

    @task
    def floor_label(floor: int):
        return f"floor {floor}"

    assert floor_label(3) == "floor 3"


def ex_tasks_async_timeout():
    """'Task timeout behavior': an async task past timeout_seconds ends Failed with a timeout."""

    @task(timeout_seconds=0.5)
    async def sleepy():
        await asyncio.sleep(5)

    @flow
    async def f():
        state = await sleepy(return_state=True)
        return state.is_failed(), (state.message or "").lower()

    failed, message = asyncio.run(f())
    assert failed
    assert "timeout" in message or "timed out" in message


def ex_tasks_retries():
    """'Retry parts of a workflow': a task with retries runs again until it succeeds."""
    from prefect.runtime import task_run

    @task(retries=3, retry_delay_seconds=0)
    def mercurial():
        if task_run.run_count < 3:
            raise RuntimeError(f"attempt {task_run.run_count} fails")
        return task_run.run_count

    @flow
    def f():
        return mercurial()

    assert f() == 3


def ex_tasks_retry_delay_list():
    """'Retry with configurable delay': a list of delays; all tries fail -> Failed."""
    from prefect.runtime import task_run

    @task(retries=2, retry_delay_seconds=[0.1, 0.2])
    def melancholic():
        raise RuntimeError(f"run {task_run.run_count}")

    @flow
    def f():
        state = melancholic(return_state=True)
        return state.is_failed(), str(state.result(raise_on_failure=False))

    failed, error = f()
    assert failed
    assert error == "run 3"


def ex_tasks_exponential_backoff():
    """'Retry with configurable delay': exponential_backoff(backoff_factor) gives doubling delays."""
    from prefect.tasks import exponential_backoff
    delays = exponential_backoff(backoff_factor=2)(3)
    assert list(delays) == [2, 4, 8]

    @task(retries=2, retry_delay_seconds=exponential_backoff(backoff_factor=0.05), retry_jitter_factor=1)
    def gives_up():
        raise RuntimeError("no")

    @flow
    def f():
        return gives_up(return_state=True).is_failed()

    assert f() is True


def ex_tasks_retry_condition():
    """'Retry with a custom condition': retry_condition_fn(task, task_run, state) vetoes a retry."""
    from prefect.runtime import task_run

    def only_connection_errors(task, task_run, state) -> bool:
        try:
            state.result()
        except ConnectionError:
            return True
        except Exception:
            return False
        return True

    @task(retries=3, retry_condition_fn=only_connection_errors)
    def call_api(kind):
        if kind == "bad-request":
            raise ValueError(f"run {task_run.run_count}: 400")
        if task_run.run_count < 2:
            raise ConnectionError("reset")
        return task_run.run_count

    @flow
    def f():
        return call_api("bad-request", return_state=True), call_api("flaky")

    bad, flaky = f()
    assert bad.is_failed()
    assert "run 1" in str(bad.result(raise_on_failure=False))
    assert flaky == 2
