"""Ctrl-C on the driver: the run is cancelled and the cluster it started is torn down."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import psutil
import pytest

from .conftest import REPO, process_gone, wait_until, worker_env
from .hints import activated_env, printed_commands, run_printed

pytestmark = pytest.mark.slow

SCRIPT = textwrap.dedent(
    """
    import sys

    from daskflow import DaskTaskRunner, flow
    from tests.tasks import block_until

    runner = DaskTaskRunner(cluster_kwargs={"n_workers": 1, "threads_per_worker": 1, "dashboard_address": "127.0.0.1:0"})

    @flow(task_runner=runner)
    def stuck(marker_dir: str):
        block_until.submit(marker_dir, "stuck", 300).wait()

    if __name__ == "__main__":
        try:
            stuck(sys.argv[1])
        except KeyboardInterrupt:
            print("interrupted", flush=True)
            sys.exit(130)
    """
)


def test_ctrl_c_cancels_the_run_and_closes_its_cluster(tmp_path):
    script = tmp_path / "stuck.py"
    script.write_text(SCRIPT)
    cluster_pids: list[int] = []

    def workers_seen(proc: subprocess.Popen) -> None:
        cluster_pids.extend(p.pid for p in psutil.Process(proc.pid).children(recursive=True))
        assert cluster_pids  # the embedded cluster's worker processes

    code, output = _ctrl_c(tmp_path, [sys.executable, str(script), str(tmp_path)], False, before=workers_seen)
    assert code == 130, output
    assert "interrupted" in output
    assert "finished in state Cancelled('interrupted by KeyboardInterrupt" in output
    wait_until(lambda: all(process_gone(pid) for pid in cluster_pids), 30, message="the run's cluster processes to exit")


UNCAUGHT = textwrap.dedent(
    """
    import sys

    from daskflow import DaskTaskRunner, flow
    from tests.tasks import block_until, touch

    runner = DaskTaskRunner(cluster_kwargs={"n_workers": 2, "threads_per_worker": 1, "dashboard_address": "127.0.0.1:0"})

    @flow(task_runner=runner)
    def stuck(marker_dir: str):
        touch(marker_dir, "done-first")
        block_until.map(marker_dir, ["other", "stuck"], 300)
        return block_until.submit(marker_dir, "last", 300).result()

    if __name__ == "__main__":
        stuck(sys.argv[1])  # no try: Ctrl-C left to Python, as in a user's script
    """
)


def _ctrl_c(tmp_path, command, whole_group: bool, before=None) -> tuple[int, str]:
    """Run ``command`` until its task started, then Ctrl-C it: to its whole process
    group, as a terminal does (the cluster's workers too), or to the driver alone.
    ``before(proc)`` is called just before the signal. History goes to tmp_path, not the checkout."""
    proc = subprocess.Popen(
        command, cwd=REPO, env={**worker_env(), "DASK_DASKFLOW__STORAGE__URL": str(tmp_path / "store")},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )
    try:
        wait_until(lambda: next(tmp_path.glob("stuck.pid.*"), None), 120, message="the task to start")
        if before is not None:
            before(proc)
        if whole_group:
            os.killpg(proc.pid, signal.SIGINT)
        else:
            proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, output


@pytest.mark.parametrize("whole_group", [True, False], ids=["terminal", "driver"])
def test_ctrl_c_prints_one_line_saying_cancelled_recorded_and_how_to_resume(tmp_path, whole_group):
    script = tmp_path / "stuck.py"
    script.write_text(UNCAUGHT)
    code, output = _ctrl_c(tmp_path, [sys.executable, str(script), str(tmp_path)], whole_group)
    assert code == -signal.SIGINT, output  # still ends as an interrupted process does
    assert "Traceback" not in output and "distributed." not in output, output
    lines = output.strip().splitlines()
    # What the run printed before (its start, history, the cluster starting, its links)
    # and one line for the Ctrl-C.
    assert len(lines) <= 6, output
    (last,) = [line for line in lines if "Cancelled" in line]
    assert last == lines[-1]
    assert "finished in state Cancelled('interrupted by KeyboardInterrupt (Ctrl-C)')" in last
    assert "recorded: daskflow runs show " in last and f"--storage {tmp_path / 'store'}" in last
    assert last.endswith("; run it again to resume (the task run that completed is reused)")
    # The command it prints works as printed, and the record says Cancelled.
    (command,) = [c for c in printed_commands(last) if c.startswith("daskflow runs show")]
    shown = run_printed(command, activated_env(worker_env()), tmp_path)
    assert "state       Cancelled: interrupted by KeyboardInterrupt (Ctrl-C)" in shown
    assert "touch-0     Completed" in shown or any(line.split()[:2] == ["touch-0", "Completed"] for line in shown.splitlines())


def test_ctrl_c_of_daskflow_run_exits_130_without_aborted(tmp_path):
    script = tmp_path / "stuck.py"
    script.write_text(UNCAUGHT)
    daskflow_cli = [sys.executable, "-c", "from daskflow.cli import main; main()"]
    code, output = _ctrl_c(tmp_path, [*daskflow_cli, "run", f"{script}:stuck", "-p", f"marker_dir={tmp_path}", "--no-progress"], True)
    assert code == 130, output
    assert "Aborted" not in output and "Traceback" not in output, output
    assert sum("Cancelled" in line for line in output.splitlines()) == 1, output
