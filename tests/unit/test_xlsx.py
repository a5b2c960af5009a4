"""The QA archive workbook: its columns, its cells, and that it is replaced all or nothing."""

from __future__ import annotations

import io
import os
import zipfile
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, time
from decimal import Decimal
from pathlib import Path
from typing import Any

import openpyxl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ctpoller.archive import xlsx
from ctpoller.archive.columns import UTC_HEADER, columns, row_cells
from ctpoller.archive.xlsx import CELL_TEXT_MAX, cell_text
from ctpoller.core.model import ArchiveRow, MessageStatus
from ctpoller.errors import NotifyError
from support.factories import archive_row

COLUMNS = columns("UTC")
HEADERS = [column.header for column in COLUMNS]


def _cells(rows: Iterable[ArchiveRow]) -> Iterator[dict[str, Any]]:
    for row in rows:
        yield row_cells(row, "nkey", {}, None, UTC, "UTC")


def build_workbook(rows: Iterable[ArchiveRow]) -> Any:
    return xlsx.build_workbook(COLUMNS, _cells(rows))


def write_archive(rows: Iterable[ArchiveRow], path: Path, **options: Any) -> int:
    return xlsx.write_archive(COLUMNS, _cells(rows), path, **options)


HOSTILE = ['=HYPERLINK("http://x","y")', "+1", "-2+3", "@SUM(A1)", "\t=1", "\r=1", "=1"]


def load(rows: list[ArchiveRow]) -> list[list[Any]]:
    """Save ``build_workbook(rows)`` to bytes and read every cell back, as Excel would see it."""
    return [[cell.value for cell in row] for row in load_cells(rows)]


def load_cells(rows: list[ArchiveRow]) -> list[list[Any]]:
    """Like ``load``, the cells themselves (type, style)."""
    buffer = io.BytesIO()
    build_workbook(rows).save(buffer)
    workbook = openpyxl.load_workbook(io.BytesIO(buffer.getvalue()))
    try:
        assert workbook.sheetnames == ["Notifications", "Summary", "Lists"]
        sheet = workbook["Notifications"]
        for row in sheet.iter_rows():
            for cell in row:
                assert cell.data_type != "f", (cell.coordinate, cell.value)
        return [list(row) for row in sheet.iter_rows()]
    finally:
        workbook.close()


def test_header_row_names_every_column_in_order() -> None:
    assert load([])[0] == HEADERS
    assert HEADERS[:2] == ["Notified at (UTC time)", "Study date"] and HEADERS[-1] == "Notification key"
    assert HEADERS[24:31] == [
        "Reviewed by",
        "Reviewed on",
        "Outcome",
        "Reason",
        "Comment",
        "Action taken",
        "Regulator reference",
    ]


def test_row_holds_the_notification_with_real_dates_and_numbers() -> None:
    _, row = load([archive_row()])
    by_header = dict(zip(HEADERS, row, strict=True))

    assert by_header == {
        "Notified at (UTC time)": datetime(2026, 3, 2, 9, 0),
        "Study date": datetime(2026, 3, 2, 0, 0),
        "Study time": time(8, 15, 30),
        "Station": "CTAWP00001",
        "Display name": "Main CT",
        "Accession number": "ACC0042",
        "Study description": "CT HEAD",
        "Protocol": "Head routine",
        "Rule": "adult head",
        "Severity": "notification",
        "Metric": "CTDIvol (event)",
        "Value": 76.12,
        "Limit": 50,
        "Unit": "mGy",
        "Ratio": pytest.approx(1.5224),
        "Reference value": None,
        "Multiple": None,
        "Reference": None,
        "Previous value": 60.5,
        "Detail": None,
        "Status": "sent",
        "Sent at (UTC time)": datetime(2026, 3, 2, 9, 0, 5),
        "Recipients": None,
        "Error": None,
        **dict.fromkeys(HEADERS[24:31]),
        "Changed after review": None,
        "Notified at (UTC)": datetime(2026, 3, 2, 9, 0),
        "Message-ID": "<ctpoller.7@hospital.example>",
        "Study Instance UID": "1.2.826.0.1.3680043.8.498.1",
        "Irradiation event": "1.2.3.4.5",
        "Notification key": "nkey",
    }


