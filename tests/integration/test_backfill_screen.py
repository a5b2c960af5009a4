"""Backfill's screen changes how much is read, never what is found.

On a generated OpenREM (realistic shape, continued reports, Dose Check rows) spoiled with hostile
values (NaN, infinities, negative doses, padded protocols and phantom codes, duplicate patient rows,
implausible ages, unconfigured Dose Checks), and on the embedded SQLite OpenREM of the demo, a
screened backfill records exactly the notifications, ledger and decided rows of a backfill that
reads every exam in full, for rule sets that exercise every criterion and limit.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from ctpoller.core.rules import DOSE_CHECK_RULE, parse_rules
from ctpoller.demo import exams
from ctpoller.demo.openrem import OpenremImporter, SeedStudy, create_schema
from ctpoller.jobs import backfill as backfill_job
from ctpoller.jobs.report import Report
from ctpoller.openrem.source import OpenremSource
from ctpoller.store.store import StateStore
from ctpoller.store.tables import exceedance_table, notification_table, study_table
from support import pg

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import generate  # noqa: E402

NOW = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
HEADER = '[defaults]\nrecipients = ["physics@example.org"]\n'

RULE_SETS = {
    "example": (REPO / "examples" / "rules.toml").read_text(encoding="utf-8"),
    "exam criteria": HEADER
    + """
[[rule]]
name = "CAP by words or regex"
study = { any = ["chest abdomen", 're:\\bTAP\\b'] }
not_station = ["CTAWP10003"]
dlp_total = 900
ctdivol = 14
[[rule]]
name = "Head procedure, one station"
procedure = ["head"]
station = { any = ["re:^CT", "General"] }
dlp = 700
[[rule]]
name = "Children by age"
age_max = 16
ctdivol = 5
[[rule]]
name = "Older adults"
age_min = 70
dlp_total = 1200
""",
    "event criteria": HEADER
    + """
[[rule]]
name = "Protocol words"
protocol = { any = [["abdomen"], "pelvis", 're:^\\s*chest'] }
not_protocol = ["HRCT"]
ctdivol = 12
dlp = 600
[[rule]]
name = "Head phantom only"
phantom = "head"
not_protocol = ["re:perf"]
ctdivol = 55
dlp_total = 1500
[[rule]]
name = "Body phantom, no protocol named anywhere"
phantom = "body"
protocol = ["does not occur"]
ctdivol = 1
[dose_check]
notify = true
""",
    "newer keys": HEADER
    + """
[[rule]]
name = "Reference levels, any of two"
protocol = { any = ["chest", "abdomen"] }
drl_ctdivol = 8
drl_dlp = 300
notify_above = 1.25
reference = "a test DRL"
[[rule]]
name = "Head, stops the rest"
protocol = { all = ["head", 're:^\\s*\\w'] }
priority = 5
stop = true
drl_ctdivol = 40
drl_dlp_total = 900
severity = "alert"
[[rule]]
name = "By scanner and weight"
manufacturer = "siemens"
not_model = "flash"
weight_min = 60
weight_max = 90
ctdivol = 10
dlp_total = 800
[[rule]]
name = "By acquisition and region"
acquisition_type = ["spiral", "sequenced"]
not_acquisition_type = "constant_angle"
target_region = { any = ["chest", "abdomen"] }
not_target_region = "head"
ctdivol = 12
dlp = 400
dlp_total = 1000
[[rule]]
name = "Everything else, low priority"
priority = -1
ctdivol = 20
dlp_total = 1500
""",
    "scanner and weight only": HEADER
    + """
[[rule]]
name = "Siemens, 60 to 90 kg"
manufacturer = "siemens"
not_model = "flash"
weight_min = 60
weight_max = 90
ctdivol = 0.5
""",
    "everything is near": HEADER
    + """
[[rule]]
name = "Low"
ctdivol = 0.5
dlp = 1
dlp_total = 1
""",
    "nothing is near": HEADER
    + """
