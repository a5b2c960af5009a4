"""What a run asks of the QA archive, and the .xlsx archive that answers it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from ctpoller.core.model import ArchiveRow


class Archive(Protocol):
    def write(self, rows: Iterator[ArchiveRow]) -> int: ...

    def exists(self) -> bool: ...


class XlsxArchive:
    """The archive as one .xlsx file (``CTPOLLER_ARCHIVE_PATH``), rebuilt from the state store."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def write(self, rows: Iterator[ArchiveRow]) -> int:
        from ctpoller.archive.xlsx import write_archive

        return write_archive(rows, self.path)

    def exists(self) -> bool:
        return self.path.exists()
