"""``ctpoller digest`` with real parts: a PostgreSQL state store shared by two hosts and a real SMTP
server. One digest per ISO week, never two, also when both hosts decide at once or one died after
recording it."""

from __future__ import annotations

from datetime import timedelta

import pytest

from ctpoller import wiring
from ctpoller.archive.items import notification_key
from ctpoller.core.review import Change
from ctpoller.demo.exams import GE_VCT
from ctpoller.jobs.digest import _notice, period_of, send_digest
from ctpoller.store.store import StateStore
from support.cycle import T0, Harness
from support.process import RULES

pytestmark = [pytest.mark.postgres, pytest.mark.smtp]

QA = "qa@hospital.example"


def host(h: Harness) -> wiring.Parts:
    return wiring.Parts(h.settings().model_copy(update={"digest_to": QA, "timezone": "UTC"}))


def digests(inbox) -> list[str]:
    return [str(m["Subject"]) for m in inbox.messages if m["X-Ctpoller-Kind"] == "digest"]


def test_one_digest_per_week_across_two_hosts_with_new_and_open_notifications(
    openrem_db, openrem, state_pg_url, inbox, tmp_path
):
    h = Harness(openrem_db, state_pg_url, RULES, inbox.port, tmp_path)
    h.cycle()
    openrem.import_study(GE_VCT)
    h.cycle(after=timedelta(seconds=1))
    h.cycle(after=timedelta(minutes=3))
    assert len(inbox.messages) == 1  # the exam's notification
    first, second = host(h), host(h)

    line, _ = send_digest(first, now=T0 + timedelta(days=15))
    assert "2 new notifications, 2 open" in line
    line, _ = send_digest(second, now=T0 + timedelta(days=15, hours=1))
    assert "recorded before" in line
    assert digests(inbox) == [
        f"ctpoller digest {period_of(T0 + timedelta(days=15), h.clock.tzinfo)}: 2 new, 2 open older than 14 days"
    ]
    text = inbox.messages[-1].get_content()
    assert "Body CTDIvol" in text and "Exam DLP" in text
    assert [d.rcpt_tos for d in inbox.delivered][-1] == [QA]

    send_digest(second, now=T0 + timedelta(days=22))
    assert len(digests(inbox)) == 2
    assert digests(inbox)[1].endswith(": 0 new, 2 open older than 14 days")


def test_two_hosts_deciding_the_same_digest_at_once_record_it_once_and_a_crash_delivers_it_later(
    state_pg_url, inbox, tmp_path
):
    h = Harness("postgresql+psycopg://unused@127.0.0.1:1/x", state_pg_url, RULES, inbox.port, tmp_path)
    parts = host(h)
    digest = parts.digest()
    a, b = StateStore(state_pg_url), StateStore(state_pg_url)
    try:
        a.ensure_schema()
        period = period_of(T0, digest.zone)
        told = [a.digest_told(), b.digest_told()]  # both see no digest yet
        notice = _notice(period, [], [], T0, digest)
        done = [s.commit_digest(period, before, n, notice, T0) for s, (before, n) in zip((a, b), told, strict=True)]
        assert done == [True, False]
        assert a.outbox_counts() == {"pending": 1}  # recorded; the host died before sending it
    finally:
        a.dispose()
        b.dispose()
    line, _ = send_digest(parts, now=T0 + timedelta(hours=1))
    assert "recorded before" in line and "1 emails sent" in line
    send_digest(parts, now=T0 + timedelta(hours=2))
    assert len(digests(inbox)) == 1


def test_a_notification_reviewed_in_the_archive_is_no_longer_open_in_the_digest(
    openrem_db, openrem, state_pg_url, inbox, tmp_path
):
    h = Harness(openrem_db, state_pg_url, RULES, inbox.port, tmp_path)
    h.cycle()
    openrem.import_study(GE_VCT)
    h.cycle(after=timedelta(seconds=1))
    h.cycle(after=timedelta(minutes=3))
    state = StateStore(state_pg_url)
    try:
        [row, _] = list(state.archive_rows())  # two exceedances of one exam
        key = notification_key(row)
        state.record_changes([Change(key, "outcome", None, "justified", "QA reviewer", T0 + timedelta(days=1))])
    finally:
        state.dispose()
    line, _ = send_digest(host(h), now=T0 + timedelta(days=15))
    assert "2 new notifications, 1 open" in line
    assert digests(inbox)[-1].endswith(": 2 new, 1 open older than 14 days")
