"""Deployment schedules: the slots at which the serve loop starts a flow run.

Three kinds, all immutable, hashable and JSON-ready (``to_dict`` and
``schedule_from_dict`` round-trip, ``id`` is stable across processes):

* ``CronSchedule("0 9 * * 1-5", timezone="Europe/Berlin")``: a five-field cron
  (read by croniter) or an alias such as ``@daily``;
* ``IntervalSchedule("15m", anchor_date="2026-01-01T06:00")``: every interval,
  counted from an anchor;
* ``RRuleSchedule("FREQ=WEEKLY;BYDAY=MO;BYHOUR=9")``: an RFC 5545 recurrence
  (read by dateutil), optionally a ruleset with DTSTART, RDATE, EXRULE and
  EXDATE lines.

The slots never depend on the current time, the machine's timezone or hash
seeds: the default anchor (and an rrule's default DTSTART) is 2020-01-01 00:00
in the schedule's timezone, so every process computes the same slots.

Daylight saving time
--------------------
1. Cron slots, rrule slots and intervals of one day or more follow the wall
   clock of the schedule's timezone: they are computed as naive wall times and
   only then turned into instants. Intervals shorter than a day follow absolute
   time: ``anchor + k * interval`` as instants, whatever the clocks do.
2. A wall time in a spring-forward gap fires once, at the first valid instant
   after the gap: ``30 2 * * *`` in America/New_York fires at 03:00 EDT
   (07:00 UTC) on 2026-03-08.
3. A wall time in a fall-back overlap fires once, at its first occurrence:
   ``30 1 * * *`` in America/New_York fires at 01:30 EDT (05:30 UTC) on
   2026-11-01, not again at 01:30 EST. (An aware ``anchor_date`` in the second
   occurrence keeps it.)
4. Wall-clock slots that land on the same instant fire once. ``0 * * * *`` in
   America/New_York has 23 slots on 2026-03-08 (02:00 does not exist and maps to
   03:00, which is a slot anyway) and 24 on 2026-11-01 (two hours of absolute
   time between 01:00 EDT and 02:00 EST); an hourly interval has 23 and 25.
   A daily cron fires exactly once on every day.

croniter's own timezone support is not used (it has had DST bugs): croniter
and dateutil only ever see naive wall times, and zoneinfo localises them here
(``fold=0`` for overlaps, a round trip through UTC to detect gaps).

Cost
----
The serve loop calls ``next_after`` for every deployment every minute, so it is
cheap: arithmetic for an interval, one croniter step for a cron. dateutil
iterates an rrule from its DTSTART, so each rule is first *rebased*: its DTSTART
is moved forward by whole periods (whole years for MONTHLY and YEARLY rules) to
just before the query, which leaves every later occurrence unchanged. A rule
with COUNT cannot be rebased (COUNT counts from DTSTART): dateutil walks at most
COUNT occurrences for it.
"""

from __future__ import annotations

import abc
import hashlib
import itertools
import json
import math
import numbers
import re
import threading
import warnings
from collections.abc import Iterator, Mapping
from datetime import date, datetime, time, timedelta, timezone
from typing import Any, ClassVar
from zoneinfo import ZoneInfo

from croniter import CroniterBadDateError, croniter
from dateutil import rrule as du  # the module: RRuleSchedule(rrule=...) is the brief's parameter name

from daskflow._times import parse_age
from daskflow.exceptions import InvalidScheduleError

__all__ = ["CronSchedule", "IntervalSchedule", "RRuleSchedule", "Schedule", "make_schedule", "schedule_from_dict"]

_UTC = timezone.utc
# Prefect's default anchor: fixed, so that every process computes the same slots.
_DEFAULT_WALL = datetime(2020, 1, 1)
_MAX_RRULE_CHARS = 6500
_ONE_DAY = timedelta(days=1)

_CRON_ALIASES = ("@annually", "@daily", "@hourly", "@midnight", "@monthly", "@weekly", "@yearly")
# Jenkins-style hashed (H) and random (R) fields, which croniter has but a shared
# schedule must not: the slots would depend on a hash id or on chance.
_HASHED = re.compile(r"[hr](?:\(|/|$)", re.IGNORECASE)

_FIX_CRON = (
    "use five fields (minute hour day-of-month month day-of-week) like '0 9 * * 1-5', "
    "or @hourly, @daily, @weekly, @monthly or @yearly"
)
_FIX_TIMEZONE = "use an IANA name such as 'UTC', 'Europe/Berlin' or 'America/New_York'"
_FIX_INTERVAL = "use a number of seconds (300), a timedelta, or '30s', '5m', '12h', '1d' or '2w'"
_FIX_ANCHOR = "use an ISO date-time like '2026-01-01T00:00:00' (a wall time in the schedule's timezone) or a datetime"
_FIX_RRULE = "use RFC 5545 text like 'FREQ=WEEKLY;BYDAY=MO;BYHOUR=9', optionally with DTSTART, RDATE and EXDATE lines"


