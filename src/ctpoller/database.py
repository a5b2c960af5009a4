"""What the two database adapters (``openrem/``, ``store/``) share: URLs, one-line messages,
how text is read, and which connection failures need a person."""

from __future__ import annotations

import functools
from typing import Any, Literal

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError

from ctpoller.errors import ConfigError

DRIVERS = ("postgresql+psycopg", "sqlite", "sqlite+pysqlite")


def parse_url(url: str, password: str | None, *, variable: str, example: str) -> URL:
    """``url`` with the psycopg 3 driver and ``password`` set, or ConfigError naming ``variable``."""
    try:
        parsed = make_url(url)
        if parsed.port is not None and not 0 < parsed.port < 65536:  # not a number: ValueError
            raise ValueError("port out of range")
    except (ArgumentError, ValueError):
        raise ConfigError(f"{variable} is not a database URL (expected {example})") from None
    if parsed.drivername in ("postgresql", "postgres", "postgresql+psycopg2"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.drivername not in DRIVERS:
        raise ConfigError(f"{variable}: {parsed.drivername} is not supported (use {example})")
    if password:
        parsed = parsed.set(password=password)
    return parsed


def describe(url: URL) -> str:
    """Where a database is, for messages: never the password or user."""
    if url.drivername.startswith("sqlite"):
        return str(url.database or ":memory:")
    return f"{url.host or 'localhost'}:{url.port or 5432}/{url.database or ''}"


def first_line(e: BaseException | None) -> str:
    """The first line of a driver's message, cut to 300 characters."""
    text = str(e) if e is not None else "unknown error"
    return (text.strip().splitlines() or ["unknown error"])[0][:300]


#: libpq's own words (no SQLSTATE) for a login a person must fix: a password is missing or wrong.
LOGIN_REFUSED = (
    "no password supplied",
    "authentication failed",
    "no pg_hba.conf entry",
)

#: What a driver error means for whoever must act: ``setup`` (the URL, the password or the database
#: named is wrong: a person), ``permission`` (the role may not: a person), ``temporary`` (the server is
#: away, busy, timed out or cancelled the statement: the next run retries), ``other`` (a person).
Fault = Literal["setup", "permission", "temporary", "other"]

#: SQLite has no SQLSTATEs: its words for a failure that passes.
_SQLITE_TEMPORARY = ("locked", "busy", "timeout", "could not", "disk i/o")


def classify(e: DBAPIError) -> Fault:
    """The one judgement of a driver error, for the OpenREM source and the state store alike."""
    sqlstate = getattr(e.orig, "sqlstate", None) or ""
    text = str(e.orig)
    if sqlstate in ("28000", "28P01", "3D000") or any(words in text for words in (*LOGIN_REFUSED, "does not exist")):
        return "setup"
    if sqlstate == "42501" or "permission denied" in text.lower():
        return "permission"
    if e.connection_invalidated or sqlstate[:2] in ("08", "57", "40", "53", "55"):
        return "temporary"
    sqlite = type(e.orig).__module__.startswith("sqlite3")
    if not sqlstate and (not sqlite or any(w in text.lower() for w in _SQLITE_TEMPORARY)):
        return "temporary"  # psycopg's own (the connection, the network); SQLite's by their words
    return "other"


#: Every PostgreSQL connection speaks UTF-8 to ctpoller, whatever the database's encoding.
CLIENT_ENCODING = "UTF8"

#: The text types a SQL_ASCII database may hold any bytes in (and the oid of types psycopg does
#: not know, which it reads as text).
_TEXT_TYPES = (0, "text", "varchar", "bpchar", "name", '"char"')


@functools.cache
def _any_bytes_as_text() -> tuple[type, ...]:
    """psycopg loaders for text from a SQL_ASCII database: UTF-8 where it is, U+FFFD for each byte
    that is not (psycopg is imported only when such a database is met)."""
    from psycopg.adapt import Buffer, Loader
    from psycopg.pq import Format

    class AnyBytesAsText(Loader):
        def load(self, data: Buffer) -> str:
            return bytes(data).decode("utf-8", "replace")

    class AnyBytesAsTextBinary(AnyBytesAsText):
        format = Format.BINARY

    return AnyBytesAsText, AnyBytesAsTextBinary


def read_any_text(dbapi_connection: Any, _record: Any = None) -> None:
    """Make a new psycopg connection read text in any encoding without failing.

    A database created with ``ENCODING 'SQL_ASCII'`` (OpenREM runs on one) stores whatever bytes it
    was given. Asked for UTF-8, the server refuses to send a byte that is not ("invalid byte
    sequence"); in SQL_ASCII psycopg returns text as ``bytes``. So such a connection stays in
    SQL_ASCII and its text is decoded here, as UTF-8 where it is and U+FFFD for each byte that is
    not (strings sent are UTF-8). Any other database converts to ``CLIENT_ENCODING`` itself.
    A "connect" listener that must run first: SQLAlchemy reads the server's version as text.
    """
    if dbapi_connection.info.parameter_status("server_encoding") != "SQL_ASCII":
        return
    dbapi_connection.execute("SET client_encoding TO 'SQL_ASCII'")
    dbapi_connection.commit()
    for loader in _any_bytes_as_text():
        for oid in _TEXT_TYPES:
            dbapi_connection.adapters.register_loader(oid, loader)
