"""[[trend]] and [[cumulative]] on OpenREM's real rows (tests/data/openrem), with more exams of the real
GE rt16 head scanner imported the way OpenREM's importers write them, through real poll cycles,
backfills, a real SMTP server and real workbooks."""

from __future__ import annotations

import contextlib
import dataclasses
import re
import sqlite3
import zipfile
from collections.abc import Iterator
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from ctpoller import wiring
from ctpoller.demo.exams import GE_PIXELMED, as_another_exam
from ctpoller.demo.openrem import OpenremImporter
from ctpoller.demo.seeds import SeedStudy
from ctpoller.errors import ConfigError
from ctpoller.jobs.check import run_checks
from ctpoller.openrem.patients import patient_id_coverage
from ctpoller.openrem.source import OpenremSource
from ctpoller.settings import Settings
from ctpoller.store import windows as windows_module
from ctpoller.store.store import StateStore
from support import pg
from support.cycle import SETTLE, T0, Harness

pytestmark = [pytest.mark.postgres, pytest.mark.smtp]

RT16 = "OpenREM centre médical rt16"
REAL_RT16 = "1.2.840.113619.2.55.3.2831209208.960.1363108704.865"  # pk 8: 222.59 mGy, head phantom
TOSHIBA_DOSE_CHECK = "1.3.6.1.4.1.5962.99.1.4226553877.745998417.1511760107541.3.0"  # pk 14
ROLE_SQL = Path(__file__).parents[2] / "sql" / "readonly_role.sql"

TREND = """
[defaults]
recipients = ["physics@hospital.example"]

[[trend]]
name = "Head CT group criterion"
phantom = "head"
metric = "ctdivol"
drl = 65
reference = "BfS DRW 2022"
exams = 3
above = 2
armed_above = 3
severity = "alert"
"""

CUMULATIVE = """
[defaults]
recipients = ["physics@hospital.example"]

[[cumulative]]
name = "Patient CT, 12 months"
days = 365
exams = 1
dlp_total = 735
"""


@pytest.fixture
def real_openrem(pg_server):
    schema, data = pg.OPENREM_DATA / "schema_ct.sql", pg.OPENREM_DATA / "data_ct_testfiles.sql"
    with pg.throwaway_database(pg_server, "ctp_watch_") as url:
        pg.run_sql_file(url, schema)
        pg.run_sql_file(url, data)
        yield url


@contextlib.contextmanager
def importer(url: str) -> Iterator[OpenremImporter]:
    """OpenREM's importer writing into the real rows' database. A re-send deletes the old study's person
    rows: OpenREM's person table (not among the 20 tables of the dump) is made, empty, where missing."""
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE IF NOT EXISTS remapp_personparticipant (id serial PRIMARY KEY, person_name text, "
            "ct_dose_check_details_alert_id integer, ct_dose_check_details_notification_id integer)"
        )
    try:
        yield OpenremImporter(engine)
    finally:
        engine.dispose()


def rt16_exam(n: int, ctdivol: str, days: int) -> SeedStudy:
    """Another head exam on the real rt16 scanner, ``days`` after the real one, every event at ``ctdivol``."""
    study = as_another_exam(GE_PIXELMED, f"1.2.826.0.1.3680043.10.1234.900.{n}")
    events = tuple(dataclasses.replace(e, ctdivol=Decimal(ctdivol)) for e in study.events)
    return dataclasses.replace(study, study_date=date(2013, 3, 13) + timedelta(days=days), events=events)


#: After the real exam (222.59 mGy: arms, > 3 × 65): B starts an episode (mean 140.9 > 130), C ends it
#: (mean 83.3; the real exam leaves the window), E starts a new one (mean 133.3, armed by E itself).
RT16_EXAMS = [rt16_exam(1, "100", 1), rt16_exam(2, "100", 2), rt16_exam(3, "50", 3)]
RT16_EXAMS += [rt16_exam(4, "100", 4), rt16_exam(5, "250", 5)]
B, E = RT16_EXAMS[1].uid, RT16_EXAMS[4].uid


def found(report) -> set[tuple[str, str, str, Decimal]]:
    return {(m.study_uid, n.rule, n.metric, n.value) for m in report.messages for n in m.notifications}


EXPECTED_TREND = {
    (B, "Head CT group criterion", "trend_ctdivol", Decimal("140.86")),
    (E, "Head CT group criterion", "trend_ctdivol", Decimal("133.33")),
}


def state_db(tmp_path: Path, name: str = "s") -> str:
    return f"sqlite:///{tmp_path / f'{name}.sqlite3'}"


def started_at_zero(url: str) -> None:
    """A state store as if ctpoller had been running before OpenREM imported anything."""
    state = StateStore(url)
    state.ensure_schema()
    state.initialise(0, T0)
    state.dispose()


