"""The bulk load's indexes and constraints: dropped before it, rebuilt after it on two connections."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from bench.database import EVENT, FILLED, connect, session


def run_together(jobs: Sequence[Any]) -> None:
    """Run each job in its own thread (its own connection); re-raise the first failure."""
    errors: list[BaseException] = []

    def wrap(job: Any) -> None:
        try:
            job()
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=wrap, args=(job,)) for job in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


# --- indexes and constraints during the bulk load -------------------------------------------------------


@dataclass
class Restore:
    keys: list[tuple[str, str]]  # (table, ALTER TABLE ... ADD CONSTRAINT ...) primary keys and uniques
    indexes: list[tuple[str, str]]  # (table, CREATE INDEX ...)
    foreign_keys: list[tuple[str, str]]


def drop_indexes(conn: psycopg.Connection[Any]) -> Restore:
    """Drop the foreign keys, indexes and keys of the filled tables; return how to rebuild them."""
    tables = list(FILLED)
    fks = conn.execute(
        "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint "
        "WHERE contype = 'f' AND (conrelid::regclass::text = ANY(%s) OR confrelid::regclass::text = ANY(%s))",
        (tables, tables),
    ).fetchall()
    keys = conn.execute(
        "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint "
        "WHERE contype IN ('p', 'u') AND conrelid::regclass::text = ANY(%s)",
        (tables,),
    ).fetchall()
    indexes = conn.execute(
        "SELECT i.indrelid::regclass::text, i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid) "
        "FROM pg_index i WHERE i.indrelid::regclass::text = ANY(%s) "
        "AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid AND c.contype IN ('p', 'u'))",
        (tables,),
    ).fetchall()
    for table, name, _ in fks:
        conn.execute(sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(sql.Identifier(table), sql.Identifier(name)))
    for _, name, _ in indexes:
        conn.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(name)))
    for table, name, _ in keys:
        conn.execute(sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(sql.Identifier(table), sql.Identifier(name)))
    conn.commit()

    def add(table: str, name: str, definition: str) -> str:
        return f"ALTER TABLE {table} ADD CONSTRAINT {name} {definition}"

    return Restore(
        keys=[(t, add(t, n, d)) for t, n, d in keys],
        indexes=[(t, d) for t, _, d in indexes],
        foreign_keys=[(t, add(t, n, d)) for t, n, d in fks],
    )


def restore_indexes(url: str, restore: Restore, *, parallel: bool, say: Any) -> None:
    """Keys and indexes on two connections (the event table alone on one), then the foreign keys."""
    big = [EVENT] if parallel else []
    lanes: list[list[tuple[str, str]]] = [[], []]
    for table, statement in restore.keys + restore.indexes:
        lanes[0 if table in big else 1].append((table, statement))
    # keys first within each lane (an index never needs them, but the foreign keys do)
    lanes = [sorted(lane, key=lambda ts: 0 if "ADD CONSTRAINT" in ts[1] else 1) for lane in lanes]

    def run(statements: list[tuple[str, str]]) -> None:
        with connect(url, autocommit=True) as c:
            session(c)
            for _, statement in statements:
                t0 = time.monotonic()
                c.execute(statement)  # type: ignore[arg-type]
                say(f"{statement[:90]} ({time.monotonic() - t0:.1f} s)")

    if parallel:
        run_together([lambda: run(lanes[0]), lambda: run(lanes[1])])
    else:
        run(lanes[0] + lanes[1])
    run(restore.foreign_keys)
