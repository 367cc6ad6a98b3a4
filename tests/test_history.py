"""Run history: records, logs from workers, artifacts, liveness, crashes, secrets."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import dask
import pytest
from click.testing import CliRunner
from pydantic import SecretStr

from daskflow import (
    ConcurrentTaskRunner,
    DaskTaskRunner,
    History,
    SequentialTaskRunner,
    Store,
    create_link_artifact,
    create_markdown_artifact,
    flow,
    get_run_logger,
)
from daskflow.cli import cli

from .conftest import DaskCLICluster, wait_until, worker_env
from .tasks import add, block_until, fail, leaky, scored, total

FAST = {"daskflow.history.flush-interval": 0.05, "daskflow.history.heartbeat": 0.2}


@contextlib.contextmanager
def _running(flow_, release: Path):
    """Run ``flow_`` in a thread; yield ``{"state": ...}`` (filled once it ends).
    On leaving, write the gate file ``release`` and wait for the run to end."""
    outcome: dict = {}
    thread = threading.Thread(target=lambda: outcome.setdefault("state", flow_(return_state=True)))
    thread.start()
    try:
        yield outcome
    finally:
        release.write_text("go")
        thread.join(60)


def _history(store_path: Path) -> History:
    return History(Store(str(store_path)))


def _only_run(history: History):
    entries = history.entries()
    assert len(entries) == 1, entries
    return entries[0]


def test_a_run_is_recorded_with_its_task_runs_logs_and_artifacts(_result_storage):
    @flow(task_runner=SequentialTaskRunner(), tags=["nightly"], version="7")
    def sweep(folds: int = 3, c: float = 0.5):
        get_run_logger().info("starting %d folds", folds)
        scores = scored.map(range(folds), c=c)
        create_markdown_artifact("# done", key="notes")
        create_link_artifact("s3://bucket/model.pkl", link_text="model")
        return [s["score"] for s in scores.result()]

    state = sweep(return_state=True)
    assert state.is_completed()
    history = _history(_result_storage)
    entry = _only_run(history)
    record = history.run(entry)
    assert record["id"] == state.run.id
    assert record["name"] == state.run.name
    assert record["flow_name"] == "sweep" and record["version"] == "7" and record["tags"] == ["nightly"]
    assert record["parameters"] == {"folds": 3, "c": 0.5}
    assert [s["name"] for s in record["state_history"]] == ["Pending", "Running", "Completed"]
    assert record["task_counts"] == {"Completed": 3} and record["task_runs"] == 3
    assert record["result_storage"] == str(_result_storage)
    assert record["end_time"] >= record["start_time"]

    tasks = history.tasks(entry)
    assert [t["name"] for t in tasks] == ["scored-0", "scored-1", "scored-2"]
    for t in tasks:
        assert t["state"]["name"] == "Completed"
        assert [h[1] for h in t["history"]] == ["Pending", "Running", "Completed"]
        assert t["attempts"] == 1 and t["cache_key"] and t["cache_hit"] is False
        assert t["dask_keys"] and t["worker"] and t["end_time"] >= t["start_time"]

    messages = [line["m"] for line in history.logs(entry)]
    assert messages[0] == "starting 3 folds"
    assert any(m.startswith("fold 1 with C=0.5") for m in messages)
    assert "printed by fold 2" not in messages  # log_prints is off
    assert [line["m"] for line in history.logs(entry, task="scored-1")][0].startswith("fold 1")

    artifacts = history.artifacts(entry)
    tables = [a for a in artifacts if a["type"] == "table"]
    assert len(tables) == 3 and {a["task_run_name"] for a in tables} == {"scored-0", "scored-1", "scored-2"}
    assert tables[0]["data"]["columns"] == ["fold", "C", "score"]
    assert {a["type"]: a["key"] for a in artifacts if a["type"] != "table"} == {"markdown": "notes", "link": None}
    # No runs left marked live.
    assert Store(str(_result_storage)).children("active") == []


def test_writes_are_batched_not_one_object_per_event(_result_storage):
    @flow(task_runner=SequentialTaskRunner())
    def many(n: int = 300):
        return total(add.map(range(n)))

    with dask.config.set({"daskflow.history.flush-interval": 60}):
        assert many() == sum(range(1, 301))
    entry = _only_run(_history(_result_storage))
    files = Store(str(_result_storage)).children(f"runs/{entry.folder}")
    # 301 task runs with 3 state changes each, in one compacted segment (its
    # number depends on whether a flush ran before the run ended).
    assert files[0] == "run.json" and len(files) == 2 and files[1].startswith("tasks-"), files
    assert len(_history(_result_storage).tasks(entry)) == 301


def test_history_is_readable_while_the_run_goes_on(_result_storage, tmp_path):
    gate = tmp_path / "gate"
    gate.mkdir()

    @flow(task_runner=DaskTaskRunner(cluster_kwargs={"processes": False, "n_workers": 1, "threads_per_worker": 2}))
    def slow():
        first = add(1, 2)
        blocked = block_until.submit(str(gate), "b")
        return first, blocked.result()

    with dask.config.set(FAST), _running(slow, gate / "b.go") as outcome:
        history = _history(_result_storage)

        def running_with_add_done():
            # A flush appends the task segment before it rewrites run.json, so a
            # reader can see the two a moment apart: wait until both show it.
            entries = history.entries()
            if not entries:
                return None
            tasks = {t["name"]: t["state"]["name"] for t in history.tasks(entries[0])}
            record = history.run(entries[0])
            done = tasks.get("add-0") == "Completed" and tasks.get("block_until-0") == "Running"
            return (tasks, record) if done and record["task_counts"].get("Running") == 1 else None

        seen, record = wait_until(running_with_add_done, 60, message="the record of a running run")
        assert seen == {"add-0": "Completed", "block_until-0": "Running"}
        assert record["state"]["name"] == "Running"
        assert record["task_counts"] == {"Completed": 1, "Running": 1}
        assert Store(str(_result_storage)).children("active") == [history.entries()[0].folder]
    assert outcome["state"].is_completed()
    assert history.run(history.entries()[0])["state"]["name"] == "Completed"


@pytest.mark.slow
def test_log_lines_from_a_dask_worker_process_reach_daskflow_logs(tmp_path, _result_storage):
    cluster = DaskCLICluster(tmp_path, workers=((),))
    try:
        @flow(task_runner=DaskTaskRunner(address=cluster.address), log_prints=True)
        def remote():
            return scored(4, 2.0)

        assert remote()["fold"] == 4
        worker_pids = cluster.worker_pids()
    finally:
        cluster.close()
    result = CliRunner().invoke(cli, ["logs", _only_run(_history(_result_storage)).run_id[:8], "--storage", str(_result_storage)])
    assert result.exit_code == 0, result.output
    pid = int(result.output.split("fold 4 with C=2.0 on pid ")[1].split()[0])
    assert pid in worker_pids and pid != os.getpid()  # logged in the `dask worker` process
    assert "printed by fold 4" in result.output  # log_prints captured on the worker


_DRIVER = """
import sys
from daskflow import flow, SequentialTaskRunner
sys.path.insert(0, sys.argv[2])
from tests.tasks import block_until

