"""Notices to people that are not about an exam, and the state behind them: the heartbeat (OpenREM's
and each station's silence) and the digest (which period was sent, what it told).

Each notice is recorded in the same transaction as the compare-and-set of the state that decides
it, and goes out through the outbox (``ctp_message``, kind ``silence`` or ``digest``) like an exam's
email: claimed compare-and-set and marked sent after the server accepted it. A crash after the
record delivers it with the next run; two hosts sharing a PostgreSQL store never both record it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from ctpoller.core.model import ArchiveRow, Notice
from ctpoller.core.silence import Pulse, Station
from ctpoller.store.base import StoreBase, meta_value, put_meta
from ctpoller.store.notifications import archive_row, notification_query
from ctpoller.store.tables import (
    DIGEST_NOTIFICATION,
    DIGEST_PERIOD,
    EXAM,
    LAST_STUDY,
    SILENCE_ANNOUNCED,
    from_iso,
    iso,
    message_table,
    meta_table,
    notification_table,
    station_table,
    stored_time,
)

log = logging.getLogger(__name__)

HEARTBEAT_VERSION = "heartbeat_version"


@dataclass(frozen=True)
class NewNotice:
    """A notice decided now, to be recorded with the state that decided it."""

    message_id: str
    recipients: tuple[str, ...]
    notice: Notice


class Notices(StoreBase):
    """The heartbeat's state, the digest's period, and notices in the outbox."""

    # -- the heartbeat -----------------------------------------------------------------------------

    def pulse(self) -> Pulse:
        """The heartbeat's state as the last run left it."""
        with self._tx("reading the heartbeat") as conn:
            version = meta_value(conn, HEARTBEAT_VERSION)
            last = meta_value(conn, LAST_STUDY)
            announced = meta_value(conn, SILENCE_ANNOUNCED)
            stations = tuple(
                Station(
                    name=row.station,
                    last_pk=row.last_pk,
                    last_at=stored_time(row.last_at),
                    gaps=tuple(float(g) for g in json.loads(row.gaps)),
                    silent_since=from_iso(row.silent_since),
                )
                for row in conn.execute(sa.select(station_table).order_by(station_table.c.station))
            )
        last_pk, _, last_at = (last or "").partition(" ")
        return Pulse(
            version=int(version or 0),
            last_pk=int(last_pk) if last_pk and last_pk != "-" else None,
            last_at=from_iso(last_at),
            announced=from_iso(announced),
            stations=stations,
        )

    def commit_pulse(self, before: Pulse, after: Pulse, notice: NewNotice | None, now: datetime) -> bool:
        """Write the heartbeat's new state and record its notice, in one transaction, only if the state
        is still ``before`` (compare-and-set on its version, before the notice is queued); False if
        another run changed it first (then nothing was written)."""
        with self._tx("recording the heartbeat") as conn:
            if not _compare_and_set(self, conn, HEARTBEAT_VERSION, before.version or None, after.version):
                return False
            pk = "-" if after.last_pk is None else str(after.last_pk)
            last = f"{pk} {iso(after.last_at)}" if after.last_at else None
            put_meta(conn, LAST_STUDY, last)
            put_meta(conn, SILENCE_ANNOUNCED, iso(after.announced) if after.announced else None)
            conn.execute(sa.delete(station_table))
            if after.stations:
                conn.execute(sa.insert(station_table), [_station_row(s) for s in after.stations])
            if notice is not None:
                self.queue_notice(conn, notice, now)
        return True

    # -- the digest --------------------------------------------------------------------------------

    def digest_told(self) -> tuple[str | None, int]:
        """The last digest's period and the newest notification id it told about (0: none yet)."""
        with self._tx("reading the digest's period") as conn:
            return meta_value(conn, DIGEST_PERIOD), int(meta_value(conn, DIGEST_NOTIFICATION) or 0)

    def commit_digest(
        self, period: str, before: str | None, told: int, notice: NewNotice | None, now: datetime
    ) -> bool:
        """Claim ``period`` compare-and-set (from ``before``) and record the digest with it; False if
        another host claimed it first (nothing written)."""
        with self._tx("recording the digest") as conn:
            if not _compare_and_set(self, conn, DIGEST_PERIOD, before, period):
                return False
            put_meta(conn, DIGEST_NOTIFICATION, str(told))
            if notice is not None:
                self.queue_notice(conn, notice, now)
        return True

    def notifications_after(self, after: int) -> tuple[int, list[ArchiveRow]]:
        """Exam notifications with an id above ``after`` (recorded since the last digest), and the newest id."""
        rows = list(self._notification_rows(notification_table.c.id > after))
        newest = max((i for i, _ in rows), default=after)
        return newest, [row for _, row in rows]

    def open_notifications(self, older_than: datetime) -> list[ArchiveRow]:
        """Notifications recorded before ``older_than``; the digest leaves out those whose review
        (the archive's review columns, read back into the review record) has an outcome."""
        return [row for _, row in self._notification_rows(message_table.c.created_at < iso(older_than))]

    def _notification_rows(self, condition: Any) -> Iterator[tuple[int, ArchiveRow]]:
        query = notification_query().where(condition, message_table.c.kind == EXAM)
        with self._tx("reading the notifications") as conn:
            for row in conn.execute(query).all():
                yield row.id, archive_row(row)

    # -- the outbox --------------------------------------------------------------------------------

    def queue_notice(self, conn: Connection, notice: NewNotice, now: datetime) -> None:
        """Put a notice in the outbox (in the caller's transaction); without recipients it is not queued."""
        if not notice.recipients:
            log.warning("%s (no recipients set: not emailed)", notice.notice.subject)
            return
        conn.execute(
            sa.insert(message_table).values(
                message_id=notice.message_id,
                study_uid="",
                created_at=iso(now),
                recipients=json.dumps(list(notice.recipients)),
                status="pending",
                attempts=0,
                kind=notice.notice.kind,
                subject=notice.notice.subject,
                body=notice.notice.body,
            )
        )


def _compare_and_set(store: StoreBase, conn: Connection, key: str, before: object, after: object) -> bool:
    """ctp_meta ``key`` from ``before`` to ``after`` (None: no value), or False if it holds something else.

    The key's row is made first if missing (conflict-free), so the update itself is the one decision:
    on PostgreSQL a second transaction waits for the first and then finds the value changed.
    """
    insert = (sqlite.insert if store.is_sqlite else postgresql.insert)(meta_table)
    conn.execute(insert.values(key=key, value=None).on_conflict_do_nothing(index_elements=[meta_table.c.key]))
    value = meta_table.c.value
    expected = value.is_(None) if before is None else value == str(before)
    moved = conn.execute(sa.update(meta_table).where(meta_table.c.key == key, expected).values(value=str(after)))
    return moved.rowcount == 1


def _station_row(station: Station) -> dict[str, Any]:
    return dict(
        station=station.name,
        last_pk=station.last_pk,
        last_at=iso(station.last_at),
        gaps=json.dumps([round(g, 1) for g in station.gaps]),
        silent_since=iso(station.silent_since) if station.silent_since else None,
    )
