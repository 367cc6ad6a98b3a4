"""The README's deployments section, run as written: its flow file, its daskflow.yaml and
its commands, against the scheduler and the two workers its commands start."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from daskflow import History, Store
from daskflow.deployments.registry import Registry

from .conftest import REPO, DaskCLICluster, wait_until, worker_env

pytestmark = pytest.mark.slow

README_ADDRESS = "tcp://127.0.0.1:8786"


def _examples() -> dict[str, str]:
    """The code blocks that follow each ``<!-- deployments-example: NAME -->`` marker."""
    text = (REPO / "README.md").read_text()
    found = dict(re.findall(r"<!-- deployments-example: (\S+) -->\n```\w*\n(.*?)```", text, re.S))
    assert set(found) == {"flows/retrain.py", "daskflow.yaml", "commands"}, sorted(found)
    return found


def _commands(block: str) -> list[list[str]]:
    lines = []
    for line in block.strip().splitlines():
        command = line.split("  #", 1)[0].strip()
        background = command.endswith("&")
        lines.append((shlex.split(command.rstrip("&").strip()), background))
    return lines


def _daskflow(args: list[str], cwd: Path, address: str) -> subprocess.CompletedProcess:
    args = [address if a == README_ADDRESS else a for a in args]
    return subprocess.run([str(Path(sys.executable).parent / "daskflow"), *args[1:]], cwd=cwd, env=worker_env(),
                          capture_output=True, text=True, timeout=300)


def test_the_readme_deployments_section_runs_as_written(tmp_path):
    examples = _examples()
    project = tmp_path / "project"
    (project / "flows").mkdir(parents=True)
    (project / "flows" / "retrain.py").write_text(examples["flows/retrain.py"])
    (project / "daskflow.yaml").write_text(examples["daskflow.yaml"])
    commands = _commands(examples["commands"])
    # The cluster the first three lines start (on a free port instead of 8786).
    assert [c[0][:2] for c in commands[:3]] == [["dask", "scheduler"], ["dask", "worker"], ["dask", "worker"]]
    worker_args = tuple(tuple(args[3:]) for args, _ in commands[1:3])
    assert worker_args == (("--resources", "queue-gpu=1"), ())
    (tmp_path / "cluster").mkdir()
    cluster = DaskCLICluster(tmp_path / "cluster", workers=worker_args)
    serve = None
    try:
        from distributed import Client

        with Client(cluster.address, timeout=30) as client:
            gpu_worker = next(a for a, w in client.scheduler_info(n_workers=-1)["workers"].items() if w["resources"])
        outputs = {}
        for args, background in commands[3:]:
            name = " ".join(args[:3])
            if background:
                assert args[:2] == ["daskflow", "serve"]
                argv = [str(Path(sys.executable).parent / "daskflow"), *[cluster.address if a == README_ADDRESS else a for a in args[1:]]]
                serve = subprocess.Popen(argv, cwd=project, env=worker_env(), stdout=open(tmp_path / "serve.log", "wb"),
                                         stderr=subprocess.STDOUT, start_new_session=True)
                continue
            result = _daskflow(args, project, cluster.address)
            assert result.returncode == 0, (name, result.stdout, result.stderr)
            outputs[name] = result.stdout
        store = Store(project / ".daskflow")
        assert [d["name"] for d in Registry(store).all()] == ["retrain-dev", "retrain-prod"]
        assert "every 6 hours" in outputs["daskflow deployments ls"]
        assert "on day 1 of every month at 03:00 (Europe/Berlin)" in outputs["daskflow deployments ls"]
        # The ad-hoc prod run went through the gpu queue and completed.
        run_output = outputs["daskflow deployments run"]
        assert "Completed" in run_output.splitlines()[-1]
        history = History(store)
        [prod] = [r for r in history.runs(limit=None) if r["deployment_name"] == "retrain-prod" and r["scheduled_time"] > 1.79e9]
        assert prod["state"]["name"] == "Completed" and prod["work_queue"] == "gpu"
        assert {t["worker"] for t in history.tasks(history.resolve(prod["id"]))} == {gpu_worker}
        assert "gpu" in outputs["daskflow queues ls"] and "retrain-prod" not in outputs["daskflow queues ls"].split("\n")[0]
        # The backfill: one run per month of the first half of 2026, each completing on the gpu worker.
        assert "6 run(s) created" in outputs["daskflow backfill retrain-prod"]
        backfilled = wait_until(
            lambda: [r for r in history.runs(limit=None) if r.get("deployment_name") == "retrain-prod" and r["state"]["name"] == "Completed"][6:],
            180, 0.5, "the backfilled runs",
        )
        assert len(backfilled) >= 1
        slots = sorted(r["scheduled_time"] for r in history.runs(limit=None) if r.get("deployment_name") == "retrain-prod" and r["scheduled_time"] < 1.79e9)
        assert len(slots) == 6
        # And the Python way registers the same deployments (the same code, so the same snapshot).
        code = Registry(store).get("retrain-prod")["code"]["hash"]
        python = subprocess.run([sys.executable, "flows/retrain.py"], cwd=project, env=worker_env(), capture_output=True, text=True, timeout=120)
        assert python.returncode == 0, python.stderr
        assert Registry(store).get("retrain-prod")["code"]["hash"] == code
    finally:
        if serve is not None:
            os.killpg(serve.pid, signal.SIGTERM)
            serve.wait(timeout=30)
        cluster.close()
    assert "serving deployments of" in (tmp_path / "serve.log").read_text()
