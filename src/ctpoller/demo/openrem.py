"""Write OpenREM-shaped CT data the way OpenREM 1.0 writes it: one autocommitted statement at a time.

Used by ``ctpoller demo`` (on SQLite) and by the integration tests (on PostgreSQL), so that a poller
can be run in the middle of an import and see what it would see on a real site. Facts behind the
write order (from OpenREM's own import traces, not from its code):

* the study row is INSERTed empty first: its pk is visible long before its data;
* the SOP Instance UIDs, the study attributes, the equipment, the radiation dose and each event follow
  (each event INSERTed nearly empty, then its children, then UPDATEd with protocol and doses);
* ``modality_type = 'CT'`` is written only after all events (the Philips SC importer writes it first),
  then the event counts and ``total_dlp``, then the patient rows; the UPDATE of
  ``remapp_patientmoduleattr`` with sex and ID is the last data write, standard names come after it;
* a cumulative re-send ("drop_old_continue") deletes the whole old study and its children in ONE
  transaction, then re-imports under a new, higher pk, non-atomically, carrying the old SOP UIDs over.

The tables below mirror ``sql/openrem_subset.sql`` (same names, columns, types and nullability); they are
defined here so that the package works when installed without the repository. On SQLite, ``id`` is
``INTEGER PRIMARY KEY AUTOINCREMENT`` so deleted pks are never reused, like PostgreSQL sequences.
SQLAlchemy Core only; never point this module at a real OpenREM database.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, time
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    Date,
    DateTime,
    Engine,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
    Text,
    Time,
    delete,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.engine import Connection

__all__ = [
    "METADATA",
    "OpenremImporter",
    "SeedEvent",
    "SeedStudy",
    "create_schema",
]

METADATA = MetaData()


def _table(name: str, *columns: Column[Any]) -> Table:
    return Table(name, METADATA, Column("id", Integer, primary_key=True), *columns, sqlite_autoincrement=True)


def _fk(name: str, target: str, *, nullable: bool = True) -> Column[Any]:
    # Django's FKs: DEFERRABLE INITIALLY DEFERRED, no ON DELETE, always indexed.
    return Column(
        name,
        Integer,
        ForeignKey(f"{target}.id", deferrable=True, initially="DEFERRED"),
        nullable=nullable,
        index=True,
    )


CONTEXT_ID = _table(
    "remapp_contextid",
    Column("code_value", Text, nullable=False),
    Column("code_meaning", Text),
    Column("cid_table", String(16), nullable=False),
)
STANDARD_NAMES = _table(
    "remapp_standardnames",
    Column("standard_name", Text),
    Column("modality", String(16)),
    Column("study_description", Text),
    Column("requested_procedure_code_meaning", Text),
    Column("procedure_code_meaning", Text),
    Column("acquisition_protocol", Text),
)
UNIQUE_EQUIPMENT_NAMES = _table(
    "remapp_uniqueequipmentnames",
    Column("manufacturer", Text),
    Column("manufacturer_hash", String(64)),
    Column("institution_name", Text),
    Column("institution_name_hash", String(64)),
    Column("station_name", String(32)),
    Column("station_name_hash", String(64)),
    Column("institutional_department_name", Text),
    Column("institutional_department_name_hash", String(64)),
    Column("manufacturer_model_name", Text),
    Column("manufacturer_model_name_hash", String(64)),
    Column("device_serial_number", Text),
    Column("device_serial_number_hash", String(64)),
    Column("software_versions", Text),
    Column("software_versions_hash", String(64)),
    Column("gantry_id", Text),
    Column("gantry_id_hash", String(64)),
    Column("display_name", Text),
    Column("user_defined_modality", String(16)),
    Column("hash_generated", Boolean, nullable=False),
    Column("device_observer_uid", Text),
    Column("device_observer_uid_hash", String(64)),
)
STUDY = _table(
    "remapp_generalstudymoduleattr",
    Column("study_instance_uid", Text),
    Column("study_date", Date),
    Column("study_time", Time),
    Column("study_workload_chart_time", DateTime(timezone=True)),
    Column("referring_physician_name", Text),
    Column("referring_physician_identification", Text),
    Column("study_id", String(16)),
    Column("accession_number", Text),
    Column("accession_hashed", Boolean, nullable=False),
    Column("study_description", Text),
    Column("physician_of_record", Text),
    Column("name_of_physician_reading_study", Text),
    Column("performing_physician_name", Text),
    Column("operator_name", Text),
    Column("modality_type", String(16)),
    Column("procedure_code_value", Text),
    Column("procedure_code_meaning", Text),
    Column("requested_procedure_code_value", Text),
    Column("requested_procedure_code_meaning", Text),
    Column("series_instance_uid", Text),
    Column("series_time", Time),
    Column("content_time", Time),
    Column("number_of_events", Integer),
    Column("number_of_events_a", Integer),
    Column("number_of_events_b", Integer),
    Column("number_of_axial", Integer),
    Column("number_of_spiral", Integer),
    Column("number_of_stationary", Integer),
    Column("number_of_const_angle", Integer),
    Column("total_dlp", Numeric(16, 8)),
    Column("total_dap_a", Numeric(16, 12)),
    Column("total_dap_b", Numeric(16, 12)),
    Column("total_dap", Numeric(16, 12)),
    Column("total_rp_dose_a", Numeric(16, 12)),
    Column("total_rp_dose_b", Numeric(16, 12)),
    Column("total_dap_delta_weeks", Numeric(16, 12)),
    Column("total_rp_dose_delta_weeks", Numeric(16, 12)),
    Column("total_agd_left", Numeric(16, 8)),
    Column("total_agd_right", Numeric(16, 8)),
    Column("total_agd_both", Numeric(16, 8)),
    Column("number_of_planes", Integer),
)
OBJECT_UIDS = _table(
    "remapp_objectuidsprocessed",
    Column("sop_instance_uid", Text),
    _fk("general_study_module_attributes_id", "remapp_generalstudymoduleattr", nullable=False),
)
EQUIPMENT = _table(
    "remapp_generalequipmentmoduleattr",
    Column("manufacturer", Text),
    Column("institution_name", Text),
    Column("institution_address", Text),
    Column("station_name", String(32)),
    Column("institutional_department_name", Text),
    Column("manufacturer_model_name", Text),
    Column("device_serial_number", Text),
    Column("software_versions", Text),
    Column("gantry_id", Text),
    Column("spatial_resolution", Numeric(8, 4)),
    Column("date_of_last_calibration", DateTime(timezone=True)),
    Column("time_of_last_calibration", DateTime(timezone=True)),
    _fk("general_study_module_attributes_id", "remapp_generalstudymoduleattr", nullable=False),
    _fk("unique_equipment_name_id", "remapp_uniqueequipmentnames"),
)
PATIENT_STUDY = _table(
    "remapp_patientstudymoduleattr",
    Column("admitting_diagnosis_description", Text),
    Column("admitting_diagnosis_code_sequence", Text),
    Column("patient_age", String(4)),
    Column("patient_age_decimal", Numeric(7, 3)),
    Column("patient_size", Numeric(16, 8)),
    Column("patient_weight", Numeric(16, 8)),
    _fk("general_study_module_attributes_id", "remapp_generalstudymoduleattr", nullable=False),
)
PATIENT = _table(
    "remapp_patientmoduleattr",
    Column("patient_name", Text),
    Column("name_hashed", Boolean, nullable=False),
    Column("patient_id", Text),
    Column("id_hashed", Boolean, nullable=False),
    Column("patient_birth_date", Date),
    Column("patient_sex", String(2)),
    Column("other_patient_ids", Text),
    Column("not_patient_indicator", Text),
    _fk("general_study_module_attributes_id", "remapp_generalstudymoduleattr", nullable=False),
)
RADIATION_DOSE = _table(
    "remapp_ctradiationdose",
    Column("start_of_xray_irradiation", DateTime(timezone=True)),
    Column("end_of_xray_irradiation", DateTime(timezone=True)),
    Column("comment", Text),
    _fk("general_study_module_attributes_id", "remapp_generalstudymoduleattr", nullable=False),
    _fk("has_intent_id", "remapp_contextid"),
    _fk("procedure_reported_id", "remapp_contextid"),
    _fk("scope_of_accumulation_id", "remapp_contextid"),
    _fk("source_of_dose_information_id", "remapp_contextid"),
    _fk("uid_type_id", "remapp_contextid"),
)
ACCUMULATED_DOSE = _table(
    "remapp_ctaccumulateddosedata",
    Column("total_number_of_irradiation_events", Numeric(16, 0)),
    Column("ct_dose_length_product_total", Numeric(16, 8)),
    Column("ct_effective_dose_total", Numeric(16, 8)),
    Column("reference_authority_text", Text),
    Column("patient_model", Text),
    Column("effective_dose_phantom_type", Text),
    Column("dosimeter_type", Text),
    Column("comment", Text),
    _fk("ct_radiation_dose_id", "remapp_ctradiationdose", nullable=False),
    _fk("measurement_method_id", "remapp_contextid"),
    _fk("reference_authority_code_id", "remapp_contextid"),
)
EVENT = _table(
    "remapp_ctirradiationeventdata",
    Column("acquisition_protocol", Text),
    Column("irradiation_event_uid", Text),
    Column("irradiation_event_label", Text),
    Column("exposure_time", Numeric(16, 8)),
    Column("nominal_single_collimation_width", Numeric(16, 8)),
    Column("nominal_total_collimation_width", Numeric(16, 8)),
    Column("pitch_factor", Numeric(16, 8)),
    Column("number_of_xray_sources", Numeric(8, 0)),
    Column("mean_ctdivol", Numeric(16, 8)),
    Column("ctdifreeair_calculation_factor", Numeric(16, 8)),
    Column("mean_ctdifreeair", Numeric(16, 8)),
    Column("dlp", Numeric(16, 8)),
    Column("effective_dose", Numeric(16, 8)),
    Column("effective_dose_conversion_factor", Numeric(16, 8)),
    Column("xray_modulation_type", Text),
    Column("comment", Text),
    Column("date_time_started", DateTime(timezone=True)),
    Column("series_description", Text),
    _fk("ct_acquisition_type_id", "remapp_contextid"),
    _fk("ct_radiation_dose_id", "remapp_ctradiationdose", nullable=False),
    _fk("ctdiw_phantom_type_id", "remapp_contextid"),
    _fk("label_type_id", "remapp_contextid"),
    _fk("measurement_method_id", "remapp_contextid"),
    _fk("procedure_context_id", "remapp_contextid"),
    _fk("target_region_id", "remapp_contextid"),
)
DOSE_CHECK = _table(
    "remapp_ctdosecheckdetails",
    Column("dlp_alert_value_configured", Boolean),
    Column("ctdivol_alert_value_configured", Boolean),
    Column("dlp_alert_value", Numeric(16, 8)),
    Column("ctdivol_alert_value", Numeric(16, 8)),
    Column("accumulated_dlp_forward_estimate", Numeric(16, 8)),
    Column("accumulated_ctdivol_forward_estimate", Numeric(16, 8)),
    Column("alert_reason_for_proceeding", Text),
    Column("dlp_notification_value_configured", Boolean),
    Column("ctdivol_notification_value_configured", Boolean),
    Column("dlp_notification_value", Numeric(8, 4)),
    Column("ctdivol_notification_value", Numeric(8, 4)),
    Column("dlp_forward_estimate", Numeric(8, 4)),
    Column("ctdivol_forward_estimate", Numeric(8, 4)),
    Column("notification_reason_for_proceeding", Text),
    _fk("ct_irradiation_event_data_id", "remapp_ctirradiationeventdata", nullable=False),
)
PERSON = _table(
    "remapp_personparticipant",
    Column("person_name", Text),
    _fk("ct_dose_check_details_alert_id", "remapp_ctdosecheckdetails"),
    _fk("ct_dose_check_details_notification_id", "remapp_ctdosecheckdetails"),
)
STUDY_STANDARD_NAMES = _table(
    "remapp_generalstudymoduleattr_standard_names",
    _fk("generalstudymoduleattr_id", "remapp_generalstudymoduleattr", nullable=False),
    _fk("standardnames_id", "remapp_standardnames", nullable=False),
)
EVENT_STANDARD_PROTOCOLS = _table(
    "remapp_ctirradiationeventdata_standard_protocols",
    _fk("ctirradiationeventdata_id", "remapp_ctirradiationeventdata", nullable=False),
    _fk("standardnames_id", "remapp_standardnames", nullable=False),
)

Index("ix_openrem_study_modality_type", STUDY.c.modality_type)
Index("ix_openrem_unique_equipment_display_name", UNIQUE_EQUIPMENT_NAMES.c.display_name)
Index("ix_openrem_patient_patient_id", PATIENT.c.patient_id)
# Deliberately no index on study_instance_uid: OpenREM has none.


def create_schema(engine: Engine) -> None:
    """Create the OpenREM subset tables (idempotent: existing tables are left alone)."""
    METADATA.create_all(engine)


# --- what to import ------------------------------------------------------------------------------

PHANTOMS: Mapping[str, str] = {
    "113690": "IEC Head Dosimetry Phantom",  # 16 cm
    "113691": "IEC Body Dosimetry Phantom",  # 32 cm
}
_AXIAL = frozenset({"113804"})  # Sequenced Acquisition
_SPIRAL = frozenset({"P5-08001", "116152004", "C0860888"})
_STATIONARY = frozenset({"113806"})
_CONSTANT_ANGLE = frozenset({"113805"})  # 113807 Free Acquisition is counted in none of them
_DOSE_CHECK_COLUMNS = frozenset(DOSE_CHECK.c.keys()) - {"id", "ct_irradiation_event_data_id"}
_EQUIPMENT_KEY = (
    "manufacturer",
    "institution_name",
    "station_name",
    "institutional_department_name",
    "manufacturer_model_name",
    "device_serial_number",
    "software_versions",
    "gantry_id",
    "device_observer_uid",
)


@dataclass(frozen=True)
class SeedEvent:
    """One CT irradiation event as an RDSR reports it (CTDIvol in mGy, DLP in mGy.cm)."""

    uid: str | None
    protocol: str | None
    acquisition_type: tuple[str, str]  # (code_value, code_meaning), e.g. ("P5-08001", "Spiral Acquisition")
    ctdivol: Decimal | None
    dlp: Decimal | None
    phantom: str | None  # "113690" head, "113691" body, or None
    series_description: str | None = None
    dose_check: Mapping[str, Decimal | bool | None] | None = None  # remapp_ctdosecheckdetails columns
    alert_authorised_by: str | None = None  # remapp_personparticipant.person_name (staff, 113850) of the alert

    def __post_init__(self) -> None:
        if self.phantom is not None and self.phantom not in PHANTOMS:
            raise ValueError(f"unknown CTDIw phantom code {self.phantom!r}: use one of {sorted(PHANTOMS)}")
        unknown = set(self.dose_check or ()) - _DOSE_CHECK_COLUMNS
        if unknown:
            raise ValueError(f"not columns of remapp_ctdosecheckdetails: {sorted(unknown)}")


@dataclass(frozen=True)
class SeedStudy:
    """One RDSR's worth of a CT study, as OpenREM stores it (total_dlp is the RDSR's own total)."""

    uid: str | None
    accession: str | None
    study_date: date | None
    study_time: time | None
    description: str | None
    requested_procedure: str | None
    procedure: str | None  # procedure_code_meaning
    station_name: str | None
    institution_name: str | None
    manufacturer: str | None
    model: str | None
    display_name: str | None  # None: OpenREM's default, institution + ' ' + station
    total_dlp: Decimal | None
    patient_age: str | None  # raw DICOM AS string, e.g. '063Y'
    patient_age_decimal: Decimal | None
    patient_sex: str | None
    patient_id: str | None
    patient_name: str | None
    events: tuple[SeedEvent, ...]
    sop_instance_uid: str
    modality: str = "CT"
    study_standard_names: tuple[str, ...] = ()
    event_standard_names: Mapping[int, tuple[str, ...]] = field(default_factory=dict)
    modality_first: bool = False  # Philips SC importer: modality at the very start, no SOP UID recorded
    patient_weight: Decimal | None = None  # kg
    patient_size: Decimal | None = None  # m

    def __post_init__(self) -> None:
        bad = [i for i in self.event_standard_names if not 0 <= i < len(self.events)]
        if bad:
            raise ValueError(f"event_standard_names refers to events {bad}, study has {len(self.events)}")


def default_display_name(institution_name: str | None, station_name: str | None) -> str:
    """OpenREM's default display name for a new device."""
    if institution_name and station_name:
        return f"{institution_name} {station_name}"
    return institution_name or station_name or "Blank"


