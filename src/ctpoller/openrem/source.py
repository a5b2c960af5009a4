"""The OpenREM adapter: every SELECT ctpoller runs against OpenREM, and nothing else.

Read-only three times over: the session defaults to read-only transactions, every transaction on
every connection the engine hands out is ``REPEATABLE READ, READ ONLY`` with a statement timeout
(so that a hot standby, which refuses anything else, serves every read, the probes included), and
this module only ever builds SELECTs (the recommended role in ``sql/readonly_role.sql`` can do
nothing else either). The columns of the tables needed are reflected at connect time and checked
one by one. Paging is keyset by primary key; no query on the per-cycle path touches
``study_instance_uid`` (OpenREM has no index on it). Returns model objects, never rows.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import URL, Connection
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from ctpoller.core.rules import RuleSet
from ctpoller.database import CLIENT_ENCODING, classify, describe, first_line, parse_url, read_any_text
from ctpoller.errors import ConfigError, SourceError
from ctpoller.openrem.reads import Reads
from ctpoller.openrem.tables import (
    CRITERIA,
    CRITERIA_COLUMNS,
    EQUIPMENT,
    EQUIPMENT_NAMES,
    INSUFFICIENT_PRIVILEGE,
    OPTIONAL,
    PATIENT_STUDY,
    REQUIRED,
    SHOWN,
    SHOWN_TABLE_USES,
    SHOWN_TABLES,
    STUDY,
    UNDEFINED_FUNCTION,
)

log = logging.getLogger(__name__)


def source_url(url: str | None, password: str | None) -> URL:
    if not url:
        raise ConfigError(
            "CTPOLLER_SOURCE_URL is not set: give the OpenREM database, e.g. postgresql://ctpoller@db/openrem"
        )
    return parse_url(url, password, variable="CTPOLLER_SOURCE_URL", example="postgresql://user@host:5432/db")


class OpenremSource:
    """Read-only access to OpenREM's CT tables."""

    def __init__(self, url: str | None, *, password: str | None = None, statement_timeout_seconds: int = 60) -> None:
        self.url = source_url(url, password)
        self.where = describe(self.url)
        self.is_sqlite = self.url.drivername.startswith("sqlite")
        if self.is_sqlite:
            ro = sa.engine.URL.create(
                "sqlite", database=f"file:{self.url.database}", query={"mode": "ro", "uri": "true"}
            )
            self.engine = sa.create_engine(ro)
        else:
            # datestyle: dates are read as text (see _study_rows), which must be ISO whatever the
            # server, database or role sets (e.g. 'SQL, DMY' gives 13/03/2013).
            options = (
                f"-c default_transaction_read_only=on -c statement_timeout={statement_timeout_seconds * 1000} "
                f"-c idle_in_transaction_session_timeout={statement_timeout_seconds * 2000} -c datestyle=ISO"
            )
            self.engine = sa.create_engine(
                self.url,
                connect_args={
                    "options": options,
                    "connect_timeout": 10,
                    "application_name": "ctpoller",
                    "client_encoding": CLIENT_ENCODING,
                },
                isolation_level="REPEATABLE READ",
                pool_pre_ping=True,
            )
            # READ ONLY on the DBAPI connection itself, once, for its whole life: SQLAlchemy's
            # per-Connection postgresql_readonly is reset to READ WRITE when the connection goes back
            # to the pool, and psycopg then begins every transaction READ WRITE, overriding the
            # session default (a hot standby refuses that: "cannot set transaction read-write mode").
            sa.event.listen(self.engine, "connect", _read_only_connection, insert=True)
        self.statement_timeout_seconds = statement_timeout_seconds
        self.tables: dict[str, sa.Table] = {}
        self.has_standard_names = False
        self.read_standard_names = True  # the cycle turns it off when no rule uses them
        self.supports_snapshot = False
        self.study_sequence: str | None = None
        self.unshown: set[tuple[str, str]] = set()  # SHOWN columns this role may not read
        self.unread_criteria: set[tuple[str, str]] = set()  # CRITERIA columns not readable or not there

    def dispose(self) -> None:
        self.engine.dispose()

    @contextlib.contextmanager
    def reading(self, what: str = "reading") -> Iterator[Reads]:
        """``session`` with the reads bound to its one snapshot."""
        with self.session(what) as conn:
            yield Reads(self, conn)

    @contextlib.contextmanager
    def session(self, what: str = "reading") -> Iterator[Connection]:
        """One REPEATABLE READ, READ ONLY transaction. Driver errors become SourceError."""
        try:
            with self.engine.connect() as conn, conn.begin():
                yield conn
        except SourceError:
            raise
        except DBAPIError as e:
            raise self._error(what, e) from e
        except SQLAlchemyError as e:
            raise SourceError(f"OpenREM database {self.where}: {what} failed: {first_line(e)}", temporary=False) from e

    def _error(self, what: str, e: DBAPIError) -> SourceError:
        sqlstate = getattr(e.orig, "sqlstate", None) or ""
        text = first_line(e.orig)
        fault = classify(e)
        if fault == "setup":
            return SourceError(
                f"OpenREM database {self.where}: {what} failed: {text} (check CTPOLLER_SOURCE_URL and "
                "CTPOLLER_SOURCE_PASSWORD)",
                temporary=False,
            )
        if fault == "temporary":
            hint = " (check CTPOLLER_SOURCE_URL and that the server is up)" if sqlstate[:2] in ("08", "") else ""
            if sqlstate == "57014":
                hint = " (statement timeout: raise CTPOLLER_STATEMENT_TIMEOUT_SECONDS if the server is just slow)"
            return SourceError(f"OpenREM database {self.where}: {what} failed: {text}{hint}", temporary=True)
        if fault == "permission":
            return SourceError(
                f"OpenREM database {self.where}: permission denied while {what}: {text}", temporary=False
            )
        return SourceError(f"OpenREM database {self.where}: {what} failed: {text}", temporary=False)

    # -- schema -------------------------------------------------------------------------------------

    def connect(self) -> None:
        """Reflect the needed tables and check every needed column; learn what the server offers."""
        if self.tables:
            return
        with self.session("reading the schema") as conn:
            # Only the columns, with their types, in one catalogue query: ctpoller never needs the
            # keys, indexes or constraints that a full reflection reads too (start-up time). A table
            # that is missing is simply not in the answer.
            found = sa.inspect(conn).get_multi_columns(filter_names=[*REQUIRED, *OPTIONAL, *SHOWN_TABLES])
            md = sa.MetaData()
            for (_, table), reflected in found.items():
                sa.Table(table, md, *(sa.Column(c["name"], c["type"]) for c in reflected))
            for table in REQUIRED:
                if table not in md.tables:
                    raise SourceError(
                        f"OpenREM database {self.where}: table {table} is missing "
                        "(is CTPOLLER_SOURCE_URL an OpenREM database, and may this role read it?)",
                        temporary=False,
                    )
            self.has_standard_names = all(t in md.tables for t in OPTIONAL)
            wanted = {**REQUIRED, **(OPTIONAL if self.has_standard_names else {})}
            tables = {table: self._checked(md.tables[table], columns) for table, columns in wanted.items()}
            shown = {
                table: md.tables[table]
                for table, columns in SHOWN_TABLES.items()
                if table in md.tables and all(column in md.tables[table].c for column in columns)
            }
            if not self.is_sqlite:  # in the same read-only transaction, each probe in a savepoint
                self.supports_snapshot = self._probe(
                    conn,
                    "SELECT pg_snapshot_xmin(pg_current_snapshot())",
                    not_offered=(UNDEFINED_FUNCTION,),
                    cost="pg_current_snapshot() is not offered (PostgreSQL 13 or later has it): "
                    "the late-commit guard is off, so a study committed late under a lower pk than one "
                    "already read can be missed",
                )
                self.study_sequence = self._study_sequence(conn)
        if shown and not self.is_sqlite:
            for table, _ in self._unreadable({table: SHOWN_TABLES[table] for table in shown}):
                shown.pop(table, None)
        for table, columns in SHOWN_TABLES.items():
            if table not in shown:
                log.warning(
                    "OpenREM database %s: table %s (%s) is missing or this role may not SELECT them: "
                    "the emails leave out %s (grant them, see sql/readonly_role.sql)",
                    self.where,
                    table,
                    ", ".join(columns),
                    SHOWN_TABLE_USES[table],
                )
        self.tables = {**tables, **shown}
        if not self.is_sqlite:
            there = {t: tuple(c for c in cs if c in self.tables[t].c) for t, cs in CRITERIA.items()}
            wanted = {t: (*SHOWN.get(t, ()), *there.get(t, ())) for t in {*SHOWN, *there}}
            unreadable = self._unreadable(wanted)
            self.unshown = {pair for pair in unreadable if pair[1] in SHOWN.get(pair[0], ())}
            self.unread_criteria = unreadable - self.unshown
        self.unread_criteria |= {(t, c) for t, cs in CRITERIA.items() for c in cs if c not in self.tables[t].c}
        if not self.is_sqlite and self.unshown:
            log.warning(
                "OpenREM database %s: this role may not SELECT %s: the emails show them as not recorded "
                "(grant them, see sql/readonly_role.sql)",
                self.where,
                ", ".join(f"{t}.{c}" for t, c in sorted(self.unshown)),
            )

    def _checked(self, reflected: sa.Table, columns: Sequence[str]) -> sa.Table:
        for column in columns:
            if column not in reflected.c:
                raise SourceError(
                    f"OpenREM database {self.where}: column {reflected.name}.{column} is missing "
                    "(is this an OpenREM 1.0 or later database?)",
                    temporary=False,
                )
        return reflected

    def _probe(self, conn: Connection, query: str, *, not_offered: tuple[str, ...], cost: str, **params: Any) -> bool:
        """Whether the server offers what ``query`` uses (in a savepoint, so a refusal harms nothing).

        Only the SQLSTATEs in ``not_offered`` mean "not offered", which weakens a promise: a WARNING
        says what it costs. Any other failure (a lost connection, a refused transaction) is no answer:
        it raises, temporary or permanent as ``_error`` judges, and never turns a guard off for the run.
        """
        try:
            with conn.begin_nested():
                conn.execute(sa.text(query), params)
            return True
        except DBAPIError as e:
            if getattr(e.orig, "sqlstate", None) not in not_offered or e.connection_invalidated:
                raise self._error("checking what the server offers", e) from e
            log.warning("OpenREM database %s: %s (%s)", self.where, cost, first_line(e.orig))
            return False

    def _study_sequence(self, conn: Connection) -> str | None:
        """The study pk sequence, if this role may read it (it tells a restored database)."""
        name = conn.execute(
            sa.text("SELECT pg_get_serial_sequence(:table, 'id')"), {"table": STUDY}
        ).scalar_one_or_none()
        if name is None:
            log.warning(
                "OpenREM database %s: %s.id has no sequence: a restored OpenREM is then told only by the "
                "first new study that gets a pk ctpoller has passed",
                self.where,
                STUDY,
            )
            return None
        readable = self._probe(
            conn,
            "SELECT pg_sequence_last_value(CAST(:name AS regclass))",
            not_offered=(INSUFFICIENT_PRIVILEGE, UNDEFINED_FUNCTION),
            cost=f"this role may not read the sequence {name}: a restored OpenREM is then told only by the "
            "first new study that gets a pk ctpoller has passed (grant SELECT on it, see sql/readonly_role.sql)",
            name=name,
        )
        return str(name) if readable else None

    def in_values(self, column: sa.ColumnElement[Any], values: Sequence[int]) -> sa.ColumnElement[bool]:
        """``column IN values``: on PostgreSQL one array parameter (``= ANY``), far cheaper than one each."""
        if self.is_sqlite:
            return column.in_(values)
        return column == sa.any_(sa.bindparam(None, list(values), type_=postgresql.ARRAY(sa.Integer)))

    def has(self, name: str) -> bool:
        """Whether this run reads the ``SHOWN_TABLES`` table ``name`` (it is there and granted)."""
        if not self.tables:
            self.connect()
        return name in self.tables

    def t(self, name: str) -> sa.Table:
        if not self.tables:
            self.connect()
        return self.tables[name]

    def in_texts(self, column: sa.ColumnElement[Any], values: Sequence[str]) -> sa.ColumnElement[bool]:
        if self.is_sqlite:
            return column.in_(values)
        return column == sa.any_(sa.bindparam(None, list(values), type_=postgresql.ARRAY(sa.Text)))

    def study_with_its_rows(self) -> sa.Join:
        """A study row with its patient-study, equipment and equipment-name rows (one each, normally)."""
        g, ps, eq, u = self.t(STUDY), self.t(PATIENT_STUDY), self.t(EQUIPMENT), self.t(EQUIPMENT_NAMES)
        return (
            g.outerjoin(ps, ps.c.general_study_module_attributes_id == g.c.id)
            .outerjoin(eq, eq.c.general_study_module_attributes_id == g.c.id)
            .outerjoin(u, u.c.id == eq.c.unique_equipment_name_id)
        )

    def shown(self, table: sa.Table, column: str) -> sa.ColumnElement[Any]:
        """A ``SHOWN`` or ``CRITERIA`` column, or NULL under its name where this role may not read it."""
        if self.readable(table, column):
            return table.c[column]
        return sa.null().label(column)

    def readable(self, table: sa.Table, column: str) -> bool:
        """Whether a ``SHOWN`` or ``CRITERIA`` column is there and this role may read it."""
        pair = (table.name, column)
        return pair not in self.unshown and pair not in self.unread_criteria and column in table.c

    def criteria_problem(self, rules: RuleSet) -> str | None:
        """One line naming the first rule, key and column a rule's criterion needs that this role
        may not read (or OpenREM does not have), or None: such a rule could never match."""
        self.connect()
        watched = [*getattr(rules, "trends", ()), *getattr(rules, "cumulatives", ())]  # their criteria: a Rule
        for rule in [*rules.rules, *(getattr(item, "criteria", None) for item in watched)]:
            if rule is None:
                continue
            for key, (table, column) in CRITERIA_COLUMNS.items():
                used = [k for k in (key, f"not_{key}") if rule.uses(k)]
                if used and (table, column) in self.unread_criteria:
                    why = "this OpenREM database does not have it"
                    if column in self.tables[table].c:
                        why = "this role may not SELECT it (grant it, see sql/readonly_role.sql)"
                    return f"rule '{rule.name}': key '{used[0]}' needs OpenREM column {table}.{column}, but {why}"
        return None

    def _unreadable(self, wanted: dict[str, tuple[str, ...]]) -> set[tuple[str, str]]:
        """The ``table.column`` pairs of ``wanted`` this role may not SELECT (in one query)."""
        pairs = [(table, column) for table, columns in wanted.items() for column in columns]
        query = sa.text(
            "SELECT w.t, w.c FROM unnest(CAST(:tables AS text[]), CAST(:columns AS text[])) "
            "WITH ORDINALITY AS w(t, c, n) WHERE NOT has_column_privilege(w.t, w.c, 'SELECT') ORDER BY w.n"
        )
        with self.session("checking this role's privileges") as conn:
            rows = conn.execute(query, {"tables": [t for t, _ in pairs], "columns": [c for _, c in pairs]})
            return {(table, column) for table, column in rows}

    def missing_privileges(self) -> list[str]:
        """For ``check``: every ``table.column`` a run reads that this role may not SELECT.

        The catalogue lists tables whatever the grants, so ``connect`` cannot tell; this asks the
        grants themselves (table or column privilege), in one query, for the required tables and
        for the standard-name tables when they are there (a run reads them then). [] for SQLite.
        """
        if self.is_sqlite:
            return []
        self.connect()
        wanted = {**REQUIRED, **(OPTIONAL if self.has_standard_names else {})}
        order = [f"{table}.{column}" for table, columns in wanted.items() for column in columns]
        missing = {f"{table}.{column}" for table, column in self._unreadable(wanted)}
        return [name for name in order if name in missing]


def _read_only_connection(dbapi_connection: Any, _record: Any) -> None:
    """Every new DBAPI connection to OpenREM: read-only transactions, and text read in any encoding."""
    read_any_text(dbapi_connection)
    dbapi_connection.read_only = True
