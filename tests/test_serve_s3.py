"""The deployment machinery on S3 (a moto server on 127.0.0.1 spoken to by s3fs in the
driver and in worker processes): registration, create-only fire records, runs from
the code snapshot in the bucket, history, the CLI."""

from __future__ import annotations

import textwrap
from datetime import datetime, timezone

import dask
import pytest
from click.testing import CliRunner

from daskflow import History, Store, deploy
from daskflow.cli import cli
from daskflow.deployments.registry import Registry
from daskflow.deployments.serve import ManualClock, Serve
from daskflow.pipeline.entrypoints import load_flow

from .conftest import tick_together, wait_until
from .s3 import bucket_keys

pytestmark = pytest.mark.slow

FLOWS = '''
from daskflow import flow, task


@task
def double(x: int) -> int:
    return 2 * x


@flow
def doubled(n: int = 3) -> int:
    return sum(double.map(range(n)).result())
'''


def test_deployments_on_s3_fire_each_slot_once_and_run_from_the_snapshot_in_the_bucket(tmp_path, s3_store_url, s3_server, processes_cluster):
    from distributed import Client

    url, options = s3_store_url
    store = Store(url, storage_options=options)
    (tmp_path / "s3_flows.py").write_text(textwrap.dedent(FLOWS))
    doubled = load_flow(f"{tmp_path / 's3_flows.py'}:doubled")
    [record] = deploy(doubled.to_deployment("s3-job", interval=60, parameters={"n": 4}, anchor_date="2027-01-01T00:00:00"), storage=store)
    start = datetime(2027, 6, 1, 12, 0, tzinfo=timezone.utc)
    registry = Registry(store)
    registry.put(dict(record, schedule_since={s["id"]: start.timestamp() for s in record["schedules"]}))
    clock = ManualClock(start)
    # The clock jumps a minute per pass, far faster than runs start: no Late marks here.
    with Client(processes_cluster.scheduler_address, set_as_default=False) as client, dask.config.set({"daskflow.deployments.late-after": 3600}):
        loops = [Serve(store, client, clock=clock, notifier=False) for _ in range(2)]
        for loop in loops:
            loop.start()
        try:
            for _ in range(4):
                clock.advance(60)
                tick_together(loops)
            made = [r for loop in loops for r in loop.created]
            assert sorted(r.scheduled_time for r in made) == [start.timestamp() + 60 * i for i in range(1, 5)]
            # The runs execute now on the worker processes, from the zip in the bucket.
            runs = wait_until(lambda: [r for r in History(store).runs(limit=None) if r["state"]["name"] == "Completed"][3:] and
                              History(store).runs(limit=None), 120, 0.3, "four completed runs on S3")
        finally:
            for loop in loops:
                loop.close()
    assert len(runs) == 4 and all(r["state"]["name"] == "Completed" for r in runs)
    assert all([s["name"] for s in r["state_history"]][:3] == ["Scheduled", "Pending", "Running"] for r in runs), [[s["name"] for s in r["state_history"]] for r in runs]
    keys = bucket_keys(s3_server, url.split("/")[2])
    assert sum(1 for k in keys if k.startswith("prefix/fires/") and not k.endswith("cursor.json")) == 4
    assert f"prefix/code/{record['code']['hash']}.zip" in keys
    assert any(k.startswith("prefix/deployments/") for k in keys)


def test_the_cli_lists_inspects_pauses_and_runs_a_deployment_on_s3(tmp_path, s3_store_url):
    url, options = s3_store_url
    (tmp_path / "s3_cli_flows.py").write_text(textwrap.dedent(FLOWS))
    (tmp_path / "daskflow.yaml").write_text(textwrap.dedent(f"""
        storage: {url}
        deployments:
          - name: s3-nightly
            entrypoint: s3_cli_flows.py:doubled
            parameters: {{n: 2}}
            schedules:
              - cron: "0 3 * * *"
                timezone: Europe/Berlin
    """))
    runner = CliRunner()
    with dask.config.set({"daskflow.storage.options": options}):
        result = runner.invoke(cli, ["deploy", "--all", "--file", str(tmp_path / "daskflow.yaml")])
        assert result.exit_code == 0, result.output
        listing = runner.invoke(cli, ["deployments", "ls", "--storage", url])
        assert "s3-nightly" in listing.output and "every day at 03:00 (Europe/Berlin)" in listing.output
        assert runner.invoke(cli, ["deployments", "pause", "s3-nightly", "--storage", url]).exit_code == 0
        assert Registry(Store(url)).get("s3-nightly")["paused"] is True
        assert runner.invoke(cli, ["deployments", "resume", "s3-nightly", "--storage", url]).exit_code == 0
        # An ad-hoc run on a local cluster started by the command, watched to its end.
        run = runner.invoke(cli, ["deployments", "run", "s3-nightly", "-p", "n=5", "--storage", url])
        assert run.exit_code == 0, run.output
        assert "Completed" in run.output.splitlines()[-1]
        [record] = History(Store(url)).runs(limit=None)
        assert record["deployment_name"] == "s3-nightly" and record["parameters"] == {"n": 5}
        assert record["result_storage"] == url
