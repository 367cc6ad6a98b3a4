"""docs/v3/how-to-guides/workflows/run-work-concurrently.mdx and concepts/task-runners.mdx."""

import time


def ex_futures_submit_wait():
    """'Using .submit': submit in a loop, then wait() on the list; all done."""
    from prefect import flow, task
    from prefect.futures import wait

    @task
    def stop_at_floor(floor: int):
        time.sleep(floor / 100)
        return floor

    @flow
    def elevator():
        floors = [stop_at_floor.submit(floor) for floor in range(5, 0, -1)]
        done, not_done = wait(floors)
        return len(done), len(not_done), [f.result() for f in floors]

    assert elevator() == (5, 0, [5, 4, 3, 2, 1])


def ex_futures_result():
    """'Handling futures': future.result() gives the task's value."""
    from prefect import flow, task

    @task
    def cool_task():
        return "sup"

    @flow
    def f():
        return cool_task.submit().result()

    assert f() == "sup"


def ex_futures_wait_method():
    """'Handling futures': future.wait() then the future's state is final."""
    from prefect import flow, task

    @task
    def cool_task():
        return "sup"

    @flow
    def f():
        future = cool_task.submit()
        future.wait()
        return future.state.is_completed()

    assert f() is True


def ex_futures_pass_to_task():
    """'Handling futures': a future passed to another task is resolved to its value."""
    from prefect import flow, task

    @task
    def cool_task():
        return "sup"

    @task
    def echo(said: str):
        return f"cool task said {said}"

    @flow
    def f():
        return echo(cool_task.submit())

    assert f() == "cool task said sup"


def ex_futures_as_completed():
    """concepts/task-runners: as_completed yields futures as they finish."""
    from prefect import flow, task
    from prefect.futures import as_completed

    @task
    def square(x):
        return x * x

    @flow
    def f():
        futures = [square.submit(i) for i in range(4)]
        return sorted(fut.result() for fut in as_completed(futures))

    assert f() == [0, 1, 4, 9]


def ex_mapping_map():
    """'Using .map': map over a list, wait, read the results in order."""
    from prefect import flow, task
    from prefect.futures import wait

    @task
    def stop_at_floor(floor: int):
        return f"floor {floor}"

    @flow
    def elevator():
        futures = stop_at_floor.map([3, 2, 1])
        wait(futures)
        return futures.result()

    assert elevator() == ["floor 3", "floor 2", "floor 1"]


def ex_mapping_static_argument():
    """'Using the unmapped annotation': a non-iterable argument goes to every call."""
    from prefect import flow, task

    @task
    def add_together(x, y):
        return x + y

    @flow
    def sum_it(numbers: list[int], static_value: int):
        return add_together.map(numbers, static_value).result()

    assert sum_it([1, 2, 3], 5) == [6, 7, 8]


def ex_mapping_unmapped():
    """'Using the unmapped annotation': unmapped() keeps an iterable whole."""
    from prefect import flow, task, unmapped

    @task
    def sum_plus(x, static_iterable):
        return x + sum(static_iterable)

    @flow
    def f():
        return sum_plus.map([1, 2, 3], unmapped([4, 5, 6])).result()

    assert f() == [16, 17, 18]


def ex_taskrunner_threadpool_pinned():
    """concepts/task-runners: a flow pinned to ThreadPoolTaskRunner(max_workers=...)."""
    from prefect import flow, task
    from prefect.task_runners import ThreadPoolTaskRunner

    @task
    def slow(i):
        time.sleep(0.3)
        return i

    @flow(task_runner=ThreadPoolTaskRunner(max_workers=4))
    def f():
        started = time.monotonic()
        values = [fut.result() for fut in [slow.submit(i) for i in range(4)]]
        return values, time.monotonic() - started

    values, took = f()
    assert values == [0, 1, 2, 3]
    assert took < 1.0  # the four ran side by side
