"""The QA archive: every notification with its delivery status, as one .xlsx sheet.

``build_workbook`` is pure and streams (openpyxl write-only mode), so memory stays flat however many
rows there are. ``write_archive`` replaces the file atomically: the old archive stays intact on failure.

Every text cell is a plain string, never a formula: text that a spreadsheet would read as a formula
(starting with ``=``, ``+``, ``-``, ``@``, tab or carriage return) gets a leading ``'``, characters a
worksheet cannot hold become U+FFFD, line breaks become LF, and text is cut at Excel's 32,767
characters per cell.
"""

from __future__ import annotations

import contextlib
import errno
import math
import re
import zipfile
from collections.abc import Iterable
from datetime import UTC, date, datetime, time
from decimal import Decimal
from pathlib import Path
from typing import Any

from openpyxl import Workbook
from openpyxl.cell import WriteOnlyCell
from openpyxl.styles import Alignment, Font
from openpyxl.utils import get_column_letter
from openpyxl.writer.excel import ExcelWriter

from ctpoller.archive.summary import Tally, add_summary
from ctpoller.core.model import ArchiveRow
from ctpoller.errors import NotifyError
from ctpoller.files import atomic_write

SHEET_TITLE = "Notifications"
CELL_TEXT_MAX = 32_767
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")

STATUS_WORDS: dict[str, str] = {
    "pending": "pending",
    "sending": "being sent",
    "sent": "sent",
    "failed": "failed",
    "dismissed": "dismissed",
    "not_sent": "recorded, not emailed",
}

#: (header, column width) in column order.
COLUMNS: tuple[tuple[str, float], ...] = (
    ("Notified at (UTC)", 20),
    ("Study date", 12),
    ("Study time", 10),
    ("Station", 16),
    ("Display name", 18),
    ("Accession number", 18),
    ("Study description", 30),
    ("Protocol", 30),
    ("Rule", 20),
    ("Metric", 28),
    ("Value", 10),
    ("Limit", 10),
    ("Unit", 8),
    ("Ratio", 8),
    ("Previous value", 14),
    ("Status", 20),
    ("Sent at (UTC)", 20),
    ("Error", 40),
    ("Message-ID", 40),
    ("Study Instance UID", 40),
    ("Irradiation event", 40),
)

# What openpyxl refuses (control characters), plus what XML 1.0 cannot hold at all.
_UNWRITABLE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_FORMATS = {datetime: "yyyy-mm-dd hh:mm:ss", date: "yyyy-mm-dd", time: "hh:mm:ss"}


def cell_text(text: str) -> str:
    """``text`` as it is stored in a cell: writable, within Excel's limit (``_cell`` keeps it text)."""
    text = _UNWRITABLE.sub("\ufffd", text)
    # A worksheet's XML turns a bare CR into LF when read back; write the line break Excel uses.
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text[:CELL_TEXT_MAX]


def _utc(moment: datetime | None) -> datetime | None:
    """A naive UTC datetime (Excel has no time zones); a naive input is taken to be UTC already."""
    if moment is None:
        return None
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment


def _number(value: Decimal | None) -> float | None:
    if value is None or not value.is_finite():
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _values(row: ArchiveRow) -> list[Any]:
    n = row.notification
    study_time = n.study_time.replace(tzinfo=None) if n.study_time is not None else None
    return [
        _utc(row.created_at),
        n.study_date,
        study_time,
        n.station_name,
        n.display_name,
        n.accession_number,
        n.description,
        n.protocol,
        n.rule,
        n.metric_label,
        _number(n.value),
        _number(n.limit),
        n.unit,
        _number(n.ratio),
        _number(n.previous_value),
        STATUS_WORDS.get(row.status, str(row.status)),
        _utc(row.sent_at),
        row.error,
        row.message_id,
        n.study_uid,
        n.event_key or "(whole exam)",
    ]


def _cell(sheet: Any, value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, str):
        cell = WriteOnlyCell(sheet, value=cell_text(value))
        cell.data_type = "s"  # a string, whatever it looks like: never a formula
        # Shown as it is, and Excel keeps it text when someone edits the cell (as a typed ' would).
        cell.quotePrefix = value.startswith(FORMULA_STARTS)
        return cell
    cell = WriteOnlyCell(sheet, value=value)
    for kind, number_format in _FORMATS.items():
        if type(value) is kind:
            cell.number_format = number_format
    return cell


