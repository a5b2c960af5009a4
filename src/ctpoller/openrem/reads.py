"""What one poll cycle reads from OpenREM, bound to one read-only snapshot (``OpenremSource.reading``)."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ctpoller.core.exam import (
    PHANTOM_CODES,
    DoseCheck,
    Event,
    StudyRow,
    plausible_weight,
)
from ctpoller.core.model import Snapshot, StudyHead
from ctpoller.openrem.tables import (
    CONTEXT,
    DOSE_CHECK,
    DOSE_CHECK_COLUMNS,
    DOSE_CHECK_REASONS,
    EQUIPMENT,
    EQUIPMENT_NAMES,
    EVENT,
    EVENT_STANDARD_NAMES,
    HISTORY_ROWS,
    PATIENT,
    PATIENT_STUDY,
    PERSON,
    RADIATION_DOSE,
    STANDARD_NAMES,
    STUDY,
    STUDY_STANDARD_NAMES,
)
from ctpoller.openrem.values import (
    bool_or_none,
    date_or_none,
    decimal_or_none,
    event_key,
    group_names,
    text_or_none,
    time_or_none,
)

if TYPE_CHECKING:
    from ctpoller.openrem.source import OpenremSource

log = logging.getLogger(__name__)


class Reads:
    """The per-cycle reads of one snapshot: OpenREM's end, the rows above the watermark, whole studies."""

    def __init__(self, source: OpenremSource, conn: Connection) -> None:
        self.source = source
        self.conn = conn

    def max_study_pk(self) -> int:
        g = self.source.t(STUDY)
        return int(self.conn.execute(sa.select(sa.func.coalesce(sa.func.max(g.c.id), 0))).scalar_one())

    def first_watermark(self, lookback: int) -> tuple[int, list[StudyHead]]:
        """Where a first run (or a reset) starts, and the study rows above that point.

        OpenREM's end, but below every row among the last ``lookback`` study pks that is still being
        written, also one below a parallel import that has finished already: such a row is tracked
        from the first run on and evaluated once complete. The rows returned (those above the start)
        are the caller's to track; the complete ones among them are history.
        """
        end = self.max_study_pk()
        heads = self.heads_after(max(end - lookback, 0), lookback)
        writing = [head.pk for head in heads if not head.complete and not head.other_modality]
        start = min(writing) - 1 if writing else end
        return start, [head for head in heads if head.pk > start]

    def history(self, upto: int) -> list[tuple[int, str]]:
        """(pk, Study Instance UID) of the CT study rows among the last ``HISTORY_ROWS`` pks at and below
        ``upto``.

        What a first run (or a reset) remembers of the history it does not evaluate: which exam each
        recent row belongs to, so that a report continuing one of those exams later is evaluated
        with its earlier rows. Read by the pk index, never by UID.
        """
        g = self.source.t(STUDY)
        found = self.conn.execute(
            sa.select(g.c.id, g.c.study_instance_uid)
            .where(
                g.c.id <= upto,
                g.c.id > upto - HISTORY_ROWS,
                g.c.modality_type == "CT",
                g.c.study_instance_uid.is_not(None),
            )
            .order_by(g.c.id)
        )
        return [(int(pk), text) for pk, uid in found if (text := text_or_none(uid))]  # as heads_after has it

    def sequence_past(self, watermark: int) -> bool | None:
        """Whether OpenREM's study pk sequence proves that new studies get pks above ``watermark``.

        True or False on a primary whose sequence this role may read (a sequence restarted and not yet
        used proves nothing past its start: False); None where it proves nothing:
        no readable sequence, or a hot standby, whose copy of a sequence runs ahead of the primary's
        (PostgreSQL logs sequence values in batches) and so can never tell that a value is taken.
        """
        if self.source.study_sequence is None:
            return None
        standby, last = self.conn.execute(
            sa.text("SELECT pg_is_in_recovery(), pg_sequence_last_value(CAST(:name AS regclass))"),
            {"name": self.source.study_sequence},
        ).one()
        if standby:
            return None
        return last is not None and int(last) >= watermark  # None: not called since it was (re)started

    def any_study_between(self, low: int, high: int) -> bool:
        """Whether a study row with ``low < pk <= high`` exists (by the pk index)."""
        g = self.source.t(STUDY)
        query = sa.select(g.c.id).where(g.c.id > low, g.c.id <= high).limit(1)
        return self.conn.execute(query).first() is not None

    def snapshot(self) -> Snapshot:
        if not self.source.supports_snapshot:
            return Snapshot()
        row = self.conn.execute(
            sa.text(
                "SELECT pg_snapshot_xmin(s)::text::bigint, pg_snapshot_xmax(s)::text::bigint "
                "FROM pg_current_snapshot() AS s"
            )
        ).one()
        return Snapshot(xmin=int(row[0]), xmax=int(row[1]))

    def replica_lag_seconds(self) -> float | None:
        """How far a hot-standby source lags behind its primary; None on a primary or SQLite."""
        if self.source.is_sqlite:
            return None
        row = self.conn.execute(
            sa.text(
                "SELECT pg_is_in_recovery(), "
                "extract(epoch FROM clock_timestamp() - pg_last_xact_replay_timestamp())::float8"
            )
        ).one()
        return float(row[1]) if row[0] and row[1] is not None else None

    def heads_after(self, after: int, limit: int) -> list[StudyHead]:
        """One keyset page of study rows with pk > after, with what settling needs to know."""
        g = self.source.t(STUDY)
        rows = self.conn.execute(
            sa.select(g.c.id, g.c.study_instance_uid, g.c.modality_type, g.c.total_dlp, g.c.number_of_events)
            .where(g.c.id > after)
            .order_by(g.c.id)
            .limit(limit)
        ).all()
        return self._heads(rows)

    # -- backfill reads --------------------------------------------------------------------------------

    def distinct_protocols(self) -> list[str | None]:
        """Every acquisition protocol value in OpenREM, once (one pass over the events)."""
        ev = self.source.t(EVENT)
        return list(self.conn.execute(sa.select(ev.c.acquisition_protocol).distinct()).scalars())

    def _heads(self, rows: Sequence[Any]) -> list[StudyHead]:
        if not rows:
            return []
        pks = [row.id for row in rows]
        r, ev, pm, ps = (self.source.t(name) for name in (RADIATION_DOSE, EVENT, PATIENT, PATIENT_STUDY))
        study_fk = r.c.general_study_module_attributes_id
        events = {
            row[0]: row[1:]
            for row in self.conn.execute(
                sa.select(
                    study_fk,
                    sa.func.count(ev.c.id),
                    sa.func.max(ev.c.id),
                    sa.func.sum(ev.c.dlp),
                    sa.func.sum(ev.c.mean_ctdivol),
                )
                .select_from(r.join(ev, ev.c.ct_radiation_dose_id == r.c.id))
                .where(self.source.in_values(study_fk, pks))
                .group_by(study_fk)
            )
        }
        patients = set(
            self.conn.execute(
                sa.select(pm.c.general_study_module_attributes_id).where(
                    self.source.in_values(pm.c.general_study_module_attributes_id, pks)
                )
            ).scalars()
        )
        ages: dict[int, tuple[Any, Any]] = {}
        for row in self.conn.execute(
            sa.select(ps.c.general_study_module_attributes_id, ps.c.patient_age_decimal, ps.c.patient_age).where(
                self.source.in_values(ps.c.general_study_module_attributes_id, pks)
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
                    uid=text_or_none(row.study_instance_uid),
                    modality=text_or_none(row.modality_type),
                    has_patient=row.id in patients,
                    n_events=int(n_events or 0),
                    fingerprint=hashlib.sha256(fingerprint.encode("utf-8", "surrogatepass")).hexdigest()[:32],
                )
            )
        return heads

    def study_rows(self, pks: Sequence[int]) -> dict[int, StudyRow]:
        """The full study rows (with events) for these pks; pks that no longer exist are absent."""
        result: dict[int, StudyRow] = {}
        pks = sorted(set(pks))
        for start in range(0, len(pks), 500):
            result.update(self._study_rows(pks[start : start + 500]))
        return result

    def _study_rows(self, pks: list[int]) -> dict[int, StudyRow]:
        g, ps, eq, u, pm = (
            self.source.t(STUDY),
            self.source.t(PATIENT_STUDY),
            self.source.t(EQUIPMENT),
            self.source.t(EQUIPMENT_NAMES),
            self.source.t(PATIENT),
        )
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
                self.source.shown(pm, "patient_sex"),  # of the patient table only the sex
                self.source.shown(ps, "patient_weight"),
                eq.c.station_name,
                self.source.shown(eq, "manufacturer"),
                self.source.shown(eq, "manufacturer_model_name"),
                u.c.display_name,
            )
            .select_from(
                self.source.study_with_its_rows().outerjoin(pm, pm.c.general_study_module_attributes_id == g.c.id)
            )
            .where(self.source.in_values(g.c.id, pks))
            .order_by(g.c.id, ps.c.id, eq.c.id, pm.c.id)
        )
        for row in self.conn.execute(query):
            if row.id in studies:
                continue  # OpenREM keeps one row per study in these tables; take the first if not
            studies[row.id] = dict(
                pk=row.id,
                uid=text_or_none(row.study_instance_uid),
                accession_number=text_or_none(row.accession_number),
                study_date=date_or_none(row.study_date),
                study_time=time_or_none(row.study_time),
                description=text_or_none(row.study_description),
                requested_procedure=text_or_none(row.requested_procedure_code_meaning),
                procedure=text_or_none(row.procedure_code_meaning),
                station_name=text_or_none(row.station_name),
                display_name=text_or_none(row.display_name),
                total_dlp_mgycm=decimal_or_none(row.total_dlp),
                patient_age_decimal=decimal_or_none(row.patient_age_decimal),
                patient_age=text_or_none(row.patient_age),
                patient_sex=text_or_none(row.patient_sex),
                patient_weight_kg=plausible_weight(decimal_or_none(row.patient_weight)),
                manufacturer=text_or_none(row.manufacturer),
                model=text_or_none(row.manufacturer_model_name),
            )
        if not studies:
            return {}
        events = self._events(list(studies))
        study_names = self._study_standard_names(list(studies))
        return {
            pk: StudyRow(**fields, standard_names=study_names.get(pk, ()), events=tuple(events.get(pk, ())))
            for pk, fields in studies.items()
        }

    def _events(self, pks: list[int]) -> dict[int, list[Event]]:
        r, ev, dc = self.source.t(RADIATION_DOSE), self.source.t(EVENT), self.source.t(DOSE_CHECK)
        acq = self.source.t(CONTEXT).alias("acq")
        phantom = self.source.t(CONTEXT).alias("phantom")
        region = self.source.t(CONTEXT).alias("region")  # target region: NULL where not readable
        region_id = ev.c.target_region_id if self.source.readable(ev, "target_region_id") else sa.null()
        rows = self.conn.execute(
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
                region.c.code_meaning.label("region"),
            )
            .select_from(
                r.join(ev, ev.c.ct_radiation_dose_id == r.c.id)
                .outerjoin(acq, acq.c.id == ev.c.ct_acquisition_type_id)
                .outerjoin(phantom, phantom.c.id == ev.c.ctdiw_phantom_type_id)
                .outerjoin(region, region.c.id == region_id)
            )
            .where(self.source.in_values(r.c.general_study_module_attributes_id, pks))
            .order_by(r.c.general_study_module_attributes_id, ev.c.id)
        ).all()
        event_pks = [row.id for row in rows]
        checks: dict[int, list[DoseCheck]] = {}
        names: dict[int, tuple[str, ...]] = {}
        for start in range(0, len(event_pks), 1000):
            chunk = event_pks[start : start + 1000]
            columns: list[sa.ColumnElement[Any]] = [dc.c[name] for name in DOSE_CHECK_COLUMNS]
            columns += [self.source.shown(dc, name) for name in DOSE_CHECK_REASONS]
            found = self.conn.execute(
                sa.select(dc.c.ct_irradiation_event_data_id, dc.c.id, *columns)
                .where(self.source.in_values(dc.c.ct_irradiation_event_data_id, chunk))
                .order_by(dc.c.id)
            ).all()
            authorised = self._authorised_by([row[1] for row in found])
            for row in found:
                values: dict[str, Any] = {
                    field: (bool_or_none(row[i + 2]) if field.endswith("_configured") else decimal_or_none(row[i + 2]))
                    for i, field in enumerate(DOSE_CHECK_COLUMNS.values())
                }
                for i, field in enumerate(DOSE_CHECK_REASONS.values(), len(DOSE_CHECK_COLUMNS)):
                    values[field] = text_or_none(row[i + 2])
                values["alert_authorised_by"] = authorised.get(("alert", row[1]))
                values["notification_authorised_by"] = authorised.get(("notification", row[1]))
                checks.setdefault(row[0], []).append(DoseCheck(**values))
            names.update(self._event_standard_names(chunk))
        result: dict[int, list[Event]] = {}
        for row in rows:
            siblings = result.setdefault(row.study_pk, [])
            protocol = text_or_none(row.acquisition_protocol)
            ctdivol, dlp = decimal_or_none(row.mean_ctdivol), decimal_or_none(row.dlp)
            siblings.append(
                Event(
                    key=event_key(row.irradiation_event_uid, len(siblings), protocol, row.acq_code, ctdivol, dlp),
                    event_pk=row.id,
                    study_pk=row.study_pk,
                    protocol=protocol,
                    acquisition_type=text_or_none(row.acq_meaning),
                    acquisition_type_code=text_or_none(row.acq_code),
                    phantom=PHANTOM_CODES.get((row.phantom_code or "").strip()),
                    ctdivol_mgy=ctdivol,
                    dlp_mgycm=dlp,
                    series_description=text_or_none(row.series_description),
                    standard_names=names.get(row.id, ()),
                    dose_checks=tuple(checks.get(row.id, ())),
                    target_region=text_or_none(row.region),
                )
            )
        return result

    def _authorised_by(self, check_pks: list[int]) -> dict[tuple[str, int], str]:
        """("alert" or "notification", dose-check pk) -> the names of who authorised proceeding past it.

        Only the person rows linked to these Dose Checks, and of them only the name (staff).
        """
        if not check_pks or not self.source.has(PERSON):
            return {}
        p = self.source.t(PERSON)
        alert, notification = p.c.ct_dose_check_details_alert_id, p.c.ct_dose_check_details_notification_id
        wanted, names = set(check_pks), dict[tuple[str, int], list[str]]()
        for row in self.conn.execute(
            sa.select(alert, notification, p.c.person_name)
            .where(sa.or_(self.source.in_values(alert, check_pks), self.source.in_values(notification, check_pks)))
            .order_by(p.c.id)
        ):
            name = text_or_none(row.person_name)
            for kind, check in (("alert", row[0]), ("notification", row[1])):
                if name and check in wanted and name not in names.setdefault((kind, check), []):
                    names[(kind, check)].append(name)
        return {key: ", ".join(found) for key, found in names.items() if found}

    def _study_standard_names(self, pks: list[int]) -> dict[int, tuple[str, ...]]:
        return self._standard_names(STUDY_STANDARD_NAMES, "generalstudymoduleattr_id", pks)

    def _event_standard_names(self, event_pks: list[int]) -> dict[int, tuple[str, ...]]:
        return self._standard_names(EVENT_STANDARD_NAMES, "ctirradiationeventdata_id", event_pks)

    def _standard_names(self, table: str, column: str, pks: list[int]) -> dict[int, tuple[str, ...]]:
        """pk -> the OpenREM standard names linked to it through ``table`` (by ``column``)."""
        if not (self.source.has_standard_names and self.source.read_standard_names) or not pks:
            return {}
        link, sn = self.source.t(table), self.source.t(STANDARD_NAMES)
        return group_names(
            self.conn.execute(
                sa.select(link.c[column], sn.c.standard_name)
                .select_from(link.join(sn, sn.c.id == link.c.standardnames_id))
                .where(self.source.in_values(link.c[column], pks))
            )
        )
