"""The state store's plumbing: its engine, transactions, schema, the run lock and ``ctp_meta``.

SQLite (the default, a file) or PostgreSQL. ``ensure_schema`` creates the tables idempotently with
a schema-version row and applies the migrations. Driver errors become one-line ``StateError``s.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import sqlite3
import uuid
from collections.abc import Iterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from ctpoller.database import CLIENT_ENCODING, classify, describe, first_line, parse_url, read_any_text
from ctpoller.errors import ConfigError, LockedError, StateError
from ctpoller.store.tables import (
    ADVISORY_LOCK_KEY,
    MIGRATIONS,
    SCHEMA_VERSION,
    message_table,
    meta_table,
    metadata,
)

log = logging.getLogger(__name__)


def state_url(url: str, password: str | None) -> URL:
    return parse_url(
        url, password, variable="CTPOLLER_STATE_URL", example="sqlite:////path/to/file or postgresql://user@host/db"
    )


class StoreBase:
    """The engine, a transaction, the schema, the lock and the meta keys; the rooms build on it."""

    def __init__(
        self, url: str, *, password: str | None = None, durable: bool = True, create_directory: bool = False
    ) -> None:
        """``durable=False``: a throwaway SQLite store (no journal, no fsync), for a dry run's scratch.

        ``create_directory``: a SQLite file's directory may be missing; ``ensure_schema`` creates it
        (owner-only). For the default location only: a directory named by the user must exist.
        """
        self.url = state_url(url, password)
        self.where = describe(self.url)
        self.is_sqlite = self.url.drivername.startswith("sqlite")
        connect_args: dict[str, Any] = {}
        self._directory: Path | None = None
        if self.is_sqlite:
            connect_args = {"timeout": 10}
            if self.url.database:
                path = Path(self.url.database)
                self._directory = path.parent if create_directory and not path.parent.exists() else None
                if not path.parent.is_dir() and self._directory is None:
                    raise ConfigError(f"CTPOLLER_STATE_URL: directory {path.parent} does not exist")
                if path.is_dir():
                    raise ConfigError(f"CTPOLLER_STATE_URL: {path} is a directory, not a database file")
        else:
            connect_args = {
                "connect_timeout": 10,
                "application_name": "ctpoller-state",
                "client_encoding": CLIENT_ENCODING,
            }
        self.engine: Engine = sa.create_engine(self.url, connect_args=connect_args, pool_pre_ping=True)
        if not self.is_sqlite:  # a database created with SQL_ASCII too
            sa.event.listen(self.engine, "connect", read_any_text, insert=True)
        self.run_id = uuid.uuid4().hex
        self._lock_conn: Connection | None = None
        # A claim older than this is taken to belong to a run that died. With SQLite the file lock
        # dies with its process, so any claim found by the lock holder is stale; with a shared
        # PostgreSQL store another host's run may still be sending, up to its TimeoutStartSec.
        self.stale_claim = timedelta(0) if self.is_sqlite else timedelta(minutes=15)
        if self.is_sqlite:
            sa.event.listen(self.engine, "connect", _sqlite_pragmas if durable else _scratch_pragmas)

    def dispose(self) -> None:
        self.engine.dispose()

    def exists(self) -> bool:
        """Whether this store was ever set up, without creating or changing anything.

        A SQLite file is looked at with a plain connection (not the store's, which would switch the
        file to WAL): a file that is not a ctpoller store is left exactly as it was.
        """
        if self.is_sqlite:
            if not self.url.database or not Path(self.url.database).exists():
                return False
            try:
                uri = f"file:{Path(self.url.database).resolve()}?mode=rw"
                with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=10)) as plain:
                    found = plain.execute(
                        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (meta_table.name,)
                    ).fetchone()
                return found is not None
            except sqlite3.Error as e:
                raise StateError(f"state store {self.where}: opening the store failed: {e}", temporary=True) from e
        try:
            with self.engine.connect() as conn:
                return bool(sa.inspect(conn).has_table(meta_table.name))
        except DBAPIError as e:
            raise self._failed("opening the store", e, temporary=True) from e

    def access_problem(self) -> str | None:
        """For ``check``: why this user could not run with this store, or None (reads only).

        SQLite: the directory must take the lock file and the journal, and an existing file must be
        writable. PostgreSQL: the role must be allowed to create the tables (a new store) or to
        read and write them (an existing one).
        """
        if self.is_sqlite:
            if not self.url.database:
                return None
            path = Path(self.url.database)
            directory = path.parent
            while self._directory is not None and not directory.exists() and directory != directory.parent:
                directory = directory.parent  # the first run creates the rest
            if not os.access(directory, os.W_OK | os.X_OK):
                return f"directory {directory} is not writable by this user"
            if path.exists() and not os.access(path, os.R_OK | os.W_OK):
                return f"{path} is not readable and writable by this user"
            return None
        tables = [t.name for t in metadata.sorted_tables]
        try:
            with self.engine.connect() as conn:
                if not self.exists():
                    may = conn.execute(sa.text("SELECT has_schema_privilege(current_schema(), 'CREATE')")).scalar()
                    return None if may else "this role may not create tables in its schema"
                missing = [
                    name
                    for name in tables
                    if not conn.execute(
                        sa.text("SELECT has_table_privilege(:t, 'SELECT, INSERT, UPDATE, DELETE')"), {"t": name}
                    ).scalar()
                ]
        except DBAPIError as e:
            raise self._failed("reading its privileges", e, temporary=True) from e
        return f"this role may not read and write {', '.join(missing)}" if missing else None

    # -- plumbing ---------------------------------------------------------------------------------

    def _failed(self, what: str, e: DBAPIError, *, temporary: bool | None = None) -> StateError:
        """A driver error in one line. A refused login or permission, or a database that does not
        exist, is for a person to fix (permanent); ``temporary`` (else: by the error) for the rest."""
        text = first_line(e.orig)
        fault = classify(e)
        if fault in ("setup", "permission"):
            return StateError(
                f"state store {self.where}: {what} failed: {text} (check CTPOLLER_STATE_URL and "
                "CTPOLLER_STATE_PASSWORD)",
                temporary=False,
            )
        if temporary is None:
            temporary = fault == "temporary"
        return StateError(f"state store {self.where}: {what} failed: {text}", temporary=temporary)

    @contextlib.contextmanager
    def _tx(self, what: str) -> Iterator[Connection]:
        try:
            with self.engine.begin() as conn:
                yield conn
        except StateError:
            raise
        except DBAPIError as e:
            raise self._failed(what, e) from e
        except SQLAlchemyError as e:
            raise StateError(f"state store {self.where}: {what} failed: {first_line(e)}", temporary=False) from e
        except OSError as e:
            raise StateError(f"state store {self.where}: {what} failed: {e}", temporary=True) from e

    def ensure_schema(self) -> None:
        """Create the tables if needed; refuse a store written by a newer ctpoller.

        Two first runs may race to create the tables: the loser's error is followed by one more try,
        which finds them made.
        """
        try:
            self._ensure_schema()
        except StateError as e:
            if e.temporary or "newer than this ctpoller" in str(e):
                raise
            self._ensure_schema()

    def _ensure_schema(self) -> None:
        if self._directory is not None:
            try:
                self._directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            except OSError as e:
                raise StateError(
                    f"cannot create the state directory {self._directory}: {e.strerror}", temporary=False
                ) from e
        with self._tx("creating the schema") as conn:
            metadata.create_all(conn)  # catalogue look-ups only, when the tables are there
            version = meta_value(conn, "schema_version")
            if version is not None and int(version) > SCHEMA_VERSION:
                raise StateError(
                    f"state store {self.where} has schema version {version}, newer than this ctpoller "
                    f"understands ({SCHEMA_VERSION}): upgrade ctpoller",
                    temporary=False,
                )
            # Only when a migration is new to this store: their DDL takes table locks, which a run
            # starting while another records its cycle must not take (a deadlock on PostgreSQL).
            if int(meta_value(conn, MIGRATIONS_APPLIED) or 0) < len(MIGRATIONS):
                migrate(conn)
                put_meta(conn, MIGRATIONS_APPLIED, str(len(MIGRATIONS)))
            if version is None or int(version) < SCHEMA_VERSION:
                put_meta(conn, "schema_version", str(SCHEMA_VERSION))

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the single-run lock: a file lock for SQLite, an advisory lock for PostgreSQL."""
        if self.is_sqlite:
            path = Path(f"{self.url.database}.lock") if self.url.database else None
            if path is None:
                yield
                return
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            except OSError as e:
                raise StateError(f"cannot create lock file {path}: {e.strerror}", temporary=False) from e
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    raise LockedError(f"another ctpoller run holds the lock {path}; this run did nothing") from None
                yield
            finally:
                os.close(fd)
            return
        try:
            conn = self.engine.connect()
        except DBAPIError as e:
            raise self._failed("connecting", e, temporary=True) from e
        try:
            got = conn.execute(sa.select(sa.func.pg_try_advisory_lock(ADVISORY_LOCK_KEY))).scalar_one()
            conn.commit()
            self._lock_conn = conn
            if not got:
                raise LockedError(
                    f"another ctpoller run holds the lock on the state store {self.where}; this run did nothing"
                )
            try:
                yield
            finally:
                self._lock_conn = None
                with contextlib.suppress(SQLAlchemyError):
                    conn.execute(sa.select(sa.func.pg_advisory_unlock(ADVISORY_LOCK_KEY)))
                    conn.commit()
        finally:
            conn.close()

    def assert_locked(self) -> None:
        """Before a send: the PostgreSQL session that holds the lock must still be alive.

        If the server dropped it, another host may hold the lock by now: stop rather than risk
        sending what that host sends.
        """
        conn = self._lock_conn
        if conn is None:
            return
        try:
            conn.execute(sa.select(1))
            conn.commit()
        except DBAPIError as e:
            self._lock_conn = None
            raise StateError(
                f"lost the lock on the state store {self.where} ({first_line(e.orig)}); stopping this run",
                temporary=True,
            ) from e

    # -- meta ---------------------------------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        with self._tx(f"reading {key}") as conn:
            return conn.execute(sa.select(meta_table.c.value).where(meta_table.c.key == key)).scalar_one_or_none()

    def set_meta(self, values: dict[str, str | None]) -> None:
        with self._tx("recording the run") as conn:
            for key, value in values.items():
                put_meta(conn, key, value)

    def watermark(self) -> int | None:
        value = self.get_meta("watermark")
        return int(value) if value is not None else None

    def integrity_check(self) -> str:
        if not self.is_sqlite:
            return "ok"
        with self._tx("checking integrity") as conn:
            return str(conn.execute(sa.text("PRAGMA integrity_check")).scalar_one())