def _fill(workbook: Workbook, rows: Iterable[ArchiveRow]) -> int:
    sheet = workbook.create_sheet(SHEET_TITLE)
    for index, (_, width) in enumerate(COLUMNS, 1):
        sheet.column_dimensions[get_column_letter(index)].width = width
    sheet.freeze_panes = "A2"
    bold = Font(bold=True)
    header = []
    for title, _ in COLUMNS:
        cell = WriteOnlyCell(sheet, value=title)
        cell.font = bold
        cell.alignment = Alignment(vertical="top")
        header.append(cell)
    sheet.append(header)
    count, tally = 0, Tally()
    for row in tally.counting(rows):
        sheet.append([_cell(sheet, value) for value in _values(row)])
        count += 1
    sheet.auto_filter.ref = f"A1:{get_column_letter(len(COLUMNS))}{count + 1}"
    add_summary(workbook, tally)
    return count


def _discard(workbook: Workbook) -> None:
    """Finish and delete the temporary sheet files of a write-only workbook that will not be saved.

    Without this, openpyxl's half-written sheet stream complains when it is garbage-collected.
    """
    for sheet in workbook.worksheets:
        with contextlib.suppress(Exception):
            if not sheet.closed:
                sheet.close()
        writer = getattr(sheet, "_writer", None)  # openpyxl keeps the sheet's temporary file here
        if writer is not None:
            with contextlib.suppress(Exception):
                writer.cleanup()


def build_workbook(rows: Iterable[ArchiveRow]) -> Workbook:
    """A write-only workbook with one "Notifications" sheet: a header row, then one row per item.

    Save it once (``workbook.save(path_or_file)``); a write-only workbook cannot be read back.
    """
    workbook = Workbook(write_only=True)
    try:
        _fill(workbook, rows)
    except BaseException:
        _discard(workbook)
        raise
    return workbook


def write_archive(rows: Iterable[ArchiveRow], path: Path) -> int:
    """Replace the archive at ``path`` with ``rows``; return how many rows were written.

    Raises ``NotifyError`` (see ``archive_error``) on any ``OSError``; the old archive is then left intact.
    """
    path = Path(path)
    workbook = Workbook(write_only=True)
    count = 0

    def write(file: Any) -> None:
        nonlocal count
        archive = zipfile.ZipFile(file, "w", zipfile.ZIP_DEFLATED, allowZip64=True)
        try:
            count = _fill(workbook, rows)
            ExcelWriter(workbook, archive).save()
        except BaseException:
            # Close the zip now: left to the garbage collector it prints a traceback on stderr.
            with contextlib.suppress(Exception):
                archive.close()
            _discard(workbook)
            raise

    try:
        atomic_write(path, write)
    except OSError as error:
        raise archive_error(path, error) from error
    return count


#: OSErrors that no retry by the timer can cure: the directory is missing or this user may not write there.
NEEDS_A_PERSON = {errno.ENOENT, errno.ENOTDIR, errno.EACCES, errno.EPERM, errno.EROFS}


def archive_error(path: Path, error: OSError) -> NotifyError:
    """The archive could not be written. A missing or unwritable directory needs a person (exit 1,
    ``scope="settings"``): a timer that retries every minute would only hide it. Anything else
    (a full disk, an I/O error) is temporary (exit 75). Either way the next run that can rewrites it."""
    directory = path.parent
    if error.errno in (errno.ENOENT, errno.ENOTDIR) and not directory.is_dir():
        reason = f"directory {directory} does not exist"
    elif error.errno in (errno.EACCES, errno.EPERM):
        reason = f"directory {directory} is not writable by this user ({error.strerror})"
    elif error.errno == errno.EROFS:
        reason = f"directory {directory} is on a read-only file system"
    else:
        reason = error.strerror or error.__class__.__name__
    text = f"cannot write the archive {path}: {reason}: check CTPOLLER_ARCHIVE_PATH"
    if error.errno in NEEDS_A_PERSON:
        return NotifyError(text, permanent=False, scope="settings")
    return NotifyError(text, permanent=False)
