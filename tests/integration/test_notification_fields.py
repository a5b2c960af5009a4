"""Severity, reference level and detail from a real PostgreSQL state store at the previous schema,
through delivery to a real SMTP server, into the workbook and the HTML report."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal

import openpyxl
import pytest
import sqlalchemy as sa

from ctpoller.archive.base import XlsxArchive
from ctpoller.archive.html import HtmlReport
from ctpoller.core.model import Notification
from ctpoller.jobs.archive import write_archive
from ctpoller.jobs.deliver import deliver
from ctpoller.jobs.publish import write_report_html
from ctpoller.jobs.report import Report
from ctpoller.mail.smtp import SmtpNotifier
from ctpoller.store.notifications import NewMessage
from ctpoller.store.store import CycleWrite, StateStore
from ctpoller.store.tables import MIGRATIONS
from support.factories import notification
from support.smtp import Recorder, body
from support.workbooks import year_workbook

pytestmark = [pytest.mark.postgres, pytest.mark.smtp]

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
NEW_COLUMNS = ("severity", "reference", "reference_value", "multiple", "detail")
MIGRATION = "notification: severity, the reference level a limit came from, and detail"

DRL_ALERT = notification(
    study_uid="1.2.826.0.1.3680043.8.498.20",
    value=Decimal("120.5"),
    limit=Decimal("94.0"),
    severity="alert",
    reference="UK NDRL 2022",
    reference_value=Decimal("47"),
    multiple=Decimal("2.0"),
    event_number=2,
    series="Helical 5mm",
)
TREND = notification(
    study_uid="1.2.826.0.1.3680043.8.498.21",
    rule="Head CT group criterion",
    metric="trend_ctdivol",
    event_key="",
    value=Decimal("141.8"),
    limit=Decimal("130"),
    reference="BfS DRW 2022",
    reference_value=Decimal("65"),
    multiple=Decimal("2"),
    detail="mean of the last 20 exams on Main CT: 141.8 mGy (2.18 × 65 mGy BfS DRW 2022)",
)


def message(told: Notification, mid: str) -> NewMessage:
    return NewMessage(mid, told.study_uid, ("physics@hospital.example",), (told,))


def as_the_ctpoller_before_left_it(url: str) -> None:
    """A store of the ctpoller before: one message recorded, the five columns not there yet."""
    old = StateStore(url)
    old.ensure_schema()
    old.commit_cycle(CycleWrite(messages=[message(notification(), "<old@hospital.example>")]), NOW)
    with old.engine.begin() as conn:
        for column in NEW_COLUMNS:
            conn.execute(sa.text(f"ALTER TABLE ctp_notification DROP COLUMN {column}"))
        applied = [m.name for m in MIGRATIONS].index(MIGRATION)
        conn.execute(sa.text("UPDATE ctp_meta SET value = :n WHERE key = 'migrations_applied'"), {"n": str(applied)})
    old.dispose()


def test_an_alert_from_a_store_of_the_ctpoller_before_is_emailed_archived_and_reported(
    state_pg_url: str, serve, tmp_path
) -> None:
    as_the_ctpoller_before_left_it(state_pg_url)
    inbox = serve(Recorder()).handler
    state = StateStore(state_pg_url)
    try:
        state.ensure_schema()
        [old] = state.pending_messages()
        assert old.notifications == (notification(),)  # read back with the defaults
        writes = [message(DRL_ALERT, "<alert@hospital.example>"), message(TREND, "<trend@hospital.example>")]
        state.commit_cycle(CycleWrite(messages=writes), NOW)
        assert [m.notifications for m in state.pending_messages()[1:]] == [(DRL_ALERT,), (TREND,)]

        notifier = SmtpNotifier(
            "127.0.0.1", inbox.port, security="none", username=None, password=None, timeout=5.0, mail_from="c@h.example"
        )
        report = Report()
        deliver(state, notifier, report, now=NOW)
        assert report.sent == 3

        plain, alert, trend = inbox.messages
        assert not plain["Subject"].startswith("ALERT") and plain["Importance"] is None
        assert alert["Subject"].startswith("ALERT: CT dose 1.28× limit: ") and alert["Importance"] == "high"
        text = body(alert).replace("\r\n", "\n")
        assert "\n1. [ALERT] adult head: CTDIvol (event) 120.5 mGy, limit 94 mGy = 2 × 47 mGy (UK NDRL 2022)," in text
        assert "\n   mean of the last 20 exams on Main CT: 141.8 mGy (2.18 × 65 mGy BfS DRW 2022)\n" in body(
            trend
        ).replace("\r\n", "\n")

        archive = XlsxArchive(tmp_path / "archive.xlsx")
        write_archive(state, archive, Report(), now=NOW)
        sheet = openpyxl.load_workbook(year_workbook(archive.path, NOW.year))["Notifications"]
        values = list(sheet.iter_rows(values_only=True))
        rows = [dict(zip(values[0], row, strict=True)) for row in values[1:]]
        shown = ("Severity", "Limit", "Reference value", "Multiple", "Reference", "Detail")
        assert [[r[h] for h in shown] for r in rows] == [
            ["notification", 50, None, None, None, None],
            ["alert", 94, 47, 2, "UK NDRL 2022", None],
            ["notification", 130, 65, 2, "BfS DRW 2022", TREND.detail],
        ]

        page = tmp_path / "report.html"
        write_report_html(state, HtmlReport(page), Report(), now=NOW)
        text = page.read_text(encoding="utf-8")
        assert "3 notifications (1 alert)" in text and '"reference":"UK NDRL 2022","level":47.0' in text
        assert TREND.detail is not None and TREND.detail not in text
    finally:
        state.dispose()


def test_a_new_store_holds_the_new_columns_and_an_old_row_reads_as_a_notification(state_pg_url: str) -> None:
    state = StateStore(state_pg_url)
    try:
        state.ensure_schema()
        with state.engine.begin() as conn:
            columns = {c["name"]: c for c in sa.inspect(conn).get_columns("ctp_notification")}
        assert set(NEW_COLUMNS) <= set(columns) and not columns["severity"]["nullable"]
        told = replace(DRL_ALERT, study_uid="1.2.3.99")
        state.commit_cycle(CycleWrite(messages=[message(told, "<x@hospital.example>")]), NOW)
        assert [r.notification for r in state.archive_rows(study_uids=["1.2.3.99"])] == [told]
    finally:
        state.dispose()
