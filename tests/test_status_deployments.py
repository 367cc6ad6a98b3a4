"""The deployments view's data side: rows, live batches, the serve loop's feed (no browser).

The live test pushes to a real in-process scheduler and reads the page's JSON
routes over HTTP from its dashboard port.
"""

from __future__ import annotations

import json
import logging
import urllib.request
from datetime import datetime, timezone

import dask
import pytest
from distributed import Client, LocalCluster

from daskflow.deployments.deployment import next_slots
from daskflow.deployments.schedules import make_schedule
from daskflow.exceptions import InvalidOptionError
from daskflow.status import charts
from daskflow.status.deployments import attach_live_runs, deployment_rows, is_waiting, publish
from daskflow.status.state import LiveRuns

from .conftest import wait_until

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=timezone.utc).timestamp()
DAY = 86_400.0


def _deployment(name: str, *, paused: bool = False, schedules=None, **extra):
    if schedules is None:
        schedules = [dict(make_schedule(cron="0 3 * * *", timezone="Europe/Berlin").to_dict(), id="s1")]
    return {"id": f"id-{name}", "name": name, "flow_name": "train", "entrypoint": "flows.py:train", "version": "abc123",
            "description": "retrain", "parameters": {"n": 1}, "tags": ["nightly"], "schedules": schedules,
            "work_queue_name": "gpu", "paused": paused, "concurrency_limit": None, "collision_strategy": "enqueue",
            "catchup": "latest", "created": NOW - DAY, "updated": NOW - DAY, **extra}


def _run(run_id: str, deployment: str | None, state: str, *, start: float | None = None, created: float = NOW, **extra):
    kind = {"Completed": "COMPLETED", "Failed": "FAILED", "Running": "RUNNING", "Scheduled": "SCHEDULED", "Late": "SCHEDULED",
            "AwaitingRetry": "SCHEDULED"}[state]
    return {"id": run_id, "name": f"run-{run_id}", "flow_name": "train", "tags": [], "state": {"type": kind, "name": state,
            "timestamp": created, "message": f"{state} because"}, "start_time": start, "created": created,
            "deployment_id": None if deployment is None else f"id-{deployment}", "deployment_name": deployment,
            "scheduled_time": created if start is None else None, **extra}


def test_rows_say_the_schedule_in_words_the_next_fire_times_and_pick_the_newest_started_run():
    runs = [  # not newest first on purpose: rows do not depend on the order given
        _run("old", "nightly", "Failed", start=NOW - 2 * DAY, created=NOW - 2 * DAY),
        _run("late", "nightly", "Late", created=NOW - 600),  # waiting runs are counted, never "the last run"
        _run("new", "nightly", "Completed", start=NOW - DAY, created=NOW - DAY),
        _run("soon", "nightly", "Scheduled", created=NOW - 60),
        _run("other", "weekly", "Running", start=NOW - 10),
        _run("adhoc", None, "Completed", start=NOW),
        _run("retry", "weekly", "AwaitingRetry", start=NOW - 5),  # started: a retry is not waiting
    ]
    nightly, weekly = deployment_rows([_deployment("nightly"), _deployment("weekly")], runs, NOW)
    assert nightly["schedules"] == "every day at 03:00 (Europe/Berlin)"
    # 03:00 in Berlin is 02:00 UTC in November (CET, UTC+1).
    assert nightly["next_runs"] == [datetime(2026, 11, d, 2, 0, tzinfo=timezone.utc).timestamp() for d in (21, 22, 23)]
    assert nightly["last_run"] == {"id": "new", "name": "run-new", "state_name": "Completed", "state_type": "COMPLETED",
                                   "time": NOW - DAY}
    assert (nightly["scheduled"], nightly["late"]) == (1, 1)
    assert (nightly["flow"], nightly["queue"], nightly["version"], nightly["paused"]) == ("train", "gpu", "abc123", False)
    assert weekly["last_run"]["id"] == "retry" and (weekly["scheduled"], weekly["late"]) == (0, 0)
    json.dumps([nightly, weekly], allow_nan=False)  # rows go over the RPC and the JSON route as they are


def test_a_paused_deployment_has_no_next_runs_and_one_without_runs_no_last_run():
    (row,) = deployment_rows([_deployment("paused", paused=True)], [], NOW)
    assert row["paused"] is True and row["next_runs"] == [] and row["last_run"] is None
    assert row["schedules"] == "every day at 03:00 (Europe/Berlin)"  # still said, so a resume is no surprise
    assert charts.deployments_table([row])["next"] == ["- (paused)"]