@pytest.mark.parametrize(
    ("status", "words"),
    [("pending", "pending"), ("sent", "sent"), ("failed", "failed"), ("not_sent", "recorded, not emailed")],
)
def test_status_is_written_in_words(status: MessageStatus, words: str) -> None:
    _, row = load([archive_row(status=status)])

    assert row[HEADERS.index("Status")] == words


def test_missing_values_and_a_zero_limit_leave_cells_empty() -> None:
    row = archive_row(
        notification={"limit": Decimal(0), "previous_value": None, "protocol": None, "study_time": None},
        sent_at=None,
    )
    _, values = load([row])
    by_header = dict(zip(HEADERS, values, strict=True))

    assert by_header["Ratio"] is None
    assert by_header["Previous value"] is None
    assert by_header["Protocol"] is None
    assert by_header["Study time"] is None
    assert by_header["Sent at (UTC time)"] is None


def test_sheet_has_frozen_header_autofilter_and_column_widths(tmp_path: Path) -> None:
    path = tmp_path / "archive.xlsx"
    write_archive([archive_row(), archive_row()], path)
    workbook = openpyxl.load_workbook(path)
    sheet = workbook["Notifications"]

    assert sheet.freeze_panes == "A2"
    assert sheet.auto_filter.ref == f"A1:{openpyxl.utils.get_column_letter(len(HEADERS))}3"
    assert sheet.column_dimensions["G"].width == 30
    workbook.close()


@pytest.mark.parametrize("hostile", HOSTILE)
def test_text_that_looks_like_a_formula_is_stored_unchanged_as_quoted_text(hostile: str) -> None:
    row = archive_row(
        notification={
            "protocol": hostile,
            "description": hostile,
            "rule": hostile,
            "accession_number": hostile,
        },
        error=hostile,
        message_id=hostile,
    )
    _, cells = load_cells([row])
    expected = hostile.replace("\r", "\n")

    for header in ("Protocol", "Study description", "Rule", "Accession number", "Error", "Message-ID"):
        cell = cells[HEADERS.index(header)]
        assert (cell.value, cell.data_type, cell.quotePrefix) == (expected, "s", True)


def test_error_code_lookalike_stays_text() -> None:
    buffer = io.BytesIO()
    build_workbook([archive_row(notification={"protocol": "#N/A"})]).save(buffer)
    workbook = openpyxl.load_workbook(io.BytesIO(buffer.getvalue()))
    cell = workbook["Notifications"].cell(row=2, column=HEADERS.index("Protocol") + 1)
    workbook.close()

    assert (cell.value, cell.data_type) == ("#N/A", "s")


def test_control_characters_are_replaced_and_long_text_is_cut_to_the_excel_limit() -> None:
    assert cell_text("a\x00b\x1fc\x0bd") == "a\ufffdb\ufffdc\ufffdd"
    assert len(cell_text("x" * 40_000)) == CELL_TEXT_MAX
    assert len(cell_text("=" + "x" * 40_000)) == CELL_TEXT_MAX


def test_unicode_survives_the_round_trip() -> None:
    text = "Schädel 頭部 😀 ‮RTL‬ ت\nzweite Zeile"
    _, values = load([archive_row(notification={"description": text, "station_name": "CT ½"})])

    assert values[HEADERS.index("Study description")] == text
    assert values[HEADERS.index("Station")] == "CT ½"


@settings(max_examples=100, deadline=None)
@given(texts=st.lists(st.text(max_size=60), min_size=4, max_size=4))
def test_no_text_ever_becomes_a_formula(texts: list[str]) -> None:
    description, protocol, rule, error = texts
    row = archive_row(notification={"description": description, "protocol": protocol, "rule": rule}, error=error)
    _, cells = load_cells([row])  # fails on any formula cell

    for header, text in zip(("Study description", "Protocol", "Rule", "Error"), texts, strict=True):
        cell = cells[HEADERS.index(header)]
        assert cell.value == (cell_text(text) or None)
        assert cell.quotePrefix == (text[:1] in ("=", "+", "-", "@", "\t", "\r"))


def test_write_archive_writes_every_row_and_returns_the_count(tmp_path: Path) -> None:
    path = tmp_path / "archive.xlsx"
    rows = (archive_row(notification={"accession_number": f"ACC{i}"}) for i in range(250))

    assert write_archive(rows, path) == 250
    workbook = openpyxl.load_workbook(path, read_only=True)
    values = [row for row in workbook["Notifications"].iter_rows(values_only=True)]
    workbook.close()
    assert len(values) == 251
    assert values[-1][HEADERS.index("Accession number")] == "ACC249"


