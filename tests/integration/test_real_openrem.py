"""ctpoller against the rows OpenREM's own importers wrote for its CT test files (tests/data/openrem)."""

from __future__ import annotations

import re
from datetime import date, time, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa

from ctpoller.core.exam import AgeRange, Exam
from ctpoller.jobs import backfill as backfill_job
from ctpoller.openrem.source import OpenremSource
from ctpoller.store.store import StateStore
from support import pg
from support.cycle import SETTLE, T0, Harness

pytestmark = [pytest.mark.postgres, pytest.mark.smtp]

EXAMPLE_RULES = Path(__file__).parents[2] / "examples" / "rules.toml"

VCT = "1.3.6.1.4.1.5962.99.1.2026073515.1319176460.1479494856107.15.0"
PIXELMED = "1.2.840.113619.2.55.3.2831209208.960.1363108704.865"
TOSHIBA_DOSE_CHECK = "1.3.6.1.4.1.5962.99.1.4226553877.745998417.1511760107541.3.0"
CONTINUED = "1.3.6.1.4.1.5962.99.1.64928122.996247427.1524778350970.5.0"


@pytest.fixture
def real_openrem(pg_server):
    schema, data = pg.OPENREM_DATA / "schema_ct.sql", pg.OPENREM_DATA / "data_ct_testfiles.sql"
    with pg.throwaway_database(pg_server, "ctp_real_") as url:
        pg.run_sql_file(url, schema)
        pg.run_sql_file(url, data)
        yield url


def read_all(url: str) -> dict[int, object]:
    source = OpenremSource(url)
    try:
        source.connect()
        with source.reading() as reads:
            return dict(reads.study_rows(list(range(1, 20))))
    finally:
        source.dispose()


def test_real_rows_are_read_as_openrem_wrote_them(real_openrem):
    rows = read_all(real_openrem)
    assert sorted(rows) == [1, 2, *range(5, 18)]  # pks 3 and 4 were deleted by cumulative re-sends
    assert sum(len(r.events) for r in rows.values()) == 75
    assert all(e.protocol is None for e in rows[7].events)  # GE ESR: no protocol at all
    assert [e.ctdivol_mgy for e in rows[7].events[:4]] == [None] * 4  # localisers
    assert rows[16].events[0].ctdivol_mgy == Decimal(0)  # the Philips SC surview, stored as 0E-8
    assert max(e.ctdivol_mgy for e in rows[8].events) == Decimal("222.59")
    assert {e.phantom for e in rows[8].events} == {"head"}
    assert rows[16].events[1].phantom is None  # Philips SC: CTDIvol without a phantom
    assert Exam(uid=rows[17].uid, rows=(rows[17],)).age == AgeRange(
        Decimal(63), Decimal(64), high_open=True
    )  # -7976.7 is ignored
    assert Exam(uid=rows[9].uid, rows=(rows[9],)).age is None
    continued = Exam(uid=rows[1].uid, rows=(rows[1], rows[2]))
    assert rows[1].uid == rows[2].uid and len(continued.events) == 4
    assert continued.total_dlp_mgycm == Decimal("116.61")
    [toshiba] = [r for r in rows.values() if r.uid == TOSHIBA_DOSE_CHECK]
    assert [c.accumulated_dlp_forward_estimate_mgycm for e in toshiba.events for c in e.dose_checks] == [
        Decimal("251.2"),
        Decimal("502.4"),
    ]
    assert rows[11].events[0].protocol == "testÃ¦Ã¸Ã¥"


def found(report) -> set[tuple[str, str, str, Decimal]]:
    return {(m.study_uid, n.rule, n.metric, n.value) for m in report.messages for n in m.notifications}


EXPECTED_WITH_EXAMPLE_RULES = {
    (VCT, "Adult torso (chest, abdomen-pelvis)", "ctdivol", Decimal("176.12")),
    (PIXELMED, "Adult head", "ctdivol", Decimal("222.59")),
    (TOSHIBA_DOSE_CHECK, "Scanner Dose Check", "dose_check_ctdivol_alert", Decimal("10.6")),
    (TOSHIBA_DOSE_CHECK, "Scanner Dose Check", "dose_check_dlp_alert", Decimal("251.2")),
    (TOSHIBA_DOSE_CHECK, "Scanner Dose Check", "dose_check_dlp_alert", Decimal("502.4")),
}


def test_backfill_of_real_rows_with_the_example_rules(real_openrem, tmp_path, inbox):
    harness = Harness(
        real_openrem, f"sqlite:///{tmp_path / 's.sqlite3'}", EXAMPLE_RULES.read_text(), inbox.port, tmp_path
    )
    report = harness.backfill(since=None, email=False)
    assert found(report) == EXPECTED_WITH_EXAMPLE_RULES
    assert report.exams_evaluated == 14  # 15 rows, the two continued rows are one exam
    assert inbox.messages == []


def test_poll_cycles_over_real_rows_find_the_same_and_send_each_once(real_openrem, tmp_path, inbox):
    state_url = f"sqlite:///{tmp_path / 's.sqlite3'}"
    state = StateStore(state_url)
    state.ensure_schema()
    state.initialise(0, T0)  # as if ctpoller had been running before OpenREM imported anything
    state.dispose()
    harness = Harness(real_openrem, state_url, EXAMPLE_RULES.read_text(), inbox.port, tmp_path)
    harness.cycle(after=timedelta(seconds=1))
    report = harness.cycle(after=SETTLE + timedelta(seconds=1))
    assert found(report) == EXPECTED_WITH_EXAMPLE_RULES
    assert report.watermark_after == 17
    assert len(inbox.messages) == 3
    assert harness.cycle(after=timedelta(minutes=5)).sent == 0