def test_several_schedules_merge_their_next_runs_and_a_bad_one_is_said_not_raised():
    both = [dict(make_schedule(cron="0 3 * * *", timezone="UTC").to_dict(), id="a"),
            dict(make_schedule(interval=6 * 3600, timezone="UTC").to_dict(), id="b")]
    record = _deployment("twice", schedules=both)
    (row,) = deployment_rows([record], [], NOW)
    assert row["schedules"] == "every day at 03:00 (UTC); every 6 hours"
    assert row["next_runs"] == next_slots(record, NOW, count=3)  # the rows' cached schedules give the same slots
    assert row["next_runs"] == [NOW + 6 * 3600, NOW + 12 * 3600, NOW + 15 * 3600]  # 18:00, 00:00, then the cron's 03:00
    broken, fine = deployment_rows([_deployment("broken", schedules=[{"id": "x", "cron": "61 * * * *"}]), _deployment("fine")], [], NOW)
    assert broken["schedules"].startswith("schedule cannot be read: ") and broken["next_runs"] == []
    assert fine["next_runs"]


def test_long_user_text_is_clipped_in_rows():
    (row,) = deployment_rows([_deployment("wordy", description="x" * 10_000)], [], NOW)
    assert len(row["description"]) == 500 and row["description"].endswith("…")


def test_live_runs_newer_than_the_pushed_rows_win_and_past_fire_times_go():
    rows = deployment_rows([_deployment("nightly"), _deployment("quiet")], [_run("a", "nightly", "Completed", start=NOW - DAY)], NOW)
    rows[0]["next_runs"].insert(0, NOW - 1)  # a slot fired since the rows were pushed
    live = [_run("b", "nightly", "Running", start=NOW - 5), _run("c", "nightly", "Late", created=NOW - 300)]
    nightly, quiet = attach_live_runs(rows, live, NOW)
    assert nightly["last_run"]["id"] == "b" and nightly["last_run"]["state_name"] == "Running"
    assert (nightly["scheduled"], nightly["late"]) == (0, 1)
    assert all(t > NOW for t in nightly["next_runs"]) and len(nightly["next_runs"]) == 3
    assert quiet == rows[1]  # no live runs of its own: as pushed
    older = attach_live_runs(rows, [_run("z", "nightly", "Failed", start=NOW - 3 * DAY)], NOW)[0]
    assert older["last_run"]["id"] == "a"  # an older live run does not replace the pushed last run


def test_live_runs_take_deployment_batches_and_replace_the_whole_list():
    runs = LiveRuns(max_deployments=2)
    runs.update({"deployments": [{"name": "a"}, {"name": "b"}]})
    assert [d["name"] for d in runs.deployments()] == ["a", "b"] and len(runs) == 0
    version = runs.version
    runs.update({"deployments": [{"name": "c"}, {"name": "d"}, {"name": "e"}]})
    assert [d["name"] for d in runs.deployments()] == ["c", "d"] and runs.deployments_dropped == 1  # bounded
    assert runs.version > version
    runs.update({"runs": [_run("r1", "c", "Scheduled")]})  # runs alone leave the rows as they are
    assert [d["name"] for d in runs.deployments()] == ["c", "d"] and runs.get("r1").record["state"]["name"] == "Scheduled"
    runs.update({"deployments": []})
    assert runs.deployments() == []
    for bad, match in (({}, "needs a run record"), ({"deployments": {"name": "a"}}, "deployments must be a list"),
                       ({"deployments": [{"id": 1}]}, "rows with a name"), ({"runs": [{"name": "x"}]}, "runs must be a list")):
        with pytest.raises(InvalidOptionError, match=match):
            runs.update(bad)
    with pytest.raises(InvalidOptionError, match="max-deployments must be a positive integer"):
        LiveRuns(max_deployments=0)


def test_a_serve_loops_waiting_runs_never_overwrite_the_driver_and_never_crash_with_its_client():
    runs = LiveRuns()
    runs.update({"runs": [_run("w", "nightly", "Scheduled"), _run("x", "nightly", "Scheduled")]})
    runs.update({"runs": [_run("w", "nightly", "Late")]})
    assert runs.get("w").record["state"]["name"] == "Late"  # the loop updates what it pushed
    started = _run("w", "nightly", "Running", start=NOW)
    runs.update({"run": started, "tasks": []}, client="worker-client")
    runs.update({"runs": [_run("w", "nightly", "Late")]})  # a stale view of the loop's
    assert runs.get("w").record["state"]["name"] == "Running"
    assert runs.client_gone("worker-client") == ["w"]  # the driver's run is its own to crash
    assert runs.client_gone("serve-loop-client") == [] and runs.get("x").record["state"]["name"] == "Scheduled"