[[rule]]
name = "High"
ctdivol = 100000
dlp_total = 100000
[dose_check]
notify = true
""",
}

#: Values the screen's SQL must treat as the rules do, applied to a generated database.
SPOIL = [
    # unconstrained numerics can hold NaN and infinities, as hostile tests make them
    "ALTER TABLE remapp_ctirradiationeventdata ALTER COLUMN mean_ctdivol TYPE numeric, ALTER COLUMN dlp TYPE numeric",
    "ALTER TABLE remapp_generalstudymoduleattr ALTER COLUMN total_dlp TYPE numeric",
    "ALTER TABLE remapp_patientstudymoduleattr ALTER COLUMN patient_age_decimal TYPE numeric",
    "ALTER TABLE remapp_ctdosecheckdetails ALTER COLUMN ctdivol_notification_value TYPE numeric, "
    "ALTER COLUMN dlp_forward_estimate TYPE numeric",
    "UPDATE remapp_ctirradiationeventdata SET mean_ctdivol = 'NaN' WHERE id % 97 = 1",
    "UPDATE remapp_ctirradiationeventdata SET mean_ctdivol = 'Infinity', dlp = '-Infinity' WHERE id % 97 = 2",
    "UPDATE remapp_ctirradiationeventdata SET dlp = 'NaN' WHERE id % 89 = 3",
    "UPDATE remapp_ctirradiationeventdata SET dlp = -dlp, mean_ctdivol = -mean_ctdivol WHERE id % 83 = 4",
    "UPDATE remapp_ctirradiationeventdata SET dlp = 'Infinity' WHERE id % 101 = 5",
    "UPDATE remapp_ctirradiationeventdata SET acquisition_protocol = '  ' || acquisition_protocol || ' ' "
    "WHERE id % 13 = 0",
    "UPDATE remapp_ctirradiationeventdata SET acquisition_protocol = lower(acquisition_protocol) WHERE id % 11 = 0",
    "UPDATE remapp_ctirradiationeventdata SET acquisition_protocol = '' WHERE id % 29 = 0",
    "INSERT INTO remapp_contextid (id, code_value, code_meaning, cid_table) VALUES (9001, ' 113690 ', "
    "'padded head', 'CID4052'), (9002, '113691\t', 'tabbed body', 'CID4052'), (9003, 'junk', 'junk', 'CID4052')",
    "UPDATE remapp_ctirradiationeventdata SET ctdiw_phantom_type_id = 9001 + id % 3 WHERE id % 19 = 0",
    "UPDATE remapp_ctirradiationeventdata SET ctdiw_phantom_type_id = NULL WHERE id % 23 = 0",
    "UPDATE remapp_generalstudymoduleattr SET total_dlp = NULL WHERE id % 7 = 0",
    "UPDATE remapp_generalstudymoduleattr SET total_dlp = 'NaN' WHERE id % 53 = 0",
    "UPDATE remapp_generalstudymoduleattr SET total_dlp = 'Infinity' WHERE id % 59 = 0",
    "UPDATE remapp_generalstudymoduleattr SET total_dlp = -total_dlp WHERE id % 61 = 0",
    "UPDATE remapp_generalstudymoduleattr SET study_instance_uid = '  ' WHERE id % 211 = 0",
    "UPDATE remapp_patientstudymoduleattr SET patient_age_decimal = NULL, patient_age = '004Y' WHERE id % 31 = 0",
    "UPDATE remapp_patientstudymoduleattr SET patient_age_decimal = 200, patient_age = '012M' WHERE id % 37 = 0",
    "UPDATE remapp_patientstudymoduleattr SET patient_age_decimal = 'NaN', patient_age = NULL WHERE id % 41 = 0",
    "UPDATE remapp_patientstudymoduleattr SET patient_age = '  ' WHERE id % 43 = 0",
    # ages on the band edges of the rule sets (16, 70, and 2, 6, 10 in the example), as OpenREM
    # rounds them to 0.1 year, with and without an age string that agrees or not
    "UPDATE remapp_patientstudymoduleattr SET patient_age_decimal = 16.0, patient_age = NULL WHERE id % 71 = 0",
    "UPDATE remapp_patientstudymoduleattr SET patient_age_decimal = 16.0, patient_age = '015Y' WHERE id % 73 = 0",
    "UPDATE remapp_patientstudymoduleattr SET patient_age_decimal = 16.0, patient_age = '016Y' WHERE id % 74 = 0",
    "UPDATE remapp_patientstudymoduleattr SET patient_age_decimal = 70.0, patient_age = '069Y' WHERE id % 79 = 0",
    "UPDATE remapp_patientstudymoduleattr SET patient_age_decimal = 69.9, patient_age = NULL WHERE id % 81 = 0",
    "UPDATE remapp_patientstudymoduleattr SET patient_age_decimal = 69.0, patient_age = '069Y' WHERE id % 82 = 0",
    "UPDATE remapp_patientstudymoduleattr SET patient_age_decimal = 2.0, patient_age = '023M' WHERE id % 86 = 0",
    "UPDATE remapp_patientstudymoduleattr SET patient_age_decimal = 6.0, patient_age = NULL WHERE id % 87 = 0",
    "UPDATE remapp_patientstudymoduleattr SET patient_age_decimal = 10.0, patient_age = '009Y' WHERE id % 88 = 0",
    "UPDATE remapp_patientstudymoduleattr SET patient_age_decimal = NULL, patient_age = '119M' WHERE id % 91 = 0",
    "UPDATE remapp_patientstudymoduleattr SET patient_age_decimal = 1.0, patient_age = '011M' WHERE id % 92 = 0",
    # a second patient-study row for some studies (OpenREM writes one): the first one counts
    "INSERT INTO remapp_patientstudymoduleattr (general_study_module_attributes_id, patient_age_decimal, patient_age) "
    "SELECT general_study_module_attributes_id, 3, '003Y' FROM remapp_patientstudymoduleattr WHERE id % 47 = 0",
    "DELETE FROM remapp_patientmoduleattr WHERE general_study_module_attributes_id % 67 = 0",
    "UPDATE remapp_ctdosecheckdetails SET ctdivol_notification_value_configured = NULL WHERE id % 3 = 0",
    "UPDATE remapp_ctdosecheckdetails SET dlp_notification_value_configured = false, "
    "ctdivol_alert_value_configured = false WHERE id % 5 = 0",
    "UPDATE remapp_ctdosecheckdetails SET ctdivol_notification_value = 'NaN' WHERE id % 7 = 0",
    "UPDATE remapp_ctdosecheckdetails SET dlp_forward_estimate = NULL WHERE id % 2 = 0",
    # the columns only the newer criteria read: manufacturer, model, weight, target region
    "UPDATE remapp_generalequipmentmoduleattr SET manufacturer = CASE id % 4 WHEN 0 THEN 'SIEMENS' WHEN 1 THEN "
    "'GE MEDICAL SYSTEMS' WHEN 2 THEN ' Siemens Healthineers ' END, manufacturer_model_name = CASE id % 3 "
    "WHEN 0 THEN 'SOMATOM Definition Flash' WHEN 1 THEN 'SOMATOM go.Top' END",
    "ALTER TABLE remapp_patientstudymoduleattr ALTER COLUMN patient_weight TYPE numeric",
    "UPDATE remapp_patientstudymoduleattr SET patient_weight = CASE id % 9 WHEN 0 THEN NULL WHEN 1 THEN 0 "
    "WHEN 2 THEN 'NaN' WHEN 3 THEN 600 WHEN 4 THEN 60 WHEN 5 THEN 89.99 WHEN 6 THEN 90 ELSE 20 + id % 80 END",
    "INSERT INTO remapp_contextid (id, code_value, code_meaning, cid_table) VALUES (9101, 'T-D3000', 'Chest', "
    "'CID4030'), (9102, 'T-D4000', 'Abdomen', 'CID4030'), (9103, 'T-D1100', 'Head', 'CID4030'), "
    "(9104, '00001', 'Unknown', 'CID4030'), (9105, ' P5-08001 ', 'padded spiral', 'CID10013'), "
    "(9106, '116152004', 'Helical', 'CID10013'), (9107, 'junk', 'junk', 'CID10013')",
    "UPDATE remapp_ctirradiationeventdata SET target_region_id = 9101 + id % 5 WHERE id % 5 < 4",
    "UPDATE remapp_ctirradiationeventdata SET ct_acquisition_type_id = 9105 + id % 3 WHERE id % 17 = 0",
    # alerts alone, each metric on its own
    "UPDATE remapp_ctdosecheckdetails SET ctdivol_notification_value_configured = false, "
    "dlp_notification_value_configured = false, dlp_alert_value_configured = false, "
    "ctdivol_alert_value_configured = true, ctdivol_alert_value = 10, accumulated_ctdivol_forward_estimate = 50 "
    "WHERE id % 11 = 1",
    "UPDATE remapp_ctdosecheckdetails SET ctdivol_notification_value_configured = false, "
    "dlp_notification_value_configured = false, ctdivol_alert_value_configured = false, "
    "dlp_alert_value_configured = true, dlp_alert_value = 100, accumulated_dlp_forward_estimate = 5000 "
    "WHERE id % 13 = 2",
]


def backfill(
    source_url: str, rules_text: str, state_file: Path | str, *, screened: bool, dry_run: bool = False
) -> Report:
    source = OpenremSource(source_url)
    state = StateStore(state_file if isinstance(state_file, str) else f"sqlite:///{state_file}")
    try:
        state.ensure_schema()
        return backfill_job.backfill(
            source,
            state,
            parse_rules(rules_text, source="rules.toml"),
            None,
            None,
            now=NOW,
            since=None,
            email=False,
            screened=screened,
            dry_run=dry_run,
        )
    finally:
        source.dispose()
        state.dispose()


def recorded(state_file: Path | str) -> dict[str, Any]:
    engine = sa.create_engine(state_file if isinstance(state_file, str) else f"sqlite:///{state_file}")
    try:
        with engine.connect() as conn:
            n = notification_table.c
            return {
                "notifications": sorted(
                    conn.execute(
                        sa.select(n.study_uid, n.rule, n.metric, n.event_key, n.value, n.limit_value, n.protocol)
                    ).all()
                ),
                "ledger": sorted(conn.execute(sa.select(exceedance_table)).all()),
                "decided": sorted(
                    conn.execute(sa.select(study_table.c.pk, study_table.c.uid, study_table.c.status)).all()
                ),
            }
    finally:
        engine.dispose()


def assert_same(source_url: str, rules_text: str, tmp_path: Path, name: str) -> Report:
    fast = backfill(source_url, rules_text, tmp_path / f"{name}-screened.sqlite3", screened=True)
    full = backfill(source_url, rules_text, tmp_path / f"{name}-full.sqlite3", screened=False)
    got, want = recorded(tmp_path / f"{name}-screened.sqlite3"), recorded(tmp_path / f"{name}-full.sqlite3")
    assert got["notifications"] == want["notifications"]
    assert got["ledger"] == want["ledger"]
    assert got["decided"] == want["decided"]
    assert (fast.exceedances, fast.created, fast.studies_seen) == (full.exceedances, full.created, full.studies_seen)
    assert full.exams_read == full.exams_evaluated
    return fast


@pytest.fixture(scope="module")
def spoiled_openrem(pg_server: pg.PgServer):
    with pg.throwaway_database(pg_server, "ctp_screen_") as url:
        generate.load_schema(url)
        generate.generate(url, 3000, seed=7)
        with generate.connect(url, autocommit=True) as conn:
            for statement in SPOIL:
                conn.execute(statement)
        yield url


@pytest.mark.postgres
@pytest.mark.parametrize("rules", list(RULE_SETS))
def test_screened_backfill_finds_exactly_what_reading_everything_finds(
    spoiled_openrem: str, rules: str, tmp_path: Path
) -> None:
    report = assert_same(spoiled_openrem, RULE_SETS[rules], tmp_path, "pg")
    if rules == "example":
        assert report.exceedances > 50  # the comparison is about something
        assert report.exams_read < report.exams_evaluated / 4  # and the screen spared most reading
    if rules == "newer keys":
        found = {(n.rule, n.severity) for m in report.messages for n in m.notifications}
        assert {rule for rule, _ in found} == {rule.name for rule in parse_rules(RULE_SETS[rules], source="r").rules}
        assert ("Head, stops the rest", "alert") in found
    if rules == "scanner and weight only":  # exam-level keys the screen applies exactly
        assert report.exceedances > 50
        assert report.exams_read < report.exams_evaluated / 3
    if rules == "nothing is near":
        # found: the scanners' own Dose Check alerts only; read: what holds NaN or infinities (a sixth
        # of the spoiled rows), continued reports, duplicates and Dose Check rows over their values
        assert {n.rule for m in report.messages for n in m.notifications} == {DOSE_CHECK_RULE}
        assert report.exams_read < report.exams_evaluated / 4


@pytest.mark.postgres
def test_a_continued_report_in_a_later_chunk_is_evaluated_with_its_first_row(
    spoiled_openrem: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(backfill_job, "BACKFILL_CHUNK", 7)  # rows of one UID land in different chunks
    assert_same(spoiled_openrem, RULE_SETS["exam criteria"], tmp_path, "chunks")


@pytest.mark.postgres
@pytest.mark.parametrize("rules", ["exam criteria", "everything is near"])
def test_a_dry_run_finds_what_a_backfill_records_when_an_exam_spans_chunks(
    spoiled_openrem: str, rules: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A dry run writes nothing, yet a continued report in a later chunk is screened and evaluated
    with its first row, and what that row exceeded is not found again as new."""
    monkeypatch.setattr(backfill_job, "BACKFILL_CHUNK", 7)  # rows of one UID land in different chunks
    dry = backfill(spoiled_openrem, RULE_SETS[rules], tmp_path / "dry.sqlite3", screened=True, dry_run=True)
    real = backfill(spoiled_openrem, RULE_SETS[rules], tmp_path / "real.sqlite3", screened=True)
    assert real.created > 0 and any(n.metric == "dlp_total" for m in real.messages for n in m.notifications)
    assert dry.messages == real.messages
    assert (dry.created, dry.exceedances, dry.exams_read) == (real.created, real.exceedances, real.exams_read)
    assert recorded(tmp_path / "dry.sqlite3") == {"notifications": [], "ledger": [], "decided": []}


