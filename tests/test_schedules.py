"""Deployment schedules: DST rules, validation, round trips and words (daskflow.deployments.schedules)."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import subprocess
import sys
import threading
from collections import Counter
from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from dateutil import rrule as du

from daskflow.deployments import schedules
from daskflow.deployments.schedules import (
    CronSchedule,
    IntervalSchedule,
    RRuleSchedule,
    Schedule,
    make_schedule,
    schedule_from_dict,
)
from daskflow.exceptions import InvalidScheduleError

UTC = timezone.utc
NY = ZoneInfo("America/New_York")
BERLIN = ZoneInfo("Europe/Berlin")
TICK = timedelta(microseconds=1)


def utc(*fields: int) -> datetime:
    return datetime(*fields, tzinfo=UTC)


def local_day(day: date, zone: ZoneInfo) -> tuple[datetime, datetime]:
    """``(after, until)`` for ``slots_between`` selecting the slots on local date ``day``."""
    start = datetime.combine(day, time(), zone).astimezone(UTC)
    end = datetime.combine(day + timedelta(days=1), time(), zone).astimezone(UTC)
    return start - TICK, end - TICK


def slots_on(schedule: Schedule, day: date, zone: ZoneInfo) -> list[datetime]:
    return schedule.slots_between(*local_day(day, zone))


def refused(build, *fragments: str) -> str:
    """The message of the InvalidScheduleError that ``build()`` raises; holds every fragment."""
    with pytest.raises(InvalidScheduleError) as caught:
        build()
    message = str(caught.value)
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    return message


# -- daylight saving time -----------------------------------------------------------

SPRING_NY, FALL_NY = date(2026, 3, 8), date(2026, 11, 1)
SPRING_BERLIN, FALL_BERLIN = date(2026, 3, 29), date(2026, 10, 25)


def test_cron_in_a_spring_gap_fires_once_at_the_end_of_the_gap():
    schedule = CronSchedule("30 2 * * *", "America/New_York")
    assert schedule.slots_between(utc(2026, 3, 7), utc(2026, 3, 10)) == [
        utc(2026, 3, 7, 7, 30),  # 02:30 EST
        utc(2026, 3, 8, 7, 0),  # 02:30 does not exist: 03:00 EDT
        utc(2026, 3, 9, 6, 30),  # 02:30 EDT
    ]
    assert schedule.next_after(utc(2026, 3, 8, 6, 59)) == utc(2026, 3, 8, 7, 0)
    assert schedule.next_after(utc(2026, 3, 8, 7, 0)) == utc(2026, 3, 9, 6, 30)


def test_cron_in_a_fall_overlap_fires_once_at_the_first_occurrence():
    schedule = CronSchedule("30 1 * * *", "America/New_York")
    assert schedule.slots_between(utc(2026, 10, 31), utc(2026, 11, 3)) == [
        utc(2026, 10, 31, 5, 30),
        utc(2026, 11, 1, 5, 30),  # 01:30 EDT, and not again at 01:30 EST (06:30 UTC)
        utc(2026, 11, 2, 6, 30),
    ]
    # asked during the second 01:xx (01:15 EST): today's 01:30 already fired at 01:30 EDT
    assert schedule.next_after(utc(2026, 11, 1, 6, 15)) == utc(2026, 11, 2, 6, 30)


def test_hourly_cron_follows_the_wall_clock_on_dst_days():
    schedule = CronSchedule("0 * * * *", "America/New_York")
    spring = slots_on(schedule, SPRING_NY, NY)
    assert len(spring) == 23
    assert spring[:4] == [utc(2026, 3, 8, 5), utc(2026, 3, 8, 6), utc(2026, 3, 8, 7), utc(2026, 3, 8, 8)]
    fall = slots_on(schedule, FALL_NY, NY)
    assert len(fall) == 24
    assert fall[:3] == [utc(2026, 11, 1, 4), utc(2026, 11, 1, 5), utc(2026, 11, 1, 7)]  # 01:00 EDT, then 02:00 EST
    assert fall[2] - fall[1] == timedelta(hours=2)
    # after the gap the next slot is 02:00 EST even from the second 01:xx
    assert schedule.next_after(utc(2026, 11, 1, 6, 30)) == utc(2026, 11, 1, 7)


def test_hourly_interval_follows_absolute_time_on_dst_days():
    schedule = IntervalSchedule("1h", timezone="America/New_York")
    assert len(slots_on(schedule, SPRING_NY, NY)) == 23
    fall = slots_on(schedule, FALL_NY, NY)
    assert len(fall) == 25
    at_one = [slot for slot in fall if slot.astimezone(NY).hour == 1]
    assert at_one == [utc(2026, 11, 1, 5), utc(2026, 11, 1, 6)]  # two runs "at 1 AM"


def test_berlin_dst_days():
    daily = CronSchedule("30 2 * * *", "Europe/Berlin")
    assert slots_on(daily, SPRING_BERLIN, BERLIN) == [utc(2026, 3, 29, 1, 0)]  # 03:00 CEST
    assert slots_on(daily, FALL_BERLIN, BERLIN) == [utc(2026, 10, 25, 0, 30)]  # 02:30 CEST only
    hourly = CronSchedule("@hourly", "Europe/Berlin")
    interval = IntervalSchedule(3600, timezone="Europe/Berlin")
    counts = [len(slots_on(s, d, BERLIN)) for s in (hourly, interval) for d in (SPRING_BERLIN, FALL_BERLIN)]
    assert counts == [23, 24, 23, 25]


def test_daily_cron_fires_once_on_every_day_of_a_year():
    schedule = CronSchedule("30 2 * * *", "America/New_York")
    slots = schedule.slots_between(datetime(2026, 1, 1, tzinfo=NY) - TICK, datetime(2027, 1, 1, tzinfo=NY) - TICK)
    assert len(slots) == 365
    per_day = Counter(slot.astimezone(NY).date() for slot in slots)
    assert len(per_day) == 365 and set(per_day.values()) == {1}
    off_time = {
        slot.astimezone(NY).date(): slot.astimezone(NY).time() for slot in slots if slot.astimezone(NY).minute != 30
    }
    assert off_time == {SPRING_NY: time(3, 0)}


def test_daily_interval_keeps_its_wall_time_across_dst():
    schedule = IntervalSchedule("1d", anchor_date="2026-01-01T02:30", timezone="America/New_York")
    assert slots_on(schedule, SPRING_NY, NY) == [utc(2026, 3, 8, 7, 0)]  # 03:00 EDT
    assert slots_on(schedule, date(2026, 3, 9), NY) == [utc(2026, 3, 9, 6, 30)]  # 02:30 EDT again
    assert slots_on(schedule, FALL_NY, NY) == [utc(2026, 11, 1, 7, 30)]  # 02:30 EST


def test_rrule_follows_the_wall_clock_like_cron():
    daily = RRuleSchedule("FREQ=DAILY;BYHOUR=2;BYMINUTE=30", "America/New_York")
    assert daily.slots_between(utc(2026, 3, 7), utc(2026, 3, 10)) == [
        utc(2026, 3, 7, 7, 30),
        utc(2026, 3, 8, 7, 0),
        utc(2026, 3, 9, 6, 30),
    ]
    hourly = RRuleSchedule("FREQ=HOURLY", "America/New_York")
    assert [len(slots_on(hourly, d, NY)) for d in (SPRING_NY, FALL_NY)] == [23, 24]


def test_sub_day_interval_anchors():
    # an anchor in the gap is the end of the gap; the slots are instants from there
    gap = IntervalSchedule("90m", anchor_date="2026-03-08T02:30", timezone="America/New_York")
    assert gap.next_after(utc(2026, 3, 8, 6, 59)) == utc(2026, 3, 8, 7, 0)
    assert gap.next_after(utc(2026, 3, 8, 7, 0)) == utc(2026, 3, 8, 8, 30)
    # a naive anchor in the overlap is its first occurrence; an aware one keeps its instant
    first = IntervalSchedule("1d", anchor_date="2026-11-01T01:30", timezone="America/New_York")
    second = IntervalSchedule("6h", anchor_date=utc(2026, 11, 1, 6, 30), timezone="America/New_York")
    assert first.anchor_date.utcoffset() == timedelta(hours=-4)
    assert second.anchor_date.fold == 1 and second.to_dict()["anchor_date"] == "2026-11-01T01:30:00-05:00"
    assert second.next_after(utc(2026, 11, 1, 6)) == utc(2026, 11, 1, 6, 30)
    assert schedule_from_dict(second.to_dict()) == second


def test_slots_are_aware_utc_whatever_zone_after_is_in():
    schedule = CronSchedule("0 9 * * *", "Europe/Berlin")
    from_utc = schedule.next_after(utc(2026, 6, 1))
    from_ny = schedule.next_after(datetime(2026, 5, 31, 20, tzinfo=NY))  # the same instant
    assert from_utc == from_ny == utc(2026, 6, 1, 7)
    assert from_utc.tzinfo is UTC and from_ny.tzinfo is UTC


# -- cron ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cron",
    [
        "61 * * * *",
        "* * *",
        "H * * * *",
        "R * * * *",
        "H(0-29) * * * *",
        "@reboot",
        "@sometimes",
        "* * * * * *",
        "0 0 * * * 2026",
        "",
        "   ",
        5,
        None,
        "0 0 32 * *",
        "*/0 * * * *",
        "mon * * * *",
    ],
)
def test_bad_crons_are_refused(cron):
    refused(lambda: CronSchedule(cron), "cron", repr(cron), "'0 9 * * 1-5'")


def test_field_specific_reasons():
    refused(lambda: CronSchedule("* * * * * *"), "seconds and year fields are not supported")
    refused(lambda: CronSchedule("H * * * *"), "hashed (H) and random (R)")
    refused(lambda: CronSchedule("@reboot"), "@reboot")
    refused(lambda: CronSchedule("* * *"), "has 3 field(s)")


@pytest.mark.parametrize("cron", ["0 0 30 2 *", "0 0 31 4 *"])
def test_a_cron_that_never_fires_is_refused(cron):
    refused(lambda: CronSchedule(cron), "cron", repr(cron), "never fires")


def test_rare_crons_are_accepted():
    assert CronSchedule("0 0 29 2 *").next_after(utc(2026, 1, 1)) == utc(2028, 2, 29)
    # 29 February on a Monday: 18 years away, found by the decades-long search
    assert CronSchedule("0 0 29 2 1", day_or=False).next_after(utc(2026, 1, 1)) == utc(2044, 2, 29)
    assert CronSchedule("0 0 29 2 1").next_after(utc(2026, 1, 1)) == utc(2026, 2, 2)  # day_or: or any Monday


@pytest.mark.parametrize("cron", ["@hourly", "@daily", "@midnight", "@weekly", "@monthly", "@yearly", "@annually"])
def test_cron_aliases(cron):
    expected = {"@hourly": utc(2026, 1, 1, 11), "@weekly": utc(2026, 1, 4), "@monthly": utc(2026, 2, 1)}
    default = utc(2027, 1, 1) if cron in ("@yearly", "@annually") else utc(2026, 1, 2)
    assert CronSchedule(cron).next_after(utc(2026, 1, 1, 10, 30)) == expected.get(cron, default)


def test_day_or_must_be_a_bool():
    refused(lambda: CronSchedule("0 0 1 * 1", day_or="yes"), "day_or", "'yes'")
    both = CronSchedule("0 0 13 * 5", day_or=False)  # Friday the 13th
    assert both.next_after(utc(2026, 1, 1)) == utc(2026, 2, 13)
    assert CronSchedule("0 0 13 * 5").next_after(utc(2026, 1, 1)) == utc(2026, 1, 2)  # the 13th or a Friday


# -- timezone, interval, anchor ------------------------------------------------------


@pytest.mark.parametrize("tz", ["Mars/Olympus", "", "  ", 5, None, "Europe", "../etc/passwd", "localtime"])
@pytest.mark.parametrize(
    "build",
    [
        lambda tz: CronSchedule("0 9 * * *", tz),
        lambda tz: IntervalSchedule(60, timezone=tz),
        lambda tz: RRuleSchedule("FREQ=DAILY", tz),
    ],
    ids=["cron", "interval", "rrule"],
)
def test_bad_timezones_are_refused(build, tz):
    refused(lambda: build(tz), "timezone", repr(tz), "'Europe/Berlin'")


@pytest.mark.parametrize(
    "interval",
    [
        0,
        -5,
        float("nan"),
        float("inf"),
        True,
        False,
        0.5,
        "abc",
        "5x",
        "",
        "-5m",
        "inf",
        None,
        [5],
        1e300,
        timedelta(0),
        timedelta(seconds=-1),
        timedelta(milliseconds=500),
    ],
)
def test_bad_intervals_are_refused(interval):
    refused(lambda: IntervalSchedule(interval), "interval", repr(interval), "'5m'")


@pytest.mark.parametrize(
    "interval, seconds",
    [
        ("30s", 30),
        ("5m", 300),
        ("12h", 43200),
        ("1d", 86400),
        ("2w", 1209600),
        (300, 300),
        (1.5, 1.5),
        (timedelta(minutes=5), 300),
        (" 90M ", 5400),
    ],
)
def test_interval_forms(interval, seconds):
    schedule = IntervalSchedule(interval)
    assert schedule.to_dict()["interval"] == seconds
    assert type(schedule.to_dict()["interval"]) is type(seconds)  # 300, not 300.0: the id depends on it
    assert schedule.interval == timedelta(seconds=seconds)


@pytest.mark.parametrize("anchor", ["not a date", "2026-13-01", "", 12345, [2026]])
def test_bad_anchor_dates_are_refused(anchor):
    refused(lambda: IntervalSchedule("1h", anchor_date=anchor), "anchor_date", repr(anchor), "'2026-01-01T00:00:00'")


def test_anchor_dates():
    # naive: a wall time in the schedule's zone
    naive = IntervalSchedule("1d", anchor_date="2026-01-01T00:00", timezone="America/New_York")
    assert naive.next_after(utc(2026, 1, 10)) == utc(2026, 1, 10, 5)
    assert naive == IntervalSchedule("1d", anchor_date=datetime(2026, 1, 1), timezone="America/New_York")
    assert naive == IntervalSchedule("1d", anchor_date=date(2026, 1, 1), timezone="America/New_York")
    # aware: the same instant, shown in the zone
    aware = IntervalSchedule("1d", anchor_date="2026-01-01T00:00:00Z", timezone="America/New_York")
    assert aware.to_dict()["anchor_date"] == "2025-12-31T19:00:00"
    # the default: 2020-01-01 00:00 in the zone, so slots before and after it
    default = IntervalSchedule("1d", timezone="America/New_York")
    assert default.to_dict()["anchor_date"] == "2020-01-01T00:00:00"
    assert default.next_after(utc(2026, 1, 10)) == utc(2026, 1, 10, 5)
    assert IntervalSchedule("7m").next_after(utc(2019, 12, 31, 23, 59)) == utc(2020, 1, 1)


# -- rrule --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "garbage",
        "FREQ=DAILY;BYDAY=XX",
        "FREQ=SOMETIMES",
        "",
        " \n ",
        5,
        None,
        "FREQ=DAILY;UNTIL=20190101T000000",  # before the default DTSTART: no occurrence
        "FREQ=DAILY;COUNT=2\nEXDATE:20200101T000000,20200102T000000",  # all excluded
        "FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=30",
        "DTSTART;TZID=Mars/Olympus:20260101T090000\nRRULE:FREQ=DAILY",
        "FREQ=DAILY;COUNT=3;UNTIL=20261231T000000",
        "DTSTART:20260101T090000\nRRULE:FREQ=DAILY;UNTIL=20261231T000000Z",  # floating DTSTART, UTC UNTIL
    ],
)
def test_bad_rrules_are_refused(text):
    message = refused(lambda: RRuleSchedule(text), "rrule", repr(text))
    assert "'FREQ=WEEKLY;BYDAY=MO;BYHOUR=9'" in message or "'Europe/Berlin'" in message  # the fix


def test_rrule_refusal_reasons():
    refused(lambda: RRuleSchedule("FREQ=DAILY;UNTIL=20190101T000000"), "no occurrence")
    refused(lambda: RRuleSchedule("FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=30"), "it has no occurrence")
    exrule = "RRULE:FREQ=DAILY\nEXRULE:FREQ=YEARLY;BYMONTH=4;BYMONTHDAY=31"  # harmless, but costly on every call
    refused(lambda: RRuleSchedule(exrule), "one of its RRULE or EXRULE lines has no occurrence")
    refused(lambda: RRuleSchedule("DTSTART;TZID=Mars/Olympus:20260101T090000\nRRULE:FREQ=DAILY"), "'Mars/Olympus'")
    long = "FREQ=DAILY;" + ";".join(["BYHOUR=1"] * 800)
    assert len(long) > 6500
    refused(lambda: RRuleSchedule(long), "rrule", repr(long)[:100], "6,500")


def test_finite_rrules_end_with_none():
    count = RRuleSchedule("FREQ=DAILY;COUNT=3")
    assert count.upcoming(5, utc(2000, 1, 1)) == [utc(2020, 1, 1), utc(2020, 1, 2), utc(2020, 1, 3)]
    assert count.next_after(utc(2020, 1, 2, 12)) == utc(2020, 1, 3)
    assert count.next_after(utc(2020, 1, 3)) is None
    assert count.slots_between(utc(2020, 1, 3), utc(2030, 1, 1)) == []
    until = RRuleSchedule("FREQ=DAILY;UNTIL=20200105T000000")
    assert until.next_after(utc(2020, 1, 4)) == utc(2020, 1, 5)
    assert until.next_after(utc(2020, 1, 5)) is None
    # UNTIL in UTC without DTSTART: the wall-clock rule ends at that instant
    utc_until = RRuleSchedule("FREQ=DAILY;UNTIL=20200103T120000Z", "America/New_York")
    assert utc_until.upcoming(5, utc(2019, 1, 1)) == [utc(2020, 1, 1, 5), utc(2020, 1, 2, 5), utc(2020, 1, 3, 5)]


def test_rrulesets():
    exdate = RRuleSchedule("DTSTART:20260105T090000\nRRULE:FREQ=WEEKLY;BYDAY=MO;COUNT=4\nEXDATE:20260112T090000")
    assert exdate.upcoming(10, utc(2026, 1, 1)) == [utc(2026, 1, 5, 9), utc(2026, 1, 19, 9), utc(2026, 1, 26, 9)]
    rdate = RRuleSchedule(
        """
        DTSTART:20260105T090000
        RRULE:FREQ=WEEKLY;BYDAY=MO
        RDATE:20260107T120000
        EXRULE:FREQ=MONTHLY;BYMONTHDAY=12
        """
    )  # indented lines (a Python string) are fine
    assert rdate.upcoming(4, utc(2026, 1, 1)) == [
        utc(2026, 1, 5, 9),
        utc(2026, 1, 7, 12),
        utc(2026, 1, 19, 9),
        utc(2026, 1, 26, 9),
    ]
    assert rdate.rrule.startswith("DTSTART:20260105T090000\nRRULE:")


def test_dtstart_in_the_text():
    # floating DTSTART: a wall time in the schedule's zone
    floating = RRuleSchedule("DTSTART:20260101T090000\nRRULE:FREQ=DAILY", "America/New_York")
    assert floating.next_after(utc(2025, 1, 1)) == utc(2026, 1, 1, 14)
    # a TZID wins over the timezone argument
    text = "DTSTART;TZID=Europe/Berlin:20260101T090000\nRRULE:FREQ=DAILY\nEXDATE;TZID=Europe/Berlin:20260102T090000"
    berlin = RRuleSchedule(text, "UTC")
    assert berlin.timezone == "Europe/Berlin" and berlin == RRuleSchedule(text, "Europe/Berlin")
    assert berlin.upcoming(2, utc(2025, 1, 1)) == [utc(2026, 1, 1, 8), utc(2026, 1, 3, 8)]
    assert berlin.next_after(utc(2026, 7, 1)) == utc(2026, 7, 1, 7)  # 09:00 CEST
    # without DTSTART the start is fixed (2020-01-01 00:00), never "now"
    assert RRuleSchedule("FREQ=HOURLY;INTERVAL=5").next_after(utc(2026, 5, 5)) == utc(2026, 5, 5, 1)


FINE = (datetime(2020, 1, 9, 13, 7, 30), datetime(2020, 1, 11, 13, 7, 30))
COARSE = (datetime(2023, 3, 3), datetime(2033, 1, 1))


@pytest.mark.parametrize(
    "text, window",
    [
        ("FREQ=MINUTELY;INTERVAL=7", FINE),
        ("FREQ=MINUTELY;INTERVAL=13;BYSECOND=0,30;BYHOUR=9,10,11", FINE),
        ("FREQ=SECONDLY;INTERVAL=4001", FINE),
        ("FREQ=HOURLY;INTERVAL=5;BYMINUTE=15,45", FINE),
        ("FREQ=HOURLY;INTERVAL=3;BYMINUTE=0,20,40;BYSETPOS=-1", FINE),
        ("FREQ=HOURLY;INTERVAL=7", (datetime(2026, 5, 5, 12, 34), datetime(2026, 5, 9))),
        ("FREQ=DAILY;INTERVAL=3;BYHOUR=9,17", FINE),
        ("FREQ=WEEKLY;INTERVAL=3;BYDAY=MO,FR;WKST=SU", COARSE),
        ("FREQ=WEEKLY;INTERVAL=2;BYDAY=TU,TH;BYSETPOS=1", COARSE),
        ("FREQ=MONTHLY;INTERVAL=5;BYMONTHDAY=31", COARSE),
        ("FREQ=MONTHLY;BYDAY=-1FR", COARSE),
        ("DTSTART:20200131T080000\nRRULE:FREQ=MONTHLY;INTERVAL=2", COARSE),
        ("FREQ=YEARLY;INTERVAL=3;BYMONTH=2;BYMONTHDAY=29", (datetime(2023, 3, 3), datetime(2045, 1, 1))),
        ("DTSTART:20200229T120000\nRRULE:FREQ=YEARLY", COARSE),
    ],
)
def test_rebasing_gives_the_slots_of_the_naive_computation(text, window):
    # dateutil on its own, iterating from DTSTART (2020-01-01 unless given), in UTC
    direct = du.rrulestr(text, dtstart=datetime(2020, 1, 1), forceset=True).between(*window)
    rebased = RRuleSchedule(text).slots_between(*(moment.replace(tzinfo=UTC) for moment in window))
    assert len(direct) >= 2
    assert rebased == [moment.replace(tzinfo=UTC) for moment in direct]


def test_rebasing_moves_dtstart_next_to_the_query():
    wall = datetime(2026, 5, 5, 12, 34, 56)
    for text, at_most in [
        ("FREQ=MINUTELY;INTERVAL=7", timedelta(minutes=7)),
        ("FREQ=WEEKLY", timedelta(weeks=1)),
        ("FREQ=MONTHLY", timedelta(days=366)),
        ("FREQ=YEARLY;INTERVAL=2", timedelta(days=731)),
    ]:
        rule = RRuleSchedule(text)._rules[0]
        start = schedules._rebased(rule, wall)._dtstart
        assert wall - at_most < start <= wall, (text, start)
    counted = RRuleSchedule("FREQ=MINUTELY;COUNT=5")._rules[0]
    assert schedules._rebased(counted, wall) is counted  # COUNT counts from DTSTART: never moved


# -- round trips, ids, equality ------------------------------------------------------

ROUND_TRIP = [
    CronSchedule("0 9 * * 1-5", "Europe/Berlin"),
    CronSchedule("0 0 13 * 5", day_or=False),
    IntervalSchedule("90m", anchor_date="2026-01-01T06:15", timezone="America/New_York"),
    IntervalSchedule(1.5),
    IntervalSchedule("6h", anchor_date=utc(2026, 11, 1, 6, 30), timezone="America/New_York"),  # fold=1
    RRuleSchedule("DTSTART;TZID=Europe/Berlin:20260101T090000\nRRULE:FREQ=DAILY;UNTIL=20261231T000000Z"),
    RRuleSchedule("RRULE:FREQ=WEEKLY;BYDAY=MO\nEXDATE:20200106T000000", "Asia/Kolkata"),
]


@pytest.mark.parametrize("schedule", ROUND_TRIP, ids=repr)
def test_round_trip(schedule):
    data = schedule.to_dict()
    assert json.loads(json.dumps(data)) == data
    again = schedule_from_dict(data)
    assert again == schedule and hash(again) == hash(schedule) and again.id == schedule.id
    unpickled = pickle.loads(pickle.dumps(schedule))
    assert unpickled == schedule
    assert unpickled.upcoming(3, utc(2026, 3, 1)) == schedule.upcoming(3, utc(2026, 3, 1))
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"))
    assert schedule.id == hashlib.sha256(canonical.encode()).hexdigest()[:12]


def test_ids_are_stable():
    assert len({s.id for s in ROUND_TRIP}) == len(ROUND_TRIP)
    # pinned: an id changes only if to_dict's canonical form does
    assert CronSchedule("0 9 * * 1", "America/New_York").id == "7188110b00f4"
    assert IntervalSchedule(300).id == "17ae59bc9ac3"
    code = (
        "import json, sys\n"
        "from daskflow.deployments.schedules import schedule_from_dict\n"
        "print(json.dumps([schedule_from_dict(d).id for d in json.loads(sys.argv[1])]))\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": "4242"}
    dicts = json.dumps([s.to_dict() for s in ROUND_TRIP])
    out = subprocess.run([sys.executable, "-c", code, dicts], env=env, capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == [s.id for s in ROUND_TRIP]


def test_equal_schedules_written_differently():
    assert IntervalSchedule(300) == IntervalSchedule("5m") == IntervalSchedule(timedelta(minutes=5))
    assert CronSchedule("0  9 * * 1 ") == CronSchedule("0 9 * * 1")
    assert CronSchedule("0 9 * * 1") != CronSchedule("0 9 * * 1", "Europe/Berlin")
    assert CronSchedule("0 9 * * 1") != RRuleSchedule("FREQ=WEEKLY;BYDAY=MO;BYHOUR=9")
    assert len({IntervalSchedule(60), IntervalSchedule("1m"), IntervalSchedule(61)}) == 2


def test_schedules_are_immutable():
    schedule = CronSchedule("0 9 * * *")
    with pytest.raises(AttributeError):
        schedule.cron = "0 10 * * *"
    with pytest.raises(AttributeError):
        schedule.timezone = "Europe/Berlin"
    assert schedule.cron == "0 9 * * *" and schedule.kind == "cron" and schedule.timezone == "UTC"


# -- describe -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "schedule, words",
    [
        (CronSchedule("*/5 * * * *"), "every 5 minutes"),
        (CronSchedule("* * * * *"), "every minute"),
        (CronSchedule("15 * * * *"), "every hour at :15"),
        (CronSchedule("15 * * * *", "Asia/Kolkata"), "every hour at :15 (Asia/Kolkata)"),
        (CronSchedule("0 */2 * * *"), "every 2 hours at :00"),
        (CronSchedule("0 3 * * *", "Europe/Berlin"), "every day at 03:00 (Europe/Berlin)"),
        (CronSchedule("0 9 * * 1", "America/New_York"), "every Monday at 09:00 (America/New_York)"),
        (CronSchedule("0 9,17 * * 1-5"), "every Monday to Friday at 09:00 and 17:00 (UTC)"),
        (CronSchedule("30 8 * * sat,sun"), "every Saturday and Sunday at 08:30 (UTC)"),
        (CronSchedule("*/10 * * * 1-5"), "every 10 minutes on Monday to Friday (UTC)"),
        (CronSchedule("0 3 1 * *"), "on day 1 of every month at 03:00 (UTC)"),
        (CronSchedule("@yearly"), "on 1 January every year at 00:00 (UTC)"),
        (CronSchedule("*/7 1-5 * * 1-5"), "cron '*/7 1-5 * * 1-5' (UTC)"),
        (CronSchedule("0 0 L * *"), "cron '0 0 L * *' (UTC)"),
        (CronSchedule("0 9 * * 1#2"), "cron '0 9 * * 1#2' (UTC)"),
        (CronSchedule("0 0 1 * 1"), "cron '0 0 1 * 1' (UTC)"),  # the 1st or a Monday
        (IntervalSchedule(300), "every 5 minutes"),
        (IntervalSchedule("2h", anchor_date="2026-01-01T00:00"), "every 2 hours from 2026-01-01 00:00 (UTC)"),
        (IntervalSchedule("1d", timezone="Europe/Berlin"), "every day from 2020-01-01 00:00 (Europe/Berlin)"),
        (IntervalSchedule(90), "every 90 seconds"),
        (IntervalSchedule(1.5), "every 1.5 seconds"),
        (RRuleSchedule("FREQ=MINUTELY;INTERVAL=5"), "every 5 minutes"),
        (RRuleSchedule("FREQ=DAILY;BYHOUR=3", "Europe/Berlin"), "every day at 03:00 (Europe/Berlin)"),
        (RRuleSchedule("FREQ=WEEKLY;BYDAY=MO;BYHOUR=9"), "every Monday at 09:00 (UTC)"),
        (RRuleSchedule("FREQ=DAILY;COUNT=3"), "rrule 'FREQ=DAILY;COUNT=3' (UTC)"),
        (
            RRuleSchedule("RRULE:FREQ=DAILY\nEXDATE:20200102T000000"),
            "rrule 'RRULE:FREQ=DAILY EXDATE:20200102T000000' (UTC)",
        ),
    ],
    ids=str,
)
def test_describe(schedule, words):
    assert schedule.describe() == words


# -- querying -----------------------------------------------------------------------


def test_slots_between_boundaries_and_limit():
    hourly = CronSchedule("0 * * * *")
    assert hourly.slots_between(utc(2026, 1, 1, 10), utc(2026, 1, 1, 12)) == [utc(2026, 1, 1, 11), utc(2026, 1, 1, 12)]
    assert hourly.slots_between(utc(2026, 1, 1, 10), utc(2026, 1, 2, 10), limit=2) == [
        utc(2026, 1, 1, 11),
        utc(2026, 1, 1, 12),
    ]
    assert hourly.slots_between(utc(2026, 1, 1, 10), utc(2026, 1, 1, 12), limit=0) == []
    assert hourly.slots_between(utc(2026, 1, 1, 12), utc(2026, 1, 1, 12)) == []
    assert hourly.slots_between(utc(2026, 1, 1, 12), utc(2026, 1, 1, 10)) == []
    assert hourly.next_after(utc(2026, 1, 1, 10)) == utc(2026, 1, 1, 11)
    assert hourly.upcoming(3, utc(2026, 1, 1, 10, 30)) == [
        utc(2026, 1, 1, 11),
        utc(2026, 1, 1, 12),
        utc(2026, 1, 1, 13),
    ]
    assert hourly.upcoming(0, utc(2026, 1, 1)) == []
    interval = IntervalSchedule("30m")
    assert interval.slots_between(utc(2026, 1, 1, 10), utc(2026, 1, 1, 11)) == [
        utc(2026, 1, 1, 10, 30),
        utc(2026, 1, 1, 11),
    ]
    with pytest.raises(ValueError, match="limit"):
        hourly.slots_between(utc(2026, 1, 1), utc(2026, 1, 2), limit=-1)
    with pytest.raises(ValueError, match="n must"):
        hourly.upcoming(True, utc(2026, 1, 1))


@pytest.mark.parametrize(
    "schedule", [CronSchedule("0 * * * *"), IntervalSchedule(60), RRuleSchedule("FREQ=HOURLY")], ids=repr
)
def test_naive_datetimes_are_refused(schedule):
    with pytest.raises(ValueError, match="naive"):
        schedule.next_after(datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="naive"):
        schedule.slots_between(utc(2026, 1, 1), datetime(2026, 1, 2))
    with pytest.raises(ValueError, match="naive"):
        schedule.upcoming(2, datetime(2026, 1, 1))
    with pytest.raises(TypeError):
        schedule.next_after("2026-01-01T00:00:00Z")


def test_one_cron_schedule_shared_by_threads():
    schedule = CronSchedule("*/5 * * * *", "America/New_York")
    starts = [utc(2026, 1, 1) + timedelta(minutes=7 * i) for i in range(300)]
    expected = [schedule.next_after(start) for start in starts]
    results: list[list] = []

    def work():
        results.append([schedule.next_after(start) for start in starts])

    threads = [threading.Thread(target=work) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [expected] * 6


# -- make_schedule and schedule_from_dict ---------------------------------------------


def test_make_schedule():
    assert make_schedule(cron="0 9 * * *", timezone="Europe/Berlin") == CronSchedule("0 9 * * *", "Europe/Berlin")
    assert make_schedule(interval="5m") == IntervalSchedule(300, timezone="UTC")
    assert make_schedule(interval=60, anchor_date="2026-01-01T00:00:30") == IntervalSchedule(60, "2026-01-01T00:00:30")
    assert make_schedule(rrule="FREQ=DAILY", timezone=None).timezone == "UTC"
    refused(lambda: make_schedule(), "exactly one of cron, interval or rrule", "got none")
    refused(lambda: make_schedule(cron="0 9 * * *", interval=60), "got cron and interval")
    refused(lambda: make_schedule(cron="0 9 * * *", anchor_date="2026-01-01"), "anchor_date", "'2026-01-01'")
    refused(lambda: make_schedule(rrule="FREQ=DAILY", day_or=False), "day_or", "False")
    refused(lambda: make_schedule(cron="61 * * * *"), "cron", "'61 * * * *'")


def test_schedule_from_dict():
    assert schedule_from_dict({"cron": "0 9 * * 1"}) == CronSchedule("0 9 * * 1")
    assert schedule_from_dict({"interval": "5m", "timezone": None}) == IntervalSchedule(300)
    data = {"interval": 300, "anchor_date": "2026-01-01T00:00:00", "timezone": "Europe/Berlin"}
    assert schedule_from_dict(data).to_dict() == data
    assert schedule_from_dict({"rrule": "FREQ=DAILY", "timezone": "Asia/Tokyo"}).next_after(utc(2026, 1, 1)) == utc(
        2026, 1, 1, 15
    )
    refused(
        lambda: schedule_from_dict({"cron": "0 9 * * 1", "active": True}), "'active'", "'cron', 'day_or', 'timezone'"
    )
    refused(
        lambda: schedule_from_dict({"interval": 60, "day_or": True}),
        "'day_or'",
        "'anchor_date', 'interval', 'timezone'",
    )
    refused(lambda: schedule_from_dict({}), "exactly one of 'cron', 'interval' or 'rrule'", "got none")
    refused(lambda: schedule_from_dict({"cron": "@daily", "rrule": "FREQ=DAILY"}), "got cron and rrule")
    refused(lambda: schedule_from_dict(["cron", "@daily"]), "not a mapping", "['cron', '@daily']")
    refused(lambda: schedule_from_dict({"cron": "@daily", "timezone": "Mars/Olympus"}), "timezone", "'Mars/Olympus'")
    assert issubclass(InvalidScheduleError, ValueError)