def test_waiting_runs_are_dropped_after_finished_ones_and_before_running_ones():
    runs = LiveRuns(max_runs=3)
    runs.update({"run": _run("run1", None, "Running", start=NOW)}, client="d1")
    runs.update({"run": _run("done", None, "Completed", start=NOW - 9)}, client="d2")
    runs.update({"runs": [_run(f"wait{i}", "nightly", "Scheduled", created=NOW + i) for i in range(3)]})  # a backfill
    assert {r["id"] for r in runs.runs()} == {"run1", "wait1", "wait2"}  # the finished one, then the oldest waiting one


def test_runs_not_started_sort_by_their_scheduled_time_and_show_dashes():
    runs = LiveRuns()
    runs.update({"run": _run("ran", None, "Completed", start=NOW - 100, end_time=NOW - 50)}, client="d")
    runs.update({"runs": [_run("soon", "n", "Scheduled", created=NOW + 600), _run("late", "n", "Late", created=NOW - 300)]})
    records = runs.runs()
    assert [r["id"] for r in records] == ["soon", "ran", "late"]
    table = charts.runs_table(records, now=NOW)
    assert table["start"][0] == table["duration"][0] == "-" and table["start"][1] != "-"
    assert table["state"] == ["Scheduled", "Completed", "Late"]
    assert table["color"] == [charts.STATE_COLORS["SCHEDULED"], charts.STATE_COLORS["COMPLETED"], charts.STATE_COLORS["LATE"]]
    assert table["tasks"][2].startswith("scheduled for ") and table["tasks"][2].endswith(": Late because")  # why it waits
    assert table["deployment"] == ["n", "", "n"]
    assert is_waiting(records[0]) and not is_waiting(records[1])


def test_publish_never_raises_and_warns_once(caplog):
    class Broken:
        id = "broken-client"

        @property
        def scheduler(self):
            raise OSError("the scheduler is gone")

    with caplog.at_level(logging.WARNING, logger="daskflow.status"):
        publish(Broken(), deployments=[{"name": "a"}])
        publish(Broken(), runs=[_run("r", "a", "Scheduled")])
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "the scheduler is gone" in warnings[0]
    with dask.config.set({"daskflow.status.enabled": False}):
        publish(Broken(), deployments=[])  # disabled: not even looked at


# ------------------------------------------------------------------ live
def _api(port: int, path: str) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/daskflow/api{path}", timeout=20) as response:
        assert response.headers["Content-Type"].startswith("application/json")
        return json.loads(response.read())


@pytest.mark.slow
def test_publish_feeds_the_live_page_and_sends_only_what_changed():
    rows = deployment_rows([_deployment("nightly"), _deployment("paused", paused=True)], [], NOW)
    waiting = _run("f" * 32, "nightly", "Scheduled", created=NOW)
    with LocalCluster(n_workers=0, processes=False, dashboard_address="127.0.0.1:0") as cluster:
        port = cluster.scheduler.http_server.port
        with Client(cluster, set_as_default=False) as serve_client:
            publish(serve_client, deployments=rows, runs=[waiting])  # registers the plugin, then pushes
            shown = wait_until(lambda: _api(port, "/deployments")["deployments"], 30, message="the deployments on the page")
            assert [(d["name"], d["paused"], d["schedules"]) for d in shown] == [
                ("nightly", False, "every day at 03:00 (Europe/Berlin)"), ("paused", True, "every day at 03:00 (Europe/Berlin)")]
            assert (shown[0]["scheduled"], shown[0]["late"]) == (1, 0)  # counted from the live runs
            assert [(r["id"], r["state"]["name"], r["start_time"]) for r in _api(port, "/runs")["runs"]] == [(waiting["id"], "Scheduled", None)]
            assert _api(port, f"/runs/{waiting['id'][:8]}")["run"]["deployment_name"] == "nightly"

            handlers = cluster.scheduler.handlers
            batches: list[dict] = []
            handler = handlers["daskflow_status"]
            handlers["daskflow_status"] = lambda batch, driver=None: (batches.append(batch), handler(batch, driver))[1]
            late = dict(waiting, state={"type": "SCHEDULED", "name": "Late", "timestamp": NOW + 60, "message": "no worker serves queue 'gpu'"})
            publish(serve_client, deployments=rows, runs=[late])  # only the run changed
            wait_until(lambda: _api(port, "/runs")["runs"][0]["state"]["name"] == "Late", 30, message="the run shown Late")
            assert [sorted(b) for b in batches] == [["runs"]] and batches[0]["runs"][0]["state"]["name"] == "Late"
            assert _api(port, "/deployments")["deployments"][0]["late"] == 1
        # The serve loop's client went away: its waiting runs are no driver's, so not Crashed.
        wait_until(lambda: not any(c.startswith("Client-") for c in cluster.scheduler.clients), 30, message="the client gone")
        assert _api(port, "/runs")["runs"][0]["state"]["name"] == "Late"
