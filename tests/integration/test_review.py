"""The workbook as a form: a reviewer's edits, saved with openpyxl as Excel would, are read back,
recorded append-only in a real state store (SQLite and PostgreSQL) and survive every rewrite."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import openpyxl
import pytest

from ctpoller.archive import xlsx
from ctpoller.archive.base import XlsxArchive
from ctpoller.archive.columns import columns
from ctpoller.core.review import OUTCOMES, REASONS
from ctpoller.jobs.archive import write_archive
from ctpoller.jobs.report import Report
from ctpoller.store.notifications import NewMessage
from ctpoller.store.store import CycleWrite, StateStore
from support.factories import notification
from support.workbooks import year_workbook

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "postgresql"])
def state_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'state.sqlite3'}"
    else:
        yield request.getfixturevalue("state_pg_url")


def open_store(url: str) -> StateStore:
    state = StateStore(url)
    state.ensure_schema()
    return state


def record(state: StateStore, uid: str, now: datetime, **changes: Any) -> None:
    told = notification(study_uid=uid, **changes)
    message = NewMessage(
        message_id=f"<ctpoller.{uid}.{now.timestamp():.0f}@hospital.example>",
        study_uid=uid,
        recipients=("physics@hospital.example",),
        notifications=(told,),
    )
    state.commit_cycle(CycleWrite(messages=[message]), now)


def rows(path: Path) -> list[dict[str, Any]]:
    sheet = openpyxl.load_workbook(path)["Notifications"]
    values = list(sheet.iter_rows(values_only=True))
    return [dict(zip(values[0], row, strict=True)) for row in values[1:]]


def review_as_excel_would(path: Path, uid: str, **cells: Any) -> None:
    """Open the workbook, type into the row of ``uid`` (found by its UID, wherever it is), save."""
    workbook = openpyxl.load_workbook(path)
    sheet = workbook["Notifications"]
    headers = [c.value for c in sheet[1]]
    for row in sheet.iter_rows(min_row=2):
        if row[headers.index("Study Instance UID")].value == uid and not row[headers.index("Previous value")].value:
            for header, value in cells.items():
                row[headers.index(header)].value = value
    workbook.save(path)


def year_file_of(archive: XlsxArchive) -> Path:
    """This archive's workbook of T0's year: every notification of these tests is recorded in 2026."""
    return year_workbook(archive.path, T0.year)


def run(state: StateStore, archive: XlsxArchive, now: datetime) -> Report:
    report = Report()
    write_archive(state, archive, report, now=now)
    return report


def test_a_reviewers_edit_survives_new_notifications_and_an_update_of_the_exam(state_url: str, tmp_path: Path) -> None:
    archive = XlsxArchive(tmp_path / "archive.xlsx")
    state = open_store(state_url)
    try:
        record(state, "1.2.3.1", T0)
        record(state, "1.2.3.2", T0)
        assert run(state, archive, T0).archive_error is None
        review_as_excel_would(
            year_file_of(archive),
            "1.2.3.1",
            **{
                "Reviewed by": "A. Physicist",
                "Reviewed on": datetime(2026, 3, 3),
                "Outcome": "justified",
                "Reason": "patient size / habitus",
                "Comment": "BMI 41",
            },
        )
        record(state, "1.2.3.3", T0 + timedelta(days=2))  # a new notification: the workbook is rewritten
        run(state, archive, T0 + timedelta(days=2))
        # the same exam re-sent with a higher value: a new notification, the reviewed one keeps its review
        record(state, "1.2.3.1", T0 + timedelta(days=3), value=Decimal("90"), previous_value=Decimal("76"))
        assert run(state, archive, T0 + timedelta(days=3)).archive_error is None

        by_uid = [(r["Study Instance UID"], r) for r in rows(year_file_of(archive))]
        assert [uid for uid, _ in by_uid] == ["1.2.3.1", "1.2.3.2", "1.2.3.3", "1.2.3.1"]
        reviewed, updated = by_uid[0][1], by_uid[3][1]
        assert reviewed["Reviewed by"] == "A. Physicist"
        assert reviewed["Reviewed on"] == datetime(2026, 3, 3)
        assert (reviewed["Outcome"], reviewed["Reason"], reviewed["Comment"]) == (
            "justified",
            "patient size / habitus",
            "BMI 41",
        )
        assert reviewed["Changed after review"].startswith("yes: 90 mGy")
        assert updated["Outcome"] is None and updated["Changed after review"] is None
        assert by_uid[1][1]["Changed after review"] is None

        history = state.changes()
        assert {(c.field, c.old, c.new, c.who) for c in history} == {
            ("reviewed_by", None, "A. Physicist", "A. Physicist"),
            ("reviewed_on", None, "2026-03-03", "A. Physicist"),
            ("outcome", None, "justified", "A. Physicist"),
            ("reason", None, "patient size / habitus", "A. Physicist"),
            ("comment", None, "BMI 41", "A. Physicist"),
        }
        assert {c.at for c in history} == {T0 + timedelta(days=2)}  # ctpoller's clock, the run that read it
    finally:
        state.dispose()


def test_a_changed_review_is_appended_and_an_edit_without_a_reviewer_is_by_unknown(
    state_url: str, tmp_path: Path
) -> None:
    archive = XlsxArchive(tmp_path / "archive.xlsx")
    state = open_store(state_url)
    try:
        record(state, "1.2.3.1", T0)
        run(state, archive, T0)
        review_as_excel_would(year_file_of(archive), "1.2.3.1", Outcome="under investigation")
        run(state, archive, T0 + timedelta(hours=1))  # no new notification: the saved workbook is read anyway
        review_as_excel_would(year_file_of(archive), "1.2.3.1", Outcome="reportable", **{"Regulator reference": 12345})
        run(state, archive, T0 + timedelta(hours=2))
        assert [(c.field, c.old, c.new, c.who) for c in state.changes()] == [
            ("outcome", None, "under investigation", "unknown"),
            ("outcome", "under investigation", "reportable", "unknown"),
            ("regulator_reference", None, "12345", "unknown"),
        ]
        assert rows(year_file_of(archive))[0]["Outcome"] == "reportable"
    finally:
        state.dispose()


def test_drop_downs_and_colours_are_written_and_survive_a_reviewers_save(tmp_path: Path) -> None:
    archive = XlsxArchive(tmp_path / "archive.xlsx")
    state = open_store(f"sqlite:///{tmp_path / 'state.sqlite3'}")
    try:
        record(state, "1.2.3.1", T0)
        run(state, archive, T0)
        review_as_excel_would(year_file_of(archive), "1.2.3.1", Outcome="justified")
        workbook = openpyxl.load_workbook(year_file_of(archive))
        sheet = workbook["Notifications"]
        lists = {dv.formula1: str(dv.sqref) for dv in sheet.data_validations.dataValidation}
        assert set(lists) == {"=ctpoller_outcomes", "=ctpoller_reasons"}
        names = {name: workbook.defined_names[name].attr_text for name in ("ctpoller_outcomes", "ctpoller_reasons")}
        lists_sheet = workbook["Lists"]
        assert lists_sheet.sheet_state == "hidden"
        assert [c.value for c in lists_sheet["A"] if c.value] == list(OUTCOMES)
        assert [c.value for c in lists_sheet["B"] if c.value] == list(REASONS)
        assert names["ctpoller_outcomes"] == "'Lists'!$A$1:$A$5"
        rules = [rule.formula for area in sheet.conditional_formatting for rule in area.rules]
        assert sorted(rules) == [['"alert"'], ["2"], ["3"]]  # ratio at 2× and 3×; an alert in Severity
        headers = [c.value for c in sheet[1]]
        assert sheet.freeze_panes == "A2" and sheet.auto_filter.ref
        assert sheet.column_dimensions[openpyxl.utils.get_column_letter(headers.index("Notification key") + 1)].hidden
        ratio = sheet.cell(2, headers.index("Ratio") + 1)
        assert ratio.number_format == '0.00"×"'
        assert sheet.cell(2, headers.index("Value") + 1).number_format == '0.00" mGy"'
        assert sheet.page_setup.orientation == "landscape" and sheet.print_title_rows == "$1:$1"
        assert oct(year_file_of(archive).stat().st_mode & 0o777) == "0o640"
    finally:
        state.dispose()


def test_a_replaced_state_store_adopts_every_row_and_review_of_the_archive(tmp_path: Path) -> None:
    archive = XlsxArchive(tmp_path / "archive.xlsx")
    store_file = tmp_path / "state.sqlite3"
    state = open_store(f"sqlite:///{store_file}")
    for uid in ("1.2.3.1", "1.2.3.2", "1.2.3.3"):
        record(state, uid, T0)
    run(state, archive, T0)
    state.dispose()
    review_as_excel_would(year_file_of(archive), "1.2.3.2", Outcome="false positive", **{"Reviewed by": "B. Physicist"})
    before = rows(year_file_of(archive))
    for path in tmp_path.glob("state.sqlite3*"):
        path.unlink()

    fresh = open_store(f"sqlite:///{store_file}")
    try:
        record(fresh, "1.2.3.4", T0 + timedelta(days=1))
        assert run(fresh, archive, T0 + timedelta(days=1)).archive_error is None
        after = rows(year_file_of(archive))
        assert [r["Study Instance UID"] for r in after] == ["1.2.3.1", "1.2.3.2", "1.2.3.3", "1.2.3.4"]
        assert after[:3] == before
        assert after[1]["Outcome"] == "false positive"
        assert fresh.reviews()[after[1]["Notification key"]]["outcome"] == "false positive"
        assert [c.who for c in fresh.changes()] == ["B. Physicist", "B. Physicist"]
    finally:
        fresh.dispose()


@pytest.mark.parametrize("damage", ["lock file", "garbage"])
def test_a_locked_or_corrupt_workbook_is_kept_untouched_and_reported(damage: str, tmp_path: Path) -> None:
    archive = XlsxArchive(tmp_path / "ctpoller-notifications.xlsx")
    state = open_store(f"sqlite:///{tmp_path / 'state.sqlite3'}")
    try:
        record(state, "1.2.3.1", T0)
        run(state, archive, T0)
        if damage == "lock file":
            review_as_excel_would(year_file_of(archive), "1.2.3.1", Outcome="justified")
            (tmp_path / "~$ctpoller-notifications-2026.xlsx").write_bytes(b"\x0bA. Physicist")
        else:
            year_file_of(archive).write_bytes(b"\x00garbage, not a workbook\xff" * 100)
        kept = year_file_of(archive).read_bytes()
        record(state, "1.2.3.2", T0 + timedelta(days=1))
        report = run(state, archive, T0 + timedelta(days=1))
        assert year_file_of(archive).read_bytes() == kept
        assert report.archive_error is not None and str(year_file_of(archive)) in report.archive_error
        assert state.get_meta("archive_problem") == report.archive_error
        if damage == "lock file":
            assert "open in an office program" in report.archive_error and not report.archive_needs_a_person
            assert [c.new for c in state.changes()] == ["justified"]  # read, though not rewritten
            (tmp_path / "~$ctpoller-notifications-2026.xlsx").unlink()
        else:
            assert "cannot be read" in report.archive_error and report.archive_needs_a_person
            year_file_of(archive).unlink()  # a person moved it away
        assert run(state, archive, T0 + timedelta(days=2)).archive_error is None
        assert len(rows(year_file_of(archive))) == 2 and state.get_meta("archive_problem") is None
    finally:
        state.dispose()


def test_a_workbook_saved_while_the_run_writes_is_read_again_before_it_is_replaced(tmp_path: Path) -> None:
    archive = XlsxArchive(tmp_path / "archive.xlsx")
    state = open_store(f"sqlite:///{tmp_path / 'state.sqlite3'}")
    try:
        record(state, "1.2.3.1", T0)
        run(state, archive, T0)
        record(state, "1.2.3.2", T0 + timedelta(days=1))
        write = archive.write
        saved = []

        def write_while_someone_saves(path: Path, rows: Any, **kwargs: Any) -> int:
            if not saved:  # the reviewer saves after ctpoller read the workbook, before it is replaced
                review_as_excel_would(path, "1.2.3.1", Outcome="justified", Comment="late save")
                saved.append(True)
            return write(path, rows, **kwargs)

        archive.write = write_while_someone_saves  # type: ignore[method-assign]
        assert run(state, archive, T0 + timedelta(days=1)).archive_error is None
        assert rows(year_file_of(archive))[0]["Comment"] == "late save"
        assert {c.new for c in state.changes()} == {"justified", "late save"}
    finally:
        state.dispose()


def test_an_old_store_gets_the_review_tables_by_migration(tmp_path: Path) -> None:
    import sqlalchemy as sa

    url = f"sqlite:///{tmp_path / 'state.sqlite3'}"
    state = open_store(url)
    with state.engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE ctp_review_change"))
        conn.execute(sa.text("DROP TABLE ctp_archived_row"))
        conn.execute(sa.text("UPDATE ctp_meta SET value = '1' WHERE key = 'schema_version'"))
        conn.execute(sa.text("DELETE FROM ctp_meta WHERE key = 'migrations_applied'"))  # written by this ctpoller
    state.dispose()
    state = open_store(url)
    try:
        assert state.changes() == [] and state.adopted_rows() == [] and state.get_meta("schema_version") == "2"
    finally:
        state.dispose()


def test_review_values_from_excel_read_the_same_as_they_were_written() -> None:
    from ctpoller.core.review import cell_value

    assert cell_value(datetime(2026, 3, 3)) == "2026-03-03"
    assert cell_value(date(2026, 3, 3)) == "2026-03-03"
    assert cell_value(12345.0) == "12345" and cell_value("  ") is None
    assert replace is not None


@pytest.mark.parametrize("deidentify", [False, True])
@pytest.mark.parametrize("fmt", ["csv", "xlsx"])
def test_export_writes_every_notification_with_its_review_history(
    fmt: str, deidentify: bool, state_url: str, tmp_path: Path
) -> None:
    import csv

    from support.process import ctpoller

    archive = XlsxArchive(tmp_path / "archive.xlsx")
    state = open_store(state_url)
    try:
        detail = "mean of the last 20 exams on Main CT: 101 mGy; armed by the exam of 2026-03-01 10:00 at 210 mGy"
        record(state, "1.2.3.1", T0, accession_number="ACC0042", severity="alert", reference="UK NDRL", detail=detail)
        record(state, "1.2.3.2", T0 + timedelta(days=40))  # after --until: not exported
        run(state, archive, T0)
        review_as_excel_would(year_file_of(archive), "1.2.3.1", Outcome="under investigation")
        run(state, archive, T0 + timedelta(hours=1))
        review_as_excel_would(year_file_of(archive), "1.2.3.1", Outcome="justified", **{"Reviewed by": "A. Physicist"})
        run(state, archive, T0 + timedelta(hours=2))
    finally:
        state.dispose()
    output = tmp_path / f"audit.{fmt}"
    args = ["export", "--since", "2026-03-01", "--until", "2026-03-31", "--format", fmt, "--output", str(output)]
    env = {"CTPOLLER_STATE_URL": state_url, "TMPDIR": str(tmp_path)}
    result = ctpoller(*args, *(["--deidentify"] if deidentify else []), env=env, cwd=tmp_path).assert_ok()
    assert "exported 1 notifications and 3 review changes" in result.stdout

    if fmt == "csv":
        with output.open(encoding="utf-8-sig", newline="") as file:
            notes = list(csv.DictReader(file))
        with (tmp_path / "audit-history.csv").open(encoding="utf-8-sig", newline="") as file:
            history = list(csv.DictReader(file))
    else:
        workbook = openpyxl.load_workbook(output)
        sheets = []
        for title in ("Notifications", "Review history"):
            values = list(workbook[title].iter_rows(values_only=True))
            sheets.append(
                [{k: ("" if v is None else str(v)) for k, v in zip(values[0], row, strict=True)} for row in values[1:]]
            )
        notes, history = sheets
    assert len(notes) == 1 and notes[0]["Outcome"] == "justified" and notes[0]["Reviewed by"] == "A. Physicist"
    assert [(h["Field"], h["Old value"], h["New value"], h["Changed by"]) for h in history] == [
        ("Outcome", "", "under investigation", "unknown"),
        ("Reviewed by", "", "A. Physicist", "A. Physicist"),
        ("Outcome", "under investigation", "justified", "A. Physicist"),
    ]
    assert {h["Notification key"] for h in history} == {notes[0]["Notification key"]}
    everything = output.read_bytes() + (tmp_path / "audit-history.csv").read_bytes() if fmt == "csv" else b""
    if deidentify:
        assert "Accession number" not in notes[0] and "Study Instance UID" not in notes[0]
        assert b"ACC0042" not in everything and b"1.2.3.1" not in everything
    else:
        assert notes[0]["Accession number"] == "ACC0042" and notes[0]["Study Instance UID"] == "1.2.3.1"
    assert notes[0]["Detail"] == detail  # it names no exam or patient: kept when de-identified too
    assert (notes[0]["Severity"], notes[0]["Reference"]) == ("alert", "UK NDRL")


#: The columns issue 14 added: a workbook of the ctpoller before has none of them.
NEW_COLUMNS = ("Severity", "Reference value", "Multiple", "Reference", "Detail")


def as_the_ctpoller_before_wrote_it(path: Path) -> None:
    """Rewrite the workbook at ``path`` with the same rows but without the columns added since."""
    before = tuple(c for c in columns("UTC") if c.header not in NEW_COLUMNS)
    kept = rows(path)
    xlsx.write_archive(before, [{h: v for h, v in r.items() if h not in NEW_COLUMNS} for r in kept], path)
    assert not set(NEW_COLUMNS) & set(rows(path)[0])


DRL = dict(
    severity="alert",
    limit=Decimal("94"),
    reference="UK NDRL 2022",
    reference_value=Decimal("47"),
    multiple=Decimal("2"),
)


def test_a_workbook_without_the_new_columns_is_read_back_and_rewritten_with_them(
    state_url: str, tmp_path: Path
) -> None:
    archive = XlsxArchive(tmp_path / "archive.xlsx")
    state = open_store(state_url)
    try:
        record(state, "1.2.3.1", T0, value=Decimal("120"), **DRL)
        record(state, "1.2.3.2", T0)
        run(state, archive, T0)
        as_the_ctpoller_before_wrote_it(year_file_of(archive))
        review_as_excel_would(year_file_of(archive), "1.2.3.1", Outcome="justified", **{"Reviewed by": "A. Physicist"})
        record(state, "1.2.3.3", T0 + timedelta(days=1))
        assert run(state, archive, T0 + timedelta(days=1)).archive_error is None

        after = rows(year_file_of(archive))
        assert [r["Study Instance UID"] for r in after] == ["1.2.3.1", "1.2.3.2", "1.2.3.3"]
        assert (after[0]["Outcome"], after[0]["Reviewed by"]) == ("justified", "A. Physicist")
        assert [after[0][h] for h in NEW_COLUMNS] == ["alert", 47, 2, "UK NDRL 2022", None]
        assert [after[1][h] for h in NEW_COLUMNS] == ["notification", None, None, None, None]
        assert {(c.field, c.new) for c in state.changes()} == {
            ("outcome", "justified"),
            ("reviewed_by", "A. Physicist"),
        }
    finally:
        state.dispose()


def test_a_replaced_store_adopts_the_rows_of_a_workbook_without_the_new_columns(tmp_path: Path) -> None:
    archive = XlsxArchive(tmp_path / "archive.xlsx")
    store_file = tmp_path / "state.sqlite3"
    state = open_store(f"sqlite:///{store_file}")
    record(state, "1.2.3.1", T0)
    record(state, "1.2.3.2", T0)
    run(state, archive, T0)
    state.dispose()
    as_the_ctpoller_before_wrote_it(year_file_of(archive))
    review_as_excel_would(year_file_of(archive), "1.2.3.2", Outcome="false positive")
    before = rows(year_file_of(archive))
    for path in tmp_path.glob("state.sqlite3*"):
        path.unlink()

    fresh = open_store(f"sqlite:///{store_file}")
    try:
        record(fresh, "1.2.3.4", T0 + timedelta(days=1), value=Decimal("120"), **DRL)
        assert run(fresh, archive, T0 + timedelta(days=1)).archive_error is None
        after = rows(year_file_of(archive))
        assert [r["Study Instance UID"] for r in after] == ["1.2.3.1", "1.2.3.2", "1.2.3.4"]
        assert [{h: v for h, v in r.items() if h not in NEW_COLUMNS} for r in after[:2]] == before
        assert all(r[h] is None for r in after[:2] for h in NEW_COLUMNS)  # adopted: nothing invented
        assert after[1]["Outcome"] == "false positive"
        assert [after[2][h] for h in NEW_COLUMNS] == ["alert", 47, 2, "UK NDRL 2022", None]
    finally:
        fresh.dispose()
