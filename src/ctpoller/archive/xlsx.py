"""The QA archive workbook: every notification with its review, as one .xlsx sheet (a form and a view).

``build_workbook`` is pure and streams (openpyxl write-only mode), so memory stays flat however many
rows there are; the notification rows themselves are written as XML text (``rows_xml``: ~4x faster
than openpyxl's cells, the same bytes). ``write_archive`` replaces the file atomically: the old
archive stays intact on failure, and ``before_replace`` runs right before the rename (the archive job
checks there that nobody saved the workbook meanwhile).

The sheet: a frozen, filtered header; values with 2 decimals and their unit, the ratio (and the
multiple of a reference level) as ``0.00"×"``, the ratio coloured at 2× and 3× the limit, "alert" in
the Severity column in red; the review columns with drop-downs (``Outcome``, ``Reason``: lists on
a hidden sheet, by defined name, as Excel's 255-character limit on an inline list requires); the
notification's identity in the hidden "Notification key" column; landscape pages repeating the header.

Every text cell is a plain string, never a formula: text that a spreadsheet would read as a formula
(starting with ``=``, ``+``, ``-``, ``@``, tab or carriage return) is marked quoted, characters a
worksheet cannot hold become U+FFFD, line breaks become LF, and text is cut at Excel's 32,767
characters per cell.
"""

from __future__ import annotations

import contextlib
import errno
import re
import zipfile
from collections.abc import Callable, Iterable, Mapping
from datetime import date, datetime, time
from pathlib import Path
from typing import Any

from openpyxl import Workbook
from openpyxl.cell import WriteOnlyCell
from openpyxl.formatting.rule import CellIsRule
from openpyxl.styles import Alignment, Font, PatternFill
from openpyxl.utils import get_column_letter, quote_sheetname
from openpyxl.workbook.defined_name import DefinedName
from openpyxl.worksheet.datavalidation import DataValidation
from openpyxl.writer.excel import ExcelWriter

from ctpoller.archive.columns import SEVERITY, Column
from ctpoller.archive.rows_xml import RowWriter
from ctpoller.archive.summary import Tally, add_summary
from ctpoller.core.review import OUTCOMES, REASONS
from ctpoller.errors import NotifyError
from ctpoller.files import atomic_write

SHEET_TITLE = "Notifications"
LISTS_TITLE = "Lists"
CELL_TEXT_MAX = 32_767
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
DROP_DOWNS = {"Outcome": ("ctpoller_outcomes", OUTCOMES), "Reason": ("ctpoller_reasons", REASONS)}
RATIO_FORMAT = '0.00"×"'
DEFAULT_MODE = 0o640

# What openpyxl refuses (control characters), plus what XML 1.0 cannot hold at all.
_UNWRITABLE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_FORMATS = {datetime: "yyyy-mm-dd hh:mm:ss", date: "yyyy-mm-dd", time: "hh:mm:ss"}
_AMBER = PatternFill(start_color="FFE699", end_color="FFE699", fill_type="solid")
_RED = PatternFill(start_color="F4B084", end_color="F4B084", fill_type="solid")
_ALERT_FILL = PatternFill(start_color="FFC7CE", end_color="FFC7CE", fill_type="solid")
_ALERT_FONT = Font(bold=True, color="9C0006")


def cell_text(text: str) -> str:
    """``text`` as it is stored in a cell: writable, within Excel's limit (``_cell`` keeps it text)."""
    text = _UNWRITABLE.sub("\ufffd", text)
    # A worksheet's XML turns a bare CR into LF when read back; write the line break Excel uses.
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text[:CELL_TEXT_MAX]


def value_format(unit: Any) -> str:
    """Two decimals and the unit, e.g. ``0.00" mGy"``: the cell stays a number."""
    unit = str(unit or "").replace('"', "")
    return f'0.00" {unit}"' if unit else "0.00"


def _cell(sheet: Any, value: Any, column: Column, unit: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, str):
        cell = WriteOnlyCell(sheet, value=cell_text(value))
        cell.data_type = "s"  # a string, whatever it looks like: never a formula
        # Shown as it is, and Excel keeps it text when someone edits the cell (as a typed ' would).
        cell.quotePrefix = value.startswith(FORMULA_STARTS)
        return cell
    cell = WriteOnlyCell(sheet, value=value)
    if column.kind == "value":
        cell.number_format = value_format(unit)
    elif column.kind == "ratio":
        cell.number_format = RATIO_FORMAT
    else:
        for kind, number_format in _FORMATS.items():
            if type(value) is kind:
                cell.number_format = number_format
    return cell


def _lists(workbook: Workbook) -> None:
    """The drop-down lists on a hidden sheet, each under a workbook-wide name."""
    sheet = workbook.create_sheet(LISTS_TITLE)
    sheet.sheet_state = "hidden"
    longest = max(len(items) for _, items in DROP_DOWNS.values())
    for index in range(longest):
        sheet.append([items[index] if index < len(items) else None for _, items in DROP_DOWNS.values()])
    for number, (name, items) in enumerate(DROP_DOWNS.values(), 1):
        letter = get_column_letter(number)
        reference = f"{quote_sheetname(LISTS_TITLE)}!${letter}$1:${letter}${len(items)}"
        workbook.defined_names[name] = DefinedName(name, attr_text=reference)


