"""The core promise, against a real PostgreSQL written the way OpenREM writes and a real SMTP server:
every exceedance notified, exactly once, nothing lost."""

from __future__ import annotations

import dataclasses
from datetime import date, timedelta
from decimal import Decimal

import openpyxl
import pytest
import sqlalchemy as sa

from ctpoller.demo.exams import (
    CONTINUED_1,
    CONTINUED_2,
    GE_OPTIMA,
    GE_PIXELMED,
    GE_VCT,
    MULTI_SERIES,
    SEED_STUDIES,
    SIEMENS_FLASH_QA,
)
from ctpoller.errors import SourceError
from ctpoller.openrem.source import OpenremSource
from ctpoller.store.store import StateStore
from support.cycle import SETTLE, Harness
from support.ports import free_port

pytestmark = [pytest.mark.postgres, pytest.mark.smtp]

RULES = """
[defaults]
recipients = ["physics@hospital.example"]

[[rule]]
name = "Body CTDIvol"
phantom = "body"
ctdivol = 50

[[rule]]
name = "Head CTDIvol"
phantom = "head"
ctdivol = 80
recipients = ["neuro@hospital.example"]

[[rule]]
name = "Exam DLP"
dlp_total = 1000
"""

SETTLED = SETTLE + timedelta(seconds=1)


@pytest.fixture
def harness(openrem_db, tmp_path, inbox):
    return Harness(openrem_db, f"sqlite:///{tmp_path / 'state.sqlite3'}", RULES, inbox.port, tmp_path)


def started(harness: Harness) -> Harness:
    report = harness.cycle()
    assert report.initialised
    return harness


def seen_then_settled(harness: Harness):
    """Two cycles: the first sees the new rows, the second comes after the settle time."""
    harness.cycle(after=timedelta(seconds=1))
    return harness.cycle(after=SETTLED)


def exceedances(message) -> str:
    return message.get_body(("plain",)).get_content()


def test_first_run_starts_at_the_current_end_and_notifies_nothing_from_history(harness, openrem, inbox):
    pk = openrem.import_study(GE_VCT)
    first = harness.cycle()
    assert first.initialised and first.watermark_after == pk
    later = harness.cycle(after=timedelta(hours=1))
    assert later.messages == [] and inbox.messages == []
    assert later.watermark_after == pk


def test_exceeding_exam_is_emailed_once_after_it_settles(harness, openrem, inbox):
    started(harness)
    pk = openrem.import_study(GE_VCT)
    waiting = harness.cycle(after=timedelta(seconds=1))
    assert [p for p, _ in waiting.waiting] == [pk]
    assert inbox.messages == []

    done = harness.cycle(after=SETTLED)
    assert done.sent == 1
    [message] = inbox.messages
    body = exceedances(message)
    assert "Body CTDIvol" in body and "176.12" in body
    assert "Exam DLP" in body and "2002.39" in body
    assert message["To"] == "physics@hospital.example"
    assert message["Message-ID"].strip() == done.messages[0].message_id
    assert done.watermark_after == pk

    again = harness.cycle(after=timedelta(minutes=10))
    assert again.messages == [] and len(inbox.messages) == 1


def test_study_written_over_many_commits_is_evaluated_only_once_complete(harness, openrem, inbox):
    started(harness)
    steps = openrem.import_steps(GE_PIXELMED)
    next(steps)
    pk = openrem.last_study_pk
    for _ in steps:
        report = harness.cycle(after=timedelta(seconds=3))
        assert report.messages == [], "evaluated before the import finished"
    report = harness.cycle(after=timedelta(seconds=3))
    assert [p for p, _ in report.waiting] == [pk]
    harness.cycle(after=SETTLED)
    [message] = inbox.messages
    assert "222.59" in exceedances(message)
    assert "neuro@hospital.example" in message["To"] and "physics@hospital.example" in message["To"]


def test_incomplete_study_older_than_the_settle_time_is_still_not_evaluated(harness, openrem, inbox):
    started(harness)
    steps = openrem.import_steps(GE_VCT)
    for label in steps:
        if "remapp_patientstudymoduleattr" in label:
            break  # the import stops before the patient rows: OpenREM's last writes
    harness.cycle(after=timedelta(seconds=1))  # first seen here: older than the settle time below
    report = harness.cycle(after=timedelta(hours=1))
    assert report.messages == [] and inbox.messages == []
    assert "patient rows not yet written" in report.waiting[0][1]
    assert report.watermark_after == 0


