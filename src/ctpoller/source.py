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
import functools
import hashlib
import logging
import operator
import queue
import threading
from collections.abc import Generator, Iterator, Sequence
from dataclasses import replace
from datetime import date, time
from decimal import Decimal, InvalidOperation
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import URL, Connection
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from ctpoller.database import CLIENT_ENCODING, LOGIN_REFUSED, describe, first_line, parse_url, read_any_text
from ctpoller.errors import ConfigError, SourceError
from ctpoller.model import (
    AGE_DECIMAL_HALF_WIDTH,
    NO_UID_PREFIX,
    PHANTOM_CODES,
    PLAUSIBLE_AGE_YEARS,
    DoseCheck,
    Event,
    Screened,
    Snapshot,
    StudyHead,
    StudyRow,
)
from ctpoller.rules import Bound, Screen

log = logging.getLogger(__name__)

#: The SQLSTATEs that mean a probed function or sequence is not offered to this role here.
UNDEFINED_FUNCTION = "42883"
INSUFFICIENT_PRIVILEGE = "42501"

#: ``backfill``'s one long statement may run this many times ``CTPOLLER_STATEMENT_TIMEOUT_SECONDS``.
BACKFILL_TIMEOUT_FACTOR = 10

STUDY = "remapp_generalstudymoduleattr"
PATIENT_STUDY = "remapp_patientstudymoduleattr"
PATIENT = "remapp_patientmoduleattr"
EQUIPMENT = "remapp_generalequipmentmoduleattr"
EQUIPMENT_NAMES = "remapp_uniqueequipmentnames"
RADIATION_DOSE = "remapp_ctradiationdose"
EVENT = "remapp_ctirradiationeventdata"
CONTEXT = "remapp_contextid"
DOSE_CHECK = "remapp_ctdosecheckdetails"
STANDARD_NAMES = "remapp_standardnames"
STUDY_STANDARD_NAMES = "remapp_generalstudymoduleattr_standard_names"
EVENT_STANDARD_NAMES = "remapp_ctirradiationeventdata_standard_protocols"

DOSE_CHECK_COLUMNS = {
    "ctdivol_alert_value_configured": "ctdivol_alert_configured",
    "ctdivol_alert_value": "ctdivol_alert_mgy",
    "dlp_alert_value_configured": "dlp_alert_configured",
    "dlp_alert_value": "dlp_alert_mgycm",
    "accumulated_ctdivol_forward_estimate": "accumulated_ctdivol_forward_estimate_mgy",
    "accumulated_dlp_forward_estimate": "accumulated_dlp_forward_estimate_mgycm",
    "ctdivol_notification_value_configured": "ctdivol_notification_configured",
    "ctdivol_notification_value": "ctdivol_notification_mgy",
    "dlp_notification_value_configured": "dlp_notification_configured",
    "dlp_notification_value": "dlp_notification_mgycm",
    "ctdivol_forward_estimate": "ctdivol_forward_estimate_mgy",
    "dlp_forward_estimate": "dlp_forward_estimate_mgycm",
}

#: Every table and column ctpoller reads. Missing ones stop ctpoller at start with one clear line.
REQUIRED: dict[str, tuple[str, ...]] = {
    STUDY: (
        "id",
        "study_instance_uid",
        "accession_number",
        "study_date",
        "study_time",
        "study_description",
        "requested_procedure_code_meaning",
        "procedure_code_meaning",
        "modality_type",
        "total_dlp",
        "number_of_events",
    ),
    PATIENT_STUDY: ("id", "general_study_module_attributes_id", "patient_age", "patient_age_decimal"),
    PATIENT: ("id", "general_study_module_attributes_id"),
    EQUIPMENT: ("id", "general_study_module_attributes_id", "station_name", "unique_equipment_name_id"),
    EQUIPMENT_NAMES: ("id", "display_name"),
    RADIATION_DOSE: ("id", "general_study_module_attributes_id"),
    EVENT: (
        "id",
        "ct_radiation_dose_id",
        "irradiation_event_uid",
        "acquisition_protocol",
        "mean_ctdivol",
        "dlp",
        "ct_acquisition_type_id",
        "ctdiw_phantom_type_id",
        "series_description",
    ),
    CONTEXT: ("id", "code_value", "code_meaning"),
    DOSE_CHECK: ("id", "ct_irradiation_event_data_id", *DOSE_CHECK_COLUMNS),
}
#: How many study pks before the first watermark a first run (or a reset) remembers the exams of
#: (of the CT rows among them: the study table holds every modality).
HISTORY_ROWS = 100_000