def window_rows(url: str) -> list[tuple[str, str, str, str | None]]:
    with contextlib.closing(sqlite3.connect(make_url(url).database)) as conn:
        return conn.execute("SELECT watch, grp, study_uid, value FROM ctp_window_exam ORDER BY order_key").fetchall()


def cycles(harness: Harness):
    harness.cycle(after=timedelta(seconds=1))
    return harness.cycle(after=SETTLE + timedelta(seconds=1))


def test_poll_cycles_notify_each_trend_episode_once_and_backfill_and_its_dry_run_find_the_same(
    real_openrem, tmp_path, inbox
):
    with importer(real_openrem) as openrem:
        for study in RT16_EXAMS:
            openrem.import_study(study)
    url = state_db(tmp_path, "run")
    started_at_zero(url)
    run = Harness(real_openrem, url, TREND, inbox.port, tmp_path)
    report = cycles(run)
    assert found(report) == EXPECTED_TREND
    [first] = [n for m in report.messages for n in m.notifications if n.study_uid == B]
    assert (first.severity, first.reference, first.reference_value, first.multiple, first.limit) == (
        "alert",
        "BfS DRW 2022",
        Decimal(65),
        Decimal(2),
        Decimal(130),
    )
    assert first.detail == (
        f"mean of the last 3 exams on {RT16}: 140.86 mGy (2.17 × 65 mGy BfS DRW 2022); "
        "armed by the exam of 2013-03-13 08:58 at 222.59 mGy (3.42 ×)"  # by its date, never an identifier
    )
    assert len(inbox.messages) == 2 and all(m["Subject"] for m in inbox.messages)
    assert cycles(run).messages == []  # nothing new: nothing told again
    assert len(window_rows(url)) == 4  # the rt16 window, and the real VCT exam's (head phantom) on its own
    rt16 = [row for row in window_rows(url) if row[1] == RT16]
    assert [uid for _, _, uid, _ in rt16] == [study.uid for study in RT16_EXAMS[2:]]

    backfilled = Harness(real_openrem, state_db(tmp_path, "backfill"), TREND, inbox.port, tmp_path / "b")
    (tmp_path / "b").mkdir()
    dry = backfilled.backfill(since=None, email=False, dry_run=True)
    assert found(dry) == EXPECTED_TREND
    assert not Path(make_url(backfilled.state_url).database).exists() or window_rows(backfilled.state_url) == []
    assert found(backfilled.backfill(since=None, email=False)) == EXPECTED_TREND
    assert window_rows(backfilled.state_url) == window_rows(url)


def test_a_resent_exam_replaces_its_own_value_and_a_new_episode_is_notified_again(real_openrem, tmp_path, inbox):
    url = state_db(tmp_path)
    started_at_zero(url)
    harness = Harness(real_openrem, url, TREND, inbox.port, tmp_path)
    with importer(real_openrem) as openrem:
        pks = [openrem.import_study(study) for study in RT16_EXAMS]
        assert found(cycles(harness)) == EXPECTED_TREND
        d = RT16_EXAMS[3]
        pk = openrem.resend_cumulative(pks[3], rt16_exam(4, "10", 4))  # D re-sent (same UID) at 10 mGy
        assert cycles(harness).messages == []  # mean (50 + 10 + 250) / 3 = 103.3: the episode ends
        rt16 = [row for row in window_rows(url) if row[1] == RT16]
        assert [(uid, Decimal(value or "NaN")) for _, _, uid, value in rt16] == [
            (RT16_EXAMS[2].uid, 50),
            (d.uid, 10),
            (E, 250),
        ]  # replaced, never counted twice
        pk = openrem.resend_cumulative(pk, rt16_exam(4, "250", 4))  # and back: a new episode, started by D
        assert found(cycles(harness)) == {(d.uid, "Head CT group criterion", "trend_ctdivol", Decimal("183.33"))}
        pk = openrem.resend_cumulative(pk, rt16_exam(4, "10", 4))  # ends again
        assert cycles(harness).messages == []
        openrem.resend_cumulative(pk, rt16_exam(4, "200", 4))  # a third episode, by D again, at a lower mean
        report = cycles(harness)
    assert found(report) == {(d.uid, "Head CT group criterion", "trend_ctdivol", Decimal("166.67"))}
    [again] = report.messages[0].notifications
    assert again.previous_value is None  # a new episode, not a rise
    assert len(inbox.messages) == 4