def test_cumulative_resend_notifies_only_what_rose(harness, openrem, inbox):
    harness.rules_text = """
[defaults]
recipients = ["physics@hospital.example"]
[[rule]]
name = "Thorax total"
dlp_total = 50
[[rule]]
name = "Thorax CTDIvol"
ctdivol = 5
"""
    started(harness)
    multi_1, multi_2, multi_3 = MULTI_SERIES
    pk = openrem.import_study(multi_1)
    seen_then_settled(harness)
    assert inbox.messages == []  # 7.46 mGy·cm and 0.15 mGy: under both limits

    pk = openrem.resend_cumulative(pk, multi_2)
    seen_then_settled(harness)
    [second] = inbox.messages
    assert "77.27" in exceedances(second) and "8.13" in exceedances(second)

    pk = openrem.resend_cumulative(pk, multi_3)
    report = seen_then_settled(harness)
    [update] = report.messages
    by_metric = {(n.metric, n.value) for n in update.notifications}
    assert by_metric == {("dlp_total", Decimal("236.09")), ("ctdivol", Decimal("7.02"))}
    [total] = [n for n in update.notifications if n.metric == "dlp_total"]
    assert total.previous_value == Decimal("77.27")
    assert "rose from" in exceedances(inbox.messages[1])

    openrem.resend_cumulative(pk, multi_3)  # the same report once more: nothing rose
    again = seen_then_settled(harness)
    assert again.messages == [] and len(inbox.messages) == 2


def test_continued_reports_sharing_a_uid_are_one_exam(harness, openrem, inbox):
    harness.rules_text = '[[rule]]\nname = "Exam DLP"\ndlp_total = 100\nrecipients = ["physics@hospital.example"]\n'
    started(harness)
    openrem.import_study(CONTINUED_1)
    seen_then_settled(harness)
    assert inbox.messages == []  # 60.17 alone
    openrem.import_study(CONTINUED_2)
    report = seen_then_settled(harness)
    [message] = report.messages
    assert [n.value for n in message.notifications] == [Decimal("116.61")]
    assert len(inbox.messages) == 1


def test_a_report_continuing_an_exam_begun_before_the_first_run_counts_the_whole_exam(harness, openrem, inbox):
    harness.rules_text = '[[rule]]\nname = "Exam DLP"\ndlp_total = 100\nrecipients = ["physics@hospital.example"]\n'
    openrem.import_study(CONTINUED_1)  # history: imported before ctpoller's first run
    started(harness)
    openrem.import_study(CONTINUED_2)
    report = seen_then_settled(harness)
    [message] = report.messages
    assert [n.value for n in message.notifications] == [Decimal("116.61")]  # 60.17 + 56.44, not 56.44 alone
    assert len(inbox.messages) == 1


def test_a_first_run_remembers_only_the_exams_of_recent_ct_rows(harness, openrem, monkeypatch):
    monkeypatch.setattr("ctpoller.openrem.reads.HISTORY_ROWS", 1)
    first = openrem.import_study(GE_OPTIMA)
    second = openrem.import_study(CONTINUED_1)
    steps = openrem.import_steps(GE_VCT)
    next(steps)  # an empty row, still being written: the first watermark stays below it
    started(harness)
    with harness.parts() as (_, state, _):
        remembered = state.decided_pks([GE_OPTIMA.uid, CONTINUED_1.uid, GE_VCT.uid])
        assert state.watermark() == second
    assert first < second and remembered == {CONTINUED_1.uid: [second]}
    assert harness.cycle(after=timedelta(seconds=1)).messages == []  # remembering is not evaluating


def test_out_of_order_commits_are_not_missed(harness, openrem, inbox):
    started(harness)
    slow = openrem.import_steps(GE_VCT)
    next(slow)
    slow_pk = openrem.last_study_pk
    fast_pk = openrem.import_study(SIEMENS_FLASH_QA)
    assert fast_pk > slow_pk
    harness.cycle(after=timedelta(seconds=1))
    report = harness.cycle(after=SETTLED)
    assert [m.study_uid for m in report.messages] == [SIEMENS_FLASH_QA.uid]
    assert report.watermark_after < slow_pk
    for _ in slow:
        pass
    harness.cycle(after=timedelta(seconds=1))
    report = harness.cycle(after=SETTLED)
    assert [m.study_uid for m in report.messages] == [GE_VCT.uid]
    assert report.watermark_after == fast_pk
    assert len(inbox.messages) == 2


