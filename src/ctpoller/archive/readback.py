"""Reading the workbook back: what reviewers typed (by header name and notification key, never by
row position), every row's cells (to adopt rows a replaced store does not know), whether Excel or
LibreOffice has it open, and the file's signature (to see that someone saved it meanwhile)."""

from __future__ import annotations

import hashlib
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ctpoller.archive.columns import KEY, REVIEW_HEADERS
from ctpoller.archive.xlsx import SHEET_TITLE
from ctpoller.core.review import FIELD_OF_HEADER, cell_value


class WorkbookUnreadable(Exception):
    """The workbook is not one ctpoller can read: it is kept as it is."""


@dataclass(frozen=True)
class Signature:
    size: int
    mtime_ns: int
    digest: str

    def short(self) -> str:
        return f"{self.size} {self.mtime_ns}"


@dataclass
class ReadBack:
    """A workbook's rows: ``rows`` (key, review as typed, every other cell by header), in sheet order."""

    rows: list[tuple[str | None, dict[str, str | None], dict[str, Any]]] = field(default_factory=list)


def signature(path: Path) -> Signature | None:
    """Size, mtime and content digest of the file, or None when there is none."""
    try:
        with path.open("rb") as file:
            stat = path.stat()
            digest = hashlib.file_digest(file, "sha256").hexdigest()
    except FileNotFoundError:
        return None
    return Signature(stat.st_size, stat.st_mtime_ns, digest)


def lock_file(path: Path) -> Path | None:
    """The lock file an office program keeps beside a workbook it has open, if there is one:
    Excel's ``~$name.xlsx`` (``~$`` in place of the first two characters, for some versions) or
    LibreOffice's ``.~lock.name.xlsx#``."""
    for name in (f"~${path.name}", f"~${path.name[2:]}", f".~lock.{path.name}#"):
        candidate = path.with_name(name)
        if candidate.exists():
            return candidate
    return None


def read_workbook(path: Path) -> ReadBack:
    """Every row of the "Notifications" sheet (else the first sheet) by its header names.

    Raises ``WorkbookUnreadable`` for anything that is not a readable .xlsx workbook, and ``OSError``.
    """
    from openpyxl import load_workbook

    try:
        workbook = load_workbook(path, read_only=True, data_only=True)
    except OSError:
        raise
    except (zipfile.BadZipFile, KeyError, ValueError, TypeError, IndexError) as e:
        raise WorkbookUnreadable(f"{type(e).__name__}: {str(e)[:200]}") from e
    except Exception as e:  # openpyxl raises many kinds for a damaged file
        raise WorkbookUnreadable(f"{type(e).__name__}: {str(e)[:200]}") from e
    try:
        sheet = workbook[SHEET_TITLE] if SHEET_TITLE in workbook.sheetnames else workbook.worksheets[0]
        found = ReadBack()
        rows = sheet.iter_rows(values_only=True)
        header_row = next(rows, None)
        if header_row is None:
            return found
        headers = [str(h).strip() if h is not None else "" for h in header_row]
        if KEY not in headers:
            raise WorkbookUnreadable(f'its first row has no "{KEY}" column')
        for values in rows:
            cells = {h: v for h, v in zip(headers, values, strict=False) if h}
            if all(v is None or (isinstance(v, str) and not v.strip()) for v in cells.values()):
                continue
            key = cell_value(cells.pop(KEY, None))
            review = {FIELD_OF_HEADER[h]: cell_value(cells.pop(h)) for h in REVIEW_HEADERS if h in cells}
            found.rows.append((key, review, cells))
        return found
    except WorkbookUnreadable:
        raise
    except OSError:
        raise
    except Exception as e:
        raise WorkbookUnreadable(f"{type(e).__name__}: {str(e)[:200]}") from e
    finally:
        workbook.close()
