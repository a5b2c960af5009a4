"""OpenREM's tables and columns that ctpoller reads, by name: everything else is never touched."""

from __future__ import annotations

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
PERSON = "remapp_personparticipant"

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
#: The operator's reasons for proceeding past a Dose Check value, as the email shows them.
DOSE_CHECK_REASONS = {
    "alert_reason_for_proceeding": "alert_reason",
    "notification_reason_for_proceeding": "notification_reason",
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

#: Columns only shown in the emails: read where this role may SELECT them, else shown as not recorded
#: (with a warning naming the grant), so that a role granted before they were read keeps working.
#: Of the patient table only the sex: never a name, ID or birth date.
SHOWN: dict[str, tuple[str, ...]] = {
    PATIENT: ("patient_sex",),
    DOSE_CHECK: tuple(DOSE_CHECK_REASONS),
}

#: Columns only rules' criteria use (rules-file key -> table, column): read where this role may SELECT
#: them and they exist (else NULL: the criterion matches nothing), like ``SHOWN``; a rule that uses
#: one that is not readable stops ``run``, ``backfill`` and ``check`` with one line
#: (``OpenremSource.criteria_problem``). Target region is a ``CONTEXT`` id: its code meaning is matched.
CRITERIA_COLUMNS: dict[str, tuple[str, str]] = {
    "manufacturer": (EQUIPMENT, "manufacturer"),
    "model": (EQUIPMENT, "manufacturer_model_name"),
    "weight_min": (PATIENT_STUDY, "patient_weight"),
    "weight_max": (PATIENT_STUDY, "patient_weight"),
    "target_region": (EVENT, "target_region_id"),
}
#: The same, per table, as ``SHOWN`` has them.
CRITERIA: dict[str, tuple[str, ...]] = {
    table: tuple(dict.fromkeys(c for t, c in CRITERIA_COLUMNS.values() if t == table))
    for table in dict.fromkeys(t for t, _ in CRITERIA_COLUMNS.values())
}

#: Tables only shown in the emails, read where they exist and this role may SELECT every column named
#: (else the emails leave their values out, with one warning). Of the persons OpenREM records only
#: those linked to a Dose Check (role 113850 "Irradiation Authorizing": staff, never the patient),
#: and of them only the name.
SHOWN_TABLES: dict[str, tuple[str, ...]] = {
    PERSON: ("id", "person_name", "ct_dose_check_details_alert_id", "ct_dose_check_details_notification_id"),
}
#: What the emails leave out without them.
SHOWN_TABLE_USES = {PERSON: "who authorised proceeding past a Dose Check"}
