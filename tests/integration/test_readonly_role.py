"""sql/readonly_role.sql: ctpoller works through it, and it can do nothing else."""

from __future__ import annotations

import logging
from datetime import date
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from ctpoller import wiring
from ctpoller.demo.exams import GE_VCT, TOSHIBA_DOSECHECK
from ctpoller.demo.openrem import OpenremImporter
from ctpoller.errors import SourceError
from ctpoller.jobs.check import run_checks
from ctpoller.openrem.tables import CRITERIA, OPTIONAL, REQUIRED, SHOWN, SHOWN_TABLES
from ctpoller.settings import Settings
from ctpoller.store.store import StateStore
from support import pg
from support.cycle import Harness
from support.smtp import Recorder, start_server

pytestmark = [pytest.mark.postgres]

ROLE_SQL = Path(__file__).parents[2] / "sql" / "readonly_role.sql"
ROLE = "ctpoller_reader"


@pytest.fixture
def reader_url(openrem_db):
    admin = pg.libpq_url(openrem_db)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(ROLE_SQL.read_text(encoding="utf-8"))
        conn.execute(ROLE_SQL.read_text(encoding="utf-8"))  # running it again is harmless
    yield make_url(openrem_db).set(username=ROLE).render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"DROP OWNED BY {ROLE}")
        conn.execute(f"DROP ROLE {ROLE}")


def as_reader(url: str, statement: str) -> None:
    with psycopg.connect(pg.libpq_url(url), autocommit=True) as conn:
        conn.execute(statement)


def test_the_role_file_grants_exactly_the_columns_ctpoller_reads():
    text = ROLE_SQL.read_text(encoding="utf-8")
    for table, columns in {**REQUIRED, **OPTIONAL, **SHOWN_TABLES}.items():
        granted = (*columns, *SHOWN.get(table, ()), *CRITERIA.get(table, ()))  # and those emails, criteria use
        assert f"GRANT SELECT ({', '.join(granted)}) ON {table} TO {ROLE};" in text
    granting = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("--"))
    assert granting.count("GRANT SELECT (") == len(REQUIRED) + len(OPTIONAL) + len(SHOWN_TABLES)
    # the patient ID only for [[cumulative]] rules: a commented-out line a site may switch on
    assert f"-- GRANT SELECT (patient_id) ON remapp_patientmoduleattr TO {ROLE};" in text
    assert text.count("GRANT SELECT ON SEQUENCE") == 1  # the study pk sequence, to tell a restore


def test_ctpoller_works_through_the_read_only_role(openrem_db, reader_url, tmp_path):
    engine = sa.create_engine(openrem_db)
    for study in (GE_VCT, TOSHIBA_DOSECHECK):
        OpenremImporter(engine).import_study(study)
    engine.dispose()
    inbox = Recorder()
    server = start_server(inbox)
    port = server.port
    try:
        rules = (
            '[dose_check]\nnotify = true\n[defaults]\nrecipients = ["p@h.example"]\n'
            '[[rule]]\nname = "Body"\nphantom = "body"\nctdivol = 50\n'
        )
        harness = Harness(reader_url, f"sqlite:///{tmp_path / 's.sqlite3'}", rules, port, tmp_path)
        report = harness.backfill(since=date(2000, 1, 1))
        assert {m.study_uid for m in report.messages} == {GE_VCT.uid, TOSHIBA_DOSECHECK.uid}
        assert len(inbox.messages) == 2
        [dose_check] = [m for m in report.messages if m.study_uid == TOSHIBA_DOSECHECK.uid]
        assert {n.authorised_by for n in dose_check.notifications} == {"Radiographer on duty"}
        [sent] = [d.content for d in inbox.delivered if b"ToshibaDoseChk" in d.content]
        assert b"Proceeding authorised by Radiographer on duty: no reason recorded" in sent
    finally:
        server.stop()


@pytest.mark.parametrize(
    "statement",
    [
        "INSERT INTO remapp_contextid (code_value, cid_table) VALUES ('x', '')",
        "UPDATE remapp_generalstudymoduleattr SET total_dlp = 0",
        "DELETE FROM remapp_ctirradiationeventdata",
        "SET default_transaction_read_only = off; "
        "INSERT INTO remapp_contextid (code_value, cid_table) VALUES ('x', '')",
        "SELECT patient_name FROM remapp_patientmoduleattr",
        "SELECT patient_id FROM remapp_patientmoduleattr",
        "SELECT patient_birth_date FROM remapp_patientmoduleattr",
        "SELECT * FROM remapp_objectuidsprocessed",
        "SELECT * FROM remapp_generalstudymoduleattr",
        "CREATE TABLE ctpoller_was_here (id integer)",
    ],
)
def test_the_role_can_neither_write_nor_read_anything_else(reader_url, statement):
    with pytest.raises(psycopg.Error) as caught:
        as_reader(reader_url, statement)
    assert caught.value.sqlstate in ("42501", "25006"), caught.value  # insufficient privilege, read-only


def test_the_role_may_read_the_study_sequence_so_a_restore_is_told_from_deletions(reader_url):
    from ctpoller.openrem.source import OpenremSource

    source = OpenremSource(reader_url)
    try:
        source.connect()
        assert source.study_sequence is not None
    finally:
        source.dispose()


