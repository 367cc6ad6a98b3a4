"""Tasks shared by the tests. A module of its own so worker processes import it cheaply.

Side effects go through files (``marker_dir``): tasks may run in other processes.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from daskflow import flow, get_run_logger, task


@task
def add(x: int, y: int = 1) -> int:
    return x + y


@task
def total(values) -> int:
    return sum(values)


@task
def describe(structure) -> str:
    """Returns the structure's repr, to check futures inside containers were resolved."""
    return repr(structure)


@task
def fail(message: str = "boom") -> None:
    raise ValueError(message)


@task
def touch(marker_dir: str, name: str, *inputs) -> str:
    """Records that it ran by creating ``marker_dir/name``."""
    Path(marker_dir, name).write_text(str(os.getpid()))
    return name


def attempts_so_far(marker_dir: str, name: str) -> int:
    return len(list(Path(marker_dir).glob(f"{name}.attempt*")))


@task
def flaky(marker_dir: str, name: str, failures: int) -> str:
    """Fails its first ``failures`` attempts (counted in files), then succeeds."""
    n = attempts_so_far(marker_dir, name) + 1
    Path(marker_dir, f"{name}.attempt{n}").write_text(str(time.time()))
    if n <= failures:
        raise RuntimeError(f"{name} attempt {n} fails on purpose")
    return f"{name} ok after {n}"


@task
def sleepy(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@task
def spin(seconds: float) -> int:
    """Busy pure-Python loop: stops when a timeout's async exception lands."""
    end = time.monotonic() + seconds
    n = 0
    while time.monotonic() < end:
        n += 1
    return n


@task
def chatty(x: int) -> int:
    logger = get_run_logger()
    logger.info("working on %d", x)
    logger.warning("careful with %d", x)
    print(f"printed {x}")
    return x


@task
def stamp(marker_dir: str, name: str, seconds: float = 0.0) -> tuple[float, float]:
    start = time.time()
    time.sleep(seconds)
    Path(marker_dir, name).write_text(f"{start} {time.time()}")
    return start, time.time()


@task
def where(tag: object = None) -> str:
    from distributed import get_worker

    return get_worker().address


@task
def block_until(marker_dir: str, name: str, timeout: float = 60.0) -> int:
    """Writes its pid to ``name.pid``, then waits until ``name.go`` exists."""
    Path(marker_dir, f"{name}.pid.{os.getpid()}").write_text(str(os.getpid()))
    deadline = time.monotonic() + timeout
    while not Path(marker_dir, f"{name}.go").exists():
        if time.monotonic() > deadline:
            raise TimeoutError("never released")
        time.sleep(0.02)
    return os.getpid()


def runs_of(marker_dir: str, name: str) -> int:
    """How many times :func:`counted` ran under ``name``."""
    path = Path(marker_dir, f"{name}.runs")
    return len(path.read_text().splitlines()) if path.exists() else 0


@task
def counted(marker_dir: str, name: str, value):
    """Returns ``value``; appends a line per execution to ``marker_dir/name.runs``."""
    with open(Path(marker_dir, f"{name}.runs"), "a") as file:
        file.write(f"{os.getpid()}\n")
    return value


@task
def combine(marker_dir: str, name: str, *values):
    """Sums its inputs; counted like :func:`counted`."""
    with open(Path(marker_dir, f"{name}.runs"), "a") as file:
        file.write(f"{os.getpid()}\n")
    return sum(values)


@task
def scored(fold: int, c: float) -> dict:
    """Logs a line (from wherever it runs) and attaches a table artifact."""
    from daskflow import create_table_artifact, get_run_logger

    get_run_logger().info("fold %d with C=%s on pid %d", fold, c, os.getpid())
    print(f"printed by fold {fold}")
    score = round(1.0 / (1.0 + fold + c), 6)
    create_table_artifact([{"fold": fold, "C": c, "score": score}], key="fold-score", description=f"fold {fold}")
    return {"fold": fold, "C": c, "score": score}


@task
def leaky(token, fail: bool = False) -> int:
    """Logs and (optionally) raises with the raw value of a SecretStr argument."""
    from daskflow import get_run_logger

    raw = token.get_secret_value()
    get_run_logger().info("using token %s", raw)
    print(f"printed token {raw}")
    if fail:
        raise RuntimeError(f"server refused token {raw}")
    return len(raw)


@flow
def fan_out(n: int = 4) -> list[str]:
    """Logs from ``n`` tasks and returns the workers of ``n`` others."""
    chatty.map(range(n)).wait()
    return where.map(range(n)).result()


def drive_fan_out(n: int, storage: str) -> tuple[str, list[str], list[str | None], int]:
    """A plain Dask task that runs ``fan_out`` from inside its worker, storing in ``storage``."""
    state = fan_out.with_options(result_storage=storage, refresh_cache=True)(n, return_state=True)
    run = state.run
    return state.name, state.result(), [tr.worker for tr in run.task_runs.values()], len(run.logs)


def drive_fan_out_on(n: int, storage: str, resources: dict) -> tuple[str, list[str]]:
    """Like :func:`drive_fan_out`, with every task requiring ``resources``."""
    from daskflow import DaskTaskRunner

    options = {"task_runner": DaskTaskRunner(resources=resources), "result_storage": storage, "refresh_cache": True}
    state = fan_out.with_options(**options)(n, return_state=True)
    return state.name, state.result()
