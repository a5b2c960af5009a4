"""ctpoller's own state store: watermark, studies being tracked, the notification ledger and outbox.

SQLite (the default, a file) or PostgreSQL. The tables are declared here, never reflected, and
``ensure_schema`` creates them idempotently with a schema-version row. Everything one poll cycle
decides is written by ``commit_cycle`` in ONE transaction, before anything is sent; the watermark
move in it is compare-and-set. A message is marked sent only after the server accepted it.

Tables::

    ctp_meta          key/value: schema_version, watermark, last_run_at, last_success_at, archive generations
    ctp_study         OpenREM study rows seen above (or, once decided, below) the watermark:
                      pk, uid, status pending|decided|skipped|given_up, fingerprint and when first seen / changed;
                      and, status history, the last rows before the first watermark with the exam (uid)
                      each belongs to, so that a report continuing one of those exams is evaluated with them
    ctp_exceedance    the ledger: highest value notified per (study uid, rule, metric, event key), indexed
                      by event key too; an exam-level value also under "events:" + a digest of the exam's
                      irradiation event UIDs (model.events_key) in place of the study uid
    ctp_message       the outbox: one email per exam per run, with its fixed Message-ID and status
    ctp_notification  the exceedances each message tells about (what the email and the archive show)
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import sqlite3
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from ctpoller import settle
from ctpoller.database import CLIENT_ENCODING, LOGIN_REFUSED, describe, first_line, parse_url, read_any_text
from ctpoller.errors import ConfigError, LockedError, StateError
from ctpoller.model import ArchiveRow, Ledger, Message, MessageStatus, Notification, Tracked

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
ADVISORY_LOCK_KEY = 0x63_74_70_6F_6C_6C  # "ctpoll"
EVENT_KEY_INDEX = "ctp_exceedance_event_key"
HISTORY = settle.HISTORY  # ctp_study status of a row remembered from before the first run (never evaluated)
#: ctp_meta keys of what a run found when OpenREM's newest study pk was below the watermark: the
#: newest pk then, while it is unknown whether studies were deleted or OpenREM was restored (behind),
#: and once a restore is proven (restored). Only ``reset`` clears them.
OPENREM_BEHIND = "openrem_behind"
OPENREM_RESTORED = "openrem_restored"
LATE_WINDOW = "late_window"  # "floor xmax started-at" while the pks below a first run's start are watched

metadata = sa.MetaData()

meta_table = sa.Table(
    "ctp_meta",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=True),
)

study_table = sa.Table(
    "ctp_study",
    metadata,
    sa.Column("pk", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("uid", sa.Text, nullable=True, index=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("fingerprint", sa.Text, nullable=False, default=""),
    sa.Column("first_seen_at", sa.String(40), nullable=False),
    sa.Column("first_seen_xmax", sa.BigInteger, nullable=True),
    sa.Column("changed_at", sa.String(40), nullable=False),
    sa.Column("decided_at", sa.String(40), nullable=True),
)

exceedance_table = sa.Table(
    "ctp_exceedance",
    metadata,
    sa.Column("study_uid", sa.Text, primary_key=True),
    sa.Column("rule", sa.Text, primary_key=True),
    sa.Column("metric", sa.String(64), primary_key=True),
    sa.Column("event_key", sa.Text, primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
    sa.Column("notified_at", sa.String(40), nullable=False),
)

message_table = sa.Table(
    "ctp_message",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("message_id", sa.Text, nullable=False, unique=True),
    sa.Column("study_uid", sa.Text, nullable=False, index=True),
    sa.Column("created_at", sa.String(40), nullable=False),
    sa.Column("recipients", sa.Text, nullable=False),
    sa.Column("status", sa.String(16), nullable=False, index=True),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("last_attempt_at", sa.String(40), nullable=True),
    sa.Column("sent_at", sa.String(40), nullable=True),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("claimed_by", sa.String(32), nullable=True),
    sa.Column("claimed_at", sa.String(40), nullable=True),
)

notification_table = sa.Table(
    "ctp_notification",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("message", sa.Integer, sa.ForeignKey("ctp_message.id"), nullable=False, index=True),
    sa.Column("study_uid", sa.Text, nullable=False),
    sa.Column("rule", sa.Text, nullable=False),
    sa.Column("metric", sa.String(64), nullable=False),
    sa.Column("event_key", sa.Text, nullable=False),
    sa.Column("value", sa.Text, nullable=False),
    sa.Column("limit_value", sa.Text, nullable=False),
    sa.Column("unit", sa.String(16), nullable=False),
    sa.Column("previous_value", sa.Text, nullable=True),
    sa.Column("protocol", sa.Text, nullable=True),
    sa.Column("station_name", sa.Text, nullable=True),
    sa.Column("display_name", sa.Text, nullable=True),
    sa.Column("study_date", sa.String(10), nullable=True),
    sa.Column("study_time", sa.String(15), nullable=True),
    sa.Column("description", sa.Text, nullable=True),
    sa.Column("accession_number", sa.Text, nullable=True),
)


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def from_iso(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


@dataclass
class NewMessage:
    """A message decided in this cycle, not yet in the store."""

    message_id: str
    study_uid: str
    recipients: tuple[str, ...]
    notifications: tuple[Notification, ...]
    status: MessageStatus = "pending"
    events_key: str | None = None  # model.events_key of the exam: exam-level news is recorded under it too


@dataclass
class CycleWrite:
    """Everything one cycle decided: written together or not at all."""

    upsert: list[Tracked] = field(default_factory=list)
    decide: list[tuple[int, str | None]] = field(default_factory=list)  # (pk, uid) decided now (backfill)
    forget: list[int] = field(default_factory=list)
    messages: list[NewMessage] = field(default_factory=list)
    watermark_from: int | None = None
    watermark_to: int | None = None

    @property
    def empty(self) -> bool:
        return (
            not (self.upsert or self.decide or self.forget or self.messages)
            and self.watermark_from == self.watermark_to
        )


def state_url(url: str, password: str | None) -> URL:
    return parse_url(
        url, password, variable="CTPOLLER_STATE_URL", example="sqlite:////path/to/file or postgresql://user@host/db"
    )


class StateStore:
    """The state store. Create it, call ``ensure_schema``, hold ``lock()`` for a run."""

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
        if _needs_a_person(e):
            return StateError(
                f"state store {self.where}: {what} failed: {text} (check CTPOLLER_STATE_URL and "
                "CTPOLLER_STATE_PASSWORD)",
                temporary=False,
            )
        if temporary is None:
            temporary = e.connection_invalidated or _is_temporary(e)
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
            metadata.create_all(conn)
            if not any(i["name"] == EVENT_KEY_INDEX for i in sa.inspect(conn).get_indexes(exceedance_table.name)):
                # stores made before it too: the ledger looks irradiation event UIDs up under any exam
                conn.execute(
                    sa.text(f"CREATE INDEX IF NOT EXISTS {EVENT_KEY_INDEX} ON {exceedance_table.name} (event_key)")
                )
            version = conn.execute(
                sa.select(meta_table.c.value).where(meta_table.c.key == "schema_version")
            ).scalar_one_or_none()
            if version is None:
                conn.execute(sa.insert(meta_table).values(key="schema_version", value=str(SCHEMA_VERSION)))
            elif int(version) > SCHEMA_VERSION:
                raise StateError(
                    f"state store {self.where} has schema version {version}, newer than this ctpoller "
                    f"understands ({SCHEMA_VERSION}): upgrade ctpoller",
                    temporary=False,
                )

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
                _put_meta(conn, key, value)

    def watermark(self) -> int | None:
        value = self.get_meta("watermark")
        return int(value) if value is not None else None

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
            _put_meta(conn, "initialised_at", iso(now))
            _put_meta(conn, "initial_watermark", str(watermark))
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
            _put_meta(conn, "watermark", str(watermark))
            _put_meta(conn, "reset_at", iso(now))
            forgotten = [OPENREM_BEHIND, OPENREM_RESTORED, LATE_WINDOW]
            conn.execute(sa.delete(meta_table).where(meta_table.c.key.in_(forgotten)))

    def _remember(self, conn: Connection, history: Sequence[tuple[int, str]], now: datetime) -> None:
        """Which exam each of these rows below the watermark belongs to, without evaluating them.

        A continued report (a second study row with the same Study Instance UID) of an exam whose
        first row came before the first run is then evaluated with that row, as ``decided_pks``
        returns it too. A row decided already stays decided.
        """
        for chunk in _chunks(history, 5000):
            _write_studies(conn, chunk, HISTORY, now, on_conflict="DO NOTHING")

    # -- tracking -----------------------------------------------------------------------------------

    def tracked_above(self, watermark: int) -> dict[int, Tracked]:
        with self._tx("reading tracked studies") as conn:
            rows = conn.execute(sa.select(study_table).where(study_table.c.pk > watermark).order_by(study_table.c.pk))
            return {row.pk: _tracked(row) for row in rows}

    def tracked(self, pks: Sequence[int]) -> dict[int, Tracked]:
        found: dict[int, Tracked] = {}
        with self._tx("reading tracked studies") as conn:
            for chunk in _chunks(pks, 500):
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
            for chunk in _chunks(sorted(set(uids)), 500):
                statement = (
                    f"SELECT uid, pk FROM {study_table.name} WHERE status IN ('decided', '{HISTORY}') "
                    f"AND uid IN ({', '.join([mark] * len(chunk))}) ORDER BY pk"
                )
                for uid, pk in conn.exec_driver_sql(statement, tuple(chunk)):
                    result.setdefault(uid, []).append(pk)
        return result

    def ledger(self, exam_keys: Iterable[str], event_keys: Iterable[str] = ()) -> Ledger:
        """What was notified before: the ledger rows of these exams (Study Instance UIDs or
        ``model.events_key``s) and of these irradiation event UIDs under any exam.

        Rule names are compared by ``model.rule_identity``, whatever case a row was written in, so
        a rule whose name only changed case finds what it notified before.
        """
        result = Ledger()
        t = exceedance_table
        with self._tx("reading the ledger") as conn:
            for column, keys in ((t.c.study_uid, exam_keys), (t.c.event_key, event_keys)):
                for chunk in _chunks(sorted(set(keys)), 500):
                    for row in conn.execute(sa.select(t).where(column.in_(chunk))):
                        result.add(row.study_uid, row.rule, row.metric, row.event_key, Decimal(row.value))
        return result

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
                for chunk in _chunks(write.forget, 500):
                    conn.execute(sa.delete(study_table).where(study_table.c.pk.in_(chunk)))
            if write.upsert:
                pks = [t.pk for t in write.upsert]
                for chunk in _chunks(pks, 500):
                    conn.execute(sa.delete(study_table).where(study_table.c.pk.in_(chunk)))
                conn.execute(sa.insert(study_table), [_tracked_row(t) for t in write.upsert])
            if write.decide:
                self._decide(conn, write.decide, now)
            if write.messages:
                self._insert_messages(conn, write.messages, now)
            if write.messages:
                _bump(conn, "archive_generation")

    def _decide(self, conn: Connection, decided: Sequence[tuple[int, str | None]], now: datetime) -> None:
        """Mark these rows decided, keeping when a row was first seen."""
        update = (
            "DO UPDATE SET uid = excluded.uid, status = excluded.status, changed_at = excluded.changed_at, "
            "decided_at = excluded.decided_at"
        )
        _write_studies(conn, decided, "decided", now, on_conflict=update)

    def _insert_messages(self, conn: Connection, messages: Sequence[NewMessage], now: datetime) -> None:
        """Record messages, their notifications and the ledger: a few statements for any number."""
        recorded: set[str] = set()
        for chunk in _chunks([m.message_id for m in messages], 500):
            recorded.update(
                conn.execute(
                    sa.select(message_table.c.message_id).where(message_table.c.message_id.in_(chunk))
                ).scalars()
            )
        fresh: dict[str, NewMessage] = {}
        for message in messages:
            if message.message_id in recorded or message.message_id in fresh:
                log.warning("message %s was recorded before; not recording it twice", message.message_id)
                continue
            fresh[message.message_id] = message
        if not fresh:
            return
        when = iso(now)
        conn.execute(
            sa.insert(message_table),
            [
                dict(
                    message_id=m.message_id,
                    study_uid=m.study_uid,
                    created_at=when,
                    recipients=json.dumps(list(m.recipients)),
                    status=m.status,
                    attempts=0,
                )
                for m in fresh.values()
            ],
        )
        ids: dict[str, int] = {}
        for chunk in _chunks(list(fresh), 500):
            query = sa.select(message_table.c.message_id, message_table.c.id).where(
                message_table.c.message_id.in_(chunk)
            )
            ids.update((message_id, pk) for message_id, pk in conn.execute(query))
        notifications = [(ids[m.message_id], n) for m in fresh.values() for n in m.notifications]
        if not notifications:
            return
        conn.execute(
            sa.insert(notification_table), [dict(message=pk, **_notification_row(n)) for pk, n in notifications]
        )
        ledger: dict[tuple[str, str, str, str], str] = {}  # the last value of a key wins, as if written one by one
        for m in fresh.values():
            for n in m.notifications:
                ledger[(n.study_uid, n.rule, n.metric, n.event_key)] = str(n.value)
                if m.events_key is not None and not n.event_key:  # the exam by its events, too
                    ledger[(m.events_key, n.rule, n.metric, "")] = str(n.value)
        insert = (sqlite.insert if self.is_sqlite else postgresql.insert)(exceedance_table)
        conn.execute(
            insert.on_conflict_do_update(
                index_elements=[exceedance_table.c[k] for k in ("study_uid", "rule", "metric", "event_key")],
                set_={"value": insert.excluded.value, "notified_at": insert.excluded.notified_at},
            ),
            [
                dict(study_uid=uid, rule=rule, metric=metric, event_key=key, value=value, notified_at=when)
                for (uid, rule, metric, key), value in ledger.items()
            ],
        )

    # -- outbox -------------------------------------------------------------------------------------

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
            created_at=from_iso(row.created_at) or datetime.now(UTC),
            recipients=tuple(json.loads(row.recipients)),
            notifications=tuple(_notification(n) for n in notes),
            status=row.status,
            attempts=row.attempts,
            sent_at=from_iso(row.sent_at),
            last_error=row.last_error,
        )

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
            _bump(conn, "archive_generation")

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
                _bump(conn, "archive_generation")

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
            _bump(conn, "archive_generation")
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
            _bump(conn, "archive_generation")
        return count

    def archive_rows(self) -> Iterator[ArchiveRow]:
        """Every notification ever recorded, oldest first, streamed."""
        query = (
            sa.select(
                notification_table,
                message_table.c.created_at,
                message_table.c.status.label("msg_status"),
                message_table.c.message_id,
                message_table.c.sent_at,
                message_table.c.last_error,
                message_table.c.recipients,
            )
            .join(message_table, message_table.c.id == notification_table.c.message)
            .order_by(notification_table.c.id)
        )
        try:
            with self.engine.connect() as conn:
                for row in conn.execution_options(yield_per=1000).execute(query):
                    yield ArchiveRow(
                        notification=_notification(row),
                        created_at=from_iso(row.created_at) or datetime.now(UTC),
                        status=row.msg_status,
                        message_id=row.message_id,
                        sent_at=from_iso(row.sent_at),
                        error=row.last_error,
                        recipients=tuple(json.loads(row.recipients)),
                    )
        except DBAPIError as e:
            raise self._failed("reading the archive", e, temporary=True) from e

    def archive_due(self) -> bool:
        with self._tx("reading the archive state") as conn:
            generation = _meta(conn, "archive_generation")
            written = _meta(conn, "archive_written_generation")
        return generation is not None and generation != written

    def archive_written(self, generation: str | None) -> None:
        self.set_meta({"archive_written_generation": generation})

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


def _put_meta(conn: Connection, key: str, value: str | None) -> None:
    updated = conn.execute(sa.update(meta_table).where(meta_table.c.key == key).values(value=value))
    if updated.rowcount == 0:
        conn.execute(sa.insert(meta_table).values(key=key, value=value))


def _meta(conn: Connection, key: str) -> str | None:
    return conn.execute(sa.select(meta_table.c.value).where(meta_table.c.key == key)).scalar_one_or_none()


def _bump(conn: Connection, key: str) -> None:
    _put_meta(conn, key, str(int(_meta(conn, key) or 0) + 1))


def _chunks(items: Sequence[Any], size: int) -> Iterator[list[Any]]:
    items = list(items)
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _tracked(row: Any) -> Tracked:
    return Tracked(
        pk=row.pk,
        uid=row.uid,
        status=row.status,
        fingerprint=row.fingerprint,
        first_seen_at=from_iso(row.first_seen_at) or datetime.now(UTC),
        changed_at=from_iso(row.changed_at) or datetime.now(UTC),
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


def _notification_row(n: Notification) -> dict[str, Any]:
    return dict(
        study_uid=n.study_uid,
        rule=n.rule,
        metric=n.metric,
        event_key=n.event_key,
        value=str(n.value),
        limit_value=str(n.limit),
        unit=n.unit,
        previous_value=str(n.previous_value) if n.previous_value is not None else None,
        protocol=n.protocol,
        station_name=n.station_name,
        display_name=n.display_name,
        study_date=n.study_date.isoformat() if n.study_date else None,
        study_time=n.study_time.isoformat() if n.study_time else None,
        description=n.description,
        accession_number=n.accession_number,
    )


def _notification(row: Any) -> Notification:
    return Notification(
        study_uid=row.study_uid,
        rule=row.rule,
        metric=row.metric,
        event_key=row.event_key,
        value=Decimal(row.value),
        limit=Decimal(row.limit_value),
        unit=row.unit,
        previous_value=Decimal(row.previous_value) if row.previous_value is not None else None,
        protocol=row.protocol,
        station_name=row.station_name,
        display_name=row.display_name,
        study_date=date.fromisoformat(row.study_date) if row.study_date else None,
        study_time=time.fromisoformat(row.study_time) if row.study_time else None,
        description=row.description,
        accession_number=row.accession_number,
    )


def _needs_a_person(e: DBAPIError) -> bool:
    """PostgreSQL refused the login (a password missing or wrong) or the permission, or the
    database does not exist."""
    sqlstate = getattr(e.orig, "sqlstate", None) or ""
    text = str(e.orig)
    return sqlstate in ("28000", "28P01", "3D000", "42501") or any(
        words in text for words in (*LOGIN_REFUSED, "permission denied", "does not exist")
    )


def _is_temporary(e: DBAPIError) -> bool:
    text = str(e.orig).lower()
    return any(word in text for word in ("locked", "busy", "connection", "timeout", "could not", "terminat"))
