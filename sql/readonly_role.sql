-- A least-privilege role for ctpoller on the OpenREM database.
--
-- It may SELECT exactly the columns ctpoller reads and nothing else: no other column (no patient
-- name, ID or birth date: of the patient table only the sex), no other table, no writes. Its sessions default to read-only
-- transactions with a statement timeout. Run it once as a superuser (or the database owner) on the
-- OpenREM database -- on the primary: a read-only replica receives the role from there:
--
--   psql -v ON_ERROR_STOP=1 -d openrem -f sql/readonly_role.sql
--   psql -d openrem -c "\password ctpoller_reader"
--
-- then set CTPOLLER_SOURCE_URL=postgresql://ctpoller_reader@<host>/openrem and the password in
-- CTPOLLER_SOURCE_PASSWORD (or a systemd credential). Running it again is harmless. The tables of
-- OpenREM's standard names (OpenREM 1.0 and later) are granted only where they exist.

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'ctpoller_reader') THEN
        CREATE ROLE ctpoller_reader LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT NOREPLICATION;
    END IF;
END
$$;

ALTER ROLE ctpoller_reader SET default_transaction_read_only = on;
ALTER ROLE ctpoller_reader SET statement_timeout = '60s';
REVOKE ALL ON ALL TABLES IN SCHEMA public FROM ctpoller_reader;
GRANT USAGE ON SCHEMA public TO ctpoller_reader;

GRANT SELECT (id, study_instance_uid, accession_number, study_date, study_time, study_description, requested_procedure_code_meaning, procedure_code_meaning, modality_type, total_dlp, number_of_events) ON remapp_generalstudymoduleattr TO ctpoller_reader;
GRANT SELECT (id, general_study_module_attributes_id, patient_age, patient_age_decimal, patient_weight) ON remapp_patientstudymoduleattr TO ctpoller_reader;
GRANT SELECT (id, general_study_module_attributes_id, patient_sex) ON remapp_patientmoduleattr TO ctpoller_reader;
-- Only for [[cumulative]] rules (one patient's exams within a period): the patient ID, which ctpoller
-- turns into a keyed hash at once and never stores, logs or mails. Without a [[cumulative]] leave it out.
-- GRANT SELECT (patient_id) ON remapp_patientmoduleattr TO ctpoller_reader;
GRANT SELECT (id, general_study_module_attributes_id, station_name, unique_equipment_name_id, manufacturer, manufacturer_model_name) ON remapp_generalequipmentmoduleattr TO ctpoller_reader;
GRANT SELECT (id, display_name) ON remapp_uniqueequipmentnames TO ctpoller_reader;
GRANT SELECT (id, general_study_module_attributes_id) ON remapp_ctradiationdose TO ctpoller_reader;
GRANT SELECT (id, ct_radiation_dose_id, irradiation_event_uid, acquisition_protocol, mean_ctdivol, dlp, ct_acquisition_type_id, ctdiw_phantom_type_id, series_description, target_region_id) ON remapp_ctirradiationeventdata TO ctpoller_reader;
GRANT SELECT (id, code_value, code_meaning) ON remapp_contextid TO ctpoller_reader;
GRANT SELECT (id, ct_irradiation_event_data_id, ctdivol_alert_value_configured, ctdivol_alert_value, dlp_alert_value_configured, dlp_alert_value, accumulated_ctdivol_forward_estimate, accumulated_dlp_forward_estimate, ctdivol_notification_value_configured, ctdivol_notification_value, dlp_notification_value_configured, dlp_notification_value, ctdivol_forward_estimate, dlp_forward_estimate, alert_reason_for_proceeding, notification_reason_for_proceeding) ON remapp_ctdosecheckdetails TO ctpoller_reader;

-- The study pk sequence, so that ctpoller can tell a restored OpenREM from deleted studies.
DO $$
BEGIN
    EXECUTE format('GRANT SELECT ON SEQUENCE %s TO ctpoller_reader',
                   pg_get_serial_sequence('public.remapp_generalstudymoduleattr', 'id'));
END
$$;

DO $$
BEGIN
    IF to_regclass('public.remapp_standardnames') IS NOT NULL
       AND to_regclass('public.remapp_generalstudymoduleattr_standard_names') IS NOT NULL
       AND to_regclass('public.remapp_ctirradiationeventdata_standard_protocols') IS NOT NULL THEN
        GRANT SELECT (id, standard_name) ON remapp_standardnames TO ctpoller_reader;
        GRANT SELECT (generalstudymoduleattr_id, standardnames_id) ON remapp_generalstudymoduleattr_standard_names TO ctpoller_reader;
        GRANT SELECT (ctirradiationeventdata_id, standardnames_id) ON remapp_ctirradiationeventdata_standard_protocols TO ctpoller_reader;
    END IF;
END
$$;

-- Who authorised proceeding past a scanner Dose Check (staff): the name only, shown in the emails.
DO $$
BEGIN
    IF to_regclass('public.remapp_personparticipant') IS NOT NULL THEN
        GRANT SELECT (id, person_name, ct_dose_check_details_alert_id, ct_dose_check_details_notification_id) ON remapp_personparticipant TO ctpoller_reader;
    END IF;
END
$$;
