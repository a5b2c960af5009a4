"""``ctpoller export``: every notification of a period with its current review and its full review
history, for audits and regulator submissions.

CSV: two files, ``PATH`` (one row per notification) and ``PATH`` with ``-history`` before the suffix
(one row per review change). XLSX: one workbook, sheets "Notifications" and "Review history".
The period is by the day a notification was recorded (UTC), ``since`` and ``until`` included.
``deidentify``: no accession number, no Study Instance UID, no irradiation event UID and no
Message-ID (a trend's or cumulative value's Detail names no exam or patient: it stays); the
notification key (a one-way digest) stays as the pseudonym that links the two.
"""

from __future__ import annotations

import csv
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

from ctpoller.archive.columns import columns, row_cells
from ctpoller.core.review import FIELDS, fold, notification_key
from ctpoller.errors import ConfigError
from ctpoller.files import atomic_write
from ctpoller.store.store import StateStore

IDENTIFYING = ("Accession number", "Study Instance UID", "Irradiation event", "Message-ID")
HISTORY = ("Notification key", "Field", "Old value", "New value", "Changed by", "Changed at (UTC)")


def export(
    state: StateStore, *, since: date, until: date | None, fmt: str, deidentify: bool, output: Path | None
) -> tuple[int, int, list[Path]]:
    """Write the export (default ``./ctpoller-export.FORMAT``); return (notifications, review changes, files)."""
    if not state.exists():
        raise ConfigError(f"export: no state store at {state.where} (run 'ctpoller run' first)")
    output = output or Path(f"ctpoller-export.{fmt}")
    if until is not None and until < since:
        raise ConfigError(f"export: --until {until} is before --since {since}")
    start = datetime.combine(since, time(0), UTC)
    end = datetime.combine(until, time(0), UTC) + timedelta(days=1) if until else None
    cols = [c.header for c in columns("UTC") if c.header not in (IDENTIFYING if deidentify else ())]
    cols = [h for h in cols if h != "Notified at (UTC time)"]
    notes: list[dict[str, Any]] = []
    keys = []
    for row in state.archive_rows(since=start, until=end):
        n = row.notification
        key = notification_key(n.study_uid, n.rule, n.metric, n.event_key, row.message_id)
        keys.append((key, row))
    changes = state.changes([key for key, _ in keys])
    reviews = fold(changes)
    for key, row in keys:
        cells = row_cells(row, key, reviews.get(key, {}), None, UTC, "UTC")
        notes.append({h: cells.get(h) for h in cols})
    names = dict(FIELDS)
    history = [
        dict(
            zip(
                HISTORY,
                (c.key, names.get(c.field, c.field), c.old, c.new, c.who, c.at.replace(tzinfo=None)),
                strict=True,
            )
        )
        for c in changes
    ]
    if fmt == "csv":
        second = output.with_name(f"{output.stem}-history{output.suffix or '.csv'}")
        _csv(output, cols, notes)
        _csv(second, list(HISTORY), history)
        return len(notes), len(history), [output, second]
    _xlsx(output, cols, notes, history)
    return len(notes), len(history), [output]


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    text = str(value)
    # A spreadsheet opening the CSV must not run it as a formula.
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") and not _number(text) else text


def _number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _csv(path: Path, headers: list[str], rows: list[dict[str, Any]]) -> None:
    def write(file: Any) -> None:
        import io

        text = io.TextIOWrapper(file, encoding="utf-8-sig", newline="")
        writer = csv.writer(text)
        writer.writerow(headers)
        for row in rows:
            writer.writerow([_text(row.get(h)) for h in headers])
        text.flush()
        text.detach()

    atomic_write(path, write)


def _xlsx(path: Path, headers: list[str], notes: list[dict[str, Any]], history: list[dict[str, Any]]) -> None:
    from openpyxl import Workbook
    from openpyxl.cell import WriteOnlyCell

    from ctpoller.archive.xlsx import FORMULA_STARTS, cell_text

    workbook = Workbook(write_only=True)
    for title, names, rows in (("Notifications", headers, notes), ("Review history", list(HISTORY), history)):
        sheet = workbook.create_sheet(title)
        sheet.freeze_panes = "A2"
        sheet.append(names)
        for row in rows:
            cells = []
            for header in names:
                value = row.get(header)
                if isinstance(value, str):
                    cell = WriteOnlyCell(sheet, value=cell_text(value))
                    cell.data_type = "s"  # never a formula
                    cell.quotePrefix = value.startswith(FORMULA_STARTS)
                    cells.append(cell)
                else:
                    cells.append(value)
            sheet.append(cells)
    atomic_write(path, workbook.save)
