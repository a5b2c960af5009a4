"""Which OpenREM study rows ctpoller has seen, decided, or remembers from before it started."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ctpoller.core.model import Tracked
from ctpoller.store.base import StoreBase, chunks, put_meta
from ctpoller.store.tables import (
    HISTORY,
    LATE_WINDOW,
    OPENREM_BEHIND,
    OPENREM_RESTORED,
    from_iso,
    iso,
    meta_table,
    stored_time,
    study_table,
)

log = logging.getLogger(__name__)


class Studies(StoreBase):
    """``ctp_study``: the rows being tracked, the exams' decided rows, the first watermark and reset."""

    def initialise(
        self,
        watermark: int,
        now: datetime,
        history: Sequence[tuple[int, str]] = (),
        tracked: Sequence[Tracked] = (),
    ) -> bool:
        """Set the first watermark unless another run already did. True if this call set it.

        ``history``: (pk, Study Instance UID) of study rows at or below it, remembered with the
        watermark (see ``_remember``); ``tracked``: the rows above it, as ``settle.first_seen`` has them.
        """
        with self._tx("setting the first watermark") as conn:
            exists = conn.execute(sa.select(meta_table.c.value).where(meta_table.c.key == "watermark")).first()
            if exists is not None:
                return False
            self._remember(conn, history, now)
            if tracked:
                conn.execute(sa.insert(study_table), [_tracked_row(t) for t in tracked])
            conn.execute(sa.insert(meta_table).values(key="watermark", value=str(watermark)))
            put_meta(conn, "initialised_at", iso(now))
            put_meta(conn, "initial_watermark", str(watermark))
            return True

    def reset(
        self,
        watermark: int,
        now: datetime,
        history: Sequence[tuple[int, str]] = (),
        tracked: Sequence[Tracked] = (),
    ) -> None:
        """Start again at ``watermark``, forgetting which OpenREM pks were seen; keep what was notified.

        The ledger is keyed by Study Instance UID, never by pk, so a backfill afterwards notifies
        only what was not notified before. ``history`` and ``tracked`` as for ``initialise``. What a
        run found of a restore is forgotten: the person who resets has dealt with it.
        """
        with self._tx("resetting the watermark") as conn:
            conn.execute(sa.delete(study_table))
            self._remember(conn, history, now)
            if tracked:
                conn.execute(sa.insert(study_table), [_tracked_row(t) for t in tracked])
            put_meta(conn, "watermark", str(watermark))
            put_meta(conn, "reset_at", iso(now))
            forgotten = [OPENREM_BEHIND, OPENREM_RESTORED, LATE_WINDOW]
            conn.execute(sa.delete(meta_table).where(meta_table.c.key.in_(forgotten)))

    def _remember(self, conn: Connection, history: Sequence[tuple[int, str]], now: datetime) -> None:
        """Which exam each of these rows below the watermark belongs to, without evaluating them.

        A continued report (a second study row with the same Study Instance UID) of an exam whose
        first row came before the first run is then evaluated with that row, as ``decided_pks``
        returns it too. A row decided already stays decided.
        """
        for chunk in chunks(history, 5000):
            _write_studies(conn, chunk, HISTORY, now, on_conflict="DO NOTHING")

    # -- tracking -----------------------------------------------------------------------------------

    def tracked_above(self, watermark: int) -> dict[int, Tracked]:
        with self._tx("reading tracked studies") as conn:
            rows = conn.execute(sa.select(study_table).where(study_table.c.pk > watermark).order_by(study_table.c.pk))
            return {row.pk: _tracked(row) for row in rows}

    def tracked(self, pks: Sequence[int]) -> dict[int, Tracked]:
        found: dict[int, Tracked] = {}
        with self._tx("reading tracked studies") as conn:
            for chunk in chunks(pks, 500):
                for row in conn.execute(sa.select(study_table).where(study_table.c.pk.in_(chunk))):
                    found[row.pk] = _tracked(row)
        return found

    def decided_pks(self, uids: Iterable[str]) -> dict[str, list[int]]:
        """Decided OpenREM study pks per Study Instance UID (the exam's other rows), with the rows
        remembered from before the first run.

        Driver-level statements: backfill asks this for every study of OpenREM's history, and
        compiling a statement with hundreds of parameters costs more than running it.
        """
        result: dict[str, list[int]] = {}
        with self._tx("reading exams") as conn:
            mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
            for chunk in chunks(sorted(set(uids)), 500):
                statement = (
                    f"SELECT uid, pk FROM {study_table.name} WHERE status IN ('decided', '{HISTORY}') "
                    f"AND uid IN ({', '.join([mark] * len(chunk))}) ORDER BY pk"
                )
                for uid, pk in conn.exec_driver_sql(statement, tuple(chunk)):
                    result.setdefault(uid, []).append(pk)
        return result

    def _decide(self, conn: Connection, decided: Sequence[tuple[int, str | None]], now: datetime) -> None:
        """Mark these rows decided, keeping when a row was first seen."""
        update = (
            "DO UPDATE SET uid = excluded.uid, status = excluded.status, changed_at = excluded.changed_at, "
            "decided_at = excluded.decided_at"
        )
        _write_studies(conn, decided, "decided", now, on_conflict=update)


def _write_studies(
    conn: Connection, rows: Sequence[tuple[int, str | None]], status: str, now: datetime, *, on_conflict: str
) -> None:
    """Insert (pk, uid) study rows with ``status`` in one driver-level executemany (backfill decides
    hundreds of thousands of rows; building a statement per row costs more than writing them)."""
    mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    statement = (
        f"INSERT INTO {study_table.name} (pk, uid, status, fingerprint, first_seen_at, changed_at, decided_at) "
        f"VALUES ({', '.join([mark] * 7)}) ON CONFLICT (pk) {on_conflict}"
    )
    when = iso(now)
    decided_at = None if status == HISTORY else when
    conn.exec_driver_sql(statement, [(pk, uid, status, "", when, when, decided_at) for pk, uid in rows])


def _tracked(row: Any) -> Tracked:
    return Tracked(
        pk=row.pk,
        uid=row.uid,
        status=row.status,
        fingerprint=row.fingerprint,
        first_seen_at=stored_time(row.first_seen_at),
        changed_at=stored_time(row.changed_at),
        first_seen_xmax=row.first_seen_xmax,
        decided_at=from_iso(row.decided_at),
    )


def _tracked_row(t: Tracked) -> dict[str, Any]:
    return dict(
        pk=t.pk,
        uid=t.uid,
        status=t.status,
        fingerprint=t.fingerprint,
        first_seen_at=iso(t.first_seen_at),
        first_seen_xmax=t.first_seen_xmax,
        changed_at=iso(t.changed_at),
        decided_at=iso(t.decided_at) if t.decided_at else None,
    )
