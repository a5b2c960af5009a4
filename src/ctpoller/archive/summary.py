"""The workbook's ``Summary`` sheet: the record in counts, with a native Excel chart.

Notifications per month (of the study date) and station, with a stacked bar chart of that table;
per rule (how many, how many alerts, how many open, the highest value ÷ limit, the source of its
limit); open items (not yet reviewed) by age; outcomes and reasons (empty until reviews are
recorded). It reads the record through ``items.report_items``, like the HTML report.

The notification sheet streams its rows once; a ``Tally`` counts them on the way
(``tally.counting(rows)``), so the summary needs no second pass and memory stays flat however
long the record is: the tally keeps counts, never rows.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from openpyxl import Workbook
from openpyxl.cell import WriteOnlyCell
from openpyxl.chart import BarChart, Reference
from openpyxl.styles import Font
from openpyxl.utils import get_column_letter

from ctpoller.archive.columns import SEVERITY, UTC_HEADER
from ctpoller.archive.items import Item, NotificationKey, Review, item, notification_key
from ctpoller.core.model import ArchiveRow

SHEET_TITLE = "Summary"
#: Open items by age in days: (label, from, up to but not including). 14 days: UK IR(ME)R's first deadline.
AGE_BANDS: tuple[tuple[str, int, int | None], ...] = (
    ("under 14 days", 0, 14),
    ("14 to 29 days", 14, 30),
    ("30 to 83 days", 30, 84),
    ("84 days or more", 84, None),
)
NOT_REVIEWED = "not yet reviewed"


@dataclass
class RuleCounts:
    notifications: int = 0
    alerts: int = 0
    open: int = 0
    highest_ratio: Decimal | None = None
    reference: str = ""  # the source of the limit, as the rule's newest notification names it


@dataclass
class Tally:
    """Counts of the record, kept while its rows stream by (``counting``) or added one by one."""

    reviews: Mapping[NotificationKey, Review] | None = None
    now: datetime = field(default_factory=lambda: datetime.now(UTC))
    total: int = 0
    alerts: int = 0
    per_month: Counter[tuple[str, str]] = field(default_factory=Counter)  # (month, station) -> count
    per_rule: dict[str, RuleCounts] = field(default_factory=dict)
    open_ages: Counter[str] = field(default_factory=Counter)  # age band -> count
    oldest_open: datetime | None = None
    outcomes: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)

    def add(self, row: ArchiveRow) -> None:
        review = self.reviews.get(notification_key(row)) if self.reviews else None
        self.add_item(item(row, review))

    def add_item(self, entry: Item) -> None:
        self.total += 1
        self.alerts += entry.alert
        self.per_month[entry.month, entry.station] += 1
        rule = self.per_rule.setdefault(entry.rule, RuleCounts())
        rule.notifications += 1
        rule.alerts += entry.alert
        rule.reference = entry.reference or rule.reference
        if entry.ratio is not None and (rule.highest_ratio is None or entry.ratio > rule.highest_ratio):
            rule.highest_ratio = entry.ratio
        if entry.open:
            rule.open += 1
            self.outcomes[NOT_REVIEWED] += 1
            self.open_ages[age_band(entry.age_days(self.now))] += 1
            if self.oldest_open is None or entry.notified_at < self.oldest_open:
                self.oldest_open = entry.notified_at
        else:
            self.outcomes[entry.outcome or ""] += 1
            if entry.reason:
                self.reasons[entry.reason] += 1

    def counting_cells(self, rows: Iterable[Mapping[str, Any]]) -> Iterator[Mapping[str, Any]]:
        """The workbook's rows (cells by header, reviews included) unchanged, each counted as it passes."""
        for cells in rows:
            self.add_item(item_from_cells(cells))
            yield cells

    def counting(self, rows: Iterable[ArchiveRow]) -> Iterator[ArchiveRow]:
        """``rows`` unchanged, each counted as it passes."""
        for row in rows:
            self.add(row)
            yield row

    @property
    def months(self) -> list[str]:
        return sorted({month for month, _ in self.per_month})

    @property
    def stations(self) -> list[str]:
        return sorted({station for _, station in self.per_month})