@flow(task_runner=SequentialTaskRunner())
def stuck(gate: str):
    return block_until(gate, "never", 600)

stuck(sys.argv[1])
"""


@pytest.mark.slow
def test_a_sigkilled_driver_run_is_shown_crashed_and_swept(tmp_path, _result_storage):
    script = tmp_path / "driver.py"
    script.write_text(_DRIVER)
    env = {
        **worker_env(),
        "DASK_DASKFLOW__STORAGE__URL": str(_result_storage),
        "DASK_DASKFLOW__LOGGING__CONSOLE": "false",
        "DASK_DASKFLOW__HISTORY__FLUSH_INTERVAL": "0.05",
        "DASK_DASKFLOW__HISTORY__HEARTBEAT": "0.2",
    }
    driver = subprocess.Popen([sys.executable, str(script), str(tmp_path), str(Path(__file__).parent.parent)], env=env, cwd=tmp_path)
    history = _history(_result_storage)
    try:
        wait_until(lambda: list(tmp_path.glob("never.pid.*")), 60, message="the task to start")
        wait_until(lambda: history.entries() and history.run(history.entries()[0])["state"]["name"] == "Running", 30,
                   message="the run recorded as Running")
        driver.send_signal(signal.SIGKILL)
        driver.wait(30)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait(30)
    entry = history.entries()[0]
    # Within crashed-after, the record still says Running: the driver may be slow.
    assert History(history.store, stale_after=3600).run(entry)["state"]["name"] == "Running"
    with dask.config.set({"daskflow.history.crashed-after": 0.5}):
        beat = json.loads((_result_storage / "runs" / entry.folder / "run.json").read_text())["heartbeat"]
        wait_until(lambda: History(history.store).run(entry)["state"]["name"] == "Crashed", 30, message="the run shown Crashed")
        result = CliRunner().invoke(cli, ["runs", "ls", "--json"])
        assert result.exit_code == 0, result.output
        listed = json.loads(result.output)
        assert [(r["id"], r["state"]["name"]) for r in listed] == [(entry.run_id, "Crashed")]
        assert "heartbeats" in listed[0]["state"]["message"]
    # The CLI's sweep wrote it into the record, and the run is no longer active.
    stored = json.loads((_result_storage / "runs" / entry.folder / "run.json").read_text())
    assert stored["state"]["name"] == "Crashed" and stored["end_time"] == beat
    assert Store(str(_result_storage)).children("active") == []


_SECRET_FLOW = """
import sys
from pydantic import SecretStr
from daskflow import flow, DaskTaskRunner
sys.path.insert(0, sys.argv[1])
from tests.tasks import leaky

