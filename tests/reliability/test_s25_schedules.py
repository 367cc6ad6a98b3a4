"""Scenario 25: invalid cron specs and DST edges, through registration and a real serve loop.

The serve loop runs against a :class:`~daskflow.deployments.serve.ManualClock` and an
in-process scheduler without workers, so a DST week takes a fraction of a second and
the runs it creates stay Scheduled. ``tests/test_schedules.py`` and
``tests/test_serve_clock.py`` cover the schedule rules one by one; this is the
scenario's headline figure.
"""

from __future__ import annotations

import textwrap
from datetime import datetime

import pytest
from distributed import Client, LocalCluster

from daskflow import InvalidScheduleError, Store, deploy
from daskflow.deployments.registry import Registry
from daskflow.deployments.serve import ManualClock, Serve
from daskflow.pipeline.entrypoints import load_flow

from ..test_serve_clock import FLOWS, NY, UTC

#: (schedule options, the field the refusal must name, what it must quote)
INVALID = [
    ({"cron": "* * *"}, "cron", "* * *"),
    ({"cron": "61 * * * *"}, "cron", "61 * * * *"),
    ({"cron": "H * * * *"}, "cron", "H * * * *"),
    ({"cron": "@reboot"}, "cron", "@reboot"),
    ({"cron": "0 3 * * *", "timezone": "Mars/Olympus"}, "timezone", "Mars/Olympus"),
    ({"cron": "0 0 30 2 *"}, "cron", "never"),
]


@pytest.fixture
def job(tmp_path):
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "flows.py").write_text(textwrap.dedent(FLOWS))
    return load_flow(f"{folder / 'flows.py'}:job")


def test_s25_invalid_specs_are_refused_and_dst_days_fire_the_documented_runs(tmp_path, job, scenario_report):
    store = Store(tmp_path / "store")
    accepted = []
    for options, field, quoted in INVALID:
        try:
            deploy(job.to_deployment("bad", **options), storage=store)
        except InvalidScheduleError as exc:
            assert field in str(exc) and quoted in str(exc), (options, str(exc))
        else:
            accepted.append(options)
    assert accepted == [] and Registry(store).all() == []

    deploy(job.to_deployment("daily-0230", cron="30 2 * * *", timezone="America/New_York"), storage=store)
    start = datetime(2027, 3, 13, 0, 0, tzinfo=NY)
    registry = Registry(store)
    record = registry.get("daily-0230")
    registry.put(dict(record, schedule_since={s["id"]: start.timestamp() for s in record["schedules"]}, created=start.timestamp()))
    clock = ManualClock(start)
    with LocalCluster(n_workers=0, processes=False, dashboard_address="127.0.0.1:0") as cluster, Client(cluster, set_as_default=False) as client:
        loop = Serve(store, client, clock=clock, notifier=False)
        loop.start()
        try:
            # Spring forward (2027-03-14) and fall back (2027-11-07), a few days around each.
            for until in (datetime(2027, 3, 16, 0, 0, tzinfo=NY), None, datetime(2027, 11, 9, 0, 0, tzinfo=NY)):
                if until is None:  # jump to just before the fall-back week
                    clock.advance(datetime(2027, 11, 5, 0, 0, tzinfo=NY).timestamp() - clock.now())
                    loop.tick()
                    continue
                while clock.now() < until.timestamp():
                    clock.advance(min(1800.0, until.timestamp() - clock.now()))
                    loop.tick()
        finally:
            loop.close()
    slots = [datetime.fromtimestamp(r.scheduled_time, UTC) for r in loop.created]
    spring = [s for s in slots if s.astimezone(NY).date().isoformat() == "2027-03-14"]
    fall = [s for s in slots if s.astimezone(NY).date().isoformat() == "2027-11-07"]
    assert len(slots) == len(set(slots))  # no slot twice
    assert [s.astimezone(NY).strftime("%H:%M") for s in spring] == ["03:00"]  # 02:30 does not exist: once, at 03:00
    assert [s.astimezone(NY).strftime("%H:%M %Z") for s in fall] == ["02:30 EST"]  # 02:30 happens once that day
    duplicates = len(slots) - len(set(slots))
    scenario_report(
        25, "invalid cron and DST edges",
        f"invalid specs accepted {len(accepted)}/{len(INVALID)}; DST days: spring {len(spring)} run, fall {len(fall)} run, "
        f"duplicates {duplicates}, {len(slots)} runs over {len({s.astimezone(NY).date() for s in slots})} days",
    )
