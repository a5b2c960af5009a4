"""The review record (``ctp_review_change``, append-only), rows adopted from an existing archive
(``ctp_archived_row``) and the archive's generation per year (``ctp_meta``)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from ctpoller.core.review import Change, fold
from ctpoller.store.base import StoreBase, chunks, meta_value, put_meta
from ctpoller.store.tables import (
    archived_row_table,
    iso,
    message_table,
    meta_table,
    notification_table,
    review_table,
    stored_time,
)


class Reviews(StoreBase):
    """What reviewers decided, kept as every change; and what the archive needs to be rewritten."""

    def record_changes(
        self, changes: Sequence[Change], adopted: Sequence[tuple[str, int, dict[str, Any]]] = ()
    ) -> None:
        """Append review changes and adopt rows (key, year, cells), in one transaction."""
        if not changes and not adopted:
            return
        with self._tx("recording review changes") as conn:
            if changes:
                conn.execute(
                    sa.insert(review_table),
                    [
                        dict(
                            notification_key=c.key,
                            field=c.field,
                            old_value=c.old,
                            new_value=c.new,
                            changed_by=c.who[:500],
                            changed_at=iso(c.at),
                        )
                        for c in changes
                    ],
                )
            if adopted:
                known = set(self._adopted_keys(conn, [key for key, _, _ in adopted]))
                fresh = {key: (year, cells) for key, year, cells in adopted if key not in known}
                if fresh:
                    when = iso(datetime.now(UTC))
                    first = conn.execute(sa.select(sa.func.count()).select_from(archived_row_table)).scalar_one()
                    conn.execute(
                        sa.insert(archived_row_table),
                        [
                            dict(
                                notification_key=key, year=year, seq=first + i, cells=json.dumps(cells), adopted_at=when
                            )
                            for i, (key, (year, cells)) in enumerate(fresh.items())
                        ],
                    )

    def changes(self, keys: Iterable[str] | None = None) -> list[Change]:
        """The changes of these notifications (or of all), oldest first."""
        t = review_table
        query = sa.select(t).order_by(t.c.id)
        found: list[Change] = []
        with self._tx("reading the review record") as conn:
            if keys is None:
                found.extend(_change(row) for row in conn.execute(query))
            else:
                for chunk in chunks(sorted(set(keys)), 500):
                    found.extend(_change(row) for row in conn.execute(query.where(t.c.notification_key.in_(chunk))))
        return found  # oldest first per notification: the order they were appended

    def reviews(self, keys: Iterable[str] | None = None) -> dict[str, dict[str, str]]:
        return fold(self.changes(keys))

    def _adopted_keys(self, conn: sa.Connection, keys: Sequence[str]) -> Iterator[str]:
        for chunk in chunks(sorted(set(keys)), 500):
            yield from conn.execute(
                sa.select(archived_row_table.c.notification_key).where(archived_row_table.c.notification_key.in_(chunk))
            ).scalars()

    def adopted_rows(self, year: int | None = None) -> list[tuple[str, int, dict[str, Any]]]:
        """Rows adopted from an archive this store did not write: (key, year, cells by header)."""
        t = archived_row_table
        query = sa.select(t).order_by(t.c.seq)
        if year is not None:
            query = query.where(t.c.year == year)
        with self._tx("reading adopted archive rows") as conn:
            return [(row.notification_key, row.year, json.loads(row.cells)) for row in conn.execute(query)]

    def archive_years(self) -> list[int]:
        """Every year (UTC) in which a notification was recorded or from which one was adopted."""
        year_of = sa.func.substr(message_table.c.created_at, 1, 4)
        notified = sa.select(year_of).join(notification_table, notification_table.c.message == message_table.c.id)
        with self._tx("reading the archive years") as conn:
            years = {int(text) for text in conn.execute(notified.distinct()).scalars()}
            years.update(conn.execute(sa.select(archived_row_table.c.year).distinct()).scalars())
        return sorted(years)

    def archive_meta(self) -> dict[str, str]:
        """Every ``archive_*`` key of ``ctp_meta`` (generations, written, seen) at once."""
        with self._tx("reading the archive state") as conn:
            rows = conn.execute(sa.select(meta_table).where(meta_table.c.key.like("archive_%")))
            return {row.key: row.value for row in rows if row.value is not None}

    def set_archive_meta(self, values: dict[str, str | None]) -> None:
        with self._tx("recording the archive state") as conn:
            for key, value in values.items():
                put_meta(conn, key, value)

    def archive_generation(self, year: int) -> str | None:
        with self._tx("reading the archive state") as conn:
            return meta_value(conn, f"archive_generation:{year}")


def _change(row: Any) -> Change:
    return Change(
        key=row.notification_key,
        field=row.field,
        old=row.old_value,
        new=row.new_value,
        who=row.changed_by,
        at=stored_time(row.changed_at),
    )
