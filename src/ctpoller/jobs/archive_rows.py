"""The rows of one year's workbook: what is read back into the review record, and what is written.

``harvest`` records every review field a reviewer changed and adopts the rows the store does not
know; ``view_rows`` gives the rows of a year's workbook with their current reviews. Both read only
that year's notifications (and, for a reviewed exam notified again later, its later notifications),
so that a run that adds one notification costs one year's workbook, not the whole history.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from ctpoller.archive.base import Archive
from ctpoller.archive.columns import KEY, UTC_HEADER, decode, encode, local, review_cell, row_cells
from ctpoller.archive.readback import ReadBack
from ctpoller.core.model import ArchiveRow, rule_identity
from ctpoller.core.review import FIELDS, Change, Review, diff, fold, notification_key, reviewed
from ctpoller.store.store import StateStore


class Known(Protocol):
    def all(self) -> set[str]: ...


@dataclass(frozen=True)
class Year:
    """The notifications the store recorded in one calendar year (UTC), by their key, oldest first."""

    year: int
    rows: list[tuple[str, ArchiveRow]]

    @classmethod
    def load(cls, state: StateStore, year: int) -> Year:
        since, until = datetime(year, 1, 1, tzinfo=UTC), datetime(year + 1, 1, 1, tzinfo=UTC)
        return cls(year, list(store_keys(state.archive_rows(since=since, until=until))))

    def keys(self) -> set[str]:
        return {key for key, _ in self.rows}


def store_keys(rows: Iterable[ArchiveRow]) -> Iterator[tuple[str, ArchiveRow]]:
    for row in rows:
        n = row.notification
        yield notification_key(n.study_uid, n.rule, n.metric, n.event_key, row.message_id), row


def harvest(state: StateStore, read: ReadBack, now: datetime, known: Known, year: Year | None = None) -> int:
    """Record every review field that differs from the store's, and adopt the rows the store does
    not know (with their reviews). Returns how many changes were recorded."""
    in_year = year.keys() if year is not None else set()
    keyed: list[tuple[str, dict[str, str | None], dict[str, Any]]] = []
    for key, seen, cells in read.rows:
        if not key:  # a row typed in by hand: kept, under a key made from what it holds
            key = "x" + hashlib.sha256(json.dumps(encode(cells), sort_keys=True).encode()).hexdigest()[:31]
        keyed.append((key, seen, cells))
    strangers = {key for key, _, _ in keyed if key not in in_year}
    if strangers:  # rows of another year, adopted rows, or rows of a replaced store
        strangers -= known.all()
        strangers -= {key for key, _, _ in state.adopted_rows()}
    reviews = state.reviews({key for key, _, _ in keyed})
    changes: list[Change] = []
    adopted: list[tuple[str, int, dict[str, Any]]] = []
    for key, seen, cells in keyed:
        if key in strangers:
            when = cells.get(UTC_HEADER)
            adopted.append((key, when.year if isinstance(when, datetime) else now.year, encode(cells)))
            strangers.discard(key)
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


def view_rows(state: StateStore, archive: Archive, year: Year) -> Iterator[dict[str, Any]]:
    """The rows of the year's workbook: adopted rows first (oldest first), then the store's
    notifications, each with its current review and whether its exam changed after the review."""
    adopted = state.adopted_rows(year.year)
    changes = state.changes(year.keys() | {key for key, _, _ in adopted})
    reviews = fold(changes)
    reviewed_at: dict[str, datetime] = {}
    for change in changes:
        reviewed_at[change.key] = max(change.at, reviewed_at.get(change.key, change.at))
    for key, _, cells in adopted:  # in the order the workbook had them
        shown_row = decode(cells)
        shown_row.update(_review_cells(reviews.get(key, {})))
        shown_row[KEY] = key
        yield shown_row
    latest: dict[tuple[str, str, str, str], tuple[datetime, str, str]] = {}
    reviewed_studies = sorted({row.notification.study_uid for key, row in year.rows if reviewed(reviews.get(key, {}))})
    later: list[tuple[str, ArchiveRow]] = []
    for start in range(0, len(reviewed_studies), 500):  # a reviewed exam notified again in a later year
        chunk = reviewed_studies[start : start + 500]
        later.extend(store_keys(state.archive_rows(since=datetime(year.year + 1, 1, 1, tzinfo=UTC), study_uids=chunk)))
    for key, row in [*year.rows, *later]:
        n = row.notification
        latest[(n.study_uid, rule_identity(n.rule), n.metric, n.event_key)] = (
            row.created_at,
            key,
            f"{n.value.normalize():f} {n.unit}",
        )
    for key, row in year.rows:
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
