"""The workbook's Summary sheet, read back with openpyxl as a reviewer's Excel would open the file."""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import openpyxl
from openpyxl.chart import BarChart

from ctpoller.archive import xlsx
from ctpoller.archive.columns import columns, row_cells
from ctpoller.archive.items import notification_key
from ctpoller.archive.summary import add_summary
from support.factories import archive_row

NOW = datetime(2026, 3, 20, 7, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Verdict:
    outcome: str | None
    reason: str | None


def rows():
    made = []
    for index, (station, month, rule) in enumerate(
        [
            ("Main CT", 1, "adult head"),
            ("Main CT", 1, "adult head"),
            ("=Emergency CT", 1, "adult chest"),
            ("Main CT", 2, "adult chest"),
            ("=Emergency CT", 3, "adult head"),
        ]
    ):
        made.append(
            archive_row(
                notification={
                    "study_uid": f"1.2.3.{index}",
                    "display_name": station,
                    "rule": rule,
                    "study_date": date(2026, month, 10),
                    "value": Decimal(60 + 10 * index),
                    "limit": Decimal(50),
                },
                created_at=datetime(2026, month, 10, 12, tzinfo=UTC),
            )
        )
    return made


def write_archive(rows: object, path: Path) -> int:
    """The archive as a run writes it: each row's cells by header, no review yet."""
    return xlsx.write_archive(columns("UTC"), (row_cells(r, "key", {}, None, UTC, "UTC") for r in rows), path)  # type: ignore[attr-defined]


def sections(sheet) -> dict[str, list[tuple]]:
    """The sheet's sections by their title: the rows under each, up to the next empty row."""
    found: dict[str, list[tuple]] = {}
    current: list[tuple] | None = None
    for values in sheet.iter_rows(values_only=True):
        if all(v is None for v in values):
            current = None
        elif current is None:
            current = found.setdefault(str(values[0]), [])
        else:
            current.append(tuple(v for v in values if v is not None))
    return found


def test_the_archive_has_a_summary_sheet_with_a_native_bar_chart_of_months_and_stations(tmp_path: Path) -> None:
    path = tmp_path / "archive.xlsx"
    assert write_archive(rows(), path) == 5

    workbook = openpyxl.load_workbook(path)
    assert workbook.sheetnames == ["Notifications", "Summary", "Lists"]
    summary = sections(workbook["Summary"])
    months = summary["Notifications per month (of the study date) and station"]
    assert months == [
        ("Month", "=Emergency CT", "Main CT", "Total"),
        ("2026-01", 1, 2, 3),
        ("2026-02", 0, 1, 1),
        ("2026-03", 1, 0, 1),
    ]
    rules = summary["Notifications per rule"]
    assert rules[0] == ("Rule", "Notifications", "Alerts", "Not yet reviewed", "Highest value ÷ limit", "Reference")
    assert rules[1:] == [("adult chest", 2, 0, 2, 1.8), ("adult head", 3, 0, 3, 2.0)]
    assert summary["Outcomes"] == [("Outcome", "Notifications"), ("not yet reviewed", 5)]
    # A station named like a formula stays text (openpyxl would otherwise write it as a formula).
    assert workbook["Summary"]["B5"].data_type == "s" and workbook["Summary"]["B5"].quotePrefix
    (chart,) = workbook["Summary"]._charts  # openpyxl reads the charts of a sheet back
    assert isinstance(chart, BarChart) and chart.grouping == "stacked" and chart.type == "col"
    # One series per station, titled by the station's header cell, over the months' rows.
    assert [s.tx.strRef.f for s in chart.series] == ["'Summary'!B5", "'Summary'!C5"]
    assert [s.val.numRef.f for s in chart.series] == ["'Summary'!$B$6:$B$8", "'Summary'!$C$6:$C$8"]
    assert chart.series[0].cat.numRef.f == "'Summary'!$A$6:$A$8"


def test_reviews_move_items_from_open_to_their_outcome_and_reason(tmp_path: Path) -> None:
    made = rows()
    reviews = {
        notification_key(made[0]): Verdict("justified", "patient size / habitus"),
        notification_key(made[1]): Verdict("false positive", None),
    }
    workbook = openpyxl.Workbook()
    add_summary(workbook, made, reviews, now=NOW)
    workbook.save(tmp_path / "summary.xlsx")

    summary = sections(openpyxl.load_workbook(tmp_path / "summary.xlsx")["Summary"])
    assert summary["Outcomes"][1:] == [("not yet reviewed", 3), ("false positive", 1), ("justified", 1)]
    assert summary["Reasons (of reviewed notifications)"][1:] == [("patient size / habitus", 1)]
    ages = dict(summary["Open items (not yet reviewed) by age since notified"][1:])
    assert ages["14 to 29 days"] == 0 and ages["30 to 83 days"] == 2 and ages["84 days or more"] == 0
    assert ages["under 14 days"] == 1
    assert ages["Oldest open item notified (UTC)"] == datetime(2026, 1, 10, 12)


def test_an_empty_record_has_a_summary_without_a_chart(tmp_path: Path) -> None:
    path = tmp_path / "archive.xlsx"
    write_archive([], path)
    workbook = openpyxl.load_workbook(path)
    assert workbook["Summary"]["A2"].value.startswith("0 notifications")
    with zipfile.ZipFile(path) as archive:
        assert not [name for name in archive.namelist() if name.startswith("xl/charts/")]


def test_the_summary_counts_alerts_and_names_the_source_of_each_rules_limit(tmp_path: Path) -> None:
    made = rows()
    drl = {"severity": "alert", "reference": "UK NDRL 2022", "reference_value": Decimal(25), "multiple": Decimal(2)}
    made[0] = archive_row(notification={**drl, "rule": "adult head", "study_date": date(2026, 1, 10)})
    path = tmp_path / "archive.xlsx"
    write_archive(made, path)

    sheet = openpyxl.load_workbook(path)["Summary"]
    assert sheet["A2"].value.startswith("5 notifications (1 alert), 5 not yet reviewed")
    rules = sections(sheet)["Notifications per rule"]
    assert rules[1:] == [("adult chest", 2, 0, 2, 1.8), ("adult head", 3, 1, 3, 2.0, "UK NDRL 2022")]
