"""docs/v3/how-to-guides/workflows/cache-workflow-steps.mdx and concepts/caching.mdx.

Inputs carry a random number so that a run never meets a cache entry left by
another run of the same example (the default policy would share them).
"""

import random
import time
from datetime import timedelta

from prefect import flow, task


def ex_cache_default_policy():
    """Intro: with persisted results, the same call twice in one run is Cached the second time."""
    salt = random.randrange(10**9)

    @task(persist_result=True)
    def add_one(x: int):
        return x + 1

    @flow
    def my_flow():
        return [add_one(x, return_state=True) for x in (salt, salt, salt + 1)]

    first, second, third = my_flow()
    assert [s.name for s in (first, second, third)] == ["Completed", "Cached", "Completed"]
    assert second.result() == salt + 1


def ex_cache_inputs_outside_flow():
    """'Cache based on inputs': INPUTS policy, task called outside a flow."""
    from prefect.cache_policies import INPUTS
    salt = random.randrange(10**9)

    @task(cache_policy=INPUTS)
    def stateful(x: int):
        return x + 1

    names = [stateful(x=x, return_state=True).name for x in (salt, salt, salt + 1)]
    assert names == ["Completed", "Cached", "Completed"]


def ex_cache_inputs_minus_argument():
    """'Cache based on a subset of inputs': INPUTS - 'debug' ignores that argument."""
    from prefect.cache_policies import INPUTS
    salt = random.randrange(10**9)

    @task(cache_policy=INPUTS - "debug")
    def stateful(x: int, debug: bool = False):
        return x + 1

    names = [stateful(x=salt, return_state=True).name,
             stateful(x=salt, debug=True, return_state=True).name,
             stateful(x=salt, debug=False, return_state=True).name]
    assert names == ["Completed", "Cached", "Cached"]


def ex_cache_expiration():
    """'Cache with an expiration': after cache_expiration the task runs again."""
    from prefect.cache_policies import INPUTS
    salt = random.randrange(10**9)

    @task(cache_policy=INPUTS, cache_expiration=timedelta(seconds=1))
    def stateful(x: int):
        return x + 1

    assert stateful(x=salt, return_state=True).name == "Completed"
    assert stateful(x=salt, return_state=True).name == "Cached"
    time.sleep(1.2)  # the documented behaviour is about wall-clock expiry
    assert stateful(x=salt, return_state=True).name == "Completed"


def ex_cache_refresh():
    """'Ignore the cache': refresh_cache=True always runs (and rewrites the entry)."""
    from prefect.cache_policies import TASK_SOURCE

    @task(cache_policy=TASK_SOURCE, refresh_cache=True)
    def never_cached():
        return random.random()

    a = never_cached(return_state=True)
    b = never_cached(return_state=True)
    assert a.name == "Completed" and b.name == "Completed"
    assert a.result() != b.result()


def ex_cache_no_cache():
    """concepts/caching: NO_CACHE turns caching off."""
    from prefect.cache_policies import NO_CACHE

    @task(cache_policy=NO_CACHE)
    def fresh():
        return random.random()

    assert fresh(return_state=True).name == "Completed"
    assert fresh(return_state=True).name == "Completed"


def ex_cache_key_fn():
    """'Cache with a custom key': cache_key_fn(context, parameters) chooses the key."""
    salt = random.randrange(10**9)

    def by_user(context, parameters):
        return f"user-{salt}-{parameters['user']}"

    @task(cache_key_fn=by_user)
    def profile(user, verbose=False):
        return random.random()

    a = profile("ada", return_state=True)
    b = profile("ada", verbose=True, return_state=True)
    assert b.name == "Cached" and a.result() == b.result()


def ex_cache_task_input_hash():
    """Prefect 2 style kept in 3: cache_key_fn=task_input_hash."""
    from prefect.tasks import task_input_hash
    salt = random.randrange(10**9)

    @task(cache_key_fn=task_input_hash)
    def double(x):
        return 2 * x

    @flow
    def f():
        return [double(salt, return_state=True).name, double(salt, return_state=True).name]

    assert f() == ["Completed", "Cached"]
