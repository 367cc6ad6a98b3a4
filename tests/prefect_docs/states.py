"""docs/v3/concepts/states.mdx."""

from prefect import flow, task


def ex_states_task_returns_state():
    """'Task return values': a task returning Failed()/Completed() sets its run's state; the flow fails."""
    from prefect.states import Completed, Failed

    @task
    def toggle(fail: bool):
        if fail:
            return Failed(message="told to fail")
        return Completed(message="told to succeed")

    seen = []

    @flow
    def example():
        seen[:] = [toggle(fail=True, return_state=True), toggle(fail=False, return_state=True)]
        return tuple(seen)

    assert example(return_state=True).is_failed()
    first, second = seen
    assert first.is_failed() and first.message == "told to fail"
    assert second.is_completed() and second.message == "told to succeed"


def ex_states_return_state():
    """'Task return values': return_state=True gives the State; .result() the value."""

    @task
    def add_one(x):
        return x + 1

    @flow
    def my_flow():
        value = add_one(1)
        assert isinstance(value, int) and value == 2
        state = add_one(1, return_state=True)
        assert state.is_completed() is True
        assert state.result() == 2
        return state.name

    assert my_flow() == "Completed"


def ex_states_failed_flow_raises():
    """A failing flow called plainly raises its exception; return_state=True gives Failed."""

    @flow
    def broken():
        raise ValueError("bad input 7")

    try:
        broken()
    except ValueError as exc:
        assert "bad input 7" in str(exc)
    else:
        raise AssertionError("the flow call did not raise")
    state = broken(return_state=True)
    assert state.is_failed() and state.type.value == "FAILED"
    assert isinstance(state.result(raise_on_failure=False), ValueError)
