"""The heartbeat with real parts: OpenREM-shaped PostgreSQL, a PostgreSQL state store and a real SMTP
server, on the virtual clock. Silence is told once, its end once; hours outside the working hours do
not count; a station silent far longer than usual is named; two hosts never both tell it."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from ctpoller.core.settle import Timing
from ctpoller.core.silence import Policy, beat, parse_hours
from ctpoller.demo.exams import GE_VCT, as_another_exam
from ctpoller.jobs.heartbeat import Heartbeat, _notice
from ctpoller.store.store import StateStore
from support.cycle import T0, Harness

pytestmark = [pytest.mark.postgres, pytest.mark.smtp]

ADMIN = "pacs-admin@hospital.example"
QUIET_RULES = '[[rule]]\nname = "Never"\ndlp_total = 1000000\nrecipients = ["physics@hospital.example"]\n'


def harness(openrem_db, state_url, inbox, tmp_path, *, hours: str | None = None, after=timedelta(hours=6)) -> Harness:
    policy = Policy(after=after, zone=UTC, hours=parse_hours(hours) if hours else None)
    h = Harness(openrem_db, state_url, QUIET_RULES, inbox.port, tmp_path)
    h.timing = Timing(settle=timedelta(0), give_up=timedelta(hours=6))
    h.heartbeat = Heartbeat(policy, (ADMIN,), "hospital.example")
    return h


def exam(n: int, station: str = "CT1"):
    return replace(
        as_another_exam(GE_VCT, f"1.2.826.0.1.3680043.9.7777.{n}"), station_name=station, display_name=station
    )


def subjects(inbox) -> list[str]:
    return [str(m["Subject"]) for m in inbox.messages]


def test_silence_is_emailed_once_not_again_and_its_end_once(openrem_db, openrem, state_pg_url, inbox, tmp_path):
    h = harness(openrem_db, state_pg_url, inbox, tmp_path)
    h.cycle()  # the first run: counting begins
    pk = openrem.import_study(exam(1))
    h.cycle(after=timedelta(minutes=1))
    assert subjects(inbox) == []
    report = h.cycle(after=timedelta(hours=6, minutes=12))
    assert subjects(inbox) == ["ctpoller: OpenREM has sent no CT study for 6 h 12 min"]
    assert report.silence_alarm is True and report.silence_seconds == (6 * 60 + 12) * 60
    text = inbox.messages[0].get_content()
    assert f"last study pk {pk} at 2026-03-02 08:01 UTC" in text and "check the OpenREM importer" in text
    assert inbox.messages[0]["To"] == ADMIN
    h.cycle(after=timedelta(hours=1))
    h.cycle(after=timedelta(hours=20))
    assert len(inbox.messages) == 1, "announced once"
    new = openrem.import_study(exam(2))
    report = h.cycle(after=timedelta(minutes=1))
    assert subjects(inbox)[1:] == ["ctpoller: OpenREM sends CT studies again"]
    assert f"study pk {new}" in inbox.messages[1].get_content()
    assert report.silence_alarm is False
    h.cycle(after=timedelta(minutes=1))
    assert len(inbox.messages) == 2, "its end announced once"


def test_silence_outside_the_working_hours_is_not_counted(openrem_db, openrem, state_pg_url, inbox, tmp_path):
    h = harness(openrem_db, state_pg_url, inbox, tmp_path, hours="Mon-Fri 07:00-19:00")
    h.clock = datetime(2026, 3, 6, 16, 0, tzinfo=UTC)  # Friday 16:00
    h.cycle()
    openrem.import_study(exam(1))
    h.cycle(after=timedelta(minutes=1))
    h.clock = datetime(2026, 3, 9, 9, 0, tzinfo=UTC)  # Monday 09:00: 2 h 59 min on Friday, 2 h today; 65 h in all
    report = h.cycle()
    assert subjects(inbox) == [] and report.silence_seconds == 5 * 3600 - 60
    report = h.cycle(after=timedelta(hours=1, minutes=1))
    assert subjects(inbox) == ["ctpoller: OpenREM has sent no CT study for 6 h"]
    assert "(counted within Mon-Fri 07:00-19:00)" in inbox.messages[0].get_content()


def test_a_station_silent_far_longer_than_usual_is_named(openrem_db, openrem, state_pg_url, inbox, tmp_path):
    h = harness(openrem_db, state_pg_url, inbox, tmp_path, after=timedelta(hours=1))
    h.cycle()
    n = 0
    for _ in range(11):  # both scanners every 10 minutes: 10 gaps each
        for station in ("CT1", "CT2"):
            n += 1
            openrem.import_study(exam(n, station))
        h.cycle(after=timedelta(minutes=10))
    for _ in range(7):  # CT2 goes quiet
        n += 1
        openrem.import_study(exam(n, "CT1"))
        h.cycle(after=timedelta(minutes=10))
    assert subjects(inbox) == ["ctpoller: station CT2 has sent no CT study for 1 h 10 min"]
    assert "its usual gap is at most 10 min (9 in 10)" in inbox.messages[0].get_content()
    openrem.import_study(exam(n + 1, "CT2"))
    h.cycle(after=timedelta(minutes=1))
    assert subjects(inbox)[1:] == ["ctpoller: station CT2 sends CT studies again"]


def test_two_hosts_on_one_postgresql_store_never_both_announce_the_silence(state_pg_url):
    """Both read the heartbeat, both decide to announce; the compare-and-set lets one record it."""
    policy = Policy(after=timedelta(hours=6), zone=UTC)
    heartbeat = Heartbeat(policy, (ADMIN,), "hospital.example")
    first, second = StateStore(state_pg_url), StateStore(state_pg_url)
    try:
        first.ensure_schema()
        start = first.pulse()
        pulse, _ = beat(start, [(7, "CT1")], T0, policy)
        assert first.commit_pulse(start, pulse, None, T0)
        now = T0 + timedelta(hours=7)
        seen = [first.pulse(), second.pulse()]
        decided = [beat(p, [], now, policy) for p in seen]
        assert all([c.kind for c in changes] == ["silent"] for _, changes in decided)
        done = [
            store.commit_pulse(before, after, _notice(changes, after, now, heartbeat), now)
            for store, before, (after, changes) in zip((first, second), seen, decided, strict=True)
        ]
        assert done == [True, False]
        assert first.outbox_counts() == {"pending": 1}
        assert [m.notice.kind for m in second.pending_messages() if m.notice] == ["silence"]
    finally:
        first.dispose()
        second.dispose()