@pytest.mark.postgres
def test_screened_backfill_into_a_postgresql_state_store_records_the_same_once(
    spoiled_openrem: str, state_pg_url: str, tmp_path: Path
) -> None:
    """The bulk writes of backfill (decided rows, messages, ledger) on the optional PostgreSQL store."""
    rules = RULE_SETS["example"]
    first = backfill(spoiled_openrem, rules, state_pg_url, screened=True)
    backfill(spoiled_openrem, rules, tmp_path / "full.sqlite3", screened=False)
    got, want = recorded(state_pg_url), recorded(tmp_path / "full.sqlite3")
    assert got["notifications"] == want["notifications"] and got["ledger"] == want["ledger"]
    assert got["decided"] == want["decided"]
    assert first.created > 50

    again = backfill(spoiled_openrem, rules, state_pg_url, screened=True)  # every row decided before
    assert (again.created, again.messages) == (0, [])
    assert recorded(state_pg_url) == got


def test_screened_backfill_on_the_embedded_sqlite_openrem(tmp_path: Path) -> None:
    source_file = tmp_path / "openrem.sqlite3"
    engine = sa.create_engine(f"sqlite:///{source_file}")
    create_schema(engine)
    importer = OpenremImporter(engine)
    for study in vars(exams).values():
        if isinstance(study, SeedStudy):
            importer.import_study(study)
    engine.dispose()
    for name, text in RULE_SETS.items():
        report = assert_same(f"sqlite:///{source_file}", text, tmp_path, name.replace(" ", "-"))
        assert report.studies_seen > 5