# -- helpers ------------------------------------------------------------------------------------------


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _scratch_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=OFF")
    cursor.execute("PRAGMA synchronous=OFF")
    cursor.close()


def put_meta(conn: Connection, key: str, value: str | None) -> None:
    updated = conn.execute(sa.update(meta_table).where(meta_table.c.key == key).values(value=value))
    if updated.rowcount == 0:
        conn.execute(sa.insert(meta_table).values(key=key, value=value))


def meta_value(conn: Connection, key: str) -> str | None:
    return conn.execute(sa.select(meta_table.c.value).where(meta_table.c.key == key)).scalar_one_or_none()


def bump(conn: Connection, key: str) -> None:
    put_meta(conn, key, str(int(meta_value(conn, key) or 0) + 1))


def bump_archive(
    conn: Connection, *, message_ids: Sequence[int] = (), year: int | None = None, study_uids: Sequence[str] = ()
) -> None:
    """Rows of the archive changed: bump its generation and that of each year concerned (the year a
    message was recorded, UTC), so that a run rewrites only those years' workbooks. ``study_uids``:
    studies notified again, whose earlier rows (maybe in an earlier year's workbook) show whether the
    exam changed after their review."""
    bump(conn, "archive_generation")
    years = {year} if year is not None else set()
    for chunk in chunks(list(message_ids), 500):
        created = conn.execute(sa.select(message_table.c.created_at).where(message_table.c.id.in_(chunk)))
        years.update(int(text[:4]) for text in created.scalars())
    for chunk in chunks(sorted({uid for uid in study_uids if uid}), 500):
        year_of = sa.func.substr(message_table.c.created_at, 1, 4)
        created = conn.execute(sa.select(year_of).where(message_table.c.study_uid.in_(chunk)).distinct())
        years.update(int(text) for text in created.scalars())
    for one in sorted(years):
        bump(conn, f"archive_generation:{one}")