def test_a_role_that_may_not_read_the_study_sequence_runs_with_a_warning_of_what_it_costs(
    openrem_db, reader_url, caplog
):
    """Only a genuine "not offered" answer (here: permission denied on the sequence) turns a guard off."""
    from ctpoller.openrem.source import OpenremSource

    with psycopg.connect(pg.libpq_url(openrem_db), autocommit=True) as admin:
        admin.execute(f"REVOKE SELECT ON SEQUENCE remapp_generalstudymoduleattr_id_seq FROM {ROLE}")
    source = OpenremSource(reader_url)
    try:
        with caplog.at_level(logging.WARNING, logger="ctpoller.openrem.source"):
            source.connect()
        assert source.study_sequence is None
        assert source.supports_snapshot  # the other guard stays on
        warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
        assert len(warnings) == 1, warnings
        assert "may not read the sequence" in warnings[0] and "restored OpenREM" in warnings[0]
    finally:
        source.dispose()


def test_when_the_history_reader_fails_backfill_stops_and_records_nothing(openrem_db, reader_url, tmp_path):
    """The history is read on its own connection in a background thread: its failure is the run's."""
    engine = sa.create_engine(openrem_db)
    for study in (GE_VCT, TOSHIBA_DOSECHECK):
        OpenremImporter(engine).import_study(study)
    engine.dispose()
    as_admin = pg.libpq_url(openrem_db)
    with psycopg.connect(as_admin, autocommit=True) as conn:  # a column only the history query reads first
        conn.execute(f"REVOKE SELECT (display_name) ON remapp_uniqueequipmentnames FROM {ROLE}")
    rules = '[defaults]\nrecipients = ["p@h.example"]\n[[rule]]\nname = "Body"\nphantom = "body"\nctdivol = 50\n'
    harness = Harness(reader_url, f"sqlite:///{tmp_path / 's.sqlite3'}", rules, 9, tmp_path)

    with pytest.raises(SourceError, match="permission denied while reading history") as failed:
        harness.backfill(since=date(2000, 1, 1), email=False)
    assert failed.value.temporary is False
    state = StateStore(f"sqlite:///{tmp_path / 's.sqlite3'}")
    assert state.outbox_counts() == {}
    remembered = state.tracked([1, 2])  # by the first watermark, set before history is read
    assert {t.status for t in remembered.values()} == {"history"}, "a row was decided"

    with psycopg.connect(as_admin, autocommit=True) as conn:
        conn.execute(f"GRANT SELECT (display_name) ON remapp_uniqueequipmentnames TO {ROLE}")
    assert [m.study_uid for m in harness.backfill(since=date(2000, 1, 1), email=False).messages] == [GE_VCT.uid]
    assert harness.backfill(since=date(2000, 1, 1), email=False).messages == []
    assert state.outbox_counts() == {"not_sent": 1}
    state.dispose()


def test_a_role_granted_before_the_emails_showed_sex_and_reasons_keeps_working(
    openrem_db, reader_url, tmp_path, caplog
):
    with psycopg.connect(pg.libpq_url(openrem_db), autocommit=True) as conn:  # the grants of an older role file
        conn.execute(f"REVOKE SELECT (patient_sex) ON remapp_patientmoduleattr FROM {ROLE}")
        conn.execute(
            "REVOKE SELECT (alert_reason_for_proceeding, notification_reason_for_proceeding) "
            f"ON remapp_ctdosecheckdetails FROM {ROLE}"
        )
    engine = sa.create_engine(openrem_db)
    OpenremImporter(engine).import_study(GE_VCT)
    engine.dispose()
    from ctpoller.openrem.source import OpenremSource

    source = OpenremSource(reader_url)
    try:
        with caplog.at_level(logging.WARNING, logger="ctpoller.openrem.source"):
            source.connect()
        assert "remapp_patientmoduleattr.patient_sex" in caplog.text and "readonly_role.sql" in caplog.text
        with source.reading() as reads:
            [row] = reads.study_rows([1]).values()
        assert row.patient_sex is None and row.events  # read, with the sex not recorded
        settings = Settings(_env_file=None, source_url=reader_url)
        [(ok, line, _)] = [c for c in run_checks(wiring.Parts(settings)) if "OpenREM database" in c[1]]
        assert ok and "the emails leave out" in line and "remapp_patientmoduleattr.patient_sex" in line  # check too
    finally:
        source.dispose()


@pytest.mark.parametrize(
    "older",
    [
        "REVOKE SELECT (id, person_name, ct_dose_check_details_alert_id, ct_dose_check_details_notification_id) "
        f"ON remapp_personparticipant FROM {ROLE}",
        "DROP TABLE remapp_personparticipant",
    ],
    ids=["not granted", "absent"],
)
def test_without_the_person_table_the_emails_leave_out_who_authorised_proceeding_with_a_warning(
    openrem_db, reader_url, tmp_path, caplog, older
):
    engine = sa.create_engine(openrem_db)
    OpenremImporter(engine).import_study(TOSHIBA_DOSECHECK)
    engine.dispose()
    with psycopg.connect(pg.libpq_url(openrem_db), autocommit=True) as conn:
        conn.execute(older)
    rules = '[dose_check]\nnotify = true\n[defaults]\nrecipients = ["p@h.example"]\n'
    harness = Harness(reader_url, f"sqlite:///{tmp_path / 's.sqlite3'}", rules, 1, tmp_path)
    with caplog.at_level(logging.WARNING, logger="ctpoller.openrem.source"):
        [message] = harness.backfill(since=date(2000, 1, 1), email=False).messages

    assert message.notifications and all(n.authorised_by is None for n in message.notifications)
    warnings = [r.getMessage() for r in caplog.records if "remapp_personparticipant" in r.getMessage()]
    assert len(warnings) == 1 and "who authorised proceeding" in warnings[0] and "readonly_role.sql" in warnings[0]