def _refuse(field: str, value: object, problem: str, fix: str) -> InvalidScheduleError:
    shown = repr(value)
    if len(shown) > 200:
        shown = shown[:160] + "...(" + str(len(shown)) + " characters)"
    return InvalidScheduleError(f"{field} {shown}: {problem}; {fix}")


def _reason(exc: BaseException) -> str:
    """The first line of a third-party error message, short enough for one line."""
    lines = str(exc).strip().splitlines()
    return (lines[0] if lines else type(exc).__name__)[:160]


def _zone(name: object) -> ZoneInfo:
    if not isinstance(name, str):
        raise _refuse("timezone", name, "not a string", _FIX_TIMEZONE)
    if not name.strip():
        raise _refuse("timezone", name, "empty", _FIX_TIMEZONE)
    if name == "localtime":  # whatever this machine is set to: not the same slots everywhere
        raise _refuse("timezone", name, "names the machine's own zone, which differs between machines", _FIX_TIMEZONE)
    try:
        return ZoneInfo(name)
    except (KeyError, ValueError, OSError):  # ZoneInfoNotFoundError is a KeyError
        raise _refuse("timezone", name, "not a known IANA time zone", _FIX_TIMEZONE) from None


def _aware(value: object, name: str) -> datetime:
    if not isinstance(value, datetime):
        raise TypeError(f"{name} must be a datetime, not {type(value).__name__}")
    if value.utcoffset() is None:
        raise ValueError(f"{name} {value!r} is naive; pass an aware datetime such as datetime.now(timezone.utc)")
    return value


def _count(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be a non-negative int, not {value!r}")
    return value


# -- wall time to instant -------------------------------------------------------


def _instant(wall: datetime, zone: ZoneInfo, fold: int = 0) -> datetime:
    """The UTC instant of the naive wall time ``wall`` in ``zone``.

    An overlap resolves to the first occurrence (``fold=0``), or to the second
    with ``fold=1``; a wall time in a gap to the first instant after the gap.
    """
    utc = wall.replace(tzinfo=zone, fold=fold).astimezone(_UTC)
    if utc.astimezone(zone).replace(tzinfo=None) == wall:
        return utc
    return _gap_end(wall, zone)  # the wall time does not exist: it does not survive a round trip


def _gap_end(wall: datetime, zone: ZoneInfo) -> datetime:
    # zoneinfo reads a wall time in a gap with the offset before the transition
    # (fold=0) or after it (fold=1); the transition lies between those two
    # instants. tzdata transitions fall on whole seconds: bisect on seconds.
    first, second = (wall.replace(tzinfo=zone, fold=fold).astimezone(_UTC) for fold in (0, 1))
    lo, hi = math.floor(min(first, second).timestamp()), math.ceil(max(first, second).timestamp())
    offset_after = datetime.fromtimestamp(hi, zone).utcoffset()
    while hi - lo > 1:  # invariant: lo is before the transition, hi at or after it
        mid = (lo + hi) // 2
        if datetime.fromtimestamp(mid, zone).utcoffset() == offset_after:
            hi = mid
        else:
            lo = mid
    return datetime.fromtimestamp(hi, _UTC)


# -- the base class ---------------------------------------------------------------


class Schedule(abc.ABC):
    """When a deployment runs: a rule that yields slots (instants, in UTC).

    Instances are immutable and hashable; two schedules are equal when their
    ``to_dict()`` are. Construction validates and raises
    :class:`~daskflow.exceptions.InvalidScheduleError` naming the field, the bad
    value and a valid example.

    Attributes
    ----------
    kind : str
        ``"cron"``, ``"interval"`` or ``"rrule"``.
    timezone : str
        The IANA name of the zone whose wall clock the slots follow.
    """

    __slots__ = ("_key", "_zone", "timezone")
    kind: ClassVar[str]
    timezone: str

    def _set(self, **attributes: Any) -> None:
        for name, value in attributes.items():
            object.__setattr__(self, name, value)
        # the canonical JSON: equality, hashing and the id all come from it
        object.__setattr__(self, "_key", json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":")))

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable; make a new schedule instead")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable; make a new schedule instead")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Schedule):
            return NotImplemented
        return type(other) is type(self) and other._key == self._key

    def __hash__(self) -> int:
        return hash(self._key)

    def __reduce__(self):  # rebuilt (and revalidated) from its dict: caches and locks are not pickled
        return (schedule_from_dict, (self.to_dict(),))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.to_dict().items())})"

    @property
    def id(self) -> str:
        """12 hex digits: the start of the sha256 of the canonical JSON of ``to_dict()``."""
        return hashlib.sha256(self._key.encode()).hexdigest()[:12]

    @abc.abstractmethod
    def to_dict(self) -> dict[str, Any]:
        """The schedule as JSON-ready data; ``schedule_from_dict(s.to_dict()) == s``."""

    @abc.abstractmethod
    def describe(self) -> str:
        """The schedule in words, with its timezone, e.g. ``every day at 03:00 (Europe/Berlin)``."""

    def next_after(self, after: datetime) -> datetime | None:
        """The first slot strictly after ``after``.

        Parameters
        ----------
        after : datetime
            An aware datetime (a naive one raises ``ValueError``).

        Returns
        -------
        datetime or None
            An aware datetime in UTC, or None when a finite schedule (an rrule
            with COUNT or UNTIL) has no slot left.
        """
        return next(self._instants_after(_aware(after, "after")), None)

    def slots_between(self, after: datetime, until: datetime, limit: int | None = None) -> list[datetime]:
        """Every slot ``s`` with ``after < s <= until``, ascending, as aware UTC datetimes.

        Parameters
        ----------
        after, until : datetime
            Aware datetimes; ``after`` is excluded, ``until`` included.
        limit : int, optional
            Return at most this many (the earliest) slots.
        """
        after, until = _aware(after, "after"), _aware(until, "until")
        slots = self._instants_after(after)
        if limit is not None:
            slots = itertools.islice(slots, _count(limit, "limit"))
        return list(itertools.takewhile(lambda slot: slot <= until, slots))

    def upcoming(self, n: int, after: datetime) -> list[datetime]:
        """The first ``n`` slots strictly after ``after`` (fewer if the schedule ends)."""
        return list(itertools.islice(self._instants_after(_aware(after, "after")), _count(n, "n")))

    def _instants_after(self, after: datetime) -> Iterator[datetime]:
        """The slots after ``after``, ascending, for schedules that follow the wall clock."""
        zone = self._zone
        last = after
        try:
            for wall in self._walls_after(after.astimezone(zone).replace(tzinfo=None)):
                instant = _instant(wall, zone)
                # Wall-clock slots map to instants in order, but not one to one: the
                # walls of a gap share one instant, and after an ``after`` in the second
                # half of an overlap the next walls (first occurrence) are already past.
                if instant > last:
                    last = instant
                    yield instant
        except OverflowError:  # past year 9999
            return

    def _walls_after(self, wall: datetime) -> Iterator[datetime]:
        """The naive wall-time slots strictly after ``wall``, ascending."""
        raise NotImplementedError