def age_band(days: int) -> str:
    for label, low, high in AGE_BANDS:
        if days >= low and (high is None or days < high):
            return label
    return AGE_BANDS[-1][0]


def add_summary(
    workbook: Workbook,
    rows: Iterable[ArchiveRow] | Tally,
    reviews: Mapping[NotificationKey, Review] | None = None,
    *,
    now: datetime | None = None,
) -> Tally:
    """Add the ``Summary`` sheet to ``workbook`` (write-only or not): ``rows`` are counted here, or
    ``rows`` is a ``Tally`` that counted them already (then ``reviews`` and ``now`` are its own)."""
    if isinstance(rows, Tally):
        tally = rows
    else:
        tally = Tally(reviews=reviews, now=now or datetime.now(UTC))
        for row in rows:
            tally.add(row)
    _Sheet(workbook, tally).write()
    return tally


class _Sheet:
    """Appends the sections one after another (a write-only sheet is written top to bottom)."""

    def __init__(self, workbook: Workbook, tally: Tally) -> None:
        from ctpoller.archive.xlsx import FORMULA_STARTS, cell_text  # here: xlsx imports this module

        self.text, self.formula_starts = cell_text, FORMULA_STARTS
        self.sheet = workbook.create_sheet(SHEET_TITLE)
        self.tally = tally
        self.row = 0
        self.bold = Font(bold=True)

    def append(self, values: Iterable[Any] = (), *, bold: bool = False, number_format: str | None = None) -> int:
        cells = []
        for value in values:
            cell = WriteOnlyCell(self.sheet, value=self.text(value) if isinstance(value, str) else value)
            if isinstance(value, str):  # a station or rule name is text, never a formula
                cell.data_type = "s"
                cell.quotePrefix = value.startswith(self.formula_starts)
            if bold:
                cell.font = self.bold
            elif number_format and isinstance(value, int | float) and not isinstance(value, bool):
                cell.number_format = number_format
            elif isinstance(value, datetime | date):
                cell.number_format = "yyyy-mm-dd" if type(value) is date else "yyyy-mm-dd hh:mm"
            cells.append(cell)
        self.sheet.append(cells)
        self.row += 1
        return self.row

    def write(self) -> None:
        t = self.tally
        self.sheet.column_dimensions["A"].width = 34
        for index in range(2, max(len(t.stations), 3) + 3):
            self.sheet.column_dimensions[get_column_letter(index)].width = 16
        self.append(["Summary of the notifications"], bold=True)
        opened = t.outcomes[NOT_REVIEWED]
        written = t.now.astimezone(UTC).replace(tzinfo=None, microsecond=0)
        alerts = f" ({t.alerts} alert{'' if t.alerts == 1 else 's'})" if t.alerts else ""
        self.append([f"{t.total} notifications{alerts}, {opened} not yet reviewed; written (UTC)", written])
        self.append()
        self._months()
        self.append()
        self._rules()
        self.append()
        self._open()
        self.append()
        self._counts("Outcomes", "Outcome", t.outcomes)
        self.append()
        self._counts("Reasons (of reviewed notifications)", "Reason", t.reasons)

    def _months(self) -> None:
        t = self.tally
        stations, months = t.stations, t.months
        self.append(["Notifications per month (of the study date) and station"], bold=True)
        header = self.append(["Month", *stations, "Total"], bold=True)
        for month in months:
            counts = [t.per_month.get((month, station), 0) for station in stations]
            self.append([month, *counts, sum(counts)])
        if months:
            self._chart(header, len(stations), len(months))

    def _chart(self, header: int, n_stations: int, n_months: int) -> None:
        chart = BarChart()
        chart.type = "col"
        chart.grouping = "stacked"
        chart.overlap = 100
        chart.title = "Notifications per month and station"
        chart.y_axis.title = "notifications"
        chart.x_axis.title = "month of the study date"
        chart.x_axis.delete = chart.y_axis.delete = False  # else recent Excel versions hide the axes
        chart.height, chart.width = 9, max(16, min(40, 2 + n_months * 1.2))
        data = Reference(self.sheet, min_col=2, max_col=1 + n_stations, min_row=header, max_row=header + n_months)
        months = Reference(self.sheet, min_col=1, min_row=header + 1, max_row=header + n_months)
        chart.add_data(data, titles_from_data=True)
        chart.set_categories(months)
        self.sheet.add_chart(chart, f"{get_column_letter(n_stations + 4)}{header}")

    def _rules(self) -> None:
        self.append(["Notifications per rule"], bold=True)
        header = ["Rule", "Notifications", "Alerts", "Not yet reviewed", "Highest value ÷ limit", "Reference"]
        self.append(header, bold=True)
        for name in sorted(self.tally.per_rule):
            counts = self.tally.per_rule[name]
            highest = float(counts.highest_ratio) if counts.highest_ratio is not None else None
            cells = [name, counts.notifications, counts.alerts, counts.open, highest, counts.reference or None]
            self.append(cells, number_format='0.00"×"')

    def _open(self) -> None:
        t = self.tally
        self.append(["Open items (not yet reviewed) by age since notified"], bold=True)
        self.append(["Age", "Open items"], bold=True)
        for label, _, _ in AGE_BANDS:
            self.append([label, t.open_ages.get(label, 0)])
        oldest = t.oldest_open.astimezone(UTC).replace(tzinfo=None) if t.oldest_open else None
        self.append(["Oldest open item notified (UTC)", oldest if oldest else "none"])

    def _counts(self, title: str, what: str, counts: Counter[str]) -> None:
        self.append([title], bold=True)
        self.append([what, "Notifications"], bold=True)
        for name, count in sorted(counts.items(), key=lambda pair: (-pair[1], pair[0])):
            self.append([name, count])


