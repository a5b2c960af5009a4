"""When OpenREM has gone quiet: durations, working hours, the silence counted within them, and how
long a station usually goes without a study. Pure: standard library only, the time is a parameter.

**A station's usual gap.** ctpoller keeps, per station, the gaps between the last
``GAPS_KEPT + 1`` studies it saw arrive (counted within the working hours when they are set). A
station is overdue when its current gap is longer than ``max(FACTOR × the 90th percentile of its
gaps, floor)`` (the floor is ``CTPOLLER_SILENCE_AFTER``), once at least ``MIN_GAPS`` gaps are
known: a scanner that sends a study every 20 minutes is named after an hour of working time
(or the floor), one that is used twice a week only after a week or two.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo

GAPS_KEPT = 50
MIN_GAPS = 10
FACTOR = 3
PERCENTILE = 90

_DURATION = re.compile(r"(\d{1,7})([smhd])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86_400}
_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_WINDOW = re.compile(r"([a-z]{3})(?:-([a-z]{3}))? +(\d\d):(\d\d)-(\d\d):(\d\d)")


def parse_duration(text: str) -> timedelta:
    """``45s``, ``30m``, ``6h``, ``2d``: a whole number and one unit, more than zero; else ValueError."""
    found = _DURATION.fullmatch(text.strip().lower())
    if found is None or int(found.group(1)) == 0:
        raise ValueError(f"{text!r} is not a duration: write a whole number and s, m, h or d, such as 45s, 30m, 6h, 2d")
    return timedelta(seconds=int(found.group(1)) * _UNIT_SECONDS[found.group(2)])


def format_duration(seconds: float) -> str:
    """``22320`` -> ``"6 h 12 min"``: the two largest units, for people."""
    whole = max(0, int(seconds))
    if whole < 60:
        return f"{whole} s"
    days, rest = divmod(whole, 86_400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    if days:
        return f"{days} d {hours} h" if hours else f"{days} d"
    if hours:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    return f"{minutes} min"


@dataclass(frozen=True)
class Window:
    days: frozenset[int]  # Monday is 0
    start: time
    end: time | None  # None: midnight at the end of the day


@dataclass(frozen=True)
class WorkingHours:
    """``Mon-Fri 07:00-19:00`` or several, comma-separated (``Mon-Fri 07:00-19:00, Sat 08:00-12:00``),
    in a time zone. A window ends on the day it starts (``24:00`` is the end of the day)."""

    text: str
    windows: tuple[Window, ...]

    def seconds(self, start: datetime, end: datetime, zone: tzinfo) -> float:
        """How much of ``start`` .. ``end`` lies within these hours, in seconds (daylight saving counted)."""
        if end <= start:
            return 0.0
        total = 0.0
        day: date = start.astimezone(zone).date() - timedelta(days=1)
        last = end.astimezone(zone).date()
        while day <= last:
            for window in self.windows:
                if day.weekday() not in window.days:
                    continue
                begin = datetime.combine(day, window.start, tzinfo=zone).astimezone(UTC)
                if window.end is None:
                    finish = datetime.combine(day + timedelta(days=1), time(0), tzinfo=zone).astimezone(UTC)
                else:
                    finish = datetime.combine(day, window.end, tzinfo=zone).astimezone(UTC)
                overlap = (min(finish, end) - max(begin, start)).total_seconds()
                total += max(0.0, overlap)
            day += timedelta(days=1)
        return total


def parse_hours(text: str) -> WorkingHours:
    """``Mon-Fri 07:00-19:00[, Sat 08:00-12:00 ...]``; ValueError naming the part that is wrong."""
    windows: list[Window] = []
    for part in (p.strip() for p in text.split(",")):
        found = _WINDOW.fullmatch(part.lower())
        if found is None or found.group(1) not in _DAYS or (found.group(2) or found.group(1)) not in _DAYS:
            raise ValueError(f"{part!r} is not working hours such as 'Mon-Fri 07:00-19:00' (days Mon..Sun, 24 h)")
        first, last = _DAYS.index(found.group(1)), _DAYS.index(found.group(2) or found.group(1))
        if last < first:
            raise ValueError(f"{part!r}: the days run backwards (write Mon-Fri, not Fri-Mon)")
        h1, m1, h2, m2 = (int(found.group(i)) for i in range(3, 7))
        if h1 > 23 or m1 > 59 or h2 > 24 or m2 > 59 or (h2 == 24 and m2 != 0):
            raise ValueError(f"{part!r}: not a time of day")
        start, end = time(h1, m1), (None if h2 == 24 else time(h2, m2))
        if end is not None and end <= start:
            raise ValueError(f"{part!r}: the hours must end after they start on the same day")
        windows.append(Window(frozenset(range(first, last + 1)), start, end))
    return WorkingHours(text.strip(), tuple(windows))


def counted_seconds(start: datetime, end: datetime, hours: WorkingHours | None, zone: tzinfo) -> float:
    """The silence between ``start`` and ``end``: all of it, or only what lies within ``hours``."""
    if hours is None:
        return max(0.0, (end - start).total_seconds())
    return hours.seconds(start, end, zone)


def percentile(values: Sequence[float], pct: int = PERCENTILE) -> float:
    """Nearest-rank percentile of ``values`` (not empty)."""
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def overdue_after(gaps: Sequence[float], floor: float) -> float | None:
    """Seconds of silence after which a station with these gaps is overdue; None while too few are known."""
    if len(gaps) < MIN_GAPS:
        return None
    return max(FACTOR * percentile(gaps), floor)


def keep_gaps(gaps: Sequence[float], new: float) -> list[float]:
    """The station's gaps with ``new`` added, the oldest dropped beyond ``GAPS_KEPT``."""
    return [*gaps, new][-GAPS_KEPT:]


