"""The serve loop against a controllable clock: DST days, catch-up, restarts, two loops,
takeover of orphaned slots, pauses and Late runs.

The loop is real and so is the cluster it submits to: an in-process scheduler with
no workers, so the runs it creates stay Scheduled (nothing here waits for a run to
execute); the clock is a :class:`~daskflow.deployments.serve.ManualClock` moved by
the test, so a whole DST day takes a fraction of a second.
"""

from __future__ import annotations

import http.server
import json
import textwrap
import threading
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import dask
import pytest
from distributed import Client, LocalCluster

from daskflow import History, Store, deploy
from daskflow.deployments.notify import WebhookNotifier
from daskflow.deployments.registry import Registry
from daskflow.deployments.serve import ManualClock, Serve
from daskflow.pipeline.entrypoints import load_flow

from .conftest import tick_together, wait_until

NY = ZoneInfo("America/New_York")
UTC = timezone.utc

FLOWS = '''
from daskflow import flow

@flow
def job(n: int = 1) -> int:
    return n
'''


@pytest.fixture(scope="module")
def client():
    """A real scheduler with no workers: submitted runs wait there, Scheduled."""
    with LocalCluster(n_workers=0, processes=False, dashboard_address="127.0.0.1:0") as cluster, Client(cluster, set_as_default=False) as c:
        yield c


@pytest.fixture
def job(tmp_path):
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "flows.py").write_text(textwrap.dedent(FLOWS))
    return load_flow(f"{folder / 'flows.py'}:job")


@pytest.fixture(autouse=True)
def _fast_settings():
    with dask.config.set({
        "daskflow.deployments.refresh": 10, "daskflow.deployments.catchup-after": 60,
        "daskflow.deployments.late-after": 30, "daskflow.deployments.takeover-after": 30,
    }):
        yield


def _since(store: Store, name: str, when: datetime) -> None:
    """Set the deployment's schedules as turned on at ``when`` (what registering then would store)."""
    registry = Registry(store)
    record = registry.get(name)
    registry.put(dict(record, schedule_since={s["id"]: when.timestamp() for s in record["schedules"]}, created=when.timestamp()))


def _drive(loop: Serve, clock: ManualClock, until: datetime, step: float = 600.0) -> None:
    while clock.now() < until.timestamp():
        clock.advance(min(step, until.timestamp() - clock.now()))
        loop.tick()


def _slots(loop: Serve, name: str) -> list[datetime]:
    return [datetime.fromtimestamp(r.scheduled_time, UTC) for r in loop.created if r.deployment["name"] == name]


def _utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_dst_fall_back_cron_fires_each_wall_time_once_and_an_hourly_interval_follows_absolute_time(tmp_path, client, job):
    store = Store(tmp_path / "store")
    deploy(
        job.to_deployment("daily-0130", cron="30 1 * * *", timezone="America/New_York"),
        job.to_deployment("hourly-cron", cron="0 * * * *", timezone="America/New_York"),
        job.to_deployment("hourly-interval", interval=3600, timezone="America/New_York", anchor_date="2027-01-01T00:00:00"),
        storage=store,
    )
    start = datetime(2027, 11, 6, 23, 0, tzinfo=NY)
    for name in ("daily-0130", "hourly-cron", "hourly-interval"):
        _since(store, name, start)
    clock = ManualClock(start)
    loop = Serve(store, client, clock=clock, notifier=False)
    loop.start()
    try:
        _drive(loop, clock, datetime(2027, 11, 8, 2, 0, tzinfo=NY))
    finally:
        loop.close()
    # 2027-11-07 is the fall-back day in New York: 01:00-02:00 happens twice.
    day = (_utc(2027, 11, 7, 4), _utc(2027, 11, 8, 5))  # local midnight to midnight (EDT to EST)
    in_day = lambda slots: [s for s in slots if day[0] <= s < day[1]]  # noqa: E731
    assert _slots(loop, "daily-0130") == [_utc(2027, 11, 7, 5, 30), _utc(2027, 11, 8, 6, 30)]  # once, at the first 01:30
    hourly = in_day(_slots(loop, "hourly-cron"))
    assert len(hourly) == 24 and len(set(hourly)) == 24
    assert _utc(2027, 11, 7, 5) in hourly and _utc(2027, 11, 7, 6) not in hourly and _utc(2027, 11, 7, 7) in hourly
    interval = in_day(_slots(loop, "hourly-interval"))
    assert len(interval) == 25  # absolute time: two runs "at 1 AM"
    # Every run was recorded Scheduled before anything could start it.
    runs = History(store).runs(state="Scheduled", limit=None)
    assert len(runs) == len(loop.created) == len({(r.deployment["id"], r.scheduled_time) for r in loop.created})
    assert all(r["start_time"] is None and r["deployment_name"] for r in runs)


