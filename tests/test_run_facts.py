"""daskflow.runners.run_facts: how a worker process fetches and keeps a flow run's facts
(the transport is faked; tests/test_prefect_runtime_worker.py runs it on a LocalCluster)."""

from __future__ import annotations

import threading

import cloudpickle
import pytest

from daskflow.context import FlowRunSnapshot
from daskflow.exceptions import RunnerError, SerializationError
from daskflow.runners import run_facts

SNAPSHOT = FlowRunSnapshot(id="run-1", name="nightly-1", parameters={"n": 3})


class Driver:
    """Answers asks like the driver's engine: the pickled snapshot, counted."""

    def __init__(self, blob: bytes) -> None:
        self.asks = 0
        self.blob = blob
        self.answered = threading.Event()

    def ask(self) -> None:
        self.asks += 1

    def read(self, timeout: float) -> bytes:
        assert self.answered.wait(timeout)
        return self.blob


def test_concurrent_readers_of_one_run_ask_once_and_the_facts_go_with_the_last_task():
    driver = Driver(run_facts.encode(lambda: SNAPSHOT))
    got: list = []

    def attempt() -> None:
        with run_facts.attempt_running("run-1"):
            got.append(run_facts.fetch("run-1", driver.ask, driver.read))

    threads = [threading.Thread(target=attempt) for _ in range(4)]
    with run_facts.attempt_running("run-1"):  # a task of the run is running here all along
        for t in threads:
            t.start()
        driver.answered.set()
        for t in threads:
            t.join(10)
        assert driver.asks == 1 and [g.parameters for g in got] == [{"n": 3}] * 4
    # No task of the run left in this process: the next one asks again.
    with run_facts.attempt_running("run-1"):
        run_facts.fetch("run-1", driver.ask, driver.read)
    assert driver.asks == 2


def test_an_unanswered_ask_and_an_unsendable_answer_raise_runner_errors(monkeypatch):
    def no_answer(timeout: float) -> bytes:
        raise TimeoutError("nobody answered")

    with run_facts.attempt_running("run-2"):
        with pytest.raises(RunnerError, match="did not send the run's parameters"):
            run_facts.fetch("run-2", lambda: None, no_answer)

    blob = run_facts.encode(lambda: FlowRunSnapshot(id="run-3", name="x", parameters={"lock": threading.Lock()}))
    with run_facts.attempt_running("run-3"):
        with pytest.raises(SerializationError, match="cannot be sent to a worker"):
            run_facts.fetch("run-3", lambda: None, lambda timeout: blob)
    assert isinstance(cloudpickle.loads(blob), SerializationError)
