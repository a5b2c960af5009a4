"""The outbox: delivering recorded messages exactly once (claims, sent, failed, retry, dismiss)."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ctpoller.core.model import Message, MessageStatus, Notice
from ctpoller.store.base import StoreBase, bump_archive
from ctpoller.store.notifications import _notification
from ctpoller.store.tables import EXAM, from_iso, iso, message_table, notification_table, stored_time

log = logging.getLogger(__name__)


class Outbox(StoreBase):
    """Delivery state of ``ctp_message``: claimed compare-and-set, marked sent after acceptance."""

    def release_stale_claims(self, now: datetime) -> int:
        """Put messages claimed by runs that died back in the queue (the documented resend window)."""
        with self._tx("releasing stale claims") as conn:
            released = conn.execute(
                sa.update(message_table)
                .where(message_table.c.status == "sending", message_table.c.claimed_at <= iso(now - self.stale_claim))
                .values(status="pending", claimed_by=None, claimed_at=None)
            )
            return int(released.rowcount or 0)

    def claim(self, message: Message, now: datetime) -> bool:
        """Compare-and-set pending -> sending for this run; False if someone else has it."""
        with self._tx("claiming a message") as conn:
            claimed = conn.execute(
                sa.update(message_table)
                .where(message_table.c.id == message.id, message_table.c.status == "pending")
                .values(status="sending", claimed_by=self.run_id, claimed_at=iso(now))
            )
            return claimed.rowcount == 1

    def pending_messages(self) -> list[Message]:
        with self._tx("reading the outbox") as conn:
            rows = conn.execute(
                sa.select(message_table).where(message_table.c.status == "pending").order_by(message_table.c.id)
            ).all()
            return [self._message(conn, row) for row in rows]

    def _message(self, conn: Connection, row: Any) -> Message:
        notes = conn.execute(
            sa.select(notification_table)
            .where(notification_table.c.message == row.id)
            .order_by(notification_table.c.id)
        )
        return Message(
            id=row.id,
            message_id=row.message_id,
            study_uid=row.study_uid,
            created_at=stored_time(row.created_at),
            recipients=tuple(json.loads(row.recipients)),
            notifications=tuple(_notification(n) for n in notes),
            status=row.status,
            attempts=row.attempts,
            sent_at=from_iso(row.sent_at),
            last_error=row.last_error,
            thread_root=self._thread_root(conn, row),
            notice=None if row.kind == EXAM else Notice(row.kind, row.subject or "", row.body or ""),
        )

    @staticmethod
    def _thread_root(conn: Connection, row: Any) -> str | None:
        """The Message-ID of the first email sent about this message's exam before it, if any: an
        update names it in In-Reply-To and References, so mail readers thread the two. Messages never
        sent (failed, dismissed, recorded without email) are no root: nobody has them."""
        m = message_table
        return conn.execute(
            sa.select(m.c.message_id)
            .where(m.c.study_uid == row.study_uid, m.c.id < row.id, m.c.status == "sent")
            .order_by(m.c.id)
            .limit(1)
        ).scalar_one_or_none()

    def mark_sent(self, message: Message, now: datetime, *, note: str | None = None) -> None:
        with self._tx("marking a message sent") as conn:
            conn.execute(
                sa.update(message_table)
                .where(message_table.c.id == message.id)
                .values(
                    status="sent",
                    claimed_by=None,
                    claimed_at=None,
                    sent_at=iso(now),
                    last_attempt_at=iso(now),
                    attempts=message_table.c.attempts + 1,
                    last_error=note,
                )
            )
            bump_archive(conn, message_ids=[message.id])

    def mark_failed(self, message: Message, now: datetime, error: str, *, permanent: bool) -> None:
        with self._tx("recording a failed delivery") as conn:
            conn.execute(
                sa.update(message_table)
                .where(message_table.c.id == message.id)
                .values(
                    status="failed" if permanent else "pending",
                    claimed_by=None,
                    claimed_at=None,
                    last_error=error[:2000],
                    last_attempt_at=iso(now),
                    attempts=message_table.c.attempts + 1,
                )
            )
            if permanent:  # a message that stays pending looks the same in the archive
                bump_archive(conn, message_ids=[message.id])

    def outbox_counts(self) -> dict[str, int]:
        with self._tx("counting the outbox") as conn:
            rows = conn.execute(sa.select(message_table.c.status, sa.func.count()).group_by(message_table.c.status))
            return {status: count for status, count in rows}

    def messages_with_status(self, status: MessageStatus) -> list[Message]:
        """Every message with this status, oldest first (``failed``: what waits for a person)."""
        with self._tx("reading the outbox") as conn:
            rows = conn.execute(
                sa.select(message_table).where(message_table.c.status == status).order_by(message_table.c.id)
            ).all()
            return [self._message(conn, row) for row in rows]

    def find_message(self, key: str) -> Message | None:
        """A message by the id ``status`` shows, or by its Message-ID (with or without the <>)."""
        key = key.strip()
        if key.isdigit():
            condition = message_table.c.id == int(key)
        else:
            condition = message_table.c.message_id == (key if key.startswith("<") else f"<{key}>")
        with self._tx("reading the outbox") as conn:
            row = conn.execute(sa.select(message_table).where(condition)).first()
            return self._message(conn, row) if row is not None else None

    def requeue(self, ids: Sequence[int], now: datetime) -> int:
        """Failed (or dismissed) messages -> pending, compare-and-set; the next delivery sends them.

        They keep their Message-ID, their attempts and their last error (history until one is sent).
        """
        if not ids:
            return 0
        with self._tx("queueing messages again") as conn:
            done = conn.execute(
                sa.update(message_table)
                .where(message_table.c.id.in_(list(ids)), message_table.c.status.in_(("failed", "dismissed")))
                .values(status="pending", claimed_by=None, claimed_at=None)
            )
            bump_archive(conn, message_ids=list(ids))
            return int(done.rowcount or 0)

    def dismiss(self, ids: Sequence[int], reason: str, now: datetime) -> int:
        """Failed messages -> dismissed: a person decided not to send them. The reason is kept,
        with the refusal, in ``last_error`` (the archive's Error column)."""
        count = 0
        with self._tx("dismissing messages") as conn:
            rows = conn.execute(
                sa.select(message_table.c.id, message_table.c.last_error).where(
                    message_table.c.id.in_(list(ids)), message_table.c.status == "failed"
                )
            ).all()
            for row in rows:
                note = f"dismissed {now.astimezone(UTC):%Y-%m-%d %H:%M} UTC: {reason}"
                if row.last_error:
                    note += f" (refused: {row.last_error})"
                done = conn.execute(
                    sa.update(message_table)
                    .where(message_table.c.id == row.id, message_table.c.status == "failed")
                    .values(status="dismissed", last_error=note[:2000])
                )
                count += int(done.rowcount or 0)
            bump_archive(conn, message_ids=[row.id for row in rows])
        return count
