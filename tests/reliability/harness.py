"""What the real ``ctpoller`` process left behind in the reliability tests: the state store, the
archive, and OpenREM's database written and locked behind its back. Running the process: support.process;
the mail it sent: support.smtp."""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import openpyxl
import psycopg
import sqlalchemy as sa

from ctpoller.archive.columns import columns
from ctpoller.store.store import StateStore
from support import pg

# -- the state store and the archive ------------------------------------------------------------------


@dataclass
class StateView:
    """What the state store holds (``state_view`` fails unless its integrity check says "ok")."""

    watermark: int | None
    outbox: dict[str, int]  # status -> count
    integrity: str
    unsent_ids: list[str]  # Message-IDs recorded but neither sent nor failed (pending, or claimed by a dead run)
    archive_due: bool


def initialise_state(state_url: str, watermark: int = 0) -> None:
    """What the first ``ctpoller run`` does against an empty OpenREM (saves a process per test)."""
    state = StateStore(state_url)
    try:
        state.ensure_schema()
        assert state.initialise(watermark, datetime.now(UTC))
    finally:
        state.dispose()


def state_view(state_url: str) -> StateView:
    state = StateStore(state_url)
    try:
        state.ensure_schema()
        with state.engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT message_id, status FROM ctp_message ORDER BY id")).all()
        integrity = state.integrity_check()
        assert integrity == "ok", f"the state store is damaged: {integrity}"
        return StateView(
            watermark=state.watermark(),
            outbox=dict(Counter(status for _, status in rows)),
            integrity=integrity,
            unsent_ids=[mid for mid, status in rows if status not in ("sent", "failed", "not_sent")],
            archive_due=state.archive_due(),
        )
    finally:
        state.dispose()


def archive_rows(path: Path) -> list[tuple[Any, ...]]:
    """Every row of the archive below the header; fails if the file is not a complete workbook."""
    workbook = openpyxl.load_workbook(path, read_only=True)
    try:
        rows = list(workbook.active.iter_rows(values_only=True))
    finally:
        workbook.close()
    assert rows and "Notified at (UTC)" in rows[0], "the archive has no header row"
    return rows[1:]


def archive_cells(path: Path) -> Iterator[Any]:
    """Every cell of the archive (openpyxl cells, with ``data_type``)."""
    workbook = openpyxl.load_workbook(path)
    try:
        for row in workbook.active.iter_rows():
            yield from row
    finally:
        workbook.close()


#: Where the archive's columns are, by the headers ctpoller writes (never a hand-kept list of positions).
HEADERS = tuple(column.header for column in columns("UTC"))
COLUMN = {"status": HEADERS.index("Status"), "error": HEADERS.index("Error")}


@contextlib.contextmanager
def table_locked(url: str, table: str) -> Iterator[None]:
    """Hold ACCESS EXCLUSIVE on an OpenREM table (as a long ALTER or VACUUM FULL would) until the block ends."""
    with psycopg.connect(pg.libpq_url(url), application_name="reliability-test-lock") as conn:
        conn.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
        try:
            yield
        finally:
            conn.rollback()


def blocked_ctpoller_backend(url: str) -> int | None:
    """The pid of ctpoller's OpenREM backend while it waits for a lock, else None."""
    with psycopg.connect(pg.libpq_url(url), autocommit=True) as conn:
        row = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'ctpoller' "
            "AND datname = current_database() AND wait_event_type = 'Lock'"
        ).fetchone()
    return int(row[0]) if row else None


def sql(url: str, *statements: str, **params: Any) -> None:
    """Run statements on a database in one transaction (the test writing behind ctpoller's back)."""
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.begin() as conn:
            for statement in statements:
                conn.execute(sa.text(statement), params)
    finally:
        engine.dispose()