# -- the heartbeat ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Policy:
    """When silence is announced: after ``after`` (counted within ``hours`` if set), in ``zone``."""

    after: timedelta
    zone: tzinfo
    hours: WorkingHours | None = None

    def counted(self, start: datetime, end: datetime) -> float:
        return counted_seconds(start, end, self.hours, self.zone)


@dataclass(frozen=True)
class Station:
    """What ctpoller knows of one station's studies (its OpenREM display name, else station name)."""

    name: str
    last_pk: int
    last_at: datetime  # when ctpoller evaluated its newest study
    gaps: tuple[float, ...] = ()
    silent_since: datetime | None = None  # its last_at when its silence was announced; None while it sends


@dataclass(frozen=True)
class Pulse:
    """The heartbeat's state. ``version`` is compare-and-set: two hosts never both announce one change."""

    version: int = 0
    last_pk: int | None = None
    last_at: datetime | None = None  # when the newest study was evaluated (or when counting began)
    announced: datetime | None = None  # last_at when OpenREM's silence was announced; None while it sends
    stations: tuple[Station, ...] = ()


@dataclass(frozen=True)
class Change:
    """One thing to tell: ``silent`` / ``recovered`` (OpenREM), ``station-silent`` / ``station-recovered``."""

    kind: str
    seconds: float  # how long the silence has lasted (counted as the policy counts)
    station: Station | None = None
    usual: float | None = None  # a station's 90th percentile gap
    alarm_after: float | None = None


def beat(
    pulse: Pulse, arrivals: Sequence[tuple[int, str]], now: datetime, policy: Policy
) -> tuple[Pulse, list[Change]]:
    """The heartbeat after a run that evaluated the studies ``arrivals`` ((pk, station) each) at ``now``.

    OpenREM's silence is announced once it has lasted ``policy.after`` and its end once a study
    arrives again. A station's silence is announced when it is overdue (see the module's rule), and
    its end when it sends again; while all of OpenREM is announced silent, stations are not
    announced one by one (the silence notice lists them).
    """
    changes: list[Change] = []
    last_pk, last_at, announced = pulse.last_pk, pulse.last_at or now, pulse.announced
    stations = {s.name: s for s in pulse.stations}
    if arrivals:
        newest = max(pk for pk, _ in arrivals)
        if announced is not None:
            changes.append(Change("recovered", policy.counted(last_at, now)))
            announced = None
        last_pk, last_at = max(newest, last_pk or newest), now
        by_station: dict[str, int] = {}
        for pk, name in arrivals:
            by_station[name] = max(pk, by_station.get(name, pk))
        for name, pk in sorted(by_station.items()):
            old = stations.get(name)
            if old is None:
                stations[name] = Station(name, pk, now)
                continue
            gap = policy.counted(old.last_at, now)
            if old.silent_since is not None:
                changes.append(Change("station-recovered", gap, old))
            stations[name] = Station(name, max(pk, old.last_pk), now, tuple(keep_gaps(old.gaps, gap)))
    silent = policy.counted(last_at, now)
    floor = policy.after.total_seconds()
    if not arrivals and announced is None and silent >= floor:
        announced = last_at
        changes.append(Change("silent", silent, alarm_after=floor))
    for name, station in sorted(stations.items()):
        if station.silent_since is not None or station.last_at >= now or announced is not None:
            continue
        limit = overdue_after(station.gaps, floor)
        quiet = policy.counted(station.last_at, now)
        if limit is not None and quiet > limit:
            stations[name] = Station(name, station.last_pk, station.last_at, station.gaps, station.last_at)
            changes.append(Change("station-silent", quiet, stations[name], percentile(station.gaps), limit))
    new = Pulse(pulse.version + 1, last_pk, last_at, announced, tuple(stations[n] for n in sorted(stations)))
    return new, changes


def silence_seconds(pulse: Pulse, now: datetime, policy: Policy) -> float | None:
    """How long OpenREM has sent no new CT study, as the policy counts it; None before counting began."""
    return None if pulse.last_at is None else policy.counted(pulse.last_at, now)