def test_rewriting_replaces_the_archive(tmp_path: Path) -> None:
    path = tmp_path / "archive.xlsx"
    write_archive([archive_row()] * 3, path)
    write_archive([archive_row()], path)

    workbook = openpyxl.load_workbook(path)
    assert workbook["Notifications"].max_row == 2
    workbook.close()
    assert [p.name for p in tmp_path.iterdir()] == ["archive.xlsx"]


def test_failure_while_writing_keeps_the_old_archive_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    path = tmp_path / "archive.xlsx"
    write_archive([archive_row()], path)
    before = path.read_bytes()

    def rows_then_disk_full() -> Iterator[ArchiveRow]:
        yield archive_row()
        raise OSError(28, "No space left on device")

    with pytest.raises(NotifyError) as caught:
        write_archive(rows_then_disk_full(), path)

    assert caught.value.permanent is False
    assert str(path) in str(caught.value) and "CTPOLLER_ARCHIVE_PATH" in str(caught.value)
    assert "No space left on device" in str(caught.value)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["archive.xlsx"]


def test_archive_path_that_is_a_directory_raises_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    path = tmp_path / "archive.xlsx"
    path.mkdir()

    with pytest.raises(NotifyError, match="CTPOLLER_ARCHIVE_PATH") as caught:
        write_archive([archive_row()], path)

    assert caught.value.permanent is False
    assert path.is_dir()
    assert [p.name for p in tmp_path.iterdir()] == ["archive.xlsx"]


