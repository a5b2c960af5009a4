"""The heartbeat's pure core: durations, working hours, a station's usual gap, and ``beat``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from ctpoller.core.silence import (
    MIN_GAPS,
    Policy,
    Pulse,
    beat,
    format_duration,
    overdue_after,
    parse_duration,
    parse_hours,
)
from ctpoller.errors import ConfigError
from ctpoller.settings import load_settings

BERLIN = ZoneInfo("Europe/Berlin")
MONDAY = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)  # 07:00 in Berlin


@pytest.mark.parametrize(
    ("text", "seconds"), [("45s", 45), ("30m", 1800), ("6h", 21600), ("2d", 172800), (" 6H ", 21600)]
)
def test_a_duration_is_a_whole_number_and_one_unit(text: str, seconds: int) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["6", "6 h", "1h30m", "0h", "-1h", "1.5h", "6w", "", "h", "six hours"])
def test_anything_else_is_not_a_duration(text: str) -> None:
    with pytest.raises(ValueError, match="is not a duration"):
        parse_duration(text)


def test_a_bad_silence_setting_is_one_line_naming_the_variable(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.chdir(tmp_path)
    for name, value, needle in [
        ("CTPOLLER_SILENCE_AFTER", "6 hours", "CTPOLLER_SILENCE_AFTER: '6 hours' is not a duration"),
        ("CTPOLLER_SILENCE_HOURS", "Mon-Fri 7-19", "CTPOLLER_SILENCE_HOURS: 'Mon-Fri 7-19' is not working hours"),
        ("CTPOLLER_TIMEZONE", "Mars/Olympus", "CTPOLLER_TIMEZONE: 'Mars/Olympus' is not an IANA time zone"),
        ("CTPOLLER_ADMIN_MAIL_TO", "admin", "CTPOLLER_ADMIN_MAIL_TO: 'admin' is not an e-mail address"),
    ]:
        monkeypatch.setenv(name, value)
        with pytest.raises(ConfigError) as error:
            load_settings()
        assert str(error.value).startswith(needle), str(error.value)
        assert "\n" not in str(error.value)
        monkeypatch.delenv(name)
    assert load_settings().silence_after == timedelta(hours=6)


def test_durations_are_shown_in_their_two_largest_units() -> None:
    assert [format_duration(s) for s in (45, 60, 22320, 21600, 90000, 172800)] == [
        "45 s",
        "1 min",
        "6 h 12 min",
        "6 h",
        "1 d 1 h",
        "2 d",
    ]


def test_working_hours_count_only_their_own_time_in_the_sites_zone() -> None:
    hours = parse_hours("Mon-Fri 07:00-19:00, Sat 08:00-12:00")
    friday_evening = datetime(2026, 3, 6, 17, 0, tzinfo=UTC)  # 18:00 in Berlin
    monday_morning = datetime(2026, 3, 9, 7, 0, tzinfo=UTC)  # 08:00 in Berlin
    # Friday 18-19 (1 h), Saturday 8-12 (4 h), Monday 7-8 (1 h)
    assert hours.seconds(friday_evening, monday_morning, BERLIN) == 6 * 3600
    assert hours.seconds(monday_morning, friday_evening, BERLIN) < 5 * 12 * 3600


def test_working_hours_follow_daylight_saving_time() -> None:
    hours = parse_hours("Sun 00:00-24:00")
    start = datetime(2026, 3, 28, 23, 0, tzinfo=UTC)  # Sunday 00:00 in Berlin, the day the clocks go forward
    assert hours.seconds(start, start + timedelta(days=1), BERLIN) == 23 * 3600


@pytest.mark.parametrize(
    "text", ["Mon-Fri", "Fri-Mon 07:00-19:00", "Mon 19:00-07:00", "Xyz 07:00-08:00", "Mon 25:00-26:00"]
)
def test_bad_working_hours_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_hours(text)


def test_a_station_is_overdue_after_three_times_its_90th_percentile_gap_or_the_floor() -> None:
    gaps = [600.0] * 9 + [1200.0]  # 10 gaps: 9 of 10 at most 10 min
    assert overdue_after(gaps[:-1], floor=3600) is None  # too few known
    assert overdue_after(gaps, floor=0) == 3 * 600
    assert overdue_after(gaps, floor=3600) == 3600
    assert overdue_after([7200.0] * MIN_GAPS, floor=3600) == 3 * 7200


POLICY = Policy(after=timedelta(hours=6), zone=UTC)


def test_silence_is_announced_once_and_its_end_once() -> None:
    pulse, changes = beat(Pulse(), [(1, "CT1")], MONDAY, POLICY)
    assert changes == [] and pulse.last_pk == 1
    pulse, changes = beat(pulse, [], MONDAY + timedelta(hours=5, minutes=59), POLICY)
    assert changes == []
    pulse, changes = beat(pulse, [], MONDAY + timedelta(hours=6, minutes=12), POLICY)
    assert [c.kind for c in changes] == ["silent"] and changes[0].seconds == 6 * 3600 + 12 * 60
    assert pulse.announced == MONDAY
    pulse, changes = beat(pulse, [], MONDAY + timedelta(hours=9), POLICY)
    assert changes == []
    pulse, changes = beat(pulse, [(2, "CT1")], MONDAY + timedelta(hours=10), POLICY)
    assert [c.kind for c in changes] == ["recovered"] and pulse.announced is None and pulse.last_pk == 2


def test_silence_outside_working_hours_is_not_counted() -> None:
    policy = Policy(after=timedelta(hours=6), zone=BERLIN, hours=parse_hours("Mon-Fri 07:00-19:00"))
    friday_6pm = datetime(2026, 3, 6, 17, 0, tzinfo=UTC)
    pulse, _ = beat(Pulse(), [(1, "CT1")], friday_6pm, policy)
    pulse, changes = beat(pulse, [], friday_6pm + timedelta(days=2, hours=15), policy)  # Monday 09:00
    assert changes == []  # 1 h on Friday, 2 h on Monday
    pulse, changes = beat(pulse, [], friday_6pm + timedelta(days=2, hours=19), policy)  # Monday 13:00
    assert [c.kind for c in changes] == ["silent"]


def test_a_station_silent_far_longer_than_usual_is_named_while_others_send() -> None:
    policy = Policy(after=timedelta(hours=1), zone=UTC)
    pulse, now, pk = Pulse(), MONDAY, 0
    for _ in range(12):  # both stations every 10 minutes
        pk += 2
        pulse, changes = beat(pulse, [(pk - 1, "CT1"), (pk, "CT2")], now, policy)
        assert changes == []
        now += timedelta(minutes=10)
    for _ in range(8):  # CT2 goes quiet; 60 min is the floor (3 x 10 min is less)
        pk += 1
        pulse, changes = beat(pulse, [(pk, "CT1")], now, policy)
        now += timedelta(minutes=10)
        if changes:
            break
    assert [(c.kind, c.station.name if c.station else None) for c in changes] == [("station-silent", "CT2")]
    assert changes[0].seconds > 3600
    pulse, changes = beat(pulse, [(pk + 1, "CT1")], now, policy)
    assert changes == []  # announced once
    pulse, changes = beat(pulse, [(pk + 2, "CT2")], now + timedelta(minutes=5), policy)
    assert [(c.kind, c.station.name if c.station else None) for c in changes] == [("station-recovered", "CT2")]
