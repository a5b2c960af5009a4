"""The archive's columns: headers, widths and formats, and one notification as the cells of its row.

A row is a mapping header -> value (text, number, naive datetime, date or time): a notification from
the store and a row adopted from an older workbook are written the same way. Times are shown in the
site's time zone (``CTPOLLER_TIMEZONE``) with the UTC time kept in a column of its own.

A workbook is read back by header name and the hidden "Notification key", never by position, so a
column may be added anywhere: a workbook written before it existed still reads back (its reviews,
and its rows when adopted; an adopted row leaves the new column empty). Severity, Reference value,
Multiple, Reference and Detail came so (issue 14): a limit from a reference level is
``Reference value`` × ``Multiple`` with its source in ``Reference``; a plain limit leaves the first
two empty; Detail says what a trend or cumulative value is made of.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, tzinfo
from decimal import Decimal
from typing import Any

from ctpoller.core.model import ArchiveRow
from ctpoller.core.review import FIELDS, Review

KEY = "Notification key"
CHANGED = "Changed after review"
UTC_HEADER = "Notified at (UTC)"
REVIEW_HEADERS = tuple(header for _, header in FIELDS)
SEVERITY = "Severity"

STATUS_WORDS: dict[str, str] = {
    "pending": "pending",
    "sending": "being sent",
    "sent": "sent",
    "failed": "failed",
    "dismissed": "dismissed",
    "not_sent": "recorded, not emailed",
}


@dataclass(frozen=True)
class Column:
    header: str
    width: float
    kind: str = "text"  # text | datetime | date | time | value | ratio | review | key


def columns(zone_name: str) -> tuple[Column, ...]:
    """Every column in order; ``zone_name`` names the site's time zone in the time headers."""
    review = tuple(
        Column(header, 28 if header in ("Comment", "Action taken") else 18, "review") for header in REVIEW_HEADERS
    )
    return (
        Column(f"Notified at ({zone_name} time)", 20, "datetime"),
        Column("Study date", 12, "date"),
        Column("Study time", 10, "time"),
        Column("Station", 16),
        Column("Display name", 18),
        Column("Accession number", 18),
        Column("Study description", 30),
        Column("Protocol", 30),
        Column("Rule", 20),
        Column(SEVERITY, 13),
        Column("Metric", 24),
        Column("Value", 14, "value"),
        Column("Limit", 14, "value"),
        Column("Unit", 8),
        Column("Ratio", 9, "ratio"),
        Column("Reference value", 14, "value"),
        Column("Multiple", 9, "ratio"),
        Column("Reference", 24),
        Column("Previous value", 14, "value"),
        Column("Detail", 40),
        Column("Status", 20),
        Column(f"Sent at ({zone_name} time)", 20, "datetime"),
        Column("Recipients", 30),
        Column("Error", 30),
        *review,
        Column(CHANGED, 22),
        Column(UTC_HEADER, 20, "datetime"),
        Column("Message-ID", 40),
        Column("Study Instance UID", 40),
        Column("Irradiation event", 40),
        Column(KEY, 34, "key"),
    )


def local(moment: datetime | None, zone: tzinfo) -> datetime | None:
    """A naive datetime in ``zone`` (Excel has no time zones); a naive input is taken to be UTC."""
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(zone).replace(tzinfo=None)


def number(value: Decimal | None) -> float | None:
    if value is None or not value.is_finite():
        return None
    result = float(value)
    return result if math.isfinite(result) else None


def row_cells(
    row: ArchiveRow, key: str, review: Review, changed: str | None, zone: tzinfo, zone_name: str
) -> dict[str, Any]:
    """One notification's row: what ctpoller knows, the current review and whether the exam changed after it."""
    n = row.notification
    cells: dict[str, Any] = {
        f"Notified at ({zone_name} time)": local(row.created_at, zone),
        "Study date": n.study_date,
        "Study time": n.study_time.replace(tzinfo=None) if n.study_time is not None else None,
        "Station": n.station_name,
        "Display name": n.display_name,
        "Accession number": n.accession_number,
        "Study description": n.description,
        "Protocol": n.protocol,
        "Rule": n.rule,
        SEVERITY: n.severity,
        "Metric": n.metric_label,
        "Value": number(n.value),
        "Limit": number(n.limit),
        "Unit": n.unit,
        "Ratio": number(n.ratio),
        "Reference value": number(n.reference_value),
        "Multiple": number(n.multiple),
        "Reference": n.reference,
        "Previous value": number(n.previous_value),
        "Detail": n.detail,
        "Status": STATUS_WORDS.get(row.status, str(row.status)),
        f"Sent at ({zone_name} time)": local(row.sent_at, zone),
        "Recipients": ", ".join(row.recipients) or None,
        "Error": row.error,
        CHANGED: changed,
        UTC_HEADER: local(row.created_at, UTC),
        "Message-ID": row.message_id,
        "Study Instance UID": n.study_uid,
        "Irradiation event": n.event_key or "(whole exam)",
        KEY: key,
    }
    for name, header in FIELDS:
        cells[header] = review_cell(review.get(name))
    return cells


def review_cell(text: str | None) -> Any:
    """A stored review value as its cell: a date typed as a date stays a date in Excel."""
    if text is not None and len(text) == 10:
        try:
            return date.fromisoformat(text)
        except ValueError:
            pass
    return text


# -- adopted rows: cells kept as JSON in the store ---------------------------------------------------


def encode(cells: dict[str, Any]) -> dict[str, Any]:
    """Cells as JSON values; datetimes, dates and times tagged so that they come back as themselves."""
    out: dict[str, Any] = {}
    for header, value in cells.items():
        if isinstance(value, datetime):
            out[header] = {"datetime": value.replace(tzinfo=None).isoformat()}
        elif isinstance(value, date):
            out[header] = {"date": value.isoformat()}
        elif isinstance(value, time):
            out[header] = {"time": value.isoformat()}
        elif value is None or isinstance(value, (str, int, float, bool)):
            out[header] = value
        else:
            out[header] = str(value)
    return out


def decode(cells: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for header, value in cells.items():
        if isinstance(value, dict) and len(value) == 1:
            ((kind, text),) = value.items()
            parse = {"datetime": datetime.fromisoformat, "date": date.fromisoformat, "time": time.fromisoformat}
            out[header] = parse[kind](text) if kind in parse else text
        else:
            out[header] = value
    return out
