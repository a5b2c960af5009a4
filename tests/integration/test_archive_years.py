"""One workbook per calendar year beside CTPOLLER_ARCHIVE_PATH: a run rewrites only the years whose
rows changed, each year's workbook is read back and kept on its own, and the single workbook of an
earlier ctpoller is read back once and kept, never lost."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from ctpoller.archive.base import XlsxArchive
from ctpoller.jobs.archive_rows import Year, view_rows
from ctpoller.jobs.check import archive_checks
from support.workbooks import year_workbook

from .test_review import open_store, record, review_as_excel_would, rows, run

Y2025 = datetime(2025, 11, 20, 9, 0, tzinfo=UTC)
Y2026 = datetime(2026, 2, 10, 9, 0, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "postgresql"])
def state_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'state.sqlite3'}"
    else:
        yield request.getfixturevalue("state_pg_url")


def uids(path: Path) -> list[str]:
    return [r["Study Instance UID"] for r in rows(path)]


def test_each_year_has_its_workbook_and_a_new_notification_rewrites_only_its_year(
    state_url: str, tmp_path: Path
) -> None:
    archive = XlsxArchive(tmp_path / "ctpoller-notifications.xlsx")
    state = open_store(state_url)
    try:
        record(state, "1.2.3.1", Y2025)
        record(state, "1.2.3.2", Y2026)
        assert run(state, archive, Y2026).archive_rows == 2
        old, new = year_workbook(archive.path, 2025), year_workbook(archive.path, 2026)
        assert old.name == "ctpoller-notifications-2025.xlsx" and not archive.path.exists()
        assert (uids(old), uids(new)) == (["1.2.3.1"], ["1.2.3.2"])
        written = old.stat().st_mtime_ns, old.read_bytes()

        record(state, "1.2.3.3", Y2026 + timedelta(days=1))
        report = run(state, archive, Y2026 + timedelta(days=1))
        assert report.archive_error is None and report.archive_rows == 2  # only 2026's two rows
        assert (old.stat().st_mtime_ns, old.read_bytes()) == written
        assert uids(new) == ["1.2.3.2", "1.2.3.3"]
        assert run(state, archive, Y2026 + timedelta(days=2)).archive_rows is None  # idle: nothing rewritten
    finally:
        state.dispose()


def test_a_locked_workbook_of_one_year_never_keeps_another_year_from_being_written(tmp_path: Path) -> None:
    archive = XlsxArchive(tmp_path / "ctpoller-notifications.xlsx")
    state = open_store(f"sqlite:///{tmp_path / 'state.sqlite3'}")
    try:
        record(state, "1.2.3.1", Y2025)
        record(state, "1.2.3.2", Y2026)
        run(state, archive, Y2026)
        old, new = year_workbook(archive.path, 2025), year_workbook(archive.path, 2026)
        review_as_excel_would(old, "1.2.3.1", Outcome="justified")
        (tmp_path / "~$ctpoller-notifications-2025.xlsx").write_bytes(b"\x0bA. Physicist")
        kept = old.read_bytes()
        record(state, "1.2.3.3", Y2025 + timedelta(days=1))  # recorded late: a row of 2025
        record(state, "1.2.3.4", Y2026 + timedelta(days=1))
        report = run(state, archive, Y2026 + timedelta(days=1))
        assert old.read_bytes() == kept and uids(new) == ["1.2.3.2", "1.2.3.4"]
        assert report.archive_error is not None and str(old) in report.archive_error
        assert str(new) not in report.archive_error and not report.archive_needs_a_person
        assert state.get_meta("archive_problem:2025") == report.archive_error == state.get_meta("archive_problem")
        assert [c.new for c in state.changes()] == ["justified"]  # read, though not rewritten

        (tmp_path / "~$ctpoller-notifications-2025.xlsx").unlink()
        assert run(state, archive, Y2026 + timedelta(days=2)).archive_error is None
        assert uids(old) == ["1.2.3.1", "1.2.3.3"] and rows(old)[0]["Outcome"] == "justified"
        assert state.get_meta("archive_problem") is None and state.get_meta("archive_problem:2025") is None
    finally:
        state.dispose()


def test_a_reviewed_exam_notified_again_next_year_shows_it_in_last_years_workbook(tmp_path: Path) -> None:
    archive = XlsxArchive(tmp_path / "ctpoller-notifications.xlsx")
    state = open_store(f"sqlite:///{tmp_path / 'state.sqlite3'}")
    try:
        record(state, "1.2.3.1", Y2025)
        run(state, archive, Y2025)
        old = year_workbook(archive.path, 2025)
        review_as_excel_would(old, "1.2.3.1", Outcome="justified", **{"Reviewed by": "A. Physicist"})
        run(state, archive, Y2025 + timedelta(days=1))
        record(state, "1.2.3.1", Y2026, value=Decimal("90"), previous_value=Decimal("76"))
        assert run(state, archive, Y2026).archive_error is None
        [reviewed] = rows(old)
        assert reviewed["Outcome"] == "justified" and reviewed["Changed after review"].startswith("yes: 90 mGy")
        assert rows(year_workbook(archive.path, 2026))[0]["Changed after review"] is None
    finally:
        state.dispose()


def test_the_single_workbook_of_an_earlier_ctpoller_is_read_back_once_kept_and_split_per_year(tmp_path: Path) -> None:
    archive = XlsxArchive(tmp_path / "ctpoller-notifications.xlsx")
    store_file = tmp_path / "state.sqlite3"
    state = open_store(f"sqlite:///{store_file}")
    for uid, when in (("1.2.3.1", Y2025), ("1.2.3.2", Y2025), ("1.2.3.3", Y2026)):
        record(state, uid, when)
    # the workbook as an earlier ctpoller wrote it: every year in one file at CTPOLLER_ARCHIVE_PATH
    single = [row for year in (2025, 2026) for row in view_rows(state, archive, Year.load(state, year))]
    archive.write(archive.path, single)
    state.dispose()
    review_as_excel_would(archive.path, "1.2.3.2", Outcome="false positive", **{"Reviewed by": "B. Physicist"})
    review_as_excel_would(archive.path, "1.2.3.3", Outcome="justified")
    before = rows(archive.path)
    for path in tmp_path.glob("state.sqlite3*"):  # and the store was replaced, too
        path.unlink()

    fresh = open_store(f"sqlite:///{store_file}")
    try:
        record(fresh, "1.2.3.4", Y2026 + timedelta(days=1))
        assert run(fresh, archive, Y2026 + timedelta(days=1)).archive_error is None
        kept = tmp_path / "ctpoller-notifications.before-per-year.xlsx"
        assert not archive.path.exists() and rows(kept) == before  # kept as it was, never deleted
        old, new = year_workbook(archive.path, 2025), year_workbook(archive.path, 2026)
        assert rows(old) == before[:2]
        assert uids(new) == ["1.2.3.3", "1.2.3.4"] and rows(new)[0] == before[2]
        assert {c.new for c in fresh.changes()} == {"false positive", "B. Physicist", "justified"}

        record(fresh, "1.2.3.5", Y2026 + timedelta(days=2))  # read back once: later runs leave it alone
        assert run(fresh, archive, Y2026 + timedelta(days=2)).archive_error is None
        assert rows(kept) == before and uids(new)[-1] == "1.2.3.5" and rows(old) == before[:2]
    finally:
        fresh.dispose()


def test_a_locked_single_workbook_of_an_earlier_ctpoller_is_split_only_once_it_is_closed(tmp_path: Path) -> None:
    archive = XlsxArchive(tmp_path / "ctpoller-notifications.xlsx")
    state = open_store(f"sqlite:///{tmp_path / 'state.sqlite3'}")
    try:
        record(state, "1.2.3.1", Y2026)
        archive.write(archive.path, view_rows(state, archive, Year.load(state, 2026)))
        review_as_excel_would(archive.path, "1.2.3.1", Outcome="justified")
        lock = tmp_path / ".~lock.ctpoller-notifications.xlsx#"
        lock.write_text("A. Physicist")
        report = run(state, archive, Y2026)
        assert report.archive_error is not None and str(archive.path) in report.archive_error
        assert archive.path.exists() and not year_workbook(archive.path, 2026).exists()
        lock.unlink()
        assert run(state, archive, Y2026 + timedelta(hours=1)).archive_error is None
        assert rows(year_workbook(archive.path, 2026))[0]["Outcome"] == "justified"
        assert state.get_meta("archive_problem") is None
    finally:
        state.dispose()


def test_check_names_a_locked_and_an_unreadable_workbook_and_says_what_it_proved_of_each_year(tmp_path: Path) -> None:
    archive = XlsxArchive(tmp_path / "ctpoller-notifications.xlsx")
    state = open_store(f"sqlite:///{tmp_path / 'state.sqlite3'}")
    try:
        for uid, when in (("1.2.3.1", Y2025 - timedelta(days=365)), ("1.2.3.2", Y2025), ("1.2.3.3", Y2026)):
            record(state, uid, when)
        run(state, archive, Y2026)
    finally:
        state.dispose()
    (tmp_path / "~$ctpoller-notifications-2025.xlsx").write_bytes(b"\x0bA. Physicist")
    year_workbook(archive.path, 2026).write_bytes(b"\x00garbage, not a workbook\xff" * 100)

    [ok, locked, unreadable] = list(archive_checks(archive))
    assert ok == (True, f"archive {year_workbook(archive.path, 2024)} (the workbook of 2024): read back in full, "
                  "1 rows, not open in an office program", None)  # fmt: skip
    assert not locked[0] and f"archive {year_workbook(archive.path, 2025)} " in locked[1]
    assert "open in an office program" in locked[1] and locked[2] is not None and locked[2].temporary
    assert not unreadable[0] and f"archive {year_workbook(archive.path, 2026)} " in unreadable[1]
    assert "cannot be read" in unreadable[1]
    assert unreadable[2] is not None and unreadable[2].scope == "settings"  # exit 1, as in a run
