"""The subset of OpenREM's CT tables that the demo and the tests write into (SQLite or PostgreSQL):
the same names, columns, types and keys as OpenREM 1.0 (``tests/integration/test_openrem_simulator.py``
compares them with OpenREM's real schema)."""

from __future__ import annotations

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
)

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
