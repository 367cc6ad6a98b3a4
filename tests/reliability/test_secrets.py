"""Scenario 19 (RELIABILITY.md section 6) and issue 12 defect 2: secrets never leak.

Two canaries go through one flow on a real LocalCluster of worker processes
(started before the canaries exist, so the workers cannot know them from their
own environment):

* ``sk-canary-...``, a ``SecretStr`` flow parameter, passed to tasks as a plain string;
* ``AKIA-ENVCANARY-...``, the driver's ``MY_SERVICE_TOKEN`` (a name daskflow knows as a
  credential) and a ``secret`` in the store's storage_options given by an
  environment variable, also passed to a task as a plain string.

Tasks log and print them and raise with them in a string argument, a dict, a
list and bytes, and as the cause of a chained exception. While the failed tasks
are still on the scheduler the test reads every page Dask and daskflow serve;
afterwards the driver's output, the worker and scheduler logs, every file of
the store and the CLI's outputs. Each surface must hold 0 occurrences.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import traceback
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dask
import pytest
from click.testing import CliRunner

from daskflow import DaskTaskRunner
from daskflow.cli import cli
from daskflow.pipeline.entrypoints import load_flow

from ..conftest import wait_until, worker_env

CANARY = "sk-canary-9f3e1d2c7b5a44"
#: The canaries of the test running: new ones for each scenario test, so the
#: worker processes (shared by the module) cannot know them from an earlier test.
CANARIES = [CANARY, "AKIA-ENVCANARY-61c0de77"]

_FLOW = '''
import os
import time
from pathlib import Path

from pydantic import SecretStr

from daskflow import flow, get_run_logger, task


@task
def use(raw: str) -> int:
    get_run_logger().info("using %s", raw)
    print(f"printed {raw}")
    return len(raw)


@task
def refuse(raw: str, kind: str) -> None:
    if kind == "str":
        raise RuntimeError(f"server refused {raw}")
    if kind == "dict":
        raise ValueError({"token": raw, "attempt": 1})
    if kind == "list":
        raise ValueError([raw], (raw.encode(),))
    try:
        raise KeyError(raw)
    except KeyError as exc:
        raise ConnectionError("login failed") from exc


@flow(log_prints=True)
def leaky_job(token: SecretStr, hold: str):
    raw = token.get_secret_value()
    from_env = os.environ["MY_SERVICE_TOKEN"]
    print("the flow got", raw, "and", from_env)
    used = use.submit(raw), use.submit(from_env)
    refused = [refuse.submit(raw, kind) for kind in ("str", "dict", "list", "chain")] + [refuse.submit(from_env, "dict")]
    for future in (*used, *refused):
        future.wait()
    # Hold the failed tasks on the scheduler while the test reads Dask's pages.
    Path(hold, "ready").write_text("")
    deadline = time.monotonic() + 60
    while not Path(hold, "go").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return refused
'''


@pytest.fixture
def canaries() -> tuple[str, str]:
    tag = uuid.uuid4().hex[:10]
    CANARIES[:] = [f"sk-canary-{tag}", f"AKIA-ENVCANARY-{tag}"]
    return CANARIES[0], CANARIES[1]


@pytest.fixture(scope="module")
def cluster():
    from distributed import Client, LocalCluster

    with LocalCluster(
        n_workers=1, threads_per_worker=2, processes=True, host="127.0.0.1", dashboard_address="127.0.0.1:0"
    ) as cluster, Client(cluster, set_as_default=False) as client:
        yield cluster, client


def count(text: str | bytes) -> int:
    """Occurrences of either canary."""
    if isinstance(text, bytes):
        return sum(text.count(c.encode()) for c in CANARIES)
    return sum(text.count(c) for c in CANARIES)


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=20) as reply:
            return reply.status, reply.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8", "replace")


def _dask_pages(client: Any, run_id: Callable[[], str | None]) -> dict[str, str]:
    """Every page the scheduler's HTTP server shows about tasks, workers and logs,
    the status page's included, read while the run's failed tasks are held."""
    base = client.dashboard_link.rsplit("/", 1)[0]
    keys = client.run_on_scheduler(lambda dask_scheduler: [str(k) for k in dask_scheduler.tasks])
    workers = list(client.scheduler_info(n_workers=-1)["workers"])
    paths = ["/info/main/workers.html", "/info/main/exceptions.html", "/info/main/logs.html", "/json/identity.json",
             "/json/counts.json", "/json/index.html", "/daskflow", "/daskflow/api/runs"]
    for worker in workers:
        quoted = urllib.parse.quote(worker, safe="")
        paths += [f"/info/worker/{quoted}.html", f"/info/logs/{quoted}.html", f"/info/call-stacks/{quoted}.html"]
    paths += [f"/info/task/{urllib.parse.quote(key, safe='')}.html" for key in keys]
    paths += [f"/info/call-stack/{urllib.parse.quote(key, safe='')}.html" for key in keys]
    rid = run_id()
    if rid:
        paths += [f"/daskflow/api/runs/{rid}", f"/daskflow/api/runs/{rid}/logs"]
    pages = {}
    for path in paths:
        status, body = _get(base + path)
        if status == 500 and path == "/json/identity.json":
            # distributed's route fails to encode some worker metrics once tasks
            # ran (keys that are tuples): read what it would show from the scheduler.
            body = repr(client.run_on_scheduler(lambda dask_scheduler: dask_scheduler.identity()))
        else:
            assert status == 200, (path, status, body[:300])
        pages[path] = body
    task_pages = [p for p in pages if p.startswith("/info/task/refuse")]
    assert len(task_pages) == 5, sorted(pages)  # the failed tasks were still there to be shown
    # Their exceptions were shown, masked.
    assert "AttemptError" in pages["/info/main/exceptions.html"] and "AttemptError" in pages[task_pages[0]]
    assert "**********" in pages["/info/main/exceptions.html"]
    # What a worker logs of a failed task ("Compute Failed": repr(run_spec)[:1000]).
    specs = client.run_on_scheduler(lambda dask_scheduler: [repr(ts.run_spec)[:1000] for ts in dask_scheduler.tasks.values()])
    pages["task specs"] = "\n".join(specs)
    return pages


def _store_and_cli(store: Path, run_id: str) -> dict[str, int]:
    found = {}
    files = [p for p in store.rglob("*") if p.is_file()]
    assert any(p.name.startswith("logs-") for p in files) and any(p.name == "run.json" for p in files)
    found[f"store files ({len(files)})"] = sum(count(p.read_bytes()) for p in files)
    runner = CliRunner()
    for args in (["runs", "ls"], ["runs", "ls", "--json"], ["runs", "show", run_id, "--tracebacks"],
                 ["runs", "show", run_id, "--json"], ["logs", run_id], ["logs", run_id, "--json"], ["cache", "ls"]):
        result = runner.invoke(cli, [*args, "--storage", str(store)])
        assert result.exit_code == 0, (args, result.output)
        label = "logs" if args[0] == "logs" else " ".join(args[:2])
        found[label] = found.get(label, 0) + count(result.output)
    logs = runner.invoke(cli, ["logs", run_id, "--storage", str(store)]).output
    assert "using **********" in logs and "printed **********" in logs  # the tasks did get the values
    return found


def _logs(client: Any) -> dict[str, int]:
    return {
        "worker logs": count(json.dumps(client.get_worker_logs(), default=str)),
        "nanny logs": count(json.dumps(client.get_worker_logs(nanny=True), default=str)),
        "scheduler logs": count(json.dumps(client.get_scheduler_logs(), default=str)),
    }


def _with_pages(hold: Path, client: Any, run_id: Callable[[], str | None], pages: dict[str, str]) -> threading.Thread:
    """Reads the pages once the flow holds its failed tasks, then lets it finish."""
    errors: list[BaseException] = []

    def read() -> None:
        try:
            wait_until(lambda: (hold / "ready").exists(), 90, message="the flow to hold its failed tasks")
            pages.update(_dask_pages(client, run_id))
        except BaseException as exc:
            errors.append(exc)
        finally:
            (hold / "go").write_text("")

    thread = threading.Thread(target=read, daemon=True)
    thread.errors = errors  # type: ignore[attr-defined]
    thread.start()
    return thread


def _report(scenario_report: Callable[..., Any], how: str, surfaces: dict[str, int]) -> None:
    leaking = {name: n for name, n in surfaces.items() if n}
    assert not leaking, f"canary occurrences per surface: {surfaces}"
    scenario_report(
        19, f"canary secrets on every surface ({how})",
        f"0 occurrences on {len(surfaces)} surfaces ({', '.join(f'{k} {v}' for k, v in surfaces.items())})",
    )


@pytest.mark.slow
def test_s19_canaries_in_process(cluster, canaries, tmp_path, capfd, monkeypatch, scenario_report):
    cluster, client = cluster
    secret, env_secret = canaries
    store = tmp_path / "store"
    hold = tmp_path / "hold"
    hold.mkdir()
    flow_file = tmp_path / "leaky_flow.py"
    flow_file.write_text(_FLOW)
    monkeypatch.setenv("MY_SERVICE_TOKEN", env_secret)
    from daskflow import masking

    monkeypatch.setattr(masking, "_env_read", False)  # the driver reads its (now changed) environment again
    job = load_flow(f"{flow_file}:leaky_job").with_options(task_runner=DaskTaskRunner(address=cluster.scheduler_address))
    from daskflow.pipeline.flow import RUN_OBSERVERS

    runs: list[Any] = []
    RUN_OBSERVERS.append(runs.append)
    pages: dict[str, str] = {}
    reader = _with_pages(hold, client, lambda: runs[0].id if runs else None, pages)
    console = __import__("logging").getLogger("daskflow")
    before = list(console.handlers)
    try:
        with dask.config.set({"daskflow.logging.console": True, "daskflow.storage.url": str(store),
                              "daskflow.storage.options": {"secret": env_secret}}):
            state = job(secret, str(hold), return_state=True)
    finally:
        RUN_OBSERVERS.remove(runs.append)
        for handler in set(console.handlers) - set(before):
            console.removeHandler(handler)
    reader.join(30)
    assert not reader.errors, reader.errors
    assert state.is_failed()
    surfaces: dict[str, int] = {"state message": count(state.message) + count(str(state))}
    # What the user sees of each task's error, uncaught: the whole chain, notes included.
    shown = []
    for task_run in state.run.task_runs.values():
        error = task_run.state.result(raise_on_failure=False)
        if isinstance(error, BaseException):
            shown.append("".join(traceback.format_exception(error)))
    assert len(shown) == 5 and any("KeyError" in text for text in shown)  # the chained cause is shown
    surfaces["uncaught tracebacks"] = sum(count(text) for text in shown)
    try:
        state.result()
    except BaseException as exc:  # the flow's own error, as a script that does not catch it prints
        surfaces["uncaught tracebacks"] += count("".join(traceback.format_exception(exc)))
    out, err = capfd.readouterr()
    assert "the flow got ********** and **********" in err, err[-2000:]
    surfaces["driver stdout"], surfaces["driver stderr"] = count(out), count(err)
    surfaces["dask and status pages"] = sum(count(body) for body in pages.values())
    surfaces.update(_store_and_cli(store, state.run.id))
    surfaces.update(_logs(client))
    _report(scenario_report, f"in-process, {len(pages)} pages", surfaces)


@pytest.mark.slow
def test_s19_canaries_through_the_cli(cluster, canaries, tmp_path, scenario_report):
    cluster, client = cluster
    secret, env_secret = canaries
    store = tmp_path / "store"
    hold = tmp_path / "hold"
    hold.mkdir()
    flow_file = tmp_path / "leaky_flow.py"
    flow_file.write_text(_FLOW)
    env = {**worker_env(), "MY_SERVICE_TOKEN": env_secret, "DASK_DASKFLOW__STORAGE__OPTIONS": json.dumps({"secret": env_secret})}
    pages: dict[str, str] = {}

    def run_id() -> str | None:
        active = list((store / "runs").rglob("run.json")) if store.exists() else []
        return json.loads(active[0].read_text())["id"] if active else None

    reader = _with_pages(hold, client, run_id, pages)
    done = subprocess.run(
        [str(Path(sys.executable).parent / "daskflow"), "run", f"{flow_file}:leaky_job", "-p", f"token={secret}",
         "-p", f"hold={hold}", "--address", cluster.scheduler_address, "--storage", str(store), "--no-progress"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
    )
    reader.join(30)
    assert not reader.errors, reader.errors
    assert done.returncode == 1, done.stderr[-3000:]
    assert "Failed" in done.stdout and "the flow got ********** and **********" in done.stderr, done.stderr[-3000:]
    surfaces = {"driver stdout": count(done.stdout), "driver stderr": count(done.stderr)}
    surfaces["dask and status pages"] = sum(count(body) for body in pages.values())
    rid = run_id()
    assert rid
    surfaces.update(_store_and_cli(store, rid))
    surfaces.update(_logs(client))
    _report(scenario_report, f"daskflow run, {len(pages)} pages", surfaces)


def test_task_specs_show_no_argument_values():
    """What a worker logs of a failed task is ``repr(run_spec)[:1000]``; Dask
    elides arguments only when the key is long. A short key shows them: the
    sealed arguments say nothing, and carry the secrets to the worker."""
    from dask._task_spec import Task

    from daskflow import masking
    from daskflow.runners.dask import run_on_worker
    from daskflow.runners.execute import AttemptSpec, SealedArguments

    masking.add_secrets([CANARY])
    sealed, lifted = SealedArguments.seal((f"token={CANARY}", [1, 2]), {"retries": 0}, "k-1")
    spec = AttemptSpec("run", "tr", "k-1", 1)
    shown = repr(Task("k", run_on_worker, len, spec, sealed))
    assert "<arguments of task run 'k-1', not shown>" in shown and CANARY not in shown, shown
    assert lifted == [] and CANARY in sealed.secrets
    assert sealed.open() == ((f"token={CANARY}", [1, 2]), {"retries": 0})


def test_exceptions_are_masked_through_args_notes_and_causes():
    from daskflow import masking

    masking.add_secrets([CANARY])
    try:
        try:
            raise KeyError({"nested": [CANARY.encode(), (CANARY,)]})
        except KeyError as exc:
            raise OSError(2, "cannot open", f"/keys/{CANARY}") from exc
    except OSError as exc:
        error = exc
    error.add_note(f"while logging in with {CANARY}")
    assert masking.mask_exception(error)
    text = "".join(traceback.format_exception(error))
    assert CANARY not in text and text.count("**********") == 4, text

    class Stubborn(Exception):
        def __str__(self) -> str:
            return f"always {CANARY}"

    assert not masking.mask_exception(Stubborn())  # its text cannot be masked: the worker sends text only