def _hash(value: str | None) -> str | None:
    return hashlib.sha256(value.encode("utf-8")).hexdigest() if value else None


# --- the importer --------------------------------------------------------------------------------


class OpenremImporter:
    """Imports :class:`SeedStudy` values in OpenREM's order, every write in its own transaction.

    ``import_steps`` and ``resend_steps`` are generators: each ``next()`` performs one write (or one
    group that OpenREM makes atomic) and yields a label such as ``"UPDATE remapp_patientmoduleattr 7
    (sex, id, name)"``. The pk of the study being written is in ``last_study_pk`` from the first step on.
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self.last_study_pk: int | None = None

    # public API

    def import_study(self, study: SeedStudy) -> int:
        """Import ``study`` completely and return its new pk."""
        for _ in self.import_steps(study):
            pass
        return self._pk()

    def import_steps(
        self, study: SeedStudy, *, carried_sop_uids: tuple[str, ...] = (), pk: int | None = None
    ) -> Iterator[str]:
        """Import ``study`` one autocommitted write per ``next()``; the first inserts the empty study row.

        ``pk``: the empty study row was inserted already (by a transaction that committed late).
        """
        if pk is None:
            pk = self._insert(STUDY, accession_hashed=False, **_modality_first(study))
        self.last_study_pk = pk
        yield f"INSERT remapp_generalstudymoduleattr {pk} (empty)"

        sops = carried_sop_uids
        if not study.modality_first and study.sop_instance_uid not in sops:
            sops = (*sops, study.sop_instance_uid)
        for sop in sops:
            obj = self._insert(OBJECT_UIDS, general_study_module_attributes_id=pk)
            yield f"INSERT remapp_objectuidsprocessed {obj} (empty)"
            self._update(OBJECT_UIDS, obj, sop_instance_uid=sop)
            yield f"UPDATE remapp_objectuidsprocessed {obj} (sop_instance_uid)"

        self._update(
            STUDY,
            pk,
            study_instance_uid=study.uid,
            study_date=study.study_date,
            study_time=study.study_time,
            study_description=study.description,
            accession_number=study.accession,
            procedure_code_meaning=study.procedure,
        )
        yield f"UPDATE remapp_generalstudymoduleattr {pk} (uid, date, time, description, accession)"

        yield from self._equipment_steps(pk, study)

        dose = self._insert(RADIATION_DOSE, general_study_module_attributes_id=pk)
        yield f"INSERT remapp_ctradiationdose {dose}"
        acc = self._insert(ACCUMULATED_DOSE, ct_radiation_dose_id=dose)
        yield f"INSERT remapp_ctaccumulateddosedata {acc} (empty)"
        self._update(
            ACCUMULATED_DOSE,
            acc,
            total_number_of_irradiation_events=len(study.events),
            ct_dose_length_product_total=study.total_dlp,
        )
        yield f"UPDATE remapp_ctaccumulateddosedata {acc} (totals)"

        event_pks: list[int] = []
        for event in study.events:
            event_pk = self._insert(EVENT, ct_radiation_dose_id=dose)
            event_pks.append(event_pk)
            yield f"INSERT remapp_ctirradiationeventdata {event_pk} (empty)"
            yield from self._event_steps(event_pk, event)

        yield from self._study_summary_steps(pk, study)
        yield from self._patient_steps(pk, study)
        yield from self._standard_name_steps(pk, study, event_pks)

    def resend_cumulative(self, old_pk: int, study: SeedStudy) -> int:
        """OpenREM's ``drop_old_continue``: delete study ``old_pk``, re-import; return the new pk."""
        for _ in self.resend_steps(old_pk, study):
            pass
        return self._pk()

    def resend_steps(self, old_pk: int, study: SeedStudy) -> Iterator[str]:
        """Like :meth:`resend_cumulative`, one write per ``next()``; the first is the delete transaction."""
        with self._engine.begin() as conn:
            carried = tuple(
                sop
                for sop in conn.execute(
                    select(OBJECT_UIDS.c.sop_instance_uid)
                    .where(OBJECT_UIDS.c.general_study_module_attributes_id == old_pk)
                    .order_by(OBJECT_UIDS.c.id)
                ).scalars()
                if sop is not None
            )
            _delete_study(conn, old_pk)
        yield f"DELETE remapp_generalstudymoduleattr {old_pk} with all its child rows (one transaction)"
        yield from self.import_steps(study, carried_sop_uids=carried)

    def delete_study(self, pk: int) -> None:
        """Delete study ``pk`` and all its child rows in one transaction, as Django's cascade does."""
        with self._engine.begin() as conn:
            _delete_study(conn, pk)

    # the groups of steps

    def _equipment_steps(self, pk: int, study: SeedStudy) -> Iterator[str]:
        equipment = self._insert(
            EQUIPMENT,
            general_study_module_attributes_id=pk,
            manufacturer=study.manufacturer,
            institution_name=study.institution_name,
            station_name=study.station_name,
            manufacturer_model_name=study.model,
        )
        yield f"INSERT remapp_generalequipmentmoduleattr {equipment} (without display name)"
        name_pk, created = self._get_or_create_equipment_name(study)
        if created:
            yield f"INSERT remapp_uniqueequipmentnames {name_pk}"
        self._update(EQUIPMENT, equipment, unique_equipment_name_id=name_pk)
        yield f"UPDATE remapp_generalequipmentmoduleattr {equipment} (unique_equipment_name_id)"

    def _event_steps(self, event_pk: int, event: SeedEvent) -> Iterator[str]:
        acquisition_type, created = self._get_or_create_context(*event.acquisition_type)
        if created:
            yield f"INSERT remapp_contextid {acquisition_type} ({event.acquisition_type[0]})"
        phantom: int | None = None
        if event.phantom is not None:
            phantom, created = self._get_or_create_context(event.phantom, PHANTOMS[event.phantom])
            if created:
                yield f"INSERT remapp_contextid {phantom} ({event.phantom})"
        if event.dose_check is not None:
            check = self._insert(DOSE_CHECK, ct_irradiation_event_data_id=event_pk)
            yield f"INSERT remapp_ctdosecheckdetails {check} (empty)"
            self._update(DOSE_CHECK, check, **event.dose_check)
            yield f"UPDATE remapp_ctdosecheckdetails {check} (alert and notification values)"
            if (who := event.alert_authorised_by) is not None:
                person = self._insert(PERSON, person_name=who, ct_dose_check_details_alert_id=check)
                yield f"INSERT remapp_personparticipant {person} (who authorised proceeding past the alert)"
        self._update(
            EVENT,
            event_pk,
            irradiation_event_uid=event.uid,
            acquisition_protocol=event.protocol,
            mean_ctdivol=event.ctdivol,
            dlp=event.dlp,
            ct_acquisition_type_id=acquisition_type,
            ctdiw_phantom_type_id=phantom,
            series_description=event.series_description,
        )
        yield f"UPDATE remapp_ctirradiationeventdata {event_pk} (uid, protocol, ctdivol, dlp, type, phantom)"

    def _study_summary_steps(self, pk: int, study: SeedStudy) -> Iterator[str]:
        codes = [event.acquisition_type[0] for event in study.events]
        if not study.modality_first:
            self._update(STUDY, pk, modality_type=study.modality)
            yield f"UPDATE remapp_generalstudymoduleattr {pk} (modality_type)"
        self._update(STUDY, pk, requested_procedure_code_meaning=study.requested_procedure)
        yield f"UPDATE remapp_generalstudymoduleattr {pk} (requested procedure)"
        self._update(STUDY, pk, number_of_events=len(study.events))
        yield f"UPDATE remapp_generalstudymoduleattr {pk} (number_of_events)"
        self._update(
            STUDY,
            pk,
            number_of_axial=sum(code in _AXIAL for code in codes),
            number_of_spiral=sum(code in _SPIRAL for code in codes),
            number_of_stationary=sum(code in _STATIONARY for code in codes),
            number_of_const_angle=sum(code in _CONSTANT_ANGLE for code in codes),
        )
        yield f"UPDATE remapp_generalstudymoduleattr {pk} (acquisition type counts)"
        self._update(STUDY, pk, total_dlp=study.total_dlp)
        yield f"UPDATE remapp_generalstudymoduleattr {pk} (total_dlp)"

    def _patient_steps(self, pk: int, study: SeedStudy) -> Iterator[str]:
        patient_study = self._insert(PATIENT_STUDY, general_study_module_attributes_id=pk)
        yield f"INSERT remapp_patientstudymoduleattr {patient_study} (empty)"
        self._update(
            PATIENT_STUDY,
            patient_study,
            patient_age=study.patient_age,
            patient_weight=study.patient_weight,
            patient_size=study.patient_size,
        )
        yield f"UPDATE remapp_patientstudymoduleattr {patient_study} (age, weight, size)"
        patient = self._insert(PATIENT, general_study_module_attributes_id=pk, name_hashed=False, id_hashed=False)
        yield f"INSERT remapp_patientmoduleattr {patient} (empty)"
        self._update(PATIENT_STUDY, patient_study, patient_age_decimal=study.patient_age_decimal)
        yield f"UPDATE remapp_patientstudymoduleattr {patient_study} (age decimal)"
        self._update(
            PATIENT,
            patient,
            patient_sex=study.patient_sex,
            patient_id=study.patient_id,
            patient_name=study.patient_name,
        )
        yield f"UPDATE remapp_patientmoduleattr {patient} (sex, id, name)"

    def _standard_name_steps(self, pk: int, study: SeedStudy, event_pks: list[int]) -> Iterator[str]:
        for name in study.study_standard_names:
            name_pk, created = self._get_or_create_standard_name(name, study.modality)
            if created:
                yield f"INSERT remapp_standardnames {name_pk}"
            link = self._insert(STUDY_STANDARD_NAMES, generalstudymoduleattr_id=pk, standardnames_id=name_pk)
            yield f"INSERT remapp_generalstudymoduleattr_standard_names {link}"
        for index, names in sorted(study.event_standard_names.items()):
            for name in names:
                name_pk, created = self._get_or_create_standard_name(name, study.modality)
                if created:
                    yield f"INSERT remapp_standardnames {name_pk}"
                link = self._insert(
                    EVENT_STANDARD_PROTOCOLS,
                    ctirradiationeventdata_id=event_pks[index],
                    standardnames_id=name_pk,
                )
                yield f"INSERT remapp_ctirradiationeventdata_standard_protocols {link}"

    # single writes, each in its own transaction (autocommit semantics)

    def _insert(self, table: Table, **values: Any) -> int:
        with self._engine.begin() as conn:
            return _insert_pk(conn, table, values)

    def _update(self, table: Table, pk: int, **values: Any) -> None:
        with self._engine.begin() as conn:
            conn.execute(update(table).where(table.c.id == pk).values(**values))

    def _get_or_create_context(self, code_value: str, code_meaning: str) -> tuple[int, bool]:
        # Keyed on code_value only: the first meaning seen wins, ids differ between installations.
        with self._engine.begin() as conn:
            found = conn.execute(
                select(CONTEXT_ID.c.id).where(CONTEXT_ID.c.code_value == code_value).order_by(CONTEXT_ID.c.id)
            ).first()
            if found is not None:
                return int(found[0]), False
            values = {"code_value": code_value, "code_meaning": code_meaning, "cid_table": ""}
            return _insert_pk(conn, CONTEXT_ID, values), True

    def _get_or_create_equipment_name(self, study: SeedStudy) -> tuple[int, bool]:
        # The row is shared by all studies of one device (keyed on the hashes of its identifying
        # fields) and keeps whatever display name it has; a new device gets the default one.
        fields: dict[str, str | None] = dict.fromkeys(_EQUIPMENT_KEY)
        fields.update(
            manufacturer=study.manufacturer,
            institution_name=study.institution_name,
            station_name=study.station_name,
            manufacturer_model_name=study.model,
        )
        hashes = {f"{name}_hash": _hash(value) for name, value in fields.items()}
        conditions = [
            UNIQUE_EQUIPMENT_NAMES.c[column].is_(None) if value is None else UNIQUE_EQUIPMENT_NAMES.c[column] == value
            for column, value in hashes.items()
        ]
        with self._engine.begin() as conn:
            found = conn.execute(
                select(UNIQUE_EQUIPMENT_NAMES.c.id).where(*conditions).order_by(UNIQUE_EQUIPMENT_NAMES.c.id)
            ).first()
            if found is not None:
                return int(found[0]), False
            display_name = study.display_name or default_display_name(study.institution_name, study.station_name)
            values = {**fields, **hashes, "display_name": display_name, "hash_generated": True}
            return _insert_pk(conn, UNIQUE_EQUIPMENT_NAMES, values), True

    def _get_or_create_standard_name(self, name: str, modality: str) -> tuple[int, bool]:
        with self._engine.begin() as conn:
            found = conn.execute(
                select(STANDARD_NAMES.c.id)
                .where(STANDARD_NAMES.c.standard_name == name, STANDARD_NAMES.c.modality == modality)
                .order_by(STANDARD_NAMES.c.id)
            ).first()
            if found is not None:
                return int(found[0]), False
            return _insert_pk(conn, STANDARD_NAMES, {"standard_name": name, "modality": modality}), True

    def _pk(self) -> int:
        if self.last_study_pk is None:  # pragma: no cover - import_steps always sets it first
            raise RuntimeError("no study has been imported yet")
        return self.last_study_pk