def test_failed_rename_keeps_the_old_archive_and_removes_the_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "archive.xlsx"
    write_archive([archive_row()], path)
    before = path.read_bytes()

    def refuse(source: object, target: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(NotifyError, match=r"Permission denied.*CTPOLLER_ARCHIVE_PATH"):
        write_archive([archive_row()] * 2, path)

    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["archive.xlsx"]


def test_error_from_the_rows_propagates_unchanged_and_keeps_the_old_archive(tmp_path: Path) -> None:
    path = tmp_path / "archive.xlsx"
    write_archive([archive_row()], path)
    before = path.read_bytes()

    def rows_then_state_failure() -> Iterator[ArchiveRow]:
        yield archive_row()
        raise RuntimeError("state store went away")

    with pytest.raises(RuntimeError, match="state store went away"):
        write_archive(rows_then_state_failure(), path)

    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["archive.xlsx"]


def test_missing_directory_raises_notify_error(tmp_path: Path) -> None:
    with pytest.raises(NotifyError, match="CTPOLLER_ARCHIVE_PATH"):
        write_archive([archive_row()], tmp_path / "no such dir" / "archive.xlsx")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_read_only_directory_keeps_the_old_archive(tmp_path: Path) -> None:
    path = tmp_path / "archive.xlsx"
    write_archive([archive_row()], path)
    before = path.read_bytes()
    tmp_path.chmod(0o555)
    try:
        with pytest.raises(NotifyError, match="CTPOLLER_ARCHIVE_PATH"):
            write_archive([archive_row()] * 2, path)
    finally:
        tmp_path.chmod(0o755)
    assert path.read_bytes() == before


def test_the_archive_gets_the_configured_mode_also_when_it_existed_with_another(tmp_path: Path) -> None:
    path = tmp_path / "archive.xlsx"
    write_archive([archive_row()], path)
    assert path.stat().st_mode & 0o777 == 0o640  # readable by a QA group, by default
    path.chmod(0o600)

    write_archive([archive_row()], path, mode=0o644)

    assert path.stat().st_mode & 0o777 == 0o644


def _saved_parts(rows: list[dict[str, Any]], *, fast: bool) -> dict[str, bytes]:
    buffer = io.BytesIO()
    xlsx.build_workbook(COLUMNS, iter(rows), fast=fast).save(buffer)
    with zipfile.ZipFile(io.BytesIO(buffer.getvalue())) as archive:
        # Not compared: the time of saving (docProps/core.xml) and the Summary sheet (sheet2: the same code
        # on both paths, and it counts open items against the time of building).
        skip = {"docProps/core.xml", "xl/worksheets/sheet2.xml"}
        return {name: archive.read(name) for name in archive.namelist() if name not in skip}


KEY_HEADER = HEADERS[-1]
DRL_ALERT: dict[str, Any] = {
    "severity": "alert",
    "limit": Decimal("94.0"),
    "reference": "UK NDRL 2022",
    "reference_value": Decimal("47"),
    "multiple": Decimal("2.0"),
    "metric": "trend_ctdivol",
    "event_key": "",
    "detail": "mean of the last 20 exams on Main CT: 101 mGy (2.15 × 47 mGy UK NDRL 2022)",
}
MIXED_ROWS: list[dict[str, Any]] = [
    row_cells(archive_row(), "nkey-1", {"outcome": "justified", "reviewed_on": "2026-01-02"}, None, UTC, "UTC"),
    row_cells(archive_row(notification={"protocol": "=1", "description": " padded "}), "nkey-2", {}, "yes", UTC, "UTC"),
    row_cells(archive_row(notification=DRL_ALERT), "nkey-3", {}, None, UTC, "UTC"),
    # adopted rows: any cell types an older workbook held, and ones only openpyxl's own path writes
    {"Unit": "mGy", "Value": 12, "Limit": 1e300, "Ratio": float("nan"), "Station": "", "Rule": True, "Protocol": "<&>"},
    {"Unit": 'a"b', "Value": 0.1, "Study date": datetime(1900, 1, 1).date(), "Study time": time(23, 59, 59, 999)},
    {"Unit": None, "Previous value": -3.5, "Error": "tab\tand\nline", KEY_HEADER: "k", "Comment": Decimal("1.5")},
]


def test_rows_written_as_xml_text_are_byte_for_byte_what_openpyxl_writes() -> None:
    fast, reference = _saved_parts(MIXED_ROWS, fast=True), _saved_parts(MIXED_ROWS, fast=False)

    assert fast.keys() == reference.keys()
    for name in reference:
        assert fast[name] == reference[name], name


@settings(max_examples=25, deadline=None)
@given(
    texts=st.lists(st.text(max_size=40), min_size=3, max_size=3),
    numbers=st.lists(
        st.floats(allow_nan=True, allow_infinity=True) | st.integers(-(2**60), 2**60), min_size=3, max_size=3
    ),
    moment=st.datetimes(min_value=datetime(1900, 3, 1), max_value=datetime(9999, 1, 1)),
)
def test_any_row_written_as_xml_text_matches_openpyxl(texts: list[str], numbers: list[Any], moment: datetime) -> None:
    row = {"Station": texts[0], "Protocol": texts[1], "Unit": texts[2], "Value": numbers[0], "Limit": numbers[1]}
    row.update({"Ratio": numbers[2], "Study date": moment.date(), "Study time": moment.time(), HEADERS[0]: moment})
    row[UTC_HEADER] = moment  # the Summary's oldest open item, else "now" at each build

    fast, reference = _saved_parts([row], fast=True), _saved_parts([row], fast=False)
    for name in reference:
        assert fast[name].decode() == reference[name].decode(), name


def test_a_limit_from_a_reference_level_shows_level_multiple_source_severity_and_detail() -> None:
    _, row = load_cells([archive_row(notification=DRL_ALERT)])
    by_header = {h: cell for h, cell in zip(HEADERS, row, strict=True)}

    assert [by_header[h].value for h in ("Severity", "Limit", "Reference value", "Multiple", "Reference")] == [
        "alert",
        94,
        47,
        2,
        "UK NDRL 2022",
    ]
    assert by_header["Detail"].value == DRL_ALERT["detail"]
    assert by_header["Metric"].value == "mean CTDIvol of a scanner's last exams of one type"
    assert by_header["Irradiation event"].value == "(whole exam)"
    assert by_header["Reference value"].number_format == '0.00" mGy"'
    assert by_header["Multiple"].number_format == '0.00"×"'


def test_an_alert_is_red_in_the_severity_column(tmp_path: Path) -> None:
    path = tmp_path / "archive.xlsx"
    write_archive([archive_row(notification=DRL_ALERT), archive_row()], path)
    sheet = openpyxl.load_workbook(path)["Notifications"]
    letter = openpyxl.utils.get_column_letter(HEADERS.index("Severity") + 1)

    [alert] = [r for area in sheet.conditional_formatting for r in area.rules if r.formula == ['"alert"']]
    [area] = [str(a.sqref) for a in sheet.conditional_formatting if alert in a.rules]
    assert area == f"{letter}2:{letter}3" and alert.operator == "equal"
