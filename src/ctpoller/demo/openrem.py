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

from collections.abc import Iterator, Mapping
from typing import Any

from sqlalchemy import (
    Engine,
    Table,
    delete,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.engine import Connection

from ctpoller.demo.schema import (
    ACCUMULATED_DOSE,
    CONTEXT_ID,
    DOSE_CHECK,
    EQUIPMENT,
    EVENT,
    EVENT_STANDARD_PROTOCOLS,
    METADATA,
    OBJECT_UIDS,
    PATIENT,
    PATIENT_STUDY,
    PERSON,
    RADIATION_DOSE,
    STANDARD_NAMES,
    STUDY,
    STUDY_STANDARD_NAMES,
    UNIQUE_EQUIPMENT_NAMES,
    create_schema,
)
from ctpoller.demo.seeds import (
    _AXIAL,
    _CONSTANT_ANGLE,
    _EQUIPMENT_KEY,
    _SPIRAL,
    _STATIONARY,
    PHANTOMS,
    SeedEvent,
    SeedStudy,
    _hash,
    default_display_name,
)

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


__all__ = [
    "METADATA",
    "OpenremImporter",
    "SeedEvent",
    "SeedStudy",
    "create_schema",
]
