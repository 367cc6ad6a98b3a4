"""Ctrl-C on the driver: the run is cancelled and the cluster it started is torn down."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

import psutil
import pytest

from .conftest import REPO, process_gone, wait_until, worker_env

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
    proc = subprocess.Popen(
        [sys.executable, str(script), str(tmp_path)], cwd=REPO,
        env={**worker_env(), "DASK_DASKFLOW__STORAGE__URL": str(tmp_path / "store")},  # history not in the checkout
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        wait_until(lambda: next(tmp_path.glob("stuck.pid.*"), None), 120, message="the task to start")
        cluster_pids = [p.pid for p in psutil.Process(proc.pid).children(recursive=True)]
        assert cluster_pids  # the embedded cluster's worker processes
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, output
    assert "interrupted" in output
    assert "finished in state Cancelled('interrupted by KeyboardInterrupt" in output
    wait_until(lambda: all(process_gone(pid) for pid in cluster_pids), 30, message="the run's cluster processes to exit")
