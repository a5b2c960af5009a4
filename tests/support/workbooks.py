"""Where ctpoller writes its QA archive: one workbook per calendar year beside CTPOLLER_ARCHIVE_PATH."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from ctpoller.archive.base import year_file


def year_workbook(archive_path: Path, year: int | None = None) -> Path:
    """The workbook of ``year`` (default: this year, UTC, the year a run records in) for the archive
    setting ``archive_path``: ``archive.xlsx`` gives ``archive-2026.xlsx``."""
    return year_file(Path(archive_path), year if year is not None else datetime.now(UTC).year)