def test_notification_survives_an_unreachable_mail_server_and_is_sent_once_later(harness, openrem, inbox):
    started(harness)
    openrem.import_study(SIEMENS_FLASH_QA)
    harness.cycle(after=timedelta(seconds=1))
    down = harness.cycle(after=SETTLED, port=free_port())
    assert len(down.messages) == 1 and down.deferred and down.sent == 0
    up = harness.cycle(after=timedelta(minutes=1))
    assert up.sent == 1 and up.messages == []
    assert inbox.messages[0]["Message-ID"].strip() == down.messages[0].message_id
    assert harness.cycle(after=timedelta(minutes=1)).sent == 0
    assert len(inbox.messages) == 1


def test_temporary_smtp_refusal_is_retried_and_permanent_refusal_is_recorded(harness, openrem, inbox):
    started(harness)
    openrem.import_study(SIEMENS_FLASH_QA)
    harness.cycle(after=timedelta(seconds=1))
    inbox.refuse_data = "451 4.3.0 try again later"
    deferred = harness.cycle(after=SETTLED)
    assert deferred.deferred and not deferred.failed
    inbox.refuse_data = "550 5.1.1 mailbox unavailable"
    failed = harness.cycle(after=timedelta(minutes=1))
    assert failed.failed and failed.sent == 0
    inbox.refuse_data = None
    assert harness.cycle(after=timedelta(minutes=1)).sent == 0  # not retried forever
    rows = list(openpyxl.load_workbook(harness.workbook).active.iter_rows(values_only=True))
    assert any("failed" in str(cell) for row in rows[1:] for cell in row)