@flow(task_runner=DaskTaskRunner(cluster_kwargs={"n_workers": 1, "threads_per_worker": 1}), log_prints=True)
def job(token: SecretStr):
    print("the flow got", token.get_secret_value())
    ok = leaky(token)
    return leaky(token, fail=True) + ok

if __name__ == "__main__":
    job(sys.argv[2])
"""


@pytest.mark.slow
def test_secrets_never_appear_in_records_logs_or_output(tmp_path, _result_storage):
    """RELIABILITY scenario 19: a canary in a SecretStr parameter, in an env
    credential and in a task's exception appears nowhere."""
    canary = "sk-canary-9f3e1d2c7b"
    env_canary = "AKIAFAKECANARY77"
    script = tmp_path / "secret_job.py"
    script.write_text(_SECRET_FLOW)
    env = {**worker_env(), "DASK_DASKFLOW__STORAGE__URL": str(_result_storage), "MY_SERVICE_TOKEN": env_canary}
    done = subprocess.run(
        [sys.executable, str(script), str(Path(__file__).parent.parent), canary],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
    )
    assert done.returncode != 0  # the flow failed: the task raised
    assert "server refused token **********" in done.stderr
    assert "the flow got **********" in done.stderr
    for surface, text in (("stdout", done.stdout), ("stderr", done.stderr)):
        assert canary not in text, surface
    entry = _only_run(_history(_result_storage))
    run_files = list((_result_storage / "runs").rglob("*"))
    assert any(f.name.startswith("logs-") for f in run_files)
    for path in run_files:
        if path.is_file():
            assert canary.encode() not in path.read_bytes(), path
    runner = CliRunner()
    for args in (["runs", "show", entry.run_id, "--tracebacks"], ["runs", "show", entry.run_id, "--json"], ["logs", entry.run_id],
                 ["runs", "ls", "--json"], ["artifacts", "ls", entry.run_id]):
        result = runner.invoke(cli, args)
        assert result.exit_code == 0, (args, result.output)
        assert canary not in result.output and env_canary not in result.output, args
    shown = runner.invoke(cli, ["runs", "show", entry.run_id, "--tracebacks"]).output
    assert "token='**********'" in shown and "RuntimeError: server refused token **********" in shown
    logs = runner.invoke(cli, ["logs", entry.run_id]).output
    assert "using token **********" in logs and "printed token **********" in logs


