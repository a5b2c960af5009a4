"""The QA archive as a form: read back what reviewers typed, record every change, rewrite.

The state store is the record; the workbooks are forms and views, one per calendar year of recording
(UTC) beside ``CTPOLLER_ARCHIVE_PATH``: ``ctpoller-notifications.xlsx`` gives
``ctpoller-notifications-2025.xlsx``, ``ctpoller-notifications-2026.xlsx``. A run rewrites only the
years whose rows changed (``archive_generation:YYYY`` against ``archive_written:YYYY``), and reads back
a year's workbook saved since ctpoller last wrote or read it (``archive_seen:YYYY``).

Each year's workbook is first read back (by header name and the hidden "Notification key", never by
row position) and every changed review field is appended to ``ctp_review_change`` (who: the row's
"Reviewed by", or "unknown"; when: this run's clock). Right before the new file replaces the old one
the old one's size, time and content are compared with what was read: if someone saved it meanwhile,
it is read again and the rewrite starts over.

Nothing is lost: rows of notifications the store does not know (a replaced store) are adopted with
their reviews; a workbook that is open in Excel (its ``~$`` lock file) is read but not replaced; one
that cannot be read is kept untouched. Each year on its own: a locked 2025 workbook never keeps 2026
from being written. The run says so in one line per workbook, ``status`` and ``check`` show it, and
the next run tries again. The emails never wait for this: it runs after delivery.

The single workbook of an earlier ctpoller (at ``CTPOLLER_ARCHIVE_PATH`` itself) is read back once,
its reviews recorded and its unknown rows adopted, then renamed ``<name>.before-per-year.xlsx`` (kept,
never deleted) and the per-year workbooks written; until it can be read and renamed, no per-year
workbook is written (a reviewer's edit in it must not be overtaken by one in a newer file).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ctpoller.archive.base import Archive, split_file
from ctpoller.archive.readback import WorkbookUnreadable
from ctpoller.errors import NotifyError
from ctpoller.jobs.archive_rows import Year, harvest, store_keys, view_rows
from ctpoller.jobs.report import Report
from ctpoller.store.store import StateStore

log = logging.getLogger(__name__)

ATTEMPTS = 3
PROBLEM = "archive_problem"  # ctp_meta: why workbooks were not written (status); per file: archive_problem:YYYY


class SavedMeanwhile(Exception):
    """The workbook changed between reading it back and replacing it."""


@dataclass
class Problems:
    """What kept workbooks from being written this run, by the key it is kept under in ``ctp_meta``."""

    lines: dict[str, str] = field(default_factory=dict)
    needs_a_person: bool = False


def write_archive(state: StateStore, archive: Archive | None, report: Report, *, now: datetime | None = None) -> None:
    """Record what reviewers typed into the workbooks, then rewrite each year's when anything in it changed."""
    if archive is None:
        return
    now = now or datetime.now(UTC)
    meta = state.archive_meta()
    problems = Problems()
    known = KnownKeys(state)
    if _attempt(problems, f"{PROBLEM}:single", archive.path, lambda: split_single(state, archive, now, known)):
        years = set(state.archive_years()) | archive.years_on_disk() | {now.astimezone(UTC).year}
        for year in sorted(years):
            _attempt(
                problems,
                f"{PROBLEM}:{year}",
                archive.file(year),
                lambda year=year: write_year(state, archive, year, meta, report, now, known),  # type: ignore[misc]
            )
    if problems.lines:
        report.archive_error = "; ".join(problems.lines.values())
        report.archive_needs_a_person = problems.needs_a_person
        for line in problems.lines.values():
            log.error("%s (nothing is lost: reviews and notifications are in the state store)", line)
    wanted: dict[str, str | None] = {key: None for key in meta if key.startswith(f"{PROBLEM}:")}
    wanted.update(problems.lines)
    wanted[PROBLEM] = "; ".join(problems.lines.values()) or None
    if not problems.lines:  # every year's workbook is up to date (``archive_due`` reads this)
        wanted["archive_written_generation"] = meta.get("archive_generation")
    changed = {key: value for key, value in wanted.items() if meta.get(key) != value}
    if changed:
        state.set_archive_meta(changed)