# -- cron -------------------------------------------------------------------------


def _check_cron(value: object) -> str:
    if not isinstance(value, str):
        raise _refuse("cron", value, "not a string", _FIX_CRON)
    text = " ".join(value.split())
    if not text:
        raise _refuse("cron", value, "empty", _FIX_CRON)
    if text.startswith("@"):
        if text.lower() == "@reboot":
            raise _refuse("cron", value, "@reboot fires when a machine boots, which is not a schedule", _FIX_CRON)
        if text.lower() not in _CRON_ALIASES:
            raise _refuse("cron", value, f"unknown alias (known: {', '.join(_CRON_ALIASES)})", _FIX_CRON)
        return text
    fields = text.split(" ")
    if len(fields) in (6, 7):
        raise _refuse("cron", value, f"has {len(fields)} fields; seconds and year fields are not supported", _FIX_CRON)
    if len(fields) != 5:
        raise _refuse("cron", value, f"has {len(fields)} field(s), a cron has 5", _FIX_CRON)
    if any(_HASHED.match(part) for field in fields for part in field.split(",")):
        raise _refuse("cron", value, "hashed (H) and random (R) expressions are not supported", _FIX_CRON)
    return text


class CronSchedule(Schedule):
    """A cron schedule: five fields or an alias, on the wall clock of ``timezone``.

    Parameters
    ----------
    cron : str
        ``minute hour day-of-month month day-of-week`` as croniter reads it
        (``*/15 * * * *``, ``0 9 * * mon-fri``, ``0 0 L * *``), or ``@hourly``,
        ``@daily``/``@midnight``, ``@weekly``, ``@monthly``, ``@yearly``/``@annually``.
        Seconds and year fields, ``H``/``R`` and ``@reboot`` are refused, and so
        is a cron that never fires (like ``0 0 30 2 *``).
    timezone : str
        IANA name of the zone whose wall clock the cron follows.
    day_or : bool
        With both day fields restricted, fire on a day matching either (True,
        like cron) or only on days matching both (False).
    """

    __slots__ = ("_croniter", "_lock", "cron", "day_or")
    kind = "cron"
    cron: str
    day_or: bool

    def __init__(self, cron: str, timezone: str = "UTC", day_or: bool = True) -> None:
        text = _check_cron(cron)
        if not isinstance(day_or, bool):
            raise _refuse(
                "day_or",
                day_or,
                "not a boolean",
                "use true (either day field matches, as in cron) or false (both must)",
            )
        zone = _zone(timezone)
        try:
            runner = croniter(text, _DEFAULT_WALL, day_or=day_or)
        except (ValueError, TypeError, KeyError, IndexError) as exc:  # CroniterError is a ValueError
            raise _refuse("cron", cron, f"croniter cannot read it ({_reason(exc)})", _FIX_CRON) from None
        try:
            runner.get_next(datetime)  # croniter searches 50 years ahead before giving up
        except CroniterBadDateError:
            raise _refuse(
                "cron",
                cron,
                "it never fires (no matching date in the 50 years from 2020)",
                "check the day-of-month and month fields ('0 0 30 2 *' asks for 30 February)",
            ) from None
        # croniter objects are stateful (get_next moves them): one per schedule, behind a lock
        self._set(cron=text, day_or=day_or, timezone=timezone, _zone=zone, _croniter=runner, _lock=threading.Lock())

    def to_dict(self) -> dict[str, Any]:
        return {"cron": self.cron, "timezone": self.timezone, "day_or": self.day_or}

    def describe(self) -> str:
        return self._phrase() or f"cron {self.cron!r} ({self.timezone})"

    def _phrase(self) -> str | None:
        expanded, nth_weekday = croniter.expand(self.cron)
        fields = self.cron.split(" ")
        if nth_weekday or (len(fields) == 5 and "w" in fields[2].lower()):
            return None  # '1#2' (second Monday) and '15W' (nearest weekday) are beyond these words
        sets = []
        for values, (low, high) in zip(expanded, croniter.RANGES[:5]):
            if "l" in values:  # the last day of the month
                return None
            sets.append(frozenset(range(low, high + 1)) if values == ["*"] else frozenset(values))
        return _phrase_fields(*sets, self.timezone)

    def _walls_after(self, wall: datetime) -> Iterator[datetime]:
        while True:
            with self._lock:
                try:
                    wall = self._croniter.get_next(datetime, start_time=wall)
                except (CroniterBadDateError, OverflowError, ValueError):  # past year 9999
                    return
            yield wall