def test_dst_spring_forward_gap_fires_once_at_the_next_valid_time(tmp_path, client, job):
    store = Store(tmp_path / "store")
    deploy(
        job.to_deployment("daily-0230", cron="30 2 * * *", timezone="America/New_York"),
        job.to_deployment("hourly-cron", cron="0 * * * *", timezone="America/New_York"),
        storage=store,
    )
    start = datetime(2027, 3, 13, 23, 0, tzinfo=NY)
    for name in ("daily-0230", "hourly-cron"):
        _since(store, name, start)
    clock = ManualClock(start)
    loop = Serve(store, client, clock=clock, notifier=False)
    loop.start()
    try:
        _drive(loop, clock, datetime(2027, 3, 15, 3, 0, tzinfo=NY))
    finally:
        loop.close()
    # 2027-03-14 02:00 EST jumps to 03:00 EDT: 02:30 does not exist that day.
    assert _slots(loop, "daily-0230") == [_utc(2027, 3, 14, 7, 0), _utc(2027, 3, 15, 6, 30)]
    day = (_utc(2027, 3, 14, 5), _utc(2027, 3, 15, 4))
    hourly = [s for s in _slots(loop, "hourly-cron") if day[0] <= s < day[1]]
    assert len(hourly) == 23 and len(set(hourly)) == 23


@pytest.mark.parametrize(("catchup", "expected"), [("skip", 1), ("latest", 2), ("all", 4)])
def test_missed_slots_follow_the_catch_up_policy(tmp_path, client, job, catchup, expected):
    store = Store(tmp_path / "store")
    deploy(job.to_deployment("five-minutes", interval=300, catchup=catchup, catchup_limit=3, anchor_date="2027-01-01T00:00:00"), storage=store)
    start = _utc(2027, 6, 1, 12, 0)
    _since(store, "five-minutes", start)
    clock = ManualClock(start)
    loop = Serve(store, client, clock=clock, notifier=False)
    loop.start()
    try:
        loop.tick()
        assert not loop.created  # 12:00 is the schedule's start, not a slot after it
        clock.set(_utc(2027, 6, 1, 13, 0))  # the loop was away for an hour: 11 slots missed, 13:00 on time
        loop.tick()
    finally:
        loop.close()
    slots = _slots(loop, "five-minutes")
    assert len(slots) == expected
    assert slots[-1] == _utc(2027, 6, 1, 13, 0)
    if catchup == "all":
        assert slots[:-1] == [_utc(2027, 6, 1, 12, 45), _utc(2027, 6, 1, 12, 50), _utc(2027, 6, 1, 12, 55)]
    if catchup == "latest":
        assert slots[0] == _utc(2027, 6, 1, 12, 55)


@pytest.mark.parametrize("clean_stop", [True, False])
def test_a_restarted_loop_neither_repeats_nor_skips_a_slot(tmp_path, client, job, clean_stop):
    store = Store(tmp_path / "store")
    deploy(job.to_deployment("minutely", interval=60, anchor_date="2027-01-01T00:00:00"), storage=store)
    start = _utc(2027, 6, 1, 12, 0)
    _since(store, "minutely", start)
    clock = ManualClock(start)
    first = Serve(store, client, clock=clock, notifier=False)
    first.start()
    _drive(first, clock, _utc(2027, 6, 1, 12, 10), step=20)
    if clean_stop:
        first.close()  # writes its cursors
    # else: gone without a word (kill -9): its cursors are 30 s stale at best
    clock.advance(30)  # back within the catch-up window: nothing counts as missed
    second = Serve(store, client, clock=clock, notifier=False)
    second.start()
    try:
        _drive(second, clock, _utc(2027, 6, 1, 12, 20), step=20)
    finally:
        second.close()
    slots = _slots(first, "minutely") + _slots(second, "minutely")
    expected = [_utc(2027, 6, 1, 12, m) for m in range(1, 21)]
    assert sorted(slots) == expected  # every minute once: none twice, none missing