def _fill(
    workbook: Workbook, columns: tuple[Column, ...], rows: Iterable[Mapping[str, Any]], *, fast: bool = True
) -> int:
    sheet = workbook.create_sheet(SHEET_TITLE)
    last = get_column_letter(len(columns))
    for index, column in enumerate(columns, 1):
        dimension = sheet.column_dimensions[get_column_letter(index)]
        dimension.width = column.width
        dimension.hidden = column.kind == "key"
    sheet.freeze_panes = "A2"  # before the first append, or openpyxl does not write it
    sheet.print_title_rows = "1:1"
    sheet.page_setup.orientation = "landscape"
    sheet.page_setup.fitToWidth = 1
    sheet.page_setup.fitToHeight = 0
    sheet.sheet_properties.pageSetUpPr.fitToPage = True
    bold = Font(bold=True)
    header = []
    for column in columns:
        cell = WriteOnlyCell(sheet, value=column.header)
        cell.font = bold
        cell.alignment = Alignment(vertical="top", wrap_text=True)
        header.append(cell)
    sheet.append(header)
    count, tally = 0, Tally()
    if fast:  # the rows as XML text, as openpyxl would write them (rows_xml.py)
        RowWriter(sheet, columns, _cell, cell_text)
        headers = [column.header for column in columns]
        for row in tally.counting_cells(rows):
            sheet.append([row.get(header) for header in headers])
            count += 1
    else:
        for row in tally.counting_cells(rows):
            unit = row.get("Unit")
            sheet.append([_cell(sheet, row.get(column.header), column, unit) for column in columns])
            count += 1
    end = max(count + 1, 2)
    sheet.auto_filter.ref = f"A1:{last}{count + 1}"
    headers = [column.header for column in columns]
    for title, (name, _) in DROP_DOWNS.items():
        letter = get_column_letter(headers.index(title) + 1)
        validation = DataValidation(type="list", formula1=f"={name}", allow_blank=True)
        validation.error = f"choose one of the list ({title})"
        validation.errorTitle = title
        validation.add(f"{letter}2:{letter}{end}")
        sheet.data_validations.append(validation)
    ratio = get_column_letter(headers.index("Ratio") + 1)
    area = f"{ratio}2:{ratio}{end}"
    sheet.conditional_formatting.add(area, CellIsRule(operator="greaterThanOrEqual", formula=["3"], fill=_RED))
    sheet.conditional_formatting.add(area, CellIsRule(operator="greaterThanOrEqual", formula=["2"], fill=_AMBER))
    if SEVERITY in headers:  # an alert stands out in its column
        severity = get_column_letter(headers.index(SEVERITY) + 1)
        alert = CellIsRule(operator="equal", formula=['"alert"'], fill=_ALERT_FILL, font=_ALERT_FONT)
        sheet.conditional_formatting.add(f"{severity}2:{severity}{end}", alert)
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


def build_workbook(columns: tuple[Column, ...], rows: Iterable[Mapping[str, Any]], *, fast: bool = True) -> Workbook:
    """A write-only workbook: the "Notifications" sheet (a header row, then one row per item) and the
    hidden "Lists" sheet. Save it once; a write-only workbook cannot be read back. ``fast=False``
    writes the rows through openpyxl's cells (the reference the fast path is tested against)."""
    workbook = Workbook(write_only=True)
    try:
        _fill(workbook, columns, rows, fast=fast)
        _lists(workbook)
    except BaseException:
        _discard(workbook)
        raise
    return workbook


def write_archive(
    columns: tuple[Column, ...],
    rows: Iterable[Mapping[str, Any]],
    path: Path,
    *,
    mode: int = DEFAULT_MODE,
    before_replace: Callable[[], None] | None = None,
) -> int:
    """Replace the archive at ``path`` with ``rows``; return how many rows were written.

    Raises ``NotifyError`` (see ``archive_error``) on any ``OSError``; the old archive is then left
    intact. An exception from ``before_replace`` also leaves it intact, and propagates.
    """
    path = Path(path)
    workbook = Workbook(write_only=True)
    count = 0

    def write(file: Any) -> None:
        nonlocal count
        archive = zipfile.ZipFile(file, "w", zipfile.ZIP_DEFLATED, allowZip64=True)
        try:
            count = _fill(workbook, columns, rows)
            _lists(workbook)
            ExcelWriter(workbook, archive).save()
        except BaseException:
            # Close the zip now: left to the garbage collector it prints a traceback on stderr.
            with contextlib.suppress(Exception):
                archive.close()
            _discard(workbook)
            raise
        if before_replace is not None:
            before_replace()

    try:
        atomic_write(path, write, mode=mode)
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
