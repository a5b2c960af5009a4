"""A bench database: its URL, a connection, what it holds and going back to what it held.

The generator (generate.py) fills it; the benchmark adds exams, measures, then deletes everything
above the ``id_marks`` taken before (``delete_above``), so every repeat sees the same database.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import psycopg
from psycopg import sql

DEFAULT_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"

STUDY = "remapp_generalstudymoduleattr"
EVENT = "remapp_ctirradiationeventdata"
# Every table the generator fills, children last (the order deletes go in reverse).
FILLED = (
    STUDY,
    "remapp_generalequipmentmoduleattr",
    "remapp_patientstudymoduleattr",
    "remapp_patientmoduleattr",
    "remapp_ctradiationdose",
    "remapp_ctaccumulateddosedata",
    EVENT,
    "remapp_ctdosecheckdetails",
)


def libpq_url(url: str) -> str:
    """A libpq/psycopg URL from a SQLAlchemy one (drops a ``+driver`` suffix)."""
    scheme, sep, rest = url.partition("://")
    return scheme.split("+", 1)[0] + sep + rest


def database_url(server_url: str, name: str) -> str:
    """``server_url`` with its database replaced by ``name``."""
    base = libpq_url(server_url)
    head, _, tail = base.partition("://")
    authority, _, rest = tail.partition("/")
    query = ("?" + rest.split("?", 1)[1]) if "?" in rest else ""
    return f"{head}://{authority}/{name}{query}"


@contextlib.contextmanager
def connect(url: str, *, autocommit: bool = False) -> Iterator[psycopg.Connection[Any]]:
    # Client-side binding: parameters also work in CREATE TABLE AS and other utility statements.
    conn = psycopg.connect(libpq_url(url), autocommit=autocommit, cursor_factory=psycopg.ClientCursor)
    try:
        yield conn
    finally:
        conn.close()


_HELPERS = """
CREATE OR REPLACE FUNCTION pg_temp.u(s integer, k bigint) RETURNS double precision
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT (hashint8extended(k, s) & 9007199254740991)::double precision / 9007199254740992.0 $$;
CREATE OR REPLACE FUNCTION pg_temp.z(s integer, k bigint) RETURNS double precision
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT sqrt(-2.0 * ln(1.0 - pg_temp.u(s, k))) * cos(2.0 * pi() * pg_temp.u(s + 7919, k)) $$;
"""


def session(conn: psycopg.Connection[Any]) -> None:
    """Fast-loading session settings (this session only) and the hash-based random helpers."""
    with conn.cursor() as cur:
        cur.execute("SET synchronous_commit = off")
        cur.execute("SET work_mem = '256MB'")
        cur.execute("SET maintenance_work_mem = '1GB'")
        cur.execute("SET max_parallel_maintenance_workers = 0")
        cur.execute("SET jit = off")  # compiling costs a second per statement and gains little here
        for statement in _HELPERS.strip().split(";\n"):
            if statement.strip():
                cur.execute(statement)
    conn.commit()


def id_marks(url: str) -> dict[str, int]:
    """The highest id of every filled table: what ``delete_above`` returns to."""
    with connect(url) as conn:
        return {table: max_id(conn, table) for table in FILLED}


def delete_above(url: str, marks: dict[str, int]) -> int:
    """Delete every row with an id above ``marks`` (children first) and set the sequences back."""
    deleted = 0
    with connect(url) as conn:
        for table in reversed(FILLED):
            deleted += conn.execute(
                sql.SQL("DELETE FROM {} WHERE id > %s").format(sql.Identifier(table)), (marks[table],)
            ).rowcount
        conn.commit()
    with connect(url, autocommit=True) as conn:
        set_sequences(conn)
    return deleted


def table_counts(url: str) -> dict[str, int]:
    with connect(url) as conn:
        return {table: count(conn, table) for table in FILLED}


def ident(conn: psycopg.Connection[Any]) -> str:
    name = conn.execute("SELECT current_database()").fetchone()[0]  # type: ignore[index]
    return sql.Identifier(name).as_string(conn)


def count(conn: psycopg.Connection[Any], table: str) -> int:
    return int(conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))).fetchone()[0])  # type: ignore[index]


def max_id(conn: psycopg.Connection[Any], table: str) -> int:
    row = conn.execute(sql.SQL("SELECT coalesce(max(id), 0) FROM {}").format(sql.Identifier(table))).fetchone()
    return int(row[0])  # type: ignore[index]


def set_sequences(conn: psycopg.Connection[Any]) -> None:
    """Every serial sequence past its table's highest id, so the next insert gets a higher pk."""
    rows = conn.execute(
        "SELECT t.relname, s.oid::regclass::text FROM pg_class s "
        "JOIN pg_depend d ON d.classid = 'pg_class'::regclass AND d.objid = s.oid AND d.deptype = 'a' "
        "JOIN pg_class t ON t.oid = d.refobjid "
        "JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = d.refobjsubid AND a.attname = 'id' "
        "WHERE s.relkind = 'S'"
    ).fetchall()
    for table, sequence in rows:
        conn.execute(
            sql.SQL("SELECT setval(%s, coalesce(max(id), 0) + 1, false) FROM {}").format(sql.Identifier(table)),
            (sequence,),
        )