def test_env_credentials_are_masked_in_the_console_and_records(_result_storage, monkeypatch, capsys):
    from daskflow import masking

    monkeypatch.setattr(masking, "_env_read", False)
    monkeypatch.setenv("WAREHOUSE_PASSWORD", "hunter2-canary-pw")

    @flow(task_runner=SequentialTaskRunner())
    def talk():
        get_run_logger().warning("connecting with hunter2-canary-pw")
        fail("refused hunter2-canary-pw")

    console = logging.getLogger("daskflow")
    before = list(console.handlers)
    try:
        with dask.config.set({"daskflow.logging.console": True}):
            state = talk(return_state=True)
    finally:
        for handler in set(console.handlers) - set(before):  # it writes to this test's captured stderr
            console.removeHandler(handler)
    assert state.is_failed()
    err = capsys.readouterr().err
    assert "connecting with **********" in err and "hunter2-canary-pw" not in err
    for path in (_result_storage / "runs").rglob("*.json*"):
        assert b"hunter2-canary-pw" not in path.read_bytes()


def test_cancel_from_another_process_stops_the_run(tmp_path, _result_storage):
    gate = tmp_path / "gate"
    gate.mkdir()

    @flow(task_runner=ConcurrentTaskRunner())
    def long_one():
        first = add(1, 1)
        return first + block_until(str(gate), "held", 120)

    with dask.config.set(FAST), _running(long_one, gate / "held.go") as outcome:
        history = _history(_result_storage)
        wait_until(lambda: list(gate.glob("held.pid.*")) and history.entries(), 60, message="the blocking task to start")
        entry = history.entries()[0]
        wait_until(lambda: history.run(entry)["state"]["name"] == "Running", 30, message="the run recorded Running")
        result = CliRunner().invoke(cli, ["cancel", entry.run_id[:10], "--timeout", "60"])
    assert result.exit_code == 0, result.output
    assert "ended Cancelled" in result.output
    assert outcome["state"].is_cancelled()
    assert history.run(entry)["state"]["name"] == "Cancelled"
    again = CliRunner().invoke(cli, ["cancel", entry.run_id])
    assert again.exit_code == 1 and "already finished" in again.output


def test_cancel_through_the_scheduler_is_heard_at_once(tmp_path, _result_storage, threads_cluster):
    gate = tmp_path / "gate"
    gate.mkdir()

    @flow(task_runner=DaskTaskRunner(address=threads_cluster.scheduler_address))
    def held():
        return block_until(str(gate), "sched", 120)

    # A heartbeat far longer than the test: only the scheduler path can be that fast.
    slow_beat = {"daskflow.history.flush-interval": 0.05, "daskflow.history.heartbeat": 600}
    with dask.config.set(slow_beat), _running(held, gate / "sched.go") as outcome:
        history = _history(_result_storage)
        wait_until(lambda: list(gate.glob("sched.pid.*")) and history.entries(), 60, message="the task to start")
        entry = history.entries()[0]
        result = CliRunner().invoke(cli, ["cancel", entry.run_id, "--address", threads_cluster.scheduler_address, "--timeout", "60"])
    assert result.exit_code == 0, result.output
    assert outcome["state"].is_cancelled()
    assert history.tasks(entry)[0]["state"]["name"] == "Cancelled"