def test_two_loops_on_one_store_fire_each_slot_once(tmp_path, client, job):
    store = Store(tmp_path / "store")
    deploy(*(job.to_deployment(f"d{i}", interval=60, anchor_date="2027-01-01T00:00:00") for i in range(5)), storage=store)
    start = _utc(2027, 6, 1, 12, 0)
    for i in range(5):
        _since(store, f"d{i}", start)
    clock = ManualClock(start)
    loops = [Serve(store, client, clock=clock, notifier=False) for _ in range(2)]
    for loop in loops:
        loop.start()
    try:
        for _ in range(15):
            clock.advance(60)
            tick_together(loops)
    finally:
        for loop in loops:
            loop.close()
    created = [(r.deployment["name"], r.scheduled_time) for loop in loops for r in loop.created]
    assert len(created) == len(set(created)) == 5 * 15
    assert len(History(store).runs(limit=None)) == 75


def test_a_slot_whose_loop_died_before_creating_its_run_is_taken_over_once(tmp_path, client, job):
    from daskflow.deployments.launch import claim_slot

    store = Store(tmp_path / "store")
    [record] = deploy(job.to_deployment("orphan", interval=60, anchor_date="2027-01-01T00:00:00"), storage=store)
    start = _utc(2027, 6, 1, 12, 0)
    _since(store, "orphan", start)
    record = Registry(store).get("orphan")
    slot = _utc(2027, 6, 1, 12, 1)
    # A loop that committed the fire record and died before writing the run:
    request, existing = claim_slot(Registry(store), record, record["schedules"][0]["id"], slot, "dead-loop", slot.timestamp())
    assert existing is None
    clock = ManualClock(slot)
    loops = [Serve(store, client, clock=clock, notifier=False) for _ in range(2)]
    for loop in loops:
        loop.start()
    try:
        for loop in loops:
            loop.tick()
        assert not any(r.scheduled_time == slot.timestamp() for loop in loops for r in loop.created)  # within the grace
        clock.advance(31)
        for loop in loops:
            loop.tick()
    finally:
        for loop in loops:
            loop.close()
    made = [r for loop in loops for r in loop.created if r.scheduled_time == slot.timestamp()]
    assert [r.run_id for r in made] == [request.run_id]  # the fire record's own run, made once
    assert len([r for r in History(store).runs(limit=None) if r["scheduled_time"] == slot.timestamp()]) == 1


def test_a_paused_deployment_fires_nothing_and_is_not_caught_up_when_resumed(tmp_path, client, job):
    from click.testing import CliRunner

    from daskflow.cli import cli

    store = Store(tmp_path / "store")
    deploy(job.to_deployment("pausable", interval=60, anchor_date="2027-01-01T00:00:00"), storage=store)
    start = _utc(2027, 6, 1, 12, 0)
    _since(store, "pausable", start)
    clock = ManualClock(start)
    loop = Serve(store, client, clock=clock, notifier=False)
    loop.start()
    runner = CliRunner()
    try:
        _drive(loop, clock, _utc(2027, 6, 1, 12, 3), step=60)
        assert len(loop.created) == 3
        assert runner.invoke(cli, ["deployments", "pause", "pausable", "--storage", str(store.url)]).exit_code == 0
        _drive(loop, clock, _utc(2027, 6, 1, 12, 13), step=60)
        assert len(loop.created) == 3  # seen at the next refresh: nothing fired while paused
        registry = Registry(store)
        registry.put(dict(registry.get("pausable"), paused=False, resumed=clock.now()))  # `deployments resume`, at the loop's time
        _drive(loop, clock, _utc(2027, 6, 1, 12, 25), step=60)
    finally:
        loop.close()
    slots = _slots(loop, "pausable")
    assert all(s <= _utc(2027, 6, 1, 12, 3) or s > _utc(2027, 6, 1, 12, 13) for s in slots)
    assert _utc(2027, 6, 1, 12, 25) in slots and len(slots) < 25


