"""The QA archive as a form: read back what reviewers typed, record every change, rewrite.

The state store is the record; the workbook is a form and a view. Each run that rewrites the
workbook first reads it back (by header name and the hidden "Notification key", never by row
position) and appends every changed review field to ``ctp_review_change`` (who: the row's "Reviewed
by", or "unknown"; when: this run's clock). A workbook saved since ctpoller last wrote or read it is
read back even when nothing else changed. Right before the new file replaces the old one the old
one's size, time and content are compared with what was read: if someone saved it meanwhile, it is
read again and the rewrite starts over.

Nothing is lost: rows of notifications the store does not know (a replaced store) are adopted with
their reviews; a workbook that is open in Excel (its ``~$`` lock file) is read but not replaced; one
that cannot be read is kept untouched. Either way the run says so in one line, ``status`` shows it,
and the next run tries again. The emails never wait for this: it runs after delivery.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from ctpoller.archive.base import Archive
from ctpoller.archive.columns import KEY, UTC_HEADER, decode, encode, local, review_cell, row_cells
from ctpoller.archive.readback import ReadBack, WorkbookUnreadable
from ctpoller.core.model import rule_identity
from ctpoller.core.review import FIELDS, Change, Review, diff, fold, notification_key, reviewed
from ctpoller.errors import NotifyError
from ctpoller.jobs.report import Report
from ctpoller.store.store import StateStore

log = logging.getLogger(__name__)

ATTEMPTS = 3
PROBLEM = "archive_problem"  # ctp_meta: why the archive was not written, for ``status``


class SavedMeanwhile(Exception):
    """The workbook changed between reading it back and replacing it."""


def write_archive(state: StateStore, archive: Archive | None, report: Report, *, now: datetime | None = None) -> None:
    """Record what reviewers typed into the workbook, then rewrite it when anything in it changed."""
    if archive is None:
        return
    now = now or datetime.now(UTC)
    meta = state.archive_meta()
    due = not archive.exists() or meta.get("archive_generation") != meta.get("archive_written_generation")
    current = archive.signature()
    edited = current is not None and current.short() != meta.get("archive_seen")
    if not due and not edited:
        return
    generation = meta.get("archive_generation")
    problem: str | None = None
    try:
        for _ in range(ATTEMPTS):
            before = archive.signature()
            if before is not None:
                read = archive.read()
                recorded = harvest(state, read, now)
                if recorded:
                    log.info("archive %s: %d review changes recorded", archive.path, recorded)
            if not due and before is not None:
                state.set_archive_meta({"archive_seen": before.short()})
                break
            lock = archive.lock_file()
            if lock is not None:
                problem = (
                    f"archive {archive.path} is open in an office program (lock file {lock.name}): it was read "
                    "but not rewritten; the next run rewrites it"
                )
                state.set_archive_meta({"archive_seen": before.short() if before else None})
                report.archive_error = problem
                break

            def unchanged(before: Any = before) -> None:
                if archive.signature() != before:
                    raise SavedMeanwhile

            try:
                report.archive_rows = archive.write(view_rows(state, archive), before_replace=unchanged)
            except SavedMeanwhile:
                log.info("archive %s was saved by someone while it was rewritten: reading it again", archive.path)
                continue
            after = archive.signature()
            state.set_archive_meta(
                {"archive_written_generation": generation, "archive_seen": after.short() if after else None}
            )
            break
        else:
            problem = f"archive {archive.path} kept being saved while it was rewritten; the next run tries again"
            report.archive_error = problem
    except WorkbookUnreadable as e:
        problem = (
            f"archive {archive.path} cannot be read ({e}): it is kept untouched; repair it or move it away, "
            "then the next run writes it again"
        )
        report.archive_error, report.archive_needs_a_person = problem, True
    except OSError as e:
        problem = f"archive {archive.path} cannot be read: {e.strerror or e}; the next run tries again"
        report.archive_error = problem
    except NotifyError as e:
        problem = str(e)
        report.archive_error, report.archive_needs_a_person = problem, not e.temporary
    if problem is not None:
        log.error("%s (nothing is lost: reviews and notifications are in the state store)", problem)
    if problem != meta.get(PROBLEM):
        state.set_archive_meta({PROBLEM: problem})


def harvest(state: StateStore, read: ReadBack, now: datetime) -> int:
    """Record every review field that differs from the store's, and adopt the rows the store does
    not know (with their reviews). Returns how many changes were recorded."""
    known = {key for key, _ in store_keys(state)}
    adopted_before = {key for key, _, _ in state.adopted_rows()}
    reviews = state.reviews()
    changes: list[Change] = []
    adopted: list[tuple[str, int, dict[str, Any]]] = []
    for key, seen, cells in read.rows:
        if not key:  # a row typed in by hand: kept, under a key made from what it holds
            key = "x" + hashlib.sha256(json.dumps(encode(cells), sort_keys=True).encode()).hexdigest()[:31]
        if key not in known and key not in adopted_before:
            when = cells.get(UTC_HEADER)
            year = when.year if isinstance(when, datetime) else now.year
            adopted.append((key, year, encode(cells)))
            adopted_before.add(key)
        found = diff(key, reviews.get(key, {}), seen, at=now)
        if found:  # a second row with the same key (a copied row) is compared with this one's values
            changes.extend(found)
            review = dict(reviews.get(key, {}))
            for change in found:
                if change.new is None:
                    review.pop(change.field, None)
                else:
                    review[change.field] = change.new
            reviews[key] = review
    state.record_changes(changes, adopted)
    return len(changes)


def store_keys(state: StateStore) -> Iterator[tuple[str, Any]]:
    for row in state.archive_rows():
        n = row.notification
        yield notification_key(n.study_uid, n.rule, n.metric, n.event_key, row.message_id), row


def view_rows(state: StateStore, archive: Archive) -> Iterator[dict[str, Any]]:
    """The rows of the workbook: adopted rows first (oldest first), then the store's notifications,
    each with its current review and whether its exam changed after the review."""
    changes = state.changes()
    reviews = fold(changes)
    reviewed_at: dict[str, datetime] = {}
    for change in changes:
        reviewed_at[change.key] = max(change.at, reviewed_at.get(change.key, change.at))
    for key, _, cells in state.adopted_rows():  # in the order the workbook had them
        row = decode(cells)
        row.update(_review_cells(reviews.get(key, {})))
        row[KEY] = key
        yield row
    latest: dict[tuple[str, str, str, str], tuple[datetime, str, str]] = {}
    for key, row in store_keys(state):
        n = row.notification
        latest[(n.study_uid, rule_identity(n.rule), n.metric, n.event_key)] = (
            row.created_at,
            key,
            f"{n.value.normalize():f} {n.unit}",
        )
    for key, row in store_keys(state):
        n = row.notification
        review = reviews.get(key, {})
        changed = None
        newest_at, newest_key, value = latest[(n.study_uid, rule_identity(n.rule), n.metric, n.event_key)]
        if newest_key != key and reviewed(review) and newest_at > reviewed_at.get(key, newest_at):
            shown = local(newest_at, archive.zone)
            changed = f"yes: {value} notified {shown:%Y-%m-%d %H:%M}" if shown else "yes"
        yield row_cells(row, key, review, changed, archive.zone, archive.zone_name)


def _review_cells(review: Review) -> dict[str, Any]:
    return {header: review_cell(review.get(name)) for name, header in FIELDS}