# -- interval ---------------------------------------------------------------------


def _check_interval(value: object) -> timedelta:
    if isinstance(value, bool):  # a bool is an int: True would be one second
        raise _refuse("interval", value, "a boolean is not a duration", _FIX_INTERVAL)
    if isinstance(value, timedelta):
        step = timedelta(days=value.days, seconds=value.seconds, microseconds=value.microseconds)
    else:
        if isinstance(value, str):
            try:
                seconds: float = parse_age(value)
            except ValueError:
                raise _refuse("interval", value, "not a positive duration", _FIX_INTERVAL) from None
        elif isinstance(value, numbers.Real):
            seconds = int(value) if isinstance(value, numbers.Integral) else float(value)
        else:
            raise _refuse("interval", value, f"a {type(value).__name__} is not a duration", _FIX_INTERVAL)
        if not math.isfinite(seconds):
            raise _refuse("interval", value, "not a finite duration", _FIX_INTERVAL)
        try:
            step = timedelta(seconds=seconds)
        except OverflowError:
            raise _refuse("interval", value, "too long", _FIX_INTERVAL) from None
    if step <= timedelta(0):
        raise _refuse("interval", value, "not positive", _FIX_INTERVAL)
    if step < timedelta(seconds=1):
        raise _refuse("interval", value, "shorter than one second", _FIX_INTERVAL)
    return step


def _check_anchor(value: object, zone: ZoneInfo) -> datetime:
    """The anchor as an aware datetime in ``zone`` (a naive one is a wall time there)."""
    if value is None:
        return _DEFAULT_WALL.replace(tzinfo=zone)
    if isinstance(value, str):
        text = value.strip()
        if text.endswith(("Z", "z")):  # Python 3.10's fromisoformat does not read 'Z'
            text = text[:-1] + "+00:00"
        try:
            value = datetime.fromisoformat(text)
        except ValueError:
            raise _refuse("anchor_date", value, "not an ISO date-time", _FIX_ANCHOR) from None
    elif isinstance(value, date) and not isinstance(value, datetime):
        value = datetime.combine(value, time())
    elif not isinstance(value, datetime):
        raise _refuse("anchor_date", value, f"a {type(value).__name__} is not a date-time", _FIX_ANCHOR)
    if value.utcoffset() is None:
        return value.replace(tzinfo=zone, fold=0)  # a wall time; in an overlap, its first occurrence
    return value.astimezone(zone)  # keeps the instant (fold=1 for a second occurrence)