def _modality_first(study: SeedStudy) -> dict[str, str]:
    return {"modality_type": study.modality} if study.modality_first else {}


def _insert_pk(conn: Connection, table: Table, values: Mapping[str, Any]) -> int:
    key = conn.execute(insert(table).values(**values)).inserted_primary_key
    if key is None:  # pragma: no cover - every table here has an integer pk
        raise RuntimeError(f"no primary key returned by INSERT INTO {table.name}")
    return int(key[0])


def _delete_study(conn: Connection, pk: int) -> None:
    """Django's cascade for one study, children first, in the order OpenREM's trace shows."""
    if conn.execute(select(STUDY.c.id).where(STUDY.c.id == pk)).first() is None:
        raise LookupError(f"remapp_generalstudymoduleattr has no study with pk {pk}")
    doses = select(RADIATION_DOSE.c.id).where(RADIATION_DOSE.c.general_study_module_attributes_id == pk)
    events = select(EVENT.c.id).where(EVENT.c.ct_radiation_dose_id.in_(doses))
    checks = select(DOSE_CHECK.c.id).where(DOSE_CHECK.c.ct_irradiation_event_data_id.in_(events))
    for statement in (
        delete(EVENT_STANDARD_PROTOCOLS).where(EVENT_STANDARD_PROTOCOLS.c.ctirradiationeventdata_id.in_(events)),
        delete(STUDY_STANDARD_NAMES).where(STUDY_STANDARD_NAMES.c.generalstudymoduleattr_id == pk),
        delete(OBJECT_UIDS).where(OBJECT_UIDS.c.general_study_module_attributes_id == pk),
        delete(PATIENT).where(PATIENT.c.general_study_module_attributes_id == pk),
        delete(PATIENT_STUDY).where(PATIENT_STUDY.c.general_study_module_attributes_id == pk),
        delete(EQUIPMENT).where(EQUIPMENT.c.general_study_module_attributes_id == pk),
        delete(ACCUMULATED_DOSE).where(ACCUMULATED_DOSE.c.ct_radiation_dose_id.in_(doses)),
        delete(PERSON).where(
            or_(*(PERSON.c[f"ct_dose_check_details_{kind}_id"].in_(checks) for kind in ("alert", "notification")))
        ),
        delete(DOSE_CHECK).where(DOSE_CHECK.c.ct_irradiation_event_data_id.in_(events)),
        delete(EVENT).where(EVENT.c.ct_radiation_dose_id.in_(doses)),
        delete(RADIATION_DOSE).where(RADIATION_DOSE.c.general_study_module_attributes_id == pk),
        delete(STUDY).where(STUDY.c.id == pk),
    ):
        conn.execute(statement)
