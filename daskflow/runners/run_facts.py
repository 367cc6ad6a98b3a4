"""A flow run's facts for its tasks in other processes: ``runtime.flow_run.parameters``
(and the run's other facts) read by a task on a Dask worker.

Nothing of the kind travels with a task (its spec carries the run's id, name, flow
name and tags only), so tasks that do not read them cost nothing. The first task of
a worker process to read one asks the run's driver through the report topic; the
driver's engine puts the pickled snapshot (:class:`daskflow.context.FlowRunSnapshot`)
in a Dask scheduler variable, once per run, and deletes it when the run ends. No Dask
page shows variables, and the request names only the run.

The worker process keeps the answer while a task of that run runs there
(:func:`attempt_running`), and forgets it after: parameters, which may be secret or
large, do not outlive their tasks in a long-lived worker.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import cloudpickle

from ..exceptions import RunnerError, SerializationError
from ..masking import add_secrets, mask, secrets_in

__all__ = ["RUN_FACTS_TIMEOUT", "attempt_running", "encode", "fetch", "variable_name"]

#: Seconds a task on a worker waits for its flow run's driver to answer.
RUN_FACTS_TIMEOUT = 30.0

_lock = threading.Lock()
#: Per flow run id: the attempts of that run running in this process, the facts
#: fetched for them, and the lock one fetch holds so others wait for its answer.
_running: dict[str, int] = {}
_facts: dict[str, Any] = {}
_fetching: dict[str, threading.Lock] = {}


def variable_name(flow_run_id: str) -> str:
    """The scheduler variable that holds flow run ``flow_run_id``'s facts while it runs."""
    return f"daskflow-run-facts-{flow_run_id}"


def encode(facts: Callable[[], Any]) -> bytes:
    """Driver side: ``facts()`` pickled, or, if it cannot be, a pickled error that says why
    (the asking task raises it at once instead of waiting out its timeout)."""
    try:
        return cloudpickle.dumps(facts())
    except Exception as exc:
        message = f"the flow run's parameters cannot be sent to a worker ({type(exc).__name__}: {mask(str(exc))}); pass the value to the task as an argument"
        return cloudpickle.dumps(SerializationError(message))


@contextmanager
def attempt_running(flow_run_id: str) -> Iterator[None]:
    """Around an attempt on a worker: its run's facts are kept here while it runs."""
    with _lock:
        _running[flow_run_id] = _running.get(flow_run_id, 0) + 1
    try:
        yield
    finally:
        with _lock:
            left = _running[flow_run_id] - 1
            if left:
                _running[flow_run_id] = left
            else:
                del _running[flow_run_id]
                _facts.pop(flow_run_id, None)
                _fetching.pop(flow_run_id, None)


def fetch(flow_run_id: str, ask: Callable[[], None], read: Callable[[float], bytes]) -> Any:
    """The facts of flow run ``flow_run_id`` for a task running here: kept ones, or
    ``ask()`` the driver and ``read(timeout)`` its pickled answer (one fetch at a time).

    Raises
    ------
    RunnerError
        If no answer comes within :data:`RUN_FACTS_TIMEOUT` seconds.
    SerializationError
        If the driver could not pickle the facts (a parameter that cannot leave its process).
    """
    with _lock:
        if flow_run_id in _facts:
            return _facts[flow_run_id]
        fetching = _fetching.setdefault(flow_run_id, threading.Lock())
    with fetching:
        with _lock:
            if flow_run_id in _facts:
                return _facts[flow_run_id]
        ask()
        try:
            blob = read(RUN_FACTS_TIMEOUT)
        except Exception as exc:
            raise RunnerError(
                f"the driver of flow run {flow_run_id} did not send the run's parameters and facts within "
                f"{RUN_FACTS_TIMEOUT:g} s ({type(exc).__name__}: {exc}); is the flow run still going?"
            ) from None
        facts = cloudpickle.loads(blob)
        if isinstance(facts, BaseException):
            raise facts
        add_secrets(secrets_in(facts.parameters))  # masked in this process's task logs, as on the driver
        with _lock:
            if flow_run_id in _running:  # kept only while a task of the run runs here
                _facts[flow_run_id] = facts
        return facts