def test_history_can_be_switched_off(_result_storage):
    @flow(task_runner=SequentialTaskRunner())
    def quiet():
        return add(1, 2)

    with dask.config.set({"daskflow.history.enabled": False}):
        state = quiet(return_state=True)
    assert state.result() == 3 and state.run.history_url is None
    assert not (_result_storage / "runs").exists()


def test_subflows_are_recorded_with_their_parent(_result_storage):
    @flow(task_runner=SequentialTaskRunner())
    def child(x: int):
        return add(x, 1)

    @flow(task_runner=SequentialTaskRunner())
    def parent():
        return child(1) + child(2)

    state = parent(return_state=True)
    assert state.result() == 5
    history = _history(_result_storage)
    records = {r["flow_name"] + ("" if r["parent_flow_run_id"] is None else "-sub"): r for r in history.runs()}
    assert len(history.runs()) == 3
    top = [r for r in history.runs() if r["parent_flow_run_id"] is None]
    subs = [r for r in history.runs() if r["parent_flow_run_id"] is not None]
    assert len(top) == 1 and len(subs) == 2 and records
    assert sorted(top[0]["subflow_run_ids"]) == sorted(r["id"] for r in subs)
    assert all(r["parent_flow_run_id"] == top[0]["id"] for r in subs)


def test_a_history_store_failure_warns_and_the_run_goes_on(_result_storage, caplog):
    @flow(task_runner=SequentialTaskRunner(), persist_result=False, result_storage="memory://history-broken")
    def fine():
        return add(2, 2)

    store = Store("memory://history-broken")
    store.put("runs", b"a file where the runs folder belongs")
    with caplog.at_level("WARNING", logger="daskflow.runs"):
        assert fine() == 4
    assert any("cannot write its history" in r.getMessage() for r in caplog.records)


def test_secret_parameters_are_masked_but_the_task_gets_the_value(_result_storage):
    @flow(task_runner=SequentialTaskRunner())
    def uses(token: SecretStr):
        return leaky(token)

    assert uses("abcdef-secret-value") == len("abcdef-secret-value")
    history = _history(_result_storage)
    entry = _only_run(history)
    assert history.run(entry)["parameters"] == {"token": "**********"}
    assert [line["m"] for line in history.logs(entry)] == ["using token **********"]


def test_driver_log_lines_from_the_flow_body_keep_their_traceback(_result_storage):
    @flow(task_runner=SequentialTaskRunner())
    def body():
        try:
            raise KeyError("inner")
        except KeyError:
            get_run_logger().exception("caught it")
        return 1

    body()
    lines = _history(_result_storage).logs(_only_run(_history(_result_storage)))
    assert lines[0]["m"].startswith("caught it\nTraceback") and "KeyError: 'inner'" in lines[0]["m"]


def test_daskflow_run_subprocess_exit_codes_and_summary(tmp_path, _result_storage):
    script = tmp_path / "pipeline.py"
    script.write_text(textwrap.dedent("""
        from daskflow import flow, task, SequentialTaskRunner

        @task
        def square(x: int) -> int:
            if x < 0:
                raise ValueError("negative")
            return x * x

        @flow(task_runner=SequentialTaskRunner())
        def squares(n: int = 3, sign: int = 1):
            return sum(square.map([sign * i for i in range(1, n + 1)]).result())
    """))
    exe = str(Path(sys.executable).parent / "daskflow")
    env = {**worker_env(), "DASK_DASKFLOW__STORAGE__URL": str(_result_storage)}

    def run(*args):
        return subprocess.run([exe, *args], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False)

    ok = run("run", f"{script}:squares", "-p", "n=4")
    assert ok.returncode == 0, ok.stderr
    assert "Flow run 'squares-" in ok.stdout and "Completed" in ok.stdout and "returned:  30" in ok.stdout
    assert "4 Completed" in ok.stdout and f"results:   {_result_storage}" in ok.stdout
    again = run("run", "pipeline.py:squares", "-p", "n=4", "--json")
    summary = json.loads(again.stdout)
    assert again.returncode == 0 and summary["task_counts"] == {"Cached": 4} and summary["result"] == 30
    failed = run("run", "pipeline.py", "-p", "sign=-1")
    assert failed.returncode == 1 and "Failed" in failed.stdout
    bad = run("run", "pipeline.py:squares", "-p", "n=lots")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr
    assert "n: Input should be a valid integer" in bad.stderr
    missing = run("run", "nope.py:squares")
    assert missing.returncode == 2 and "does not exist" in missing.stderr and "Traceback" not in missing.stderr
    wrong = run("run", "pipeline.py:nothing")
    assert wrong.returncode == 2 and "its flows: squares" in wrong.stderr
    listed = run("runs", "ls", "--json")
    assert [r["state"]["name"] for r in json.loads(listed.stdout)] == ["Failed", "Completed", "Completed"]