def test_a_crash_while_recording_a_cycle_applies_no_window_and_the_next_cycle_counts_each_exam_once(
    real_openrem, tmp_path, inbox, monkeypatch
):
    url = state_db(tmp_path)
    started_at_zero(url)
    harness = Harness(real_openrem, url, TREND, inbox.port, tmp_path)
    with importer(real_openrem) as openrem:
        for study in RT16_EXAMS:
            openrem.import_study(study)
    harness.cycle(after=timedelta(seconds=1))
    write_windows = windows_module.Windows._write_windows

    def power_cut(self, conn, write):  # the windows are written, then the process dies mid-transaction
        write_windows(self, conn, write)
        raise KeyboardInterrupt("power cut")

    monkeypatch.setattr(windows_module.Windows, "_write_windows", power_cut)
    with pytest.raises(KeyboardInterrupt):
        harness.cycle(after=SETTLE + timedelta(seconds=1))
    assert window_rows(url) == [] and inbox.messages == []
    monkeypatch.setattr(windows_module.Windows, "_write_windows", write_windows)
    report = harness.cycle(after=timedelta(seconds=1))
    assert found(report) == EXPECTED_TREND and len(inbox.messages) == 2
    assert len([row for row in window_rows(url) if row[1] == RT16]) == 3
    assert cycles(harness).messages == []


VCT = "1.3.6.1.4.1.5962.99.1.2026073515.1319176460.1479494856107.15.0"  # pk 7: 2002.39 mGy·cm on its own
EXPECTED_CUMULATIVE = {  # pk 5 (2018-01-05) and pk 14 (2017-11-15): one patient ID, 51 days apart
    (TOSHIBA_DOSE_CHECK, "Patient CT, 12 months", "cumulative_exams", Decimal(2)),
    (TOSHIBA_DOSE_CHECK, "Patient CT, 12 months", "cumulative_dlp_total", Decimal("738.49")),
    (VCT, "Patient CT, 12 months", "cumulative_dlp_total", Decimal("2002.39")),
}
#: Besides, two more exams over 735 mGy·cm on their own (pks 10 and 16); the continued exam (pks 1
#: and 2, one patient ID) counts once: 116.61 mGy·cm, one exam.
OTHER_TOTALS = {Decimal("1590"), Decimal("1102.45")}


def cumulative_found(report) -> set[tuple[str, str, str, Decimal]]:
    """What ``found`` has of the exams named above; the values of the rest must be ``OTHER_TOTALS``."""
    everything = found(report)
    named = {x for x in everything if x[0] in (TOSHIBA_DOSE_CHECK, VCT)}
    assert {value for _, _, metric, value in everything - named} == OTHER_TOTALS
    return named


def identifiers_of_patients(data: str) -> set[str]:
    """Every patient name, ID and birth date in the real rows (remapp_patientmoduleattr)."""
    found: set[str] = set()
    for line in data.splitlines():
        if line.startswith("INSERT INTO public.remapp_patientmoduleattr "):
            values = line.split(" VALUES (", 1)[1].split(", ")
            found.update(v.strip("'") for v in (values[1], values[3], values[5]) if v != "NULL")
    return found


def test_a_patients_exams_are_grouped_by_a_keyed_hash_and_no_patient_id_is_mailed_logged_stored_or_archived(
    real_openrem, tmp_path, inbox, caplog
):
    caplog.set_level("DEBUG", logger="ctpoller")
    url = state_db(tmp_path, "run")
    started_at_zero(url)
    run = Harness(real_openrem, url, CUMULATIVE, inbox.port, tmp_path)
    report = cycles(run)
    assert cumulative_found(report) == EXPECTED_CUMULATIVE
    [exams] = [n for m in report.messages for n in m.notifications if n.metric == "cumulative_exams"]
    assert exams.detail == "this patient's 2nd CT exam within 365 days (total DLP 738.49 mGy·cm over 2 exams)"
    backfilled = Harness(real_openrem, state_db(tmp_path, "backfill"), CUMULATIVE, inbox.port, tmp_path)
    assert cumulative_found(backfilled.backfill(since=None, email=False, dry_run=True)) == EXPECTED_CUMULATIVE
    dry = StateStore(backfilled.state_url)
    try:  # a dry run makes no patient key either
        assert dry.patient_secret(create=False) is None and window_rows(backfilled.state_url) == []
    finally:
        dry.dispose()
    assert cumulative_found(backfilled.backfill(since=None, email=False)) == EXPECTED_CUMULATIVE

    secrets = identifiers_of_patients((pg.OPENREM_DATA / "data_ct_testfiles.sql").read_text(encoding="utf-8"))
    assert {"4018119567876617", "phy12345", "CTSIM1_120619"} <= secrets
    texts = {"log": caplog.text}
    for n, received in enumerate(inbox.messages):
        texts[f"email {n}"] = received.as_string() + received.get_body(("plain",)).get_content()
    for path in tmp_path.rglob("*"):
        if path.suffix == ".xlsx":
            with zipfile.ZipFile(path) as workbook:
                texts[str(path)] = "".join(workbook.read(name).decode("utf-8") for name in workbook.namelist())
        elif path.is_file():
            texts[str(path)] = path.read_bytes().decode("latin-1")
    assert any(name.endswith(".xlsx") for name in texts) and any("sqlite3" in name for name in texts)
    for where, text in texts.items():
        for secret in secrets:  # as a whole token: a short ID such as 123456 may be part of a UID or hash
            assert not re.search(rf"(?<![\w.^-]){re.escape(secret)}(?![\w.^-])", text), (where, secret)
    # Kept: the exams within 365 days of the newest folded (pk 17, 2022-02-24), under a keyed hash; the
    # older ones expired with the cycle's commit.
    [(_, key, uid, dlp)] = window_rows(url)
    assert (
        re.fullmatch(r"[0-9a-f]{64}", key)
        and dlp == "667.72000000"
        and uid == "1.2.840.113619.6.95.31.0.3.4.1.4400.13.8620675"
    )


