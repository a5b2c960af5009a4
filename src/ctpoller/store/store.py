"""ctpoller's own state store: watermark, studies being tracked, the notification ledger and outbox.

One class over its rooms (``studies``, ``notifications``, ``outbox``, on ``base``). Everything one
poll cycle decides is written by ``commit_cycle`` in ONE transaction, before anything is sent; the
watermark move in it is compare-and-set. A message is marked sent only after the server accepted it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime

import sqlalchemy as sa

from ctpoller.core.model import Tracked
from ctpoller.errors import StateError
from ctpoller.store.base import bump_archive, chunks
from ctpoller.store.notices import Notices
from ctpoller.store.notifications import NewMessage, Notifications
from ctpoller.store.outbox import Outbox
from ctpoller.store.reviews import Reviews
from ctpoller.store.studies import Studies, _tracked_row
from ctpoller.store.tables import meta_table, study_table
from ctpoller.store.windows import Windows, WindowWrite

log = logging.getLogger(__name__)


@dataclass
class CycleWrite:
    """Everything one cycle decided: written together or not at all."""

    upsert: list[Tracked] = field(default_factory=list)
    decide: list[tuple[int, str | None]] = field(default_factory=list)  # (pk, uid) decided now (backfill)
    forget: list[int] = field(default_factory=list)
    messages: list[NewMessage] = field(default_factory=list)
    watermark_from: int | None = None
    watermark_to: int | None = None
    windows: WindowWrite = field(default_factory=WindowWrite)  # [[trend]], [[cumulative]] (store.windows)

    @property
    def empty(self) -> bool:
        return (
            not (self.upsert or self.decide or self.forget or self.messages or not self.windows.empty)
            and self.watermark_from == self.watermark_to
        )


class StateStore(Studies, Notifications, Outbox, Notices, Reviews, Windows):
    """The state store. Create it, call ``ensure_schema``, hold ``lock()`` for a run."""

    def commit_cycle(self, write: CycleWrite, now: datetime) -> None:
        """Write one cycle's decisions, messages, ledger and watermark atomically."""
        if write.empty:
            return
        with self._tx("recording this cycle's decisions") as conn:
            if write.watermark_to is not None and write.watermark_to != write.watermark_from:
                moved = conn.execute(
                    sa.update(meta_table)
                    .where(meta_table.c.key == "watermark", meta_table.c.value == str(write.watermark_from))
                    .values(value=str(write.watermark_to))
                )
                if moved.rowcount != 1:
                    raise StateError(
                        f"state store {self.where}: the watermark moved under this run (another ctpoller?); "
                        "nothing was recorded",
                        temporary=True,
                    )
            if write.forget:
                for chunk in chunks(write.forget, 500):
                    conn.execute(sa.delete(study_table).where(study_table.c.pk.in_(chunk)))
            if write.upsert:
                pks = [t.pk for t in write.upsert]
                for chunk in chunks(pks, 500):
                    conn.execute(sa.delete(study_table).where(study_table.c.pk.in_(chunk)))
                conn.execute(sa.insert(study_table), [_tracked_row(t) for t in write.upsert])
            if write.decide:
                self._decide(conn, write.decide, now)
            if write.messages:
                self._insert_messages(conn, write.messages, now)
            if not write.windows.empty:
                self._write_windows(conn, write.windows)
            if write.messages:
                bump_archive(conn, year=now.astimezone(UTC).year, study_uids=[m.study_uid for m in write.messages])