class _Webhook(http.server.BaseHTTPRequestHandler):
    received: list[dict] = []

    def do_POST(self):  # noqa: N802
        length = int(self.headers["Content-Length"])
        type(self).received.append(json.loads(self.rfile.read(length)))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def webhook():
    _Webhook.received = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Webhook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/hooks/T000/SECRET-canary-hook", _Webhook.received
    finally:
        server.shutdown()
        server.server_close()


def test_a_run_nobody_can_start_becomes_late_says_why_and_is_notified(tmp_path, client, job, webhook, caplog):
    url, received = webhook
    store = Store(tmp_path / "store")
    deploy(job.to_deployment("gpu-job", interval=60, work_queue_name="gpu", anchor_date="2027-01-01T00:00:00"), storage=store)
    start = _utc(2027, 6, 1, 12, 0)
    _since(store, "gpu-job", start)
    clock = ManualClock(start)
    notifier = WebhookNotifier(url, ["Late"])
    loop = Serve(store, client, clock=clock, notifier=notifier)
    loop.start()
    try:
        clock.advance(60)
        [request] = loop.tick()
        [record] = History(store).runs(limit=None)
        assert record["state"]["name"] == "Scheduled"
        assert "no worker is connected" in record["state"]["message"]  # it says why from the start
        clock.advance(29)
        loop.tick()
        assert History(store).runs(state="Late", limit=None) == []
        clock.advance(2)
        loop.tick()
        [late] = History(store).runs(state="Late", limit=None)
        assert late["id"] == request.run_id and "not started 31 s after its scheduled time" in late["state"]["message"]
        assert [s["name"] for s in late["state_history"]] == ["Scheduled", "Late"]
        wait_until(lambda: received, 30, message="the Late notification")
    finally:
        loop.close()
    [posted] = received
    assert posted["state"] == "Late" and posted["run_id"] == request.run_id and posted["deployment"] == "gpu-job"
    assert "is Late" in posted["text"]
    assert "SECRET-canary-hook" not in caplog.text


def test_the_serve_loop_shows_its_deployments_and_waiting_runs_on_the_live_status_page(tmp_path, client, job):
    import urllib.request

    store = Store(tmp_path / "store")
    deploy(
        job.to_deployment("page-job", cron="0 3 * * *", timezone="Europe/Berlin"),
        job.to_deployment("page-gpu", interval=60, work_queue_name="gpu", anchor_date="2027-01-01T00:00:00"),
        storage=store,
    )
    start = _utc(2030, 6, 1, 12, 0)  # later than the other tests' runs: the page lists the newest first
    for name in ("page-job", "page-gpu"):
        _since(store, name, start)
    clock = ManualClock(start)
    loop = Serve(store, client, clock=clock, notifier=False)
    loop.start()
    port = client.scheduler_info()["services"]["dashboard"]

    def api(path: str) -> dict:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/daskflow/api/{path}", timeout=10) as response:
            return json.loads(response.read())

    try:
        loop.tick()
        rows = wait_until(lambda: {r["name"]: r for r in api("deployments")["deployments"] if r["name"].startswith("page-")}, 30, 0.1,
                          "the deployments on the live page")
        assert rows["page-job"]["schedules"] == "every day at 03:00 (Europe/Berlin)" and rows["page-job"]["next_runs"]
        clock.advance(60)
        [request] = loop.tick()
        listed = wait_until(lambda: [r for r in api("runs")["runs"] if r["id"] == request.run_id], 30, 0.1, "the Scheduled run on the live page")
        assert listed[0]["state"]["name"] == "Scheduled" and "no worker" in listed[0]["state"]["message"]
        clock.advance(31)
        loop.tick()
        wait_until(lambda: [r for r in api("runs")["runs"] if r["id"] == request.run_id and r["state"]["name"] == "Late"], 30, 0.1,
                   "the Late run on the live page")
    finally:
        loop.close()