def test_history_on_s3_is_listed_shown_and_read_live(s3_store_url, s3_server, tmp_path):
    """The same records through the real S3 protocol (moto on 127.0.0.1)."""
    from .s3 import bucket_keys

    url, options = s3_store_url
    gate = tmp_path / "gate"
    gate.mkdir()

    @flow(task_runner=ConcurrentTaskRunner(), result_storage=url, tags=["s3"])
    def on_s3():
        first = scored(0, 1.0)
        return first["fold"], block_until(str(gate), "s3", 120)

    with dask.config.set({**FAST, "daskflow.storage.options": options}):
        with _running(on_s3, gate / "s3.go") as outcome:
            history = History(Store(url))
            wait_until(lambda: history.entries() and {t["name"]: t["state"]["name"] for t in history.tasks(history.entries()[0])}
                       == {"scored-0": "Completed", "block_until-0": "Running"}, 60, message="the live record on S3")
            live = json.loads(CliRunner().invoke(cli, ["runs", "ls", "--json", "--storage", url]).output)
            assert [r["state"]["name"] for r in live] == ["Running"]
        assert outcome["state"].is_completed()
        shown = CliRunner().invoke(cli, ["runs", "show", live[0]["id"][:8], "--storage", url])
        logs = CliRunner().invoke(cli, ["logs", live[0]["id"], "--storage", url, "--task", "scored-0"])
        artifacts = CliRunner().invoke(cli, ["artifacts", "ls", live[0]["id"], "--storage", url, "--json"])
    assert shown.exit_code == 0 and "state       Completed" in shown.output and "block_until-0" in shown.output
    assert "fold 0 with C=1.0" in logs.output
    assert [a["key"] for a in json.loads(artifacts.output)] == ["fold-score"]
    bucket = url.split("/")[2]
    keys = bucket_keys(s3_server, bucket)
    run_keys = [k for k in keys if k.startswith("prefix/runs/")]
    assert any(k.endswith("/run.json") for k in run_keys)
    assert not [k for k in keys if k.startswith("prefix/active/")]


def test_an_uncached_task_says_why_in_the_runs_logs_once(_result_storage):
    """A CacheKeyWarning is kept in the run's logs (so ``daskflow logs``, the page and a
    served deployment's history show why a task never hits), once per task."""
    import threading

    from daskflow import CacheKeyWarning, task

    @task
    def uses(lock, i):
        return i

    @flow(task_runner=SequentialTaskRunner())
    def locked():
        lock = threading.Lock()
        return [uses(lock, i) for i in range(3)]

    with pytest.warns(CacheKeyWarning):
        assert locked() == [0, 1, 2]
    history = _history(_result_storage)
    lines = [line for line in history.logs(_only_run(history)) if "cannot be hashed" in line["m"]]
    assert len(lines) == 1 and "input 'lock'" in lines[0]["m"] and "runs uncached" in lines[0]["m"], lines