def chunks(items: Sequence[Any], size: int) -> Iterator[list[Any]]:
    items = list(items)
    for start in range(0, len(items), size):
        yield items[start : start + size]


#: ctp_meta: how many of ``MIGRATIONS`` this store has had applied (all of them run again, idempotently,
#: whenever that is fewer than there are).
MIGRATIONS_APPLIED = "migrations_applied"


def migrate(conn: Connection) -> None:
    """Apply ``MIGRATIONS`` in order; each is idempotent, so a store already up to date is unchanged."""
    inspector = sa.inspect(conn)
    for migration in MIGRATIONS:
        if migration.creates is not None:
            migration.creates.create(conn, checkfirst=True)
        if migration.statement:
            conn.execute(sa.text(migration.statement))
        if migration.table is not None:
            have = {column["name"] for column in inspector.get_columns(migration.table.name)}
            for name in migration.columns:
                if name not in have:
                    column = migration.table.c[name]
                    kind = column.type.compile(dialect=conn.dialect)
                    default = column.server_default
                    if isinstance(default, sa.DefaultClause) and isinstance(default.arg, str):
                        quoted = default.arg.replace("'", "''")
                        kind += f" NOT NULL DEFAULT '{quoted}'" if not column.nullable else f" DEFAULT '{quoted}'"
                    conn.execute(sa.text(f"ALTER TABLE {migration.table.name} ADD COLUMN {name} {kind}"))