def item_from_cells(cells: Mapping[str, Any]) -> Item:
    """One workbook row (by header, as ``archive.columns.row_cells`` makes it) as a summary item."""
    notified = cells.get(UTC_HEADER)
    notified_at = notified.replace(tzinfo=UTC) if isinstance(notified, datetime) else datetime.now(UTC)
    study_date = cells.get("Study date") if isinstance(cells.get("Study date"), date) else None
    when = study_date or notified_at.date()
    value, limit, ratio = (cells.get(name) for name in ("Value", "Limit", "Ratio"))
    outcome = str(cells.get("Outcome") or "").strip() or None
    return Item(
        notified_at=notified_at,
        month=f"{when.year:04d}-{when.month:02d}",
        study_date=study_date,
        station=str(cells.get("Display name") or cells.get("Station") or "unknown station"),
        description=str(cells.get("Study description") or ""),
        protocol=str(cells.get("Protocol") or ""),
        rule=str(cells.get("Rule") or ""),
        metric=str(cells.get("Metric") or ""),
        unit=str(cells.get("Unit") or ""),
        value=Decimal(str(value)) if value is not None else Decimal(0),
        limit=Decimal(str(limit)) if limit is not None else Decimal(0),
        ratio=Decimal(str(ratio)) if ratio is not None else None,
        update=cells.get("Previous value") is not None,
        status=str(cells.get("Status") or ""),
        outcome=outcome,
        reason=(str(cells.get("Reason") or "").strip() or None) if outcome else None,
        severity="alert" if str(cells.get(SEVERITY) or "").strip() == "alert" else "notification",
        reference=str(cells.get("Reference") or ""),
        reference_value=_decimal(cells.get("Reference value")),
        multiple=_decimal(cells.get("Multiple")),
    )


def _decimal(value: Any) -> Decimal | None:
    """A number cell as a Decimal; anything else (empty, text a reviewer typed) as None."""
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        return None
    number = Decimal(str(value))
    return number if number.is_finite() else None
