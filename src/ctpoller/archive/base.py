"""What a run asks of the QA archive, and the .xlsx archive that answers it: one workbook per year."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, tzinfo
from pathlib import Path
from typing import Any, Protocol

from ctpoller.archive.columns import Column, columns
from ctpoller.archive.readback import ReadBack, Signature, lock_file, read_workbook, signature
from ctpoller.archive.xlsx import DEFAULT_MODE

SPLIT_SUFFIX = ".before-per-year"  # the single workbook of an earlier ctpoller, once split per year


class Archive(Protocol):
    path: Path
    zone: tzinfo
    zone_name: str

    def columns(self) -> tuple[Column, ...]: ...

    def file(self, year: int) -> Path: ...

    def years_on_disk(self) -> set[int]: ...

    def write(
        self, path: Path, rows: Iterable[Mapping[str, Any]], *, before_replace: Callable[[], None] | None = None
    ) -> int: ...

    def read(self, path: Path) -> ReadBack: ...

    def signature(self, path: Path) -> Signature | None: ...

    def lock_file(self, path: Path) -> Path | None: ...

    def stamp(self, path: Path) -> str | None: ...


def year_file(path: Path, year: int) -> Path:
    """The workbook of ``year`` beside ``path``: ``ctpoller-notifications.xlsx`` gives
    ``ctpoller-notifications-2026.xlsx`` in the same directory."""
    return path.with_name(f"{path.stem}-{year:04d}{path.suffix}")


def split_file(path: Path) -> Path:
    """Where the single workbook of an earlier ctpoller is kept once it was split per year
    (``ctpoller-notifications.before-per-year.xlsx``; ``-2``, ``-3``… if that name is taken)."""
    candidate = path.with_name(f"{path.stem}{SPLIT_SUFFIX}{path.suffix}")
    number = 2
    while candidate.exists():
        candidate = path.with_name(f"{path.stem}{SPLIT_SUFFIX}-{number}{path.suffix}")
        number += 1
    return candidate


class XlsxArchive:
    """The archive as one .xlsx file per calendar year beside ``CTPOLLER_ARCHIVE_PATH``: a view of the
    state store, and the form in which reviewers record their decisions (read back before every rewrite)."""

    def __init__(self, path: Path, *, zone: tzinfo = UTC, zone_name: str = "UTC", mode: int = DEFAULT_MODE) -> None:
        self.path = path
        self.zone = zone
        self.zone_name = zone_name
        self.mode = mode

    def columns(self) -> tuple[Column, ...]:
        return columns(self.zone_name)

    def file(self, year: int) -> Path:
        return year_file(self.path, year)

    def years_on_disk(self) -> set[int]:
        """The years whose workbook is in the directory (a replaced store adopts their rows)."""
        pattern = re.compile(re.escape(self.path.stem) + r"-(\d{4})" + re.escape(self.path.suffix))
        try:
            names = [p.name for p in self.path.parent.iterdir()]
        except OSError:
            return set()
        return {int(m.group(1)) for name in names if (m := pattern.fullmatch(name))}

    def write(
        self, path: Path, rows: Iterable[Mapping[str, Any]], *, before_replace: Callable[[], None] | None = None
    ) -> int:
        from ctpoller.archive.xlsx import write_archive

        return write_archive(self.columns(), rows, path, mode=self.mode, before_replace=before_replace)

    def read(self, path: Path) -> ReadBack:
        return read_workbook(path)

    def signature(self, path: Path) -> Signature | None:
        return signature(path)

    def lock_file(self, path: Path) -> Path | None:
        return lock_file(path)

    def stamp(self, path: Path) -> str | None:
        """Size and modification time (None: no file): whether a workbook was saved since ctpoller last
        wrote or read it, without reading it."""
        try:
            stat = path.stat()
        except FileNotFoundError:
            return None
        return f"{stat.st_size} {stat.st_mtime_ns}"
