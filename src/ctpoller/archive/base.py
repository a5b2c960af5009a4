"""What a run asks of the QA archive, and the .xlsx archive that answers it."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, tzinfo
from pathlib import Path
from typing import Any, Protocol

from ctpoller.archive.columns import Column, columns
from ctpoller.archive.readback import ReadBack, Signature, lock_file, read_workbook, signature
from ctpoller.archive.xlsx import DEFAULT_MODE


class Archive(Protocol):
    path: Path
    zone: tzinfo
    zone_name: str

    def columns(self) -> tuple[Column, ...]: ...

    def write(self, rows: Iterable[Mapping[str, Any]], *, before_replace: Callable[[], None] | None = None) -> int: ...

    def read(self) -> ReadBack: ...

    def signature(self) -> Signature | None: ...

    def lock_file(self) -> Path | None: ...

    def exists(self) -> bool: ...


class XlsxArchive:
    """The archive as one .xlsx file (``CTPOLLER_ARCHIVE_PATH``): a view of the state store, and the
    form in which reviewers record their decisions (read back before every rewrite)."""

    def __init__(self, path: Path, *, zone: tzinfo = UTC, zone_name: str = "UTC", mode: int = DEFAULT_MODE) -> None:
        self.path = path
        self.zone = zone
        self.zone_name = zone_name
        self.mode = mode

    def columns(self) -> tuple[Column, ...]:
        return columns(self.zone_name)

    def write(self, rows: Iterable[Mapping[str, Any]], *, before_replace: Callable[[], None] | None = None) -> int:
        from ctpoller.archive.xlsx import write_archive

        return write_archive(self.columns(), rows, self.path, mode=self.mode, before_replace=before_replace)

    def read(self) -> ReadBack:
        return read_workbook(self.path)

    def signature(self) -> Signature | None:
        return signature(self.path)

    def lock_file(self) -> Path | None:
        return lock_file(self.path)

    def exists(self) -> bool:
        return self.path.exists()