#: Standard names exist from OpenREM 1.0 on; without them ``standard_name`` criteria match nothing.
OPTIONAL: dict[str, tuple[str, ...]] = {
    STANDARD_NAMES: ("id", "standard_name"),
    STUDY_STANDARD_NAMES: ("generalstudymoduleattr_id", "standardnames_id"),
    EVENT_STANDARD_NAMES: ("ctirradiationeventdata_id", "standardnames_id"),
}


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
        self.read_standard_names = True  # the poller turns it off when no rule uses them
        self.supports_snapshot = False
        self.study_sequence: str | None = None

    def dispose(self) -> None:
        self.engine.dispose()

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
        if sqlstate in ("3D000", "28000", "28P01") or any(
            words in text for words in ("does not exist", *LOGIN_REFUSED)
        ):
            return SourceError(
                f"OpenREM database {self.where}: {what} failed: {text} (check CTPOLLER_SOURCE_URL and "
                "CTPOLLER_SOURCE_PASSWORD)",
                temporary=False,
            )
        if e.connection_invalidated or sqlstate[:2] in ("08", "57", "40", "53", "55") or not sqlstate:
            hint = " (check CTPOLLER_SOURCE_URL and that the server is up)" if sqlstate[:2] in ("08", "") else ""
            if sqlstate == "57014":
                hint = " (statement timeout: raise CTPOLLER_STATEMENT_TIMEOUT_SECONDS if the server is just slow)"
            return SourceError(f"OpenREM database {self.where}: {what} failed: {text}{hint}", temporary=True)
        if sqlstate == "42501":
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
            found = sa.inspect(conn).get_multi_columns(filter_names=[*REQUIRED, *OPTIONAL])
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
        self.tables = tables

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
                "OpenREM database %s: %s.id has no sequence: a restored OpenREM cannot be told from its "
                "newest studies deleted by hand",
                self.where,
                STUDY,
            )
            return None
        readable = self._probe(
            conn,
            "SELECT pg_sequence_last_value(CAST(:name AS regclass))",
            not_offered=(INSUFFICIENT_PRIVILEGE, UNDEFINED_FUNCTION),
            cost=f"this role may not read the sequence {name}: a restored OpenREM cannot be told from its "
            "newest studies deleted by hand (grant SELECT on it, see sql/readonly_role.sql)",
            name=name,
        )
        return str(name) if readable else None

    def _in(self, column: sa.ColumnElement[Any], values: Sequence[int]) -> sa.ColumnElement[bool]:
        """``column IN values``: on PostgreSQL one array parameter (``= ANY``), far cheaper than one each."""
        if self.is_sqlite:
            return column.in_(values)
        return column == sa.any_(sa.bindparam(None, list(values), type_=postgresql.ARRAY(sa.Integer)))

    def t(self, name: str) -> sa.Table:
        if not self.tables:
            self.connect()
        return self.tables[name]

    # -- per-cycle reads ------------------------------------------------------------------------------

    def max_study_pk(self, conn: Connection) -> int:
        g = self.t(STUDY)
        return int(conn.execute(sa.select(sa.func.coalesce(sa.func.max(g.c.id), 0))).scalar_one())

    def first_watermark(self, conn: Connection, lookback: int) -> tuple[int, list[StudyHead]]:
        """Where a first run (or a reset) starts, and the study rows above that point.

        OpenREM's end, but below every row among the last ``lookback`` study pks that is still being
        written, also one below a parallel import that has finished already: such a row is tracked
        from the first run on and evaluated once complete. The rows returned (those above the start)
        are the caller's to track; the complete ones among them are history.
        """
        end = self.max_study_pk(conn)
        heads = self.heads_after(conn, max(end - lookback, 0), lookback)
        writing = [head.pk for head in heads if not head.complete and not head.other_modality]
        start = min(writing) - 1 if writing else end
        return start, [head for head in heads if head.pk > start]

    def history(self, conn: Connection, upto: int) -> list[tuple[int, str]]:
        """(pk, Study Instance UID) of the CT study rows among the last ``HISTORY_ROWS`` pks at and below
        ``upto``.

        What a first run (or a reset) remembers of the history it does not evaluate: which exam each
        recent row belongs to, so that a report continuing one of those exams later is evaluated
        with its earlier rows. Read by the pk index, never by UID.
        """
        g = self.t(STUDY)
        found = conn.execute(
            sa.select(g.c.id, g.c.study_instance_uid)
            .where(
                g.c.id <= upto,
                g.c.id > upto - HISTORY_ROWS,
                g.c.modality_type == "CT",
                g.c.study_instance_uid.is_not(None),
            )
            .order_by(g.c.id)
        )
        return [(int(pk), text) for pk, uid in found if (text := _text(uid))]  # as heads_after has it

    def sequence_past(self, conn: Connection, watermark: int) -> bool | None:
        """Whether OpenREM's study pk sequence proves that new studies get pks above ``watermark``.

        True or False on a primary whose sequence this role may read (a sequence restarted and not yet
        used proves nothing past its start: False); None where it proves nothing:
        no readable sequence, or a hot standby, whose copy of a sequence runs ahead of the primary's
        (PostgreSQL logs sequence values in batches) and so can never tell that a value is taken.
        """
        if self.study_sequence is None:
            return None
        standby, last = conn.execute(
            sa.text("SELECT pg_is_in_recovery(), pg_sequence_last_value(CAST(:name AS regclass))"),
            {"name": self.study_sequence},
        ).one()
        if standby:
            return None
        return last is not None and int(last) >= watermark  # None: not called since it was (re)started

    def any_study_between(self, conn: Connection, low: int, high: int) -> bool:
        """Whether a study row with ``low < pk <= high`` exists (by the pk index)."""
        g = self.t(STUDY)
        query = sa.select(g.c.id).where(g.c.id > low, g.c.id <= high).limit(1)
        return conn.execute(query).first() is not None

    def snapshot(self, conn: Connection) -> Snapshot:
        if not self.supports_snapshot:
            return Snapshot()
        row = conn.execute(
            sa.text(
                "SELECT pg_snapshot_xmin(s)::text::bigint, pg_snapshot_xmax(s)::text::bigint "
                "FROM pg_current_snapshot() AS s"
            )
        ).one()
        return Snapshot(xmin=int(row[0]), xmax=int(row[1]))

    def replica_lag_seconds(self, conn: Connection) -> float | None:
        """How far a hot-standby source lags behind its primary; None on a primary or SQLite."""
        if self.is_sqlite:
            return None
        row = conn.execute(
            sa.text(
                "SELECT pg_is_in_recovery(), "
                "extract(epoch FROM clock_timestamp() - pg_last_xact_replay_timestamp())::float8"
            )
        ).one()
        return float(row[1]) if row[0] and row[1] is not None else None

    def heads_after(self, conn: Connection, after: int, limit: int) -> list[StudyHead]:
        """One keyset page of study rows with pk > after, with what settling needs to know."""
        g = self.t(STUDY)
        rows = conn.execute(
            sa.select(g.c.id, g.c.study_instance_uid, g.c.modality_type, g.c.total_dlp, g.c.number_of_events)
            .where(g.c.id > after)
            .order_by(g.c.id)
            .limit(limit)
        ).all()
        return self._heads(conn, rows)

    # -- backfill reads --------------------------------------------------------------------------------

    def distinct_protocols(self, conn: Connection) -> list[str | None]:
        """Every acquisition protocol value in OpenREM, once (one pass over the events)."""
        ev = self.t(EVENT)
        return list(conn.execute(sa.select(ev.c.acquisition_protocol).distinct()).scalars())

    def screened(self, upto: int, since: date | None, screen: Screen, *, chunk: int = 5000) -> Iterator[list[Screened]]:
        """Every CT study row with pk <= upto (and study_date >= since), in pk order, screened, in
        lists of ``chunk``.

        One statement over the whole history: the database reduces each study's events to the
        screen's answers, so one line per study crosses the wire instead of one per event. It runs
        in a background thread, in its own read-only transaction, a chunk at a time (a server-side
        cursor), so that PostgreSQL works on the next rows while ctpoller works on the last ones;
        errors are raised here. The statement may take a while before its first row: it is
        allowed ``BACKFILL_TIMEOUT_FACTOR`` times the statement timeout.
        """
        query = self._screen_query(upto, since, screen)
        chunks: queue.Queue[list[Screened] | BaseException | None] = queue.Queue(maxsize=4)
        stop = threading.Event()

        def hand_over(item: list[Screened] | BaseException | None) -> bool:
            while not stop.is_set():
                with contextlib.suppress(queue.Full):
                    chunks.put(item, timeout=0.2)
                    return True
            return False

        def produce() -> None:
            try:
                with self.session("reading history") as conn:
                    self._allow_long_statement(conn)
                    with contextlib.closing(self._screen_rows(conn, query, chunk)) as screened:
                        for rows in _in_chunks(screened, chunk):
                            if not hand_over(rows):
                                return
                hand_over(None)
            except BaseException as e:  # handed to the reading thread, which raises it
                hand_over(e)

        thread = threading.Thread(target=produce, name="ctpoller-history", daemon=True)
        thread.start()
        try:
            while True:
                item = chunks.get()
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()

    def _allow_long_statement(self, conn: Connection) -> None:
        if self.is_sqlite:
            return
        timeout = self.statement_timeout_seconds * 1000 * BACKFILL_TIMEOUT_FACTOR
        conn.execute(sa.select(sa.func.set_config("statement_timeout", str(timeout), True)))
        # The reader waits, idle in its transaction, while ctpoller works through the chunks it
        # handed over (a slow state store): as long as the statement may run, not twice the timeout.
        conn.execute(sa.select(sa.func.set_config("idle_in_transaction_session_timeout", str(timeout), True)))
        # Costly enough for PostgreSQL to compile it to machine code first, which takes longer than
        # running it (seconds): not in this transaction.
        conn.execute(sa.select(sa.func.set_config("jit", "off", True)))

    @staticmethod
    def _screen_rows(conn: Connection, query: sa.Select[Any], fetch: int) -> Generator[Screened, None, None]:
        result = conn.execution_options(stream_results=True, yield_per=fetch).execute(query)
        try:
            held: Screened | None = None
            for values in result:
                if held is not None and held.pk == values[0]:
                    held = replace(held, single=False)  # a second patient-study or equipment row
                    continue
                if held is not None:
                    yield held
                held = _screened(values)
            if held is not None:
                yield held
        finally:
            result.close()

    def _screen_query(self, upto: int, since: date | None, screen: Screen) -> sa.Select[Any]:
        g, ps, pm, eq, u = (self.t(n) for n in (STUDY, PATIENT_STUDY, PATIENT, EQUIPMENT, EQUIPMENT_NAMES))
        studies = [g.c.id <= upto, g.c.modality_type == "CT"]
        if since is not None:
            studies.append(g.c.study_date >= since)
        study_fk = self.t(RADIATION_DOSE).c.general_study_module_attributes_id
        events: sa.Subquery | sa.Lateral | sa.sql.selectable.LateralFromClause
        if self.is_sqlite:
            aggregated = self._screen_events(screen).add_columns(study_fk.label("study_pk"))
            events = aggregated.where(study_fk <= upto).group_by(study_fk).subquery("e")
            on: sa.ColumnElement[bool] = events.c.study_pk == g.c.id
        else:  # per study, by index, in pk order: rows stream out as they are computed
            events = self._screen_events(screen).where(study_fk == g.c.id).lateral("e")
            on = sa.true()
        answers: list[sa.ColumnElement[Any]] = []
        for bound in screen.bounds:
            if bound.metric == "dlp_total":
                yes = sa.or_(g.c.total_dlp > bound.threshold, events.c.dlp_positive > bound.threshold)
            else:
                yes = events.c[_max_label(bound)] > bound.threshold
            if bound.age_min is not None or bound.age_max is not None:
                yes = sa.and_(yes, self._age_may_pass(ps, bound))
            answers.append(sa.case((yes, "1"), else_="0"))
        # One text of "1"/"0" per study: cheaper to carry and to test than a column per question.
        answer = functools.reduce(operator.add, answers) if answers else sa.literal("")
        dose_check: sa.ColumnElement[Any] = self._screen_dose_check(g) if screen.dose_check else sa.null()
        inner = (
            sa.select(
                g.c.id,
                g.c.study_instance_uid,
                # SELECT 1, never *: the read-only role may read only some columns of these tables
                sa.select(sa.literal(1))
                .where(pm.c.general_study_module_attributes_id == g.c.id)
                .exists()
                .label("has_patient"),
                events.c.n_events,
                dose_check.label("dose_check"),
                answer.label("answers"),
                g.c.study_description,
                g.c.requested_procedure_code_meaning,
                g.c.procedure_code_meaning,
                ps.c.patient_age_decimal,
                ps.c.patient_age,
                eq.c.station_name,
                u.c.display_name,
            )
            .select_from(self._study_with_its_rows().outerjoin(events, on))
            .where(*studies)
            .subquery("screened")
        )
        asked = inner.c.answers.contains("1")  # the texts only where an exam-level criterion may matter
        return sa.select(
            *inner.c[:6], *(sa.case((asked, column), else_=None) for column in list(inner.c)[6:])
        ).order_by(inner.c.id)

    @staticmethod
    def _age_may_pass(ps: sa.Table, bound: Bound) -> sa.ColumnElement[bool]:
        """Whether the row's age may be in the bound's band, looser than ``model.age_range`` (which
        decides exactly, in ``Screen.may_exceed``): a plausible decimal whose range overlaps the band
        (with a little slack for SQLite's floats), or any age string at all."""
        low, high = PLAUSIBLE_AGE_YEARS
        decimal = ps.c.patient_age_decimal
        reach = AGE_DECIMAL_HALF_WIDTH + _AGE_SLACK
        band = [decimal >= low, decimal <= high]
        if bound.age_min is not None:
            band.append(decimal >= bound.age_min - reach)
        if bound.age_max is not None:
            band.append(decimal < bound.age_max + reach)
        return sa.or_(sa.and_(*band), ps.c.patient_age.is_not(None))

    def _screen_events(self, screen: Screen) -> sa.Select[Any]:
        """Per study: its number of events and the aggregates the screen's answers compare."""
        r, ev = self.t(RADIATION_DOSE), self.t(EVENT)
        phantom = self.t(CONTEXT).alias("phantom")
        columns: dict[str, sa.ColumnElement[Any]] = {"n_events": sa.func.count(ev.c.id)}
        for bound in screen.bounds:
            if bound.metric == "dlp_total":
                columns["dlp_positive"] = sa.func.sum(sa.case((ev.c.dlp > 0, ev.c.dlp), else_=0))
                continue
            value = ev.c.mean_ctdivol if bound.metric == "ctdivol" else ev.c.dlp
            conditions: list[sa.ColumnElement[bool]] = []
            if bound.phantom is not None:
                others = [code for code, name in PHANTOM_CODES.items() if name != bound.phantom]
                conditions.append(sa.func.coalesce(phantom.c.code_value, "").not_in(others))
            if bound.protocols is not None:
                conditions.append(self._in_text(ev.c.acquisition_protocol, bound.protocols))
            if bound.excluded:  # a missing protocol is never excluded
                conditions.append(
                    sa.not_(self._in_text(sa.func.coalesce(ev.c.acquisition_protocol, ""), bound.excluded))
                )
            columns[_max_label(bound)] = sa.func.max(sa.case((sa.and_(*conditions), value)) if conditions else value)
        source = r.join(ev, ev.c.ct_radiation_dose_id == r.c.id)
        if any(bound.phantom is not None for bound in screen.bounds):
            source = source.outerjoin(phantom, phantom.c.id == ev.c.ctdiw_phantom_type_id)
        return sa.select(*(c.label(n) for n, c in columns.items())).select_from(source)

    def _screen_dose_check(self, g: sa.Table) -> sa.ColumnElement[Any]:
        """Whether the study has a Dose Check row whose configured value some value may exceed.

        ``rules`` reports a Dose Check value when it is configured (not false), positive and below
        the event's forward estimate (notifications fall back to the event's own value) or the
        accumulated forward estimate (alerts); this asks the same, more loosely.
        """
        r, ev, dc = self.t(RADIATION_DOSE), self.t(EVENT), self.t(DOSE_CHECK)

        def over(check: str, *values: sa.ColumnElement[Any]) -> sa.ColumnElement[bool]:
            limit = dc.c[f"{check}_value"]
            return sa.and_(
                dc.c[f"{check}_value_configured"].is_not(sa.false()),
                limit > 0,
                sa.or_(*(value > limit for value in values)),
            )

        return (
            sa.select(sa.literal(1))
            .select_from(
                dc.join(ev, ev.c.id == dc.c.ct_irradiation_event_data_id).join(r, r.c.id == ev.c.ct_radiation_dose_id)
            )
            .where(
                r.c.general_study_module_attributes_id == g.c.id,
                sa.or_(
                    over("ctdivol_notification", dc.c.ctdivol_forward_estimate, ev.c.mean_ctdivol),
                    over("dlp_notification", dc.c.dlp_forward_estimate, ev.c.dlp),
                    over("ctdivol_alert", dc.c.accumulated_ctdivol_forward_estimate),
                    over("dlp_alert", dc.c.accumulated_dlp_forward_estimate),
                ),
            )
            .exists()
        )

    def _in_text(self, column: sa.ColumnElement[Any], values: Sequence[str]) -> sa.ColumnElement[bool]:
        if self.is_sqlite:
            return column.in_(values)
        return column == sa.any_(sa.bindparam(None, list(values), type_=postgresql.ARRAY(sa.Text)))

    def _heads(self, conn: Connection, rows: Sequence[Any]) -> list[StudyHead]:
        if not rows:
            return []
        pks = [row.id for row in rows]
        r, ev, pm, ps = self.t(RADIATION_DOSE), self.t(EVENT), self.t(PATIENT), self.t(PATIENT_STUDY)
        study_fk = r.c.general_study_module_attributes_id
        events = {
            row[0]: row[1:]
            for row in conn.execute(
                sa.select(
                    study_fk,
                    sa.func.count(ev.c.id),
                    sa.func.max(ev.c.id),
                    sa.func.sum(ev.c.dlp),
                    sa.func.sum(ev.c.mean_ctdivol),
                )
                .select_from(r.join(ev, ev.c.ct_radiation_dose_id == r.c.id))
                .where(self._in(study_fk, pks))
                .group_by(study_fk)
            )
        }
        patients = set(
            conn.execute(
                sa.select(pm.c.general_study_module_attributes_id).where(
                    self._in(pm.c.general_study_module_attributes_id, pks)
                )
            ).scalars()
        )
        ages: dict[int, tuple[Any, Any]] = {}
        for row in conn.execute(
            sa.select(ps.c.general_study_module_attributes_id, ps.c.patient_age_decimal, ps.c.patient_age).where(
                self._in(ps.c.general_study_module_attributes_id, pks)
            )
        ):
            ages.setdefault(row[0], (row[1], row[2]))
        heads = []
        for row in rows:
            n_events, max_event, sum_dlp, sum_ctdivol = events.get(row.id, (0, None, None, None))
            fingerprint = "|".join(
                str(part)
                for part in (
                    row.modality_type,
                    row.study_instance_uid,
                    row.total_dlp,
                    row.number_of_events,
                    n_events,
                    max_event,
                    sum_dlp,
                    sum_ctdivol,
                    row.id in patients,
                    *ages.get(row.id, (None, None)),
                )
            )
            heads.append(
                StudyHead(
                    pk=row.id,
                    uid=_text(row.study_instance_uid),
                    modality=_text(row.modality_type),
                    has_patient=row.id in patients,
                    n_events=int(n_events or 0),
                    fingerprint=hashlib.sha256(fingerprint.encode("utf-8", "surrogatepass")).hexdigest()[:32],
                )
            )
        return heads

    def study_rows(self, conn: Connection, pks: Sequence[int]) -> dict[int, StudyRow]:
        """The full study rows (with events) for these pks; pks that no longer exist are absent."""
        result: dict[int, StudyRow] = {}
        pks = sorted(set(pks))
        for start in range(0, len(pks), 500):
            result.update(self._study_rows(conn, pks[start : start + 500]))
        return result

    def _study_with_its_rows(self) -> sa.Join:
        """A study row with its patient-study, equipment and equipment-name rows (one each, normally)."""
        g, ps, eq, u = self.t(STUDY), self.t(PATIENT_STUDY), self.t(EQUIPMENT), self.t(EQUIPMENT_NAMES)
        return (
            g.outerjoin(ps, ps.c.general_study_module_attributes_id == g.c.id)
            .outerjoin(eq, eq.c.general_study_module_attributes_id == g.c.id)
            .outerjoin(u, u.c.id == eq.c.unique_equipment_name_id)
        )

    def _study_rows(self, conn: Connection, pks: list[int]) -> dict[int, StudyRow]:
        g, ps, eq, u = self.t(STUDY), self.t(PATIENT_STUDY), self.t(EQUIPMENT), self.t(EQUIPMENT_NAMES)
        studies: dict[int, dict[str, Any]] = {}
        query = (
            sa.select(
                g.c.id,
                g.c.study_instance_uid,
                g.c.accession_number,
                # As text: PostgreSQL holds dates and times Python cannot ('infinity', BC, 24:00:00);
                # the connection's datestyle=ISO makes the text ISO 8601.
                sa.cast(g.c.study_date, sa.Text).label("study_date"),
                sa.cast(g.c.study_time, sa.Text).label("study_time"),
                g.c.study_description,
                g.c.requested_procedure_code_meaning,
                g.c.procedure_code_meaning,
                g.c.total_dlp,
                ps.c.patient_age_decimal,
                ps.c.patient_age,
                eq.c.station_name,
                u.c.display_name,
            )
            .select_from(self._study_with_its_rows())
            .where(self._in(g.c.id, pks))
            .order_by(g.c.id, ps.c.id, eq.c.id)
        )
        for row in conn.execute(query):
            if row.id in studies:
                continue  # OpenREM keeps one row per study in these tables; take the first if not
            studies[row.id] = dict(
                pk=row.id,
                uid=_text(row.study_instance_uid),
                accession_number=_text(row.accession_number),
                study_date=_date(row.study_date),
                study_time=_time(row.study_time),
                description=_text(row.study_description),
                requested_procedure=_text(row.requested_procedure_code_meaning),
                procedure=_text(row.procedure_code_meaning),
                station_name=_text(row.station_name),
                display_name=_text(row.display_name),
                total_dlp_mgycm=_decimal(row.total_dlp),
                patient_age_decimal=_decimal(row.patient_age_decimal),
                patient_age=_text(row.patient_age),
            )
        if not studies:
            return {}
        events = self._events(conn, list(studies))
        study_names = self._study_standard_names(conn, list(studies))
        return {
            pk: StudyRow(**fields, standard_names=study_names.get(pk, ()), events=tuple(events.get(pk, ())))
            for pk, fields in studies.items()
        }

    def _events(self, conn: Connection, pks: list[int]) -> dict[int, list[Event]]:
        r, ev, dc = self.t(RADIATION_DOSE), self.t(EVENT), self.t(DOSE_CHECK)
        acq = self.t(CONTEXT).alias("acq")
        phantom = self.t(CONTEXT).alias("phantom")
        rows = conn.execute(
            sa.select(
                r.c.general_study_module_attributes_id.label("study_pk"),
                ev.c.id,
                ev.c.irradiation_event_uid,
                ev.c.acquisition_protocol,
                ev.c.mean_ctdivol,
                ev.c.dlp,
                ev.c.series_description,
                acq.c.code_value.label("acq_code"),
                acq.c.code_meaning.label("acq_meaning"),
                phantom.c.code_value.label("phantom_code"),
            )
            .select_from(
                r.join(ev, ev.c.ct_radiation_dose_id == r.c.id)
                .outerjoin(acq, acq.c.id == ev.c.ct_acquisition_type_id)
                .outerjoin(phantom, phantom.c.id == ev.c.ctdiw_phantom_type_id)
            )
            .where(self._in(r.c.general_study_module_attributes_id, pks))
            .order_by(r.c.general_study_module_attributes_id, ev.c.id)
        ).all()
        event_pks = [row.id for row in rows]
        checks: dict[int, list[DoseCheck]] = {}
        names: dict[int, tuple[str, ...]] = {}
        for start in range(0, len(event_pks), 1000):
            chunk = event_pks[start : start + 1000]
            columns = [dc.c[name] for name in DOSE_CHECK_COLUMNS]
            for row in conn.execute(
                sa.select(dc.c.ct_irradiation_event_data_id, *columns)
                .where(self._in(dc.c.ct_irradiation_event_data_id, chunk))
                .order_by(dc.c.id)
            ):
                values: dict[str, Any] = {
                    field: (_bool(row[i + 1]) if field.endswith("_configured") else _decimal(row[i + 1]))
                    for i, field in enumerate(DOSE_CHECK_COLUMNS.values())
                }
                checks.setdefault(row[0], []).append(DoseCheck(**values))
            names.update(self._event_standard_names(conn, chunk))
        result: dict[int, list[Event]] = {}
        for row in rows:
            siblings = result.setdefault(row.study_pk, [])
            protocol = _text(row.acquisition_protocol)
            ctdivol, dlp = _decimal(row.mean_ctdivol), _decimal(row.dlp)
            siblings.append(
                Event(
                    key=event_key(row.irradiation_event_uid, len(siblings), protocol, row.acq_code, ctdivol, dlp),
                    event_pk=row.id,
                    study_pk=row.study_pk,
                    protocol=protocol,
                    acquisition_type=_text(row.acq_meaning),
                    acquisition_type_code=_text(row.acq_code),
                    phantom=PHANTOM_CODES.get((row.phantom_code or "").strip()),
                    ctdivol_mgy=ctdivol,
                    dlp_mgycm=dlp,
                    series_description=_text(row.series_description),
                    standard_names=names.get(row.id, ()),
                    dose_checks=tuple(checks.get(row.id, ())),
                )
            )
        return result

    def _study_standard_names(self, conn: Connection, pks: list[int]) -> dict[int, tuple[str, ...]]:
        if not (self.has_standard_names and self.read_standard_names):
            return {}
        link, sn = self.t(STUDY_STANDARD_NAMES), self.t(STANDARD_NAMES)
        return _group(
            conn.execute(
                sa.select(link.c.generalstudymoduleattr_id, sn.c.standard_name)
                .select_from(link.join(sn, sn.c.id == link.c.standardnames_id))
                .where(self._in(link.c.generalstudymoduleattr_id, pks))
            )
        )

    def _event_standard_names(self, conn: Connection, event_pks: list[int]) -> dict[int, tuple[str, ...]]:
        if not (self.has_standard_names and self.read_standard_names) or not event_pks:
            return {}
        link, sn = self.t(EVENT_STANDARD_NAMES), self.t(STANDARD_NAMES)
        return _group(
            conn.execute(
                sa.select(link.c.ctirradiationeventdata_id, sn.c.standard_name)
                .select_from(link.join(sn, sn.c.id == link.c.standardnames_id))
                .where(self._in(link.c.ctirradiationeventdata_id, event_pks))
            )
        )

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
        pairs = [(table, column) for table, columns in wanted.items() for column in columns]
        query = sa.text(
            "SELECT w.t, w.c FROM unnest(CAST(:tables AS text[]), CAST(:columns AS text[])) "
            "WITH ORDINALITY AS w(t, c, n) WHERE NOT has_column_privilege(w.t, w.c, 'SELECT') ORDER BY w.n"
        )
        with self.session("checking this role's privileges") as conn:
            rows = conn.execute(query, {"tables": [t for t, _ in pairs], "columns": [c for _, c in pairs]})
            return [f"{table}.{column}" for table, column in rows]