def test_dry_run_writes_and_sends_nothing(harness, openrem, inbox, tmp_path):
    started(harness)
    openrem.import_study(GE_VCT)
    harness.cycle(after=timedelta(seconds=1))
    files = {p: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    report = harness.cycle(after=SETTLED, dry_run=True)
    assert len(report.messages) == 1
    assert inbox.messages == []
    assert {p: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == files
    real = harness.cycle()
    assert len(real.messages) == 1 and len(inbox.messages) == 1


def test_backfill_without_email_records_history_and_never_sends_it(harness, openrem, inbox):
    for study in (GE_VCT, GE_PIXELMED, GE_OPTIMA):
        openrem.import_study(study)
    started(harness)
    report = harness.backfill(since=date(2010, 1, 1), email=False)
    assert {m.study_uid for m in report.messages} == {GE_VCT.uid, GE_PIXELMED.uid}  # Optima (2006) is older
    assert report.sent == 0 and inbox.messages == []
    rows = list(openpyxl.load_workbook(harness.workbook).active.iter_rows(values_only=True))
    assert len(rows) == 1 + 3  # header + VCT (CTDIvol, DLP total) + PixelMed (head CTDIvol)
    assert harness.cycle(after=timedelta(hours=1)).sent == 0
    assert harness.backfill(since=date(2000, 1, 1), email=True).messages == []  # already recorded
    assert inbox.messages == []


def test_every_seed_exam_is_evaluated_without_error_and_patient_data_never_leaves(harness, openrem, inbox):
    started(harness)
    for study in SEED_STUDIES:
        openrem.import_study(study)
    harness.cycle(after=timedelta(seconds=1))
    report = harness.cycle(after=SETTLED)
    assert report.exams_evaluated == len({s.uid for s in SEED_STUDIES})
    assert len(inbox.messages) == len(report.messages) >= 3
    secrets = {s.patient_name for s in SEED_STUDIES} | {s.patient_id for s in SEED_STUDIES}
    for message in inbox.messages:
        raw = message.as_string()
        assert not any(secret and secret in raw for secret in secrets)
    for row in openpyxl.load_workbook(harness.workbook).active.iter_rows(values_only=True):
        assert not any(secret and secret in str(cell) for cell in row for secret in secrets)


def test_state_store_in_postgresql_keeps_the_same_promise(openrem_db, state_pg_url, tmp_path, inbox, openrem):
    harness = Harness(openrem_db, state_pg_url, RULES, inbox.port, tmp_path)
    started(harness)
    openrem.import_study(GE_VCT)
    harness.cycle(after=timedelta(seconds=1))
    assert harness.cycle(after=SETTLED).sent == 1
    assert harness.cycle(after=SETTLED).sent == 0
    assert len(inbox.messages) == 1


def test_the_source_connection_cannot_write(openrem_db):
    source = OpenremSource(openrem_db)
    try:
        source.connect()
        with pytest.raises(SourceError, match="read-only"), source.session("writing") as conn:
            conn.execute(sa.text("INSERT INTO remapp_contextid (code_value, cid_table) VALUES ('x', '')"))
    finally:
        source.dispose()


def test_a_missing_column_is_named_with_its_table(openrem_db):
    engine = sa.create_engine(openrem_db)
    with engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE remapp_ctirradiationeventdata DROP COLUMN mean_ctdivol"))
    engine.dispose()
    source = OpenremSource(openrem_db)
    try:
        with pytest.raises(SourceError, match=r"remapp_ctirradiationeventdata\.mean_ctdivol") as caught:
            source.connect()
        assert not caught.value.temporary
    finally:
        source.dispose()


def test_decided_rows_stay_decided_when_the_state_store_is_reopened(harness, openrem, tmp_path):
    started(harness)
    pk = openrem.import_study(dataclasses.replace(GE_OPTIMA, uid="1.2.3.999"))
    harness.cycle(after=timedelta(seconds=1))
    harness.cycle(after=SETTLED)
    state = StateStore(f"sqlite:///{tmp_path / 'state.sqlite3'}")
    try:
        assert state.watermark() == pk
        assert state.decided_pks(["1.2.3.999"]) == {"1.2.3.999": [pk]}
        assert state.integrity_check() == "ok"
    finally:
        state.dispose()


def test_openrem_restored_below_the_watermark_stops_instead_of_missing_everything(harness, openrem, openrem_db):
    for study in (GE_OPTIMA, GE_PIXELMED, GE_VCT):
        openrem.import_study(study)
    assert harness.cycle().watermark_after == 3
    openrem.delete_study(3)  # the newest study deleted by hand: new studies still get higher pks
    assert harness.cycle(after=timedelta(seconds=1)).watermark_after == 3
    engine = sa.create_engine(openrem_db)
    with engine.begin() as conn:  # a restore from an older backup: the sequence is back too
        conn.execute(sa.text("ALTER SEQUENCE remapp_generalstudymoduleattr_id_seq RESTART WITH 3"))
    engine.dispose()
    openrem.delete_study(2)
    with pytest.raises(SourceError, match="below ctpoller's watermark 3") as caught:
        harness.cycle(after=timedelta(seconds=1))
    assert not caught.value.temporary


def test_first_run_starts_before_an_import_still_being_written(harness, openrem, inbox):
    openrem.import_study(GE_OPTIMA)
    steps = openrem.import_steps(GE_VCT)
    for label in steps:
        if "remapp_ctirradiationeventdata" in label:
            break
    first = harness.cycle()
    assert first.initialised and first.watermark_after == 1
    for _ in steps:
        pass
    report = seen_then_settled(harness)
    assert [m.study_uid for m in report.messages] == [GE_VCT.uid]


def test_small_batches_page_and_evaluate_in_chunks_with_the_same_outcome(harness, openrem, inbox):
    harness.rules_text = RULES + '\n[[rule]]\nname = "Thorax total"\nstudy = ["thorax"]\ndlp_total = 100\n'
    harness.timing = dataclasses.replace(harness.timing, batch_size=2)
    started(harness)
    for study in SEED_STUDIES:
        openrem.import_study(study)
    report = seen_then_settled(harness)
    assert report.exams_evaluated == len({s.uid for s in SEED_STUDIES})
    found = {(n.study_uid, n.rule, n.value) for m in report.messages for n in m.notifications}
    assert (CONTINUED_1.uid, "Thorax total", Decimal("116.61")) in found  # both rows of the exam together
    assert (GE_VCT.uid, "Exam DLP", Decimal("2002.39")) in found
    assert report.watermark_after == len(SEED_STUDIES)