def test_total_dlp_of_the_real_continued_exam_counts_both_reports(real_openrem, tmp_path, inbox):
    rules = '[[rule]]\nname = "Thorax total"\nstudy = ["thorax"]\ndlp_total = 100\nrecipients = ["p@h.example"]\n'
    harness = Harness(real_openrem, f"sqlite:///{tmp_path / 's.sqlite3'}", rules, inbox.port, tmp_path)
    report = harness.backfill(since=None, email=False)
    values = {uid: value for uid, _, _, value in found(report)}
    assert values[CONTINUED] == Decimal("116.61")


def test_a_dry_run_backfill_counts_both_reports_of_a_continued_exam_read_in_different_chunks(
    real_openrem, tmp_path, inbox, monkeypatch
):
    monkeypatch.setattr(backfill_job, "BACKFILL_CHUNK", 1)  # the continued exam's two rows in two chunks
    rules = '[[rule]]\nname = "Thorax total"\nstudy = ["thorax"]\ndlp_total = 100\nrecipients = ["p@h.example"]\n'
    harness = Harness(real_openrem, f"sqlite:///{tmp_path / 's.sqlite3'}", rules, inbox.port, tmp_path)
    dry = harness.backfill(since=None, email=False, dry_run=True)
    assert {uid: value for uid, _, _, value in found(dry)}.get(CONTINUED) == Decimal("116.61")
    assert not harness.workbook.exists() and not harness.archive_path.exists()
    assert found(dry) == found(harness.backfill(since=None, email=False))


def test_study_dates_are_read_whatever_date_style_the_openrem_server_uses(real_openrem, tmp_path, inbox):
    engine = sa.create_engine(real_openrem, poolclass=sa.pool.NullPool)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(f"ALTER DATABASE \"{sa.make_url(real_openrem).database}\" SET datestyle = 'SQL, DMY'")
        with engine.connect() as conn:  # a new session: dates come out as 13/03/2013
            assert conn.exec_driver_sql("SHOW datestyle").scalar_one() == "SQL, DMY"
    finally:
        engine.dispose()
    rows = read_all(real_openrem)
    assert (rows[8].study_date, rows[8].study_time) == (date(2013, 3, 13), time(8, 58, 44))
    assert all(row.study_date is not None and row.study_time is not None for row in rows.values())
    harness = Harness(
        real_openrem, f"sqlite:///{tmp_path / 's.sqlite3'}", EXAMPLE_RULES.read_text(), inbox.port, tmp_path
    )
    report = harness.backfill(since=date(2013, 3, 1), email=False)  # the VCT exam is of 2013-02-28
    assert found(report) == {x for x in EXPECTED_WITH_EXAMPLE_RULES if x[0] != VCT}
    assert {(m.study_uid, n.study_date) for m in report.messages for n in m.notifications} == {
        (PIXELMED, date(2013, 3, 13)),
        (TOSHIBA_DOSE_CHECK, date(2017, 11, 15)),
    }


def identifiers_of_patients(data: str) -> set[str]:
    """Every patient name, ID and birth date in the real rows (remapp_patientmoduleattr)."""
    found: set[str] = set()
    for line in data.splitlines():
        if line.startswith("INSERT INTO public.remapp_patientmoduleattr "):
            values = line.split(" VALUES (", 1)[1].split(", ")
            name, patient_id, birth = values[1], values[3], values[5]
            found.update(v.strip("'") for v in (name, patient_id, birth) if v != "NULL")
    return found


def test_emails_of_real_rows_show_the_exam_and_never_a_patients_name_id_or_birth_date(real_openrem, tmp_path, inbox):
    harness = Harness(
        real_openrem,
        f"sqlite:///{tmp_path / 's.sqlite3'}",
        EXAMPLE_RULES.read_text(),
        inbox.port,
        tmp_path,
        settings_changes={"openrem_url": "https://openrem.hospital.example/", "timezone": "Europe/London"},
    )
    report = harness.backfill(since=None)
    assert len(inbox.messages) == len(report.messages) == 3
    secrets = identifiers_of_patients((pg.OPENREM_DATA / "data_ct_testfiles.sql").read_text(encoding="utf-8"))
    assert "OpenREM^ContinuedStudy" in secrets and "phy12345" in secrets and "1918-04-27" in secrets
    by_uid: dict[str, str] = {}
    for received in inbox.messages:  # parsed by email.message_from_bytes with policy.default
        text = received.get_body(("plain",)).get_content()
        rich = received.get_body(("html",)).get_content()
        whole = "\n".join([*(f"{k}: {v}" for k, v in received.items()), text, rich])
        for secret in secrets:  # as a whole token: a short ID such as 123456 may be part of an accession number
            assert not re.search(rf"(?<![\w.^-]){re.escape(secret)}(?![\w.^-])", whole), secret
        by_uid[next(n.study_uid for m in report.messages for n in m.notifications if n.study_uid in text)] = text
    pixelmed = by_uid[PIXELMED]  # pk 8: a female patient, age string 099Y
    assert "Sex: female" in pixelmed
    assert "https://openrem.hospital.example/openrem/ct/8/" in pixelmed
    assert "Adult head: CTDIvol (event) 222.59 mGy" in pixelmed
    assert "phantom 16 cm (head)" in pixelmed
    assert "Study date: 2013-03-13 08:58:44 (scanner's local time)" in pixelmed
    assert "Age: " in pixelmed and "Age: —" not in pixelmed
    toshiba = by_uid[TOSHIBA_DOSE_CHECK]
    assert "Scanner Dose Check: accumulated DLP over the scanner's Dose Check alert value 502.4 mGy·cm" in toshiba