#: Added to an age decimal's half-width in backfill's screen: SQLite compares numerics as floats.
_AGE_SLACK = Decimal("0.001")


def event_key(
    uid: str | None,
    ordinal: int,
    protocol: str | None,
    acq_code: str | None,
    ctdivol: Decimal | None,
    dlp: Decimal | None,
) -> str:
    """An event's identity across re-imports: its irradiation event UID, else a digest of its content.

    The fallback uses the event's position in its report and what it measured, never an OpenREM pk,
    so a re-imported report produces the same keys.
    """
    uid = _text(uid)
    if uid:
        return uid
    content = "|".join(str(part) for part in (ordinal, protocol, acq_code, _plain(ctdivol), _plain(dlp)))
    return NO_UID_PREFIX + hashlib.sha256(content.encode("utf-8", "surrogatepass")).hexdigest()[:24]


def _max_label(bound: Bound) -> str:
    """One aggregate per distinct question (several rules often ask the same of other limits)."""
    key = f"{bound.metric}|{bound.phantom}|{bound.protocols}|{bound.excluded}"
    return "max_" + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def _in_chunks(items: Iterator[Screened], size: int) -> Iterator[list[Screened]]:
    chunk: list[Screened] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _screened(values: Sequence[Any]) -> Screened:
    (pk, uid, has_patient, n_events, dose_check, answers, description, requested, procedure, age_decimal, age,
     station, display) = values  # fmt: skip
    uid = _text(uid)
    row = None
    if "1" in answers:
        row = StudyRow(
            pk=pk,
            uid=uid,
            description=_text(description),
            requested_procedure=_text(requested),
            procedure=_text(procedure),
            station_name=_text(station),
            display_name=_text(display),
            patient_age_decimal=_decimal(age_decimal),
            patient_age=_text(age),
        )
    complete = bool(has_patient) and uid is not None
    return Screened(
        pk, uid, complete, int(n_events or 0), answers, None if dose_check is None else bool(dose_check), row
    )


