"""docs/v3/how-to-guides/workflows/write-and-run.mdx and retry-flow-runs / retries (flow part)."""

import time

from prefect import flow, task


def ex_flows_basic():
    """'Define a workflow': a decorated function is a flow; calling it runs it."""

    @flow
    def greet() -> str:
        return "Hi there"

    assert greet() == "Hi there"
    assert greet.name == "greet"


def ex_flows_methods():
    """'Define a workflow': instance, class and static methods as flows."""

    class Greeter:
        @flow
        def on_instance(self):
            return "instance"

        @flow
        @classmethod
        def on_class(cls):
            return "class"

        @flow
        @staticmethod
        def on_static():
            return "static"

    assert Greeter().on_instance() == "instance"
    assert Greeter.on_class() == "class"
    assert Greeter.on_static() == "static"


def ex_flows_generator():
    """'Define a workflow': a generator flow yields its values to the caller."""

    @flow
    def count_up():
        for i in range(4):
            yield i * 10

    assert list(count_up()) == [0, 10, 20, 30]


def ex_flows_child_flow():
    """'Create tasks and child workflows': a task's value feeds a child flow."""

    @task
    def pick_number():
        return 42

    @flow
    def is_even(number: int):
        return number % 2 == 0

    @flow
    def even_or_odd():
        number = pick_number()
        return "even" if is_even(number) else "odd"

    assert even_or_odd() == "even"


def ex_flows_timeout():
    """'Cancel a workflow if it runs for too long': timeout_seconds fails the run."""
    reached = []

    @flow(timeout_seconds=1, log_prints=True)
    def too_slow():
        print("started")
        time.sleep(3)
        reached.append("end")

    started = time.monotonic()
    state = too_slow(return_state=True)
    assert state.is_failed()
    assert "timeout" in (state.message or "").lower() or "timed out" in (state.message or "").lower()
    assert reached == []
    assert time.monotonic() - started < 2.9


def ex_flows_retries():
    """'Set the number of retries': a failing flow runs 1 + retries times, then Failed."""
    attempts = []

    @flow(retries=2)
    def flaky_pipeline():
        attempts.append(1)
        raise RuntimeError("always breaks")

    state = flaky_pipeline(return_state=True)
    assert state.is_failed()
    assert len(attempts) == 3


def ex_flows_retry_delay():
    """'Wait between retries': retry_delay_seconds spaces the attempts, and a later try can succeed."""
    stamps = []

    @flow(retries=1, retry_delay_seconds=1)
    def second_time_lucky():
        stamps.append(time.monotonic())
        if len(stamps) == 1:
            raise RuntimeError("first try fails")
        return "ok"

    assert second_time_lucky() == "ok"
    assert len(stamps) == 2, stamps
    assert stamps[1] - stamps[0] >= 0.9, stamps[1] - stamps[0]
