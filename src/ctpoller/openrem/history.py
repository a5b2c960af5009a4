"""``backfill``'s one screened statement over OpenREM's whole history: one line per study row."""

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
from datetime import date
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ctpoller.core.exam import (
    AGE_DECIMAL_HALF_WIDTH,
    PHANTOM_CODES,
    PLAUSIBLE_AGE_YEARS,
    StudyRow,
    plausible_weight,
)
from ctpoller.core.model import Screened
from ctpoller.core.rules import Bound, Screen
from ctpoller.openrem.tables import (
    BACKFILL_TIMEOUT_FACTOR,
    CONTEXT,
    DOSE_CHECK,
    EQUIPMENT,
    EQUIPMENT_NAMES,
    EVENT,
    PATIENT,
    PATIENT_STUDY,
    RADIATION_DOSE,
    STUDY,
)
from ctpoller.openrem.values import decimal_or_none, text_or_none

if TYPE_CHECKING:
    from ctpoller.openrem.source import OpenremSource

log = logging.getLogger(__name__)


class History:
    """OpenREM's history read in one pass, each study's events reduced to the screen's answers."""

    def __init__(self, source: OpenremSource) -> None:
        self.source = source

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
                with self.source.session("reading history") as conn:
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
        if self.source.is_sqlite:
            return
        timeout = self.source.statement_timeout_seconds * 1000 * BACKFILL_TIMEOUT_FACTOR
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
        g, ps, pm, eq, u = (self.source.t(n) for n in (STUDY, PATIENT_STUDY, PATIENT, EQUIPMENT, EQUIPMENT_NAMES))
        studies = [g.c.id <= upto, g.c.modality_type == "CT"]
        if since is not None:
            studies.append(g.c.study_date >= since)
        study_fk = self.source.t(RADIATION_DOSE).c.general_study_module_attributes_id
        events: sa.Subquery | sa.Lateral | sa.sql.selectable.LateralFromClause
        if self.source.is_sqlite:
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
                self.source.shown(eq, "manufacturer"),  # NULL where not readable: then no rule uses it
                self.source.shown(eq, "manufacturer_model_name"),
                self.source.shown(ps, "patient_weight"),
            )
            .select_from(self.source.study_with_its_rows().outerjoin(events, on))
            .where(*studies)
            .subquery("screened")
        )
        asked = inner.c.answers.contains("1")  # the texts only where an exam-level criterion may matter
        return sa.select(
            *inner.c[:6], *(sa.case((asked, column), else_=None) for column in list(inner.c)[6:])
        ).order_by(inner.c.id)

    @staticmethod
    def _age_may_pass(ps: sa.Table, bound: Bound) -> sa.ColumnElement[bool]:
        """Whether the row's age may be in the bound's band, looser than ``core.exam.age_range`` (which
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
        r, ev = self.source.t(RADIATION_DOSE), self.source.t(EVENT)
        phantom = self.source.t(CONTEXT).alias("phantom")
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
                conditions.append(self.source.in_texts(ev.c.acquisition_protocol, bound.protocols))
            if bound.excluded:  # a missing protocol is never excluded
                conditions.append(
                    sa.not_(self.source.in_texts(sa.func.coalesce(ev.c.acquisition_protocol, ""), bound.excluded))
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
        r, ev, dc = self.source.t(RADIATION_DOSE), self.source.t(EVENT), self.source.t(DOSE_CHECK)

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


#: Added to an age decimal's half-width in backfill's screen: SQLite compares numerics as floats.
_AGE_SLACK = Decimal("0.001")


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
     station, display, manufacturer, model, weight) = values  # fmt: skip
    uid = text_or_none(uid)
    row = None
    if "1" in answers:
        row = StudyRow(
            pk=pk,
            uid=uid,
            description=text_or_none(description),
            requested_procedure=text_or_none(requested),
            procedure=text_or_none(procedure),
            station_name=text_or_none(station),
            display_name=text_or_none(display),
            patient_age_decimal=decimal_or_none(age_decimal),
            patient_age=text_or_none(age),
            manufacturer=text_or_none(manufacturer),
            model=text_or_none(model),
            patient_weight_kg=plausible_weight(decimal_or_none(weight)),
        )
    complete = bool(has_patient) and uid is not None
    return Screened(
        pk, uid, complete, int(n_events or 0), answers, None if dose_check is None else bool(dose_check), row
    )