def _plain(value: Decimal | None) -> str:
    if value is None or not value.is_finite():
        return str(value)
    return format(value.normalize(), "f")


def _group(rows: Any) -> dict[int, tuple[str, ...]]:
    grouped: dict[int, list[str]] = {}
    for key, name in rows:
        if name and name not in grouped.setdefault(key, []):
            grouped[key].append(name)
    return {key: tuple(names) for key, names in grouped.items()}


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _decimal(value: Any) -> Decimal | None:
    if value is None:
        return None
    if isinstance(value, Decimal):
        return value
    try:
        return Decimal(str(value))
    except (InvalidOperation, ValueError):
        log.warning("ignoring a value that is not a number: %.40r", value)
        return None


def _date(value: Any) -> date | None:
    if value is None or isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value).strip()[:10])
    except ValueError:
        return None


def _time(value: Any) -> time | None:
    if value is None or isinstance(value, time):
        return value
    try:
        return time.fromisoformat(str(value).strip())
    except ValueError:
        return None


def _bool(value: Any) -> bool | None:
    return None if value is None else bool(value)


def _read_only_connection(dbapi_connection: Any, _record: Any) -> None:
    """Every new DBAPI connection to OpenREM: read-only transactions, and text read in any encoding."""
    read_any_text(dbapi_connection)
    dbapi_connection.read_only = True