def _phrase_interval(step: timedelta) -> str:
    for unit, size in (("week", 604800), ("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1)):
        count, rest = divmod(step, timedelta(seconds=size))
        if not rest:
            return f"every {unit}" if count == 1 else f"every {count} {unit}s"
    return f"every {step.total_seconds():g} seconds"


class IntervalSchedule(Schedule):
    """Every ``interval``, counted from ``anchor_date`` (before and after it).

    Intervals shorter than a day are absolute (an hourly interval runs twice at
    "1 AM" on the fall-back day); a day or more follows the wall clock (a daily
    interval keeps its time of day across DST changes).

    Parameters
    ----------
    interval : timedelta, int, float or str
        At least one second: a timedelta, a number of seconds, or ``"30s"``,
        ``"5m"``, ``"12h"``, ``"1d"``, ``"2w"``.
    anchor_date : datetime or str, optional
        A slot the schedule passes through. A naive datetime or ISO string is a
        wall time in ``timezone``; default 2020-01-01 00:00 there.
    timezone : str
        IANA name of the zone of the anchor and of the wall clock.
    """

    __slots__ = ("_anchor_instant", "anchor_date", "interval")
    kind = "interval"
    interval: timedelta
    anchor_date: datetime

    def __init__(
        self, interval: timedelta | float | str, anchor_date: datetime | str | None = None, timezone: str = "UTC"
    ) -> None:
        step = _check_interval(interval)
        zone = _zone(timezone)
        anchor = _check_anchor(anchor_date, zone)
        self._set(
            interval=step,
            anchor_date=anchor,
            timezone=timezone,
            _zone=zone,
            _anchor_instant=_instant(anchor.replace(tzinfo=None), zone, anchor.fold),
        )

    def to_dict(self) -> dict[str, Any]:
        micros = self.interval // timedelta(microseconds=1)
        seconds = micros // 1_000_000 if micros % 1_000_000 == 0 else micros / 1_000_000
        anchor = self.anchor_date
        # a naive wall time reads best; only a second occurrence (fold=1) needs its offset
        text = anchor.isoformat() if anchor.fold else anchor.replace(tzinfo=None).isoformat()
        return {"interval": seconds, "anchor_date": text, "timezone": self.timezone}

    def describe(self) -> str:
        every = _phrase_interval(self.interval)
        anchor = self.anchor_date
        if self.interval < _ONE_DAY and anchor.replace(tzinfo=None) == _DEFAULT_WALL and not anchor.fold:
            return every if self.timezone == "UTC" else f"{every} ({self.timezone})"
        shown = anchor.strftime("%Y-%m-%d %H:%M:%S" if anchor.second or anchor.microsecond else "%Y-%m-%d %H:%M")
        if anchor.fold:
            shown += f" {anchor.tzname()}"
        return f"{every} from {shown} ({self.timezone})"

    def _instants_after(self, after: datetime) -> Iterator[datetime]:
        if self.interval >= _ONE_DAY:
            return super()._instants_after(after)
        return self._absolute_after(after)

    def _absolute_after(self, after: datetime) -> Iterator[datetime]:
        step, start = self.interval, self._anchor_instant
        try:
            slot = start + ((after - start) // step + 1) * step
            while True:
                yield slot
                slot += step
        except OverflowError:
            return

    def _walls_after(self, wall: datetime) -> Iterator[datetime]:
        step, start = self.interval, self.anchor_date.replace(tzinfo=None)
        slot = start + ((wall - start) // step + 1) * step
        while True:
            yield slot
            slot += step


# -- rrule ------------------------------------------------------------------------

_FIXED_PERIODS = {
    du.SECONDLY: timedelta(seconds=1),
    du.MINUTELY: timedelta(minutes=1),
    du.HOURLY: timedelta(hours=1),
    du.DAILY: timedelta(days=1),
    du.WEEKLY: timedelta(weeks=1),
}


def _rebased(rule: du.rrule, wall: datetime) -> du.rrule:
    """``rule`` with DTSTART moved forward by whole periods to at most ``wall``.

    The occurrences after ``wall`` stay the same: BY* parts are calendar filters or
    expansions within each period, and the defaults dateutil takes from DTSTART
    (time of day, weekday, day of month, month) do not change. Occurrences of the
    new first period before the new DTSTART are lost, but those are before ``wall``.
    """
    start = rule._dtstart
    if rule._count is not None or wall <= start:  # COUNT counts from DTSTART
        return rule
    if rule._freq in _FIXED_PERIODS:
        period = _FIXED_PERIODS[rule._freq] * rule._interval
        return rule.replace(dtstart=start + (wall - start) // period * period)
    # MONTHLY and YEARLY: move by whole years, keeping month, day and time, in
    # steps that keep the period grid (and 29 February) where it was
    years = math.lcm(12, rule._interval) // 12 if rule._freq == du.MONTHLY else rule._interval
    if (start.month, start.day) == (2, 29):
        years = math.lcm(years, 4)
    year = start.year + (wall.year - start.year) // years * years
    try:
        moved = start.replace(year=year)
        if moved > wall:
            moved = start.replace(year=year - years)
    except ValueError:  # 29 February in a century year (2100): keep the long way
        return rule
    return rule.replace(dtstart=moved) if moved > start else rule


def _check_rrule_text(value: object) -> str:
    if not isinstance(value, str):
        raise _refuse("rrule", value, "not a string", _FIX_RRULE)
    if len(value) > _MAX_RRULE_CHARS:
        raise _refuse("rrule", value, f"longer than {_MAX_RRULE_CHARS:,} characters ({len(value):,})", _FIX_RRULE)
    # one property per line, indentation dropped (a Python triple-quoted string)
    text = "\n".join(line.strip() for line in value.splitlines() if line.strip())
    if not text:
        raise _refuse("rrule", value, "empty", _FIX_RRULE)
    return text


def _parse_rruleset(text: str, zone: ZoneInfo, given: str) -> du.rruleset:
    def tzid(name: str) -> ZoneInfo:
        try:
            return _zone(name)
        except InvalidScheduleError:
            raise _refuse("rrule", given, f"TZID {name!r} is not a known IANA time zone", _FIX_TIMEZONE) from None

    # Without DTSTART the default is naive (a floating wall time). dateutil wants an
    # aware DTSTART when UNTIL is in UTC ('...Z'): then retry with an aware default.
    for default in (_DEFAULT_WALL, _DEFAULT_WALL.replace(tzinfo=zone)):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error")  # COUNT with UNTIL: deprecated by dateutil, forbidden by RFC 5545
                return du.rrulestr(text, dtstart=default, forceset=True, cache=False, tzids=tzid)
        except InvalidScheduleError:
            raise
        except (ValueError, TypeError, KeyError, IndexError, AttributeError, OverflowError, Warning) as exc:
            if default.tzinfo is None and "UNTIL" in str(exc):
                continue
            raise _refuse("rrule", given, f"dateutil cannot read it ({_reason(exc)})", _FIX_RRULE) from None
    raise AssertionError("unreachable")


def _rrule_phrase(rule: du.rrule, zone_key: str) -> str | None:
    """Words for a rule that a cron could express, else None."""
    if rule._count or rule._until or rule._freq == du.SECONDLY or tuple(rule._bysecond or ()) != (0,):
        return None
    if rule._bysetpos or rule._byyearday or rule._byweekno or rule._bynweekday or rule._bynmonthday or rule._byeaster:
        return None
    step, start = rule._interval, rule._dtstart
    if rule._freq == du.MINUTELY:
        if 60 % step:
            return None
        minutes = frozenset(range(start.minute % step, 60, step))
        minutes &= frozenset(rule._byminute or minutes)
    else:
        minutes = frozenset(rule._byminute)
    if rule._freq == du.HOURLY:
        if 24 % step:
            return None
        hours = frozenset(range(start.hour % step, 24, step))
        hours &= frozenset(rule._byhour or hours)
    elif rule._freq == du.MINUTELY:
        hours = frozenset(rule._byhour or range(24))
    elif step != 1:
        return None
    else:
        hours = frozenset(rule._byhour)
    doms = frozenset(rule._bymonthday or range(1, 32))
    months = frozenset(rule._bymonth or range(1, 13))
    dows = frozenset((day + 1) % 7 for day in rule._byweekday) if rule._byweekday else frozenset(range(7))
    return _phrase_fields(minutes, hours, doms, months, dows, zone_key)


class RRuleSchedule(Schedule):
    """An RFC 5545 recurrence rule or ruleset, on the wall clock of ``timezone``.

    Parameters
    ----------
    rrule : str
        ``FREQ=...`` (or ``RRULE:FREQ=...``), or several lines: ``DTSTART``,
        ``RRULE``, ``RDATE``, ``EXRULE``, ``EXDATE``. COUNT and UNTIL end it.
        Without DTSTART the rule starts at 2020-01-01 00:00 in ``timezone``
        (never "now"). At most 6,500 characters; refused if it has no occurrence.
    timezone : str
        IANA name of the zone of the wall clock; a ``DTSTART;TZID=...`` wins.
    """

    __slots__ = ("_exdates", "_exrules", "_rdates", "_rules", "rrule")
    kind = "rrule"
    rrule: str

    def __init__(self, rrule: str, timezone: str = "UTC") -> None:
        text = _check_rrule_text(rrule)
        zone = _zone(timezone)
        parsed = _parse_rruleset(text, zone, rrule)
        # dateutil keeps a parsed ruleset's parts private; they are read once, here
        rules, exrules = list(parsed._rrule), list(parsed._exrule)
        starts = [rule._dtstart for rule in rules + exrules]
        if starts and isinstance(starts[0].tzinfo, ZoneInfo):  # DTSTART;TZID=... wins over timezone
            zone = starts[0].tzinfo

        def wall(moment: datetime) -> datetime:  # aware values (TZID, 'Z') become wall times in the zone
            return moment if moment.tzinfo is None else moment.astimezone(zone).replace(tzinfo=None)

        def floating(rule: du.rrule) -> du.rrule:
            return rule.replace(dtstart=wall(rule._dtstart), until=wall(rule._until) if rule._until else None)

        self._set(
            rrule=text,
            timezone=zone.key,
            _zone=zone,
            _rules=tuple(map(floating, rules)),
            _exrules=tuple(map(floating, exrules)),
            _rdates=tuple(sorted(map(wall, parsed._rdate))),
            _exdates=tuple(sorted(map(wall, parsed._exdate))),
        )
        # A rule with no occurrence makes dateutil search up to year 9999 on every
        # call (it can take seconds): refuse it once, here.
        lines = self._rules + self._exrules
        for line in lines:
            if next(iter(line), None) is None:
                which = "one of its RRULE or EXRULE lines has" if len(lines) > 1 or self._rdates else "it has"
                raise _refuse("rrule", rrule, f"{which} no occurrence at all", _FIX_RRULE)
        if next(iter(self._ruleset(None)), None) is None:
            raise _refuse("rrule", rrule, "it has no occurrence at all", _FIX_RRULE)

    def _ruleset(self, wall: datetime | None) -> du.rruleset:
        """The ruleset, rebased to just before ``wall`` (not rebased for None)."""
        result = du.rruleset(cache=False)
        for rule in self._rules:
            result.rrule(rule if wall is None else _rebased(rule, wall))
        for rule in self._exrules:
            result.exrule(rule if wall is None else _rebased(rule, wall))
        for moment in self._rdates:
            result.rdate(moment)
        for moment in self._exdates:
            result.exdate(moment)
        return result

    def to_dict(self) -> dict[str, Any]:
        return {"rrule": self.rrule, "timezone": self.timezone}

    def describe(self) -> str:
        phrase = None
        if len(self._rules) == 1 and not (self._exrules or self._rdates or self._exdates):
            phrase = _rrule_phrase(self._rules[0], self.timezone)
        if phrase:
            return phrase
        shown = self.rrule.replace("\n", " ")
        return f"rrule {shown if len(shown) <= 80 else shown[:77] + '...'!r} ({self.timezone})"

    def _walls_after(self, wall: datetime) -> Iterator[datetime]:
        return self._ruleset(wall).xafter(wall)


# -- words ------------------------------------------------------------------------

_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_MONTHS = ("", "January", "February", "March", "April", "May", "June", "July", "August", "September",
           "October", "November", "December")  # fmt: skip


def _join(words: list[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def _step(values: frozenset[int], size: int) -> int | None:
    """``s`` when ``values`` is ``0, s, 2s, ...`` covering ``size`` evenly (s > 1)."""
    ordered = sorted(values)
    if len(ordered) < 2 or ordered[0] != 0:
        return None
    step = ordered[1]
    return step if size % step == 0 and ordered == list(range(0, size, step)) else None


def _phrase_fields(
    minutes: frozenset[int],
    hours: frozenset[int],
    doms: frozenset[int],
    months: frozenset[int],
    dows: frozenset[int],
    zone_key: str,
) -> str | None:
    """Words for a cron-like pattern (cron numbering: Sunday is 0), or None if too irregular."""
    if not (minutes and hours and doms and months and dows):
        return None
    # the days: "every Monday" before a time of day, "on Monday" after a clock phrase
    if len(months) < 12:
        if len(months) > 1 or len(doms) != 1 or len(dows) < 7:
            return None
        every_days = on_days = f"on {min(doms)} {_MONTHS[min(months)]} every year"
    elif len(doms) < 31:
        if len(dows) < 7 or len(doms) > 4:
            return None  # with both day fields, cron fires on either: too subtle for these words
        plural = "s" if len(doms) > 1 else ""
        every_days = on_days = f"on day{plural} {_join([str(d) for d in sorted(doms)])} of every month"
    elif len(dows) < 7:
        order = sorted((day - 1) % 7 for day in dows)  # Monday first
        names = [_WEEKDAYS[i] for i in order]
        if len(order) >= 3 and order == list(range(order[0], order[-1] + 1)):
            names = [f"{names[0]} to {names[-1]}"]
        every_days, on_days = f"every {_join(names)}", f"on {_join(names)}"
    else:
        every_days = on_days = ""
    # the times
    minute = min(minutes)
    if len(hours) == 24 and len(minutes) == 60:
        clock = "every minute"
    elif len(hours) == 24 and _step(minutes, 60):
        clock = f"every {_step(minutes, 60)} minutes"
    elif len(hours) == 24 and len(minutes) == 1:
        clock = f"every hour at :{minute:02d}"
    elif len(minutes) == 1 and _step(hours, 24):
        clock = f"every {_step(hours, 24)} hours at :{minute:02d}"
    else:
        times = [f"{h:02d}:{m:02d}" for h in sorted(hours) for m in sorted(minutes)]
        if len(times) > 4:
            return None
        return f"{every_days or 'every day'} at {_join(times)} ({zone_key})"
    if not on_days:  # a clock on every day: the zone only matters outside UTC
        return clock if zone_key == "UTC" else f"{clock} ({zone_key})"
    return f"{clock} {on_days} ({zone_key})"


# -- construction from options and from data --------------------------------------

_KEYS = {"cron": ("cron", "day_or", "timezone"), "interval": ("anchor_date", "interval", "timezone"),
         "rrule": ("rrule", "timezone")}  # fmt: skip


def make_schedule(
    *,
    cron: str | None = None,
    interval: timedelta | float | str | None = None,
    rrule: str | None = None,
    timezone: str | None = None,
    anchor_date: datetime | str | None = None,
    day_or: bool = True,
) -> Schedule:
    """The schedule named by exactly one of ``cron``, ``interval`` or ``rrule``.

    This is what ``flow.to_deployment(cron=..., timezone=...)`` calls.

    Raises
    ------
    InvalidScheduleError
        For none or several of the three, for ``anchor_date`` without
        ``interval`` or ``day_or`` without ``cron``, and for any invalid value.
    """
    given = [name for name, value in (("cron", cron), ("interval", interval), ("rrule", rrule)) if value is not None]
    if len(given) != 1:
        got = "none" if not given else " and ".join(given)
        raise InvalidScheduleError(
            f"schedule: give exactly one of cron, interval or rrule (got {got}); e.g. cron='0 9 * * *', interval='1h' "
            "or rrule='FREQ=WEEKLY;BYDAY=MO'"
        )
    tz = "UTC" if timezone is None else timezone
    if anchor_date is not None and interval is None:
        raise _refuse(
            "anchor_date", anchor_date, f"only an interval schedule has an anchor, not a {given[0]}", "drop it"
        )
    if day_or is not True and cron is None:
        raise _refuse("day_or", day_or, f"only a cron schedule has day_or, not a {given[0]}", "drop it")
    if cron is not None:
        return CronSchedule(cron, timezone=tz, day_or=day_or)
    if interval is not None:
        return IntervalSchedule(interval, anchor_date=anchor_date, timezone=tz)
    return RRuleSchedule(rrule, timezone=tz)  # type: ignore[arg-type]


def schedule_from_dict(data: Mapping[str, Any]) -> Schedule:
    """The schedule described by ``data``, as ``to_dict`` writes it and ``daskflow.yaml`` holds it.

    One of ``{"cron": "0 9 * * 1", "timezone": ..., "day_or": true}``,
    ``{"interval": 300 | "5m", "anchor_date": "2026-01-01T00:00:00", "timezone": ...}``
    or ``{"rrule": "FREQ=...", "timezone": ...}``; ``timezone`` defaults to UTC.

    Raises
    ------
    InvalidScheduleError
        For a non-mapping, for none or several of cron/interval/rrule, for an
        unknown key (naming it and the valid ones) and for any invalid value.
    """
    example = "e.g. {'cron': '0 9 * * *', 'timezone': 'Europe/Berlin'} or {'interval': '1h'}"
    if not isinstance(data, Mapping):
        raise InvalidScheduleError(f"schedule {data!r}: not a mapping; {example}")
    kinds = [kind for kind in _KEYS if kind in data]
    if len(kinds) != 1:
        got = "none of them" if not kinds else " and ".join(kinds)
        raise InvalidScheduleError(
            f"schedule {dict(data)!r}: needs exactly one of 'cron', 'interval' or 'rrule' (got {got}); {example}"
        )
    kind = kinds[0]
    unknown = sorted(map(repr, set(data) - set(_KEYS[kind])))
    if unknown:
        raise InvalidScheduleError(
            f"schedule {dict(data)!r}: unknown key{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; "
            f"a {kind} schedule has {', '.join(map(repr, _KEYS[kind]))}"
        )
    tz = "UTC" if data.get("timezone") is None else data["timezone"]
    if kind == "cron":
        return CronSchedule(data["cron"], timezone=tz, day_or=data.get("day_or", True))
    if kind == "interval":
        return IntervalSchedule(data["interval"], anchor_date=data.get("anchor_date"), timezone=tz)
    return RRuleSchedule(data["rrule"], timezone=tz)