def test_check_can_tell_how_many_recent_ct_studies_have_a_patient_id(real_openrem):
    source = OpenremSource(real_openrem)
    try:
        with source.reading() as reads:
            assert patient_id_coverage(reads) == (15, 15)  # the two continued rows: one exam, two rows
            assert patient_id_coverage(reads, last=3) == (3, 3)
    finally:
        source.dispose()
    engine = sa.create_engine(real_openrem)
    try:
        with engine.begin() as conn:  # OpenREM's default: no patient ID stored
            conn.exec_driver_sql("UPDATE remapp_patientmoduleattr SET patient_id = NULL WHERE id > 5")
    finally:
        engine.dispose()
    source = OpenremSource(real_openrem)
    try:
        with source.reading() as reads:
            assert patient_id_coverage(reads) == (3, 15)  # pks 1, 2 and 5 keep theirs
    finally:
        source.dispose()


def checked(source_url: str, tmp_path: Path, rules_text: str) -> list[tuple[bool, str]]:
    """``ctpoller check``'s lines about OpenREM's patient IDs."""
    rules_file = tmp_path / "rules.toml"
    rules_file.write_text(rules_text, encoding="utf-8")
    settings = Settings(_env_file=None, source_url=source_url, rules_file=rules_file)
    return [
        (ok, line) for ok, line, _ in run_checks(wiring.Parts(settings)) if "patient ID" in line or "patient_id" in line
    ]


def test_check_says_whether_a_cumulative_rule_can_group_anything(real_openrem, tmp_path):
    assert checked(real_openrem, tmp_path, TREND) == []  # without a [[cumulative]] it is never asked
    [(ok, line)] = checked(real_openrem, tmp_path, CUMULATIVE)
    assert ok and line.startswith("15 of the last 15 CT studies in OpenREM ") and "never shown" in line
    engine = sa.create_engine(real_openrem)
    try:
        with engine.begin() as conn:  # OpenREM's default: no patient ID stored
            conn.exec_driver_sql("UPDATE remapp_patientmoduleattr SET patient_id = NULL")
    finally:
        engine.dispose()
    [(ok, line)] = checked(real_openrem, tmp_path, CUMULATIVE)
    assert not ok and line.startswith("0 of the last 15 CT studies") and "find nothing" in line


def test_a_role_that_may_not_read_patient_ids_stops_a_cumulative_rule_with_one_line(real_openrem, tmp_path, inbox):
    admin = pg.libpq_url(real_openrem)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(ROLE_SQL.read_text(encoding="utf-8"))
    reader = make_url(real_openrem).set(username="ctpoller_reader").render_as_string(hide_password=False)
    try:
        url = state_db(tmp_path)
        started_at_zero(url)
        harness = Harness(reader, url, CUMULATIVE, inbox.port, tmp_path)
        with pytest.raises(ConfigError) as refused:
            harness.cycle()
        assert "may not SELECT remapp_patientmoduleattr.patient_id" in str(refused.value)
        assert "[[cumulative]]" in str(refused.value) and "\n" not in str(refused.value)
        with pytest.raises(ConfigError):
            harness.backfill(since=None, email=False, dry_run=True)
        [(ok, line)] = checked(reader, tmp_path, CUMULATIVE)
        assert not ok and "may not SELECT remapp_patientmoduleattr.patient_id" in line
        harness.rules_text = TREND  # without a [[cumulative]] the patient ID is never read
        cycles(harness)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute("DROP OWNED BY ctpoller_reader")
            conn.execute("DROP ROLE ctpoller_reader")