def _attempt(problems: Problems, key: str, path: Path, step: Callable[[], str | None]) -> bool:
    """Run one workbook's step; keep its problem (if any) under ``key``. True when it had none."""
    try:
        problem = step()
    except WorkbookUnreadable as e:
        problem = (
            f"archive {path} cannot be read ({e}): it is kept untouched; repair it or move it away, "
            "then the next run writes it again"
        )
        problems.needs_a_person = True
    except OSError as e:
        problem = f"archive {path} cannot be read: {e.strerror or e}; the next run tries again"
    except NotifyError as e:
        problem = str(e)
        problems.needs_a_person = problems.needs_a_person or not e.temporary
    if problem is not None:
        problems.lines[key] = problem
    return problem is None


def write_year(
    state: StateStore,
    archive: Archive,
    year: int,
    meta: dict[str, str],
    report: Report,
    now: datetime,
    known: KnownKeys,
) -> str | None:
    """Read back and (when due) rewrite the workbook of ``year``; the problem that kept it, if any."""
    path = archive.file(year)
    generation = meta.get(f"archive_generation:{year}")
    seen = archive.stamp(path)
    due = seen is None or generation != meta.get(f"archive_written:{year}")
    if not due and (seen is None or seen == meta.get(f"archive_seen:{year}")):
        return None
    rows = Year.load(state, year)
    for _ in range(ATTEMPTS):
        before = archive.signature(path)
        # What ctpoller wrote (or read) itself and nobody saved since holds nothing new to read back.
        if before is not None and before.short() != meta.get(f"archive_seen:{year}"):
            recorded = harvest(state, archive.read(path), now, known, rows)
            if recorded:
                log.info("archive %s: %d review changes recorded", path, recorded)
        if not due and before is not None:
            state.set_archive_meta({f"archive_seen:{year}": before.short()})
            return None
        lock = archive.lock_file(path)
        if lock is not None:
            state.set_archive_meta({f"archive_seen:{year}": before.short() if before else None})
            return (
                f"archive {path} is open in an office program (lock file {lock.name}): it was read "
                "but not rewritten; the next run rewrites it"
            )

        def unchanged(before: Any = before) -> None:
            if archive.signature(path) != before:
                raise SavedMeanwhile

        try:
            written = archive.write(path, view_rows(state, archive, rows), before_replace=unchanged)
        except SavedMeanwhile:
            log.info("archive %s was saved by someone while it was rewritten: reading it again", path)
            continue
        report.archive_rows = (report.archive_rows or 0) + written
        state.set_archive_meta({f"archive_written:{year}": generation, f"archive_seen:{year}": archive.stamp(path)})
        return None
    return f"archive {path} kept being saved while it was rewritten; the next run tries again"


def split_single(state: StateStore, archive: Archive, now: datetime, known: KnownKeys) -> str | None:
    """Read back the single workbook of an earlier ctpoller, then keep it under another name."""
    path = archive.path
    if archive.stamp(path) is None:
        return None
    lock = archive.lock_file(path)
    if lock is not None:
        return (
            f"archive {path} (the single workbook of an earlier ctpoller) is open in an office program (lock file "
            f"{lock.name}): once it is closed the next run reads it back and writes one workbook per year"
        )
    for _ in range(ATTEMPTS):
        before = archive.signature(path)
        read = archive.read(path)
        recorded = harvest(state, read, now, known)
        if archive.signature(path) != before:
            continue  # saved while it was read: read it again
        target = split_file(path)
        os.rename(path, target)
        log.warning(
            "archive %s: the single workbook of an earlier ctpoller was read back (%d rows, %d review changes "
            "recorded) and kept as %s; from now on one workbook per year: %s",
            path,
            len(read.rows),
            recorded,
            target.name,
            archive.file(now.astimezone(UTC).year).name.replace(str(now.astimezone(UTC).year), "YYYY"),
        )
        return None
    return f"archive {path} kept being saved while it was read; the next run tries again"


class KnownKeys:
    """The keys of the notifications the store recorded, computed once a run and only when needed."""

    def __init__(self, state: StateStore) -> None:
        self.state = state
        self._keys: set[str] | None = None

    def all(self) -> set[str]:
        if self._keys is None:
            self._keys = {key for key, _ in store_keys(self.state.archive_rows())}
        return self._keys
