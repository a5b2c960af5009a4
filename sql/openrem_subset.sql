-- openrem_subset.sql: a test fixture, NOT a migration.
--
-- A subset of OpenREM 1.0's CT tables (the ones ctpoller reads), mirroring the schema that
-- OpenREM's own Django migrations build on PostgreSQL 15: same table and column names, types and
-- nullability, serial primary keys (integer + owned sequence, no identity), foreign keys that are
-- DEFERRABLE INITIALLY DEFERRED with no ON DELETE action (Django cascades by itself), the btree
-- indexes on the foreign keys (most of them twice, as Django creates them), the modality_type,
-- display_name and patient_id indexes, and deliberately no index on study_instance_uid.
-- Index and constraint names are those of a fresh install: real sites may differ, so ctpoller
-- must reflect and never rely on them.
--
-- The integration tests load it into a throwaway database, with
--   psql -v ON_ERROR_STOP=1 -f sql/openrem_subset.sql   or statement by statement.
-- Every statement ends with a semicolon at the end of a line and contains no other semicolon.
--
-- NEVER load this into a real OpenREM database: it creates OpenREM's tables and would collide
-- with (or, worse, impersonate) the ones OpenREM's migrations own.

CREATE SEQUENCE remapp_contextid_id_seq AS integer;
CREATE TABLE remapp_contextid (
    id integer NOT NULL DEFAULT nextval('remapp_contextid_id_seq'),
    code_value text NOT NULL,
    code_meaning text,
    cid_table varchar(16) NOT NULL,
    CONSTRAINT remapp_contextid_pkey PRIMARY KEY (id)
);
ALTER SEQUENCE remapp_contextid_id_seq OWNED BY remapp_contextid.id;

CREATE SEQUENCE remapp_standardnames_id_seq AS integer;
CREATE TABLE remapp_standardnames (
    id integer NOT NULL DEFAULT nextval('remapp_standardnames_id_seq'),
    standard_name text,
    modality varchar(16),
    study_description text,
    requested_procedure_code_meaning text,
    procedure_code_meaning text,
    acquisition_protocol text,
    CONSTRAINT remapp_standardnames_modality_acquisition_pro_1b063168_uniq UNIQUE (modality, acquisition_protocol),
    CONSTRAINT remapp_standardnames_modality_procedure_code__e98550f6_uniq UNIQUE (modality, procedure_code_meaning),
    CONSTRAINT remapp_standardnames_modality_requested_proce_0f230b1d_uniq UNIQUE (modality, requested_procedure_code_meaning),
    CONSTRAINT remapp_standardnames_modality_study_description_709b93a4_uniq UNIQUE (modality, study_description),
    CONSTRAINT remapp_standardnames_pkey PRIMARY KEY (id)
);
ALTER SEQUENCE remapp_standardnames_id_seq OWNED BY remapp_standardnames.id;

CREATE SEQUENCE remapp_uniqueequipmentnames_id_seq AS integer;
CREATE TABLE remapp_uniqueequipmentnames (
    id integer NOT NULL DEFAULT nextval('remapp_uniqueequipmentnames_id_seq'),
    manufacturer text,
    manufacturer_hash varchar(64),
    institution_name text,
    institution_name_hash varchar(64),
    station_name varchar(32),
    station_name_hash varchar(64),
    institutional_department_name text,
    institutional_department_name_hash varchar(64),
    manufacturer_model_name text,
    manufacturer_model_name_hash varchar(64),
    device_serial_number text,
    device_serial_number_hash varchar(64),
    software_versions text,
    software_versions_hash varchar(64),
    gantry_id text,
    gantry_id_hash varchar(64),
    display_name text,
    user_defined_modality varchar(16),
    hash_generated boolean NOT NULL,
    device_observer_uid text,
    device_observer_uid_hash varchar(64),
    CONSTRAINT remapp_uniqueequipmentna_manufacturer_hash_instit_4ddc2085_uniq UNIQUE (manufacturer_hash, institution_name_hash, station_name_hash, institutional_department_name_hash, manufacturer_model_name_hash, device_serial_number_hash, software_versions_hash, gantry_id_hash, device_observer_uid_hash),
    CONSTRAINT remapp_uniqueequipmentnames_pkey PRIMARY KEY (id)
);
ALTER SEQUENCE remapp_uniqueequipmentnames_id_seq OWNED BY remapp_uniqueequipmentnames.id;
CREATE INDEX remapp_uniq_display_1a5446_idx ON remapp_uniqueequipmentnames (display_name);

CREATE SEQUENCE remapp_generalstudymoduleattr_id_seq AS integer;
CREATE TABLE remapp_generalstudymoduleattr (
    id integer NOT NULL DEFAULT nextval('remapp_generalstudymoduleattr_id_seq'),
    study_instance_uid text,
    study_date date,
    study_time time,
    study_workload_chart_time timestamptz,
    referring_physician_name text,
    referring_physician_identification text,
    study_id varchar(16),
    accession_number text,
    accession_hashed boolean NOT NULL,
    study_description text,
    physician_of_record text,
    name_of_physician_reading_study text,
    performing_physician_name text,
    operator_name text,
    modality_type varchar(16),
    procedure_code_value text,
    procedure_code_meaning text,
    requested_procedure_code_value text,
    requested_procedure_code_meaning text,
    series_instance_uid text,
    series_time time,
    content_time time,
    number_of_events integer,
    number_of_events_a integer,
    number_of_events_b integer,
    number_of_axial integer,
    number_of_spiral integer,
    number_of_stationary integer,
    number_of_const_angle integer,
    total_dlp numeric(16,8),
    total_dap_a numeric(16,12),
    total_dap_b numeric(16,12),
    total_dap numeric(16,12),
    total_rp_dose_a numeric(16,12),
    total_rp_dose_b numeric(16,12),
    total_dap_delta_weeks numeric(16,12),
    total_rp_dose_delta_weeks numeric(16,12),
    total_agd_left numeric(16,8),
    total_agd_right numeric(16,8),
    total_agd_both numeric(16,8),
    number_of_planes integer,
    CONSTRAINT remapp_generalstudymoduleattr_pkey PRIMARY KEY (id)
);
ALTER SEQUENCE remapp_generalstudymoduleattr_id_seq OWNED BY remapp_generalstudymoduleattr.id;
CREATE INDEX remapp_gene_modalit_13ea55_idx ON remapp_generalstudymoduleattr (modality_type);

CREATE SEQUENCE remapp_objectuidsprocessed_id_seq AS integer;
CREATE TABLE remapp_objectuidsprocessed (
    id integer NOT NULL DEFAULT nextval('remapp_objectuidsprocessed_id_seq'),
    sop_instance_uid text,
    general_study_module_attributes_id integer NOT NULL,
    CONSTRAINT remapp_objectuidsprocessed_pkey PRIMARY KEY (id)
);
ALTER SEQUENCE remapp_objectuidsprocessed_id_seq OWNED BY remapp_objectuidsprocessed.id;
CREATE INDEX remapp_obje_general_d80bf0_idx ON remapp_objectuidsprocessed (general_study_module_attributes_id);
CREATE INDEX remapp_objectuidsprocessed_general_study_module_attri_16ebfae9 ON remapp_objectuidsprocessed (general_study_module_attributes_id);

CREATE SEQUENCE remapp_generalequipmentmoduleattr_id_seq AS integer;
CREATE TABLE remapp_generalequipmentmoduleattr (
    id integer NOT NULL DEFAULT nextval('remapp_generalequipmentmoduleattr_id_seq'),
    manufacturer text,
    institution_name text,
    institution_address text,
    station_name varchar(32),
    institutional_department_name text,
    manufacturer_model_name text,
    device_serial_number text,
    software_versions text,
    gantry_id text,
    spatial_resolution numeric(8,4),
    date_of_last_calibration timestamptz,
    time_of_last_calibration timestamptz,
    general_study_module_attributes_id integer NOT NULL,
    unique_equipment_name_id integer,
    CONSTRAINT remapp_generalequipmentmoduleattr_pkey PRIMARY KEY (id)
);
ALTER SEQUENCE remapp_generalequipmentmoduleattr_id_seq OWNED BY remapp_generalequipmentmoduleattr.id;
CREATE INDEX remapp_gene_general_17dfb4_idx ON remapp_generalequipmentmoduleattr (general_study_module_attributes_id);
CREATE INDEX remapp_gene_unique__06f046_idx ON remapp_generalequipmentmoduleattr (unique_equipment_name_id);
CREATE INDEX remapp_generalequipmentmod_general_study_module_attri_227d66fd ON remapp_generalequipmentmoduleattr (general_study_module_attributes_id);
CREATE INDEX remapp_generalequipmentmod_unique_equipment_name_id_afd38b7c ON remapp_generalequipmentmoduleattr (unique_equipment_name_id);

CREATE SEQUENCE remapp_patientstudymoduleattr_id_seq AS integer;
CREATE TABLE remapp_patientstudymoduleattr (
    id integer NOT NULL DEFAULT nextval('remapp_patientstudymoduleattr_id_seq'),
    admitting_diagnosis_description text,
    admitting_diagnosis_code_sequence text,
    patient_age varchar(4),
    patient_age_decimal numeric(7,3),
    patient_size numeric(16,8),
    patient_weight numeric(16,8),
    general_study_module_attributes_id integer NOT NULL,
    CONSTRAINT remapp_patientstudymoduleattr_pkey PRIMARY KEY (id)
);
ALTER SEQUENCE remapp_patientstudymoduleattr_id_seq OWNED BY remapp_patientstudymoduleattr.id;
CREATE INDEX remapp_pati_general_3d792f_idx ON remapp_patientstudymoduleattr (general_study_module_attributes_id);
CREATE INDEX remapp_patientstudymodulea_general_study_module_attri_732f777d ON remapp_patientstudymoduleattr (general_study_module_attributes_id);

CREATE SEQUENCE remapp_patientmoduleattr_id_seq AS integer;
CREATE TABLE remapp_patientmoduleattr (
    id integer NOT NULL DEFAULT nextval('remapp_patientmoduleattr_id_seq'),
    patient_name text,
    name_hashed boolean NOT NULL,
    patient_id text,
    id_hashed boolean NOT NULL,
    patient_birth_date date,
    patient_sex varchar(2),
    other_patient_ids text,
    not_patient_indicator text,
    general_study_module_attributes_id integer NOT NULL,
    CONSTRAINT remapp_patientmoduleattr_pkey PRIMARY KEY (id)
);
ALTER SEQUENCE remapp_patientmoduleattr_id_seq OWNED BY remapp_patientmoduleattr.id;
CREATE INDEX remapp_pati_general_af7c3a_idx ON remapp_patientmoduleattr (general_study_module_attributes_id);
CREATE INDEX remapp_pati_patient_85c6fa_idx ON remapp_patientmoduleattr (patient_id);
CREATE INDEX remapp_patientmoduleattr_general_study_module_attri_18d9fa52 ON remapp_patientmoduleattr (general_study_module_attributes_id);

CREATE SEQUENCE remapp_ctradiationdose_id_seq AS integer;
CREATE TABLE remapp_ctradiationdose (
    id integer NOT NULL DEFAULT nextval('remapp_ctradiationdose_id_seq'),
    start_of_xray_irradiation timestamptz,
    end_of_xray_irradiation timestamptz,
    comment text,
    general_study_module_attributes_id integer NOT NULL,
    has_intent_id integer,
    procedure_reported_id integer,
    scope_of_accumulation_id integer,
    source_of_dose_information_id integer,
    uid_type_id integer,
    CONSTRAINT remapp_ctradiationdose_pkey PRIMARY KEY (id)
);
ALTER SEQUENCE remapp_ctradiationdose_id_seq OWNED BY remapp_ctradiationdose.id;
CREATE INDEX remapp_ctra_general_8a006d_idx ON remapp_ctradiationdose (general_study_module_attributes_id);
CREATE INDEX remapp_ctradiationdose_general_study_module_attri_254fa264 ON remapp_ctradiationdose (general_study_module_attributes_id);
CREATE INDEX remapp_ctradiationdose_has_intent_id_2ceae466 ON remapp_ctradiationdose (has_intent_id);
CREATE INDEX remapp_ctradiationdose_procedure_reported_id_3a6510c5 ON remapp_ctradiationdose (procedure_reported_id);
CREATE INDEX remapp_ctradiationdose_scope_of_accumulation_id_aa31ecf9 ON remapp_ctradiationdose (scope_of_accumulation_id);
CREATE INDEX remapp_ctradiationdose_source_of_dose_information_id_c1341ae7 ON remapp_ctradiationdose (source_of_dose_information_id);
CREATE INDEX remapp_ctradiationdose_uid_type_id_b3c45f27 ON remapp_ctradiationdose (uid_type_id);

CREATE SEQUENCE remapp_ctaccumulateddosedata_id_seq AS integer;
CREATE TABLE remapp_ctaccumulateddosedata (
    id integer NOT NULL DEFAULT nextval('remapp_ctaccumulateddosedata_id_seq'),
    total_number_of_irradiation_events numeric(16,0),
    ct_dose_length_product_total numeric(16,8),
    ct_effective_dose_total numeric(16,8),
    reference_authority_text text,
    patient_model text,
    effective_dose_phantom_type text,
    dosimeter_type text,
    comment text,
    ct_radiation_dose_id integer NOT NULL,
    measurement_method_id integer,
    reference_authority_code_id integer,
    CONSTRAINT remapp_ctaccumulateddosedata_pkey PRIMARY KEY (id)
);
ALTER SEQUENCE remapp_ctaccumulateddosedata_id_seq OWNED BY remapp_ctaccumulateddosedata.id;
CREATE INDEX remapp_ctac_ct_radi_9a1a0b_idx ON remapp_ctaccumulateddosedata (ct_radiation_dose_id);
CREATE INDEX remapp_ctaccumulateddoseda_reference_authority_code_i_bbc5dbe1 ON remapp_ctaccumulateddosedata (reference_authority_code_id);
CREATE INDEX remapp_ctaccumulateddosedata_ct_radiation_dose_id_989070e3 ON remapp_ctaccumulateddosedata (ct_radiation_dose_id);
CREATE INDEX remapp_ctaccumulateddosedata_measurement_method_id_76874544 ON remapp_ctaccumulateddosedata (measurement_method_id);

CREATE SEQUENCE remapp_ctirradiationeventdata_id_seq AS integer;
CREATE TABLE remapp_ctirradiationeventdata (
    id integer NOT NULL DEFAULT nextval('remapp_ctirradiationeventdata_id_seq'),
    acquisition_protocol text,
    irradiation_event_uid text,
    irradiation_event_label text,
    exposure_time numeric(16,8),
    nominal_single_collimation_width numeric(16,8),
    nominal_total_collimation_width numeric(16,8),
    pitch_factor numeric(16,8),
    number_of_xray_sources numeric(8,0),
    mean_ctdivol numeric(16,8),
    ctdifreeair_calculation_factor numeric(16,8),
    mean_ctdifreeair numeric(16,8),
    dlp numeric(16,8),
    effective_dose numeric(16,8),
    effective_dose_conversion_factor numeric(16,8),
    xray_modulation_type text,
    comment text,
    date_time_started timestamptz,
    series_description text,
    ct_acquisition_type_id integer,
    ct_radiation_dose_id integer NOT NULL,
    ctdiw_phantom_type_id integer,
    label_type_id integer,
    measurement_method_id integer,
    procedure_context_id integer,
    target_region_id integer,
    CONSTRAINT remapp_ctirradiationeventdata_pkey PRIMARY KEY (id)
);
ALTER SEQUENCE remapp_ctirradiationeventdata_id_seq OWNED BY remapp_ctirradiationeventdata.id;
CREATE INDEX remapp_ctir_ct_radi_b0e97a_idx ON remapp_ctirradiationeventdata (ct_radiation_dose_id);
CREATE INDEX remapp_ctirradiationeventdata_ct_acquisition_type_id_a5ea952c ON remapp_ctirradiationeventdata (ct_acquisition_type_id);
CREATE INDEX remapp_ctirradiationeventdata_ct_radiation_dose_id_fd71dfdf ON remapp_ctirradiationeventdata (ct_radiation_dose_id);
CREATE INDEX remapp_ctirradiationeventdata_ctdiw_phantom_type_id_d118c467 ON remapp_ctirradiationeventdata (ctdiw_phantom_type_id);
CREATE INDEX remapp_ctirradiationeventdata_label_type_id_5ce737e5 ON remapp_ctirradiationeventdata (label_type_id);
CREATE INDEX remapp_ctirradiationeventdata_measurement_method_id_46f8a8b7 ON remapp_ctirradiationeventdata (measurement_method_id);
CREATE INDEX remapp_ctirradiationeventdata_procedure_context_id_1ddfcb96 ON remapp_ctirradiationeventdata (procedure_context_id);
CREATE INDEX remapp_ctirradiationeventdata_target_region_id_69118cc7 ON remapp_ctirradiationeventdata (target_region_id);

CREATE SEQUENCE remapp_ctdosecheckdetails_id_seq AS integer;
CREATE TABLE remapp_ctdosecheckdetails (
    id integer NOT NULL DEFAULT nextval('remapp_ctdosecheckdetails_id_seq'),
    dlp_alert_value_configured boolean,
    ctdivol_alert_value_configured boolean,
    dlp_alert_value numeric(16,8),
    ctdivol_alert_value numeric(16,8),
    accumulated_dlp_forward_estimate numeric(16,8),
    accumulated_ctdivol_forward_estimate numeric(16,8),
    alert_reason_for_proceeding text,
    dlp_notification_value_configured boolean,
    ctdivol_notification_value_configured boolean,
    dlp_notification_value numeric(8,4),
    ctdivol_notification_value numeric(8,4),
    dlp_forward_estimate numeric(8,4),
    ctdivol_forward_estimate numeric(8,4),
    notification_reason_for_proceeding text,
    ct_irradiation_event_data_id integer NOT NULL,
    CONSTRAINT remapp_ctdosecheckdetails_pkey PRIMARY KEY (id)
);
ALTER SEQUENCE remapp_ctdosecheckdetails_id_seq OWNED BY remapp_ctdosecheckdetails.id;
CREATE INDEX remapp_ctdo_ct_irra_c83fd2_idx ON remapp_ctdosecheckdetails (ct_irradiation_event_data_id);
CREATE INDEX remapp_ctdosecheckdetails_ct_irradiation_event_data_id_178e316c ON remapp_ctdosecheckdetails (ct_irradiation_event_data_id);

-- Only the columns ctpoller reads of OpenREM's person table (it has more, e.g. the person's role,
-- 113850 "Irradiation Authorizing" for the rows linked to a Dose Check); not in the reference dump.
CREATE SEQUENCE remapp_personparticipant_id_seq AS integer;
CREATE TABLE remapp_personparticipant (
    id integer NOT NULL DEFAULT nextval('remapp_personparticipant_id_seq'),
    person_name text,
    ct_dose_check_details_alert_id integer,
    ct_dose_check_details_notification_id integer,
    CONSTRAINT remapp_personparticipant_pkey PRIMARY KEY (id)
);
ALTER SEQUENCE remapp_personparticipant_id_seq OWNED BY remapp_personparticipant.id;
CREATE INDEX remapp_personparticipant_ct_dose_check_details_alert_id ON remapp_personparticipant (ct_dose_check_details_alert_id);
CREATE INDEX remapp_personparticipant_ct_dose_check_details_notification_id ON remapp_personparticipant (ct_dose_check_details_notification_id);

CREATE SEQUENCE remapp_generalstudymoduleattr_standard_names_id_seq AS integer;
CREATE TABLE remapp_generalstudymoduleattr_standard_names (
    id integer NOT NULL DEFAULT nextval('remapp_generalstudymoduleattr_standard_names_id_seq'),
    generalstudymoduleattr_id integer NOT NULL,
    standardnames_id integer NOT NULL,
    CONSTRAINT remapp_generalstudymodul_generalstudymoduleattr_i_e5190a37_uniq UNIQUE (generalstudymoduleattr_id, standardnames_id),
    CONSTRAINT remapp_generalstudymoduleattr_standard_names_pkey PRIMARY KEY (id)
);
ALTER SEQUENCE remapp_generalstudymoduleattr_standard_names_id_seq OWNED BY remapp_generalstudymoduleattr_standard_names.id;
CREATE INDEX remapp_generalstudymodulea_generalstudymoduleattr_id_e7c24cf5 ON remapp_generalstudymoduleattr_standard_names (generalstudymoduleattr_id);
CREATE INDEX remapp_generalstudymodulea_standardnames_id_113064ac ON remapp_generalstudymoduleattr_standard_names (standardnames_id);

CREATE SEQUENCE remapp_ctirradiationeventdata_standard_protocols_id_seq AS integer;
CREATE TABLE remapp_ctirradiationeventdata_standard_protocols (
    id integer NOT NULL DEFAULT nextval('remapp_ctirradiationeventdata_standard_protocols_id_seq'),
    ctirradiationeventdata_id integer NOT NULL,
    standardnames_id integer NOT NULL,
    CONSTRAINT remapp_ctirradiationeven_ctirradiationeventdata_i_de2b4d97_uniq UNIQUE (ctirradiationeventdata_id, standardnames_id),
    CONSTRAINT remapp_ctirradiationeventdata_standard_protocols_pkey PRIMARY KEY (id)
);
ALTER SEQUENCE remapp_ctirradiationeventdata_standard_protocols_id_seq OWNED BY remapp_ctirradiationeventdata_standard_protocols.id;
CREATE INDEX remapp_ctirradiationeventd_ctirradiationeventdata_id_efe80738 ON remapp_ctirradiationeventdata_standard_protocols (ctirradiationeventdata_id);
CREATE INDEX remapp_ctirradiationeventd_standardnames_id_2f0afdd2 ON remapp_ctirradiationeventdata_standard_protocols (standardnames_id);

ALTER TABLE remapp_ctaccumulateddosedata ADD CONSTRAINT remapp_ctaccumulated_ct_radiation_dose_id_989070e3_fk_remapp_ct
    FOREIGN KEY (ct_radiation_dose_id) REFERENCES remapp_ctradiationdose(id) DEFERRABLE INITIALLY DEFERRED;
ALTER TABLE remapp_ctaccumulateddosedata ADD CONSTRAINT remapp_ctaccumulated_measurement_method_i_76874544_fk_remapp_co
    FOREIGN KEY (measurement_method_id) REFERENCES remapp_contextid(id) DEFERRABLE INITIALLY DEFERRED;
ALTER TABLE remapp_ctaccumulateddosedata ADD CONSTRAINT remapp_ctaccumulated_reference_authority__bbc5dbe1_fk_remapp_co
    FOREIGN KEY (reference_authority_code_id) REFERENCES remapp_contextid(id) DEFERRABLE INITIALLY DEFERRED;
ALTER TABLE remapp_ctdosecheckdetails ADD CONSTRAINT remapp_ctdosecheckde_ct_irradiation_event_178e316c_fk_remapp_ct
    FOREIGN KEY (ct_irradiation_event_data_id) REFERENCES remapp_ctirradiationeventdata(id) DEFERRABLE INITIALLY DEFERRED;
ALTER TABLE remapp_personparticipant ADD CONSTRAINT remapp_personparticipant_alert_fk
    FOREIGN KEY (ct_dose_check_details_alert_id) REFERENCES remapp_ctdosecheckdetails(id) DEFERRABLE INITIALLY DEFERRED;
ALTER TABLE remapp_personparticipant ADD CONSTRAINT remapp_personparticipant_notification_fk
    FOREIGN KEY (ct_dose_check_details_notification_id) REFERENCES remapp_ctdosecheckdetails(id) DEFERRABLE INITIALLY DEFERRED;
ALTER TABLE remapp_ctirradiationeventdata ADD CONSTRAINT remapp_ctirradiation_ct_acquisition_type__a5ea952c_fk_remapp_co
    FOREIGN KEY (ct_acquisition_type_id) REFERENCES remapp_contextid(id) DEFERRABLE INITIALLY DEFERRED;
ALTER TABLE remapp_ctirradiationeventdata ADD CONSTRAINT remapp_ctirradiation_ct_radiation_dose_id_fd71dfdf_fk_remapp_ct
    FOREIGN KEY (ct_radiation_dose_id) REFERENCES remapp_ctradiationdose(id) DEFERRABLE INITIALLY DEFERRED;
ALTER TABLE remapp_ctirradiationeventdata ADD CONSTRAINT remapp_ctirradiation_ctdiw_phantom_type_i_d118c467_fk_remapp_co
    FOREIGN KEY (ctdiw_phantom_type_id) REFERENCES remapp_contextid(id) DEFERRABLE INITIALLY DEFERRED;
ALTER TABLE remapp_ctirradiationeventdata_standard_protocols ADD CONSTRAINT remapp_ctirradiation_ctirradiationeventda_efe80738_fk_remapp_ct
    FOREIGN KEY (ctirradiationeventdata_id) REFERENCES remapp_ctirradiationeventdata(id) DEFERRABLE INITIALLY DEFERRED;
ALTER TABLE remapp_ctirradiationeventdata ADD CONSTRAINT remapp_ctirradiation_label_type_id_5ce737e5_fk_remapp_co
    FOREIGN KEY (label_type_id) REFERENCES remapp_contextid(id) DEFERRABLE INITIALLY DEFERRED;
ALTER TABLE remapp_ctirradiationeventdata ADD CONSTRAINT remapp_ctirradiation_measurement_method_i_46f8a8b7_fk_remapp_co
    FOREIGN KEY (measurement_method_id) REFERENCES remapp_contextid(id) DEFERRABLE INITIALLY DEFERRED;
ALTER TABLE remapp_ctirradiationeventdata ADD CONSTRAINT remapp_ctirradiation_procedure_context_id_1ddfcb96_fk_remapp_co
    FOREIGN KEY (procedure_context_id) REFERENCES remapp_contextid(id) DEFERRABLE INITIALLY DEFERRED;
ALTER TABLE remapp_ctirradiationeventdata_standard_protocols ADD CONSTRAINT remapp_ctirradiation_standardnames_id_2f0afdd2_fk_remapp_st
    FOREIGN KEY (standardnames_id) REFERENCES remapp_standardnames(id) DEFERRABLE INITIALLY DEFERRED;
ALTER TABLE remapp_ctirradiationeventdata ADD CONSTRAINT remapp_ctirradiation_target_region_id_69118cc7_fk_remapp_co
    FOREIGN KEY (target_region_id) REFERENCES remapp_contextid(id) DEFERRABLE INITIALLY DEFERRED;
ALTER TABLE remapp_ctradiationdose ADD CONSTRAINT remapp_ctradiationdo_general_study_module_254fa264_fk_remapp_ge
    FOREIGN KEY (general_study_module_attributes_id) REFERENCES remapp_generalstudymoduleattr(id) DEFERRABLE INITIALLY DEFERRED;
ALTER TABLE remapp_ctradiationdose ADD CONSTRAINT remapp_ctradiationdo_has_intent_id_2ceae466_fk_remapp_co
    FOREIGN KEY (has_intent_id) REFERENCES remapp_contextid(id) DEFERRABLE INITIALLY DEFERRED;
ALTER TABLE remapp_ctradiationdose ADD CONSTRAINT remapp_ctradiationdo_procedure_reported_i_3a6510c5_fk_remapp_co
    FOREIGN KEY (procedure_reported_id) REFERENCES remapp_contextid(id) DEFERRABLE INITIALLY DEFERRED;
ALTER TABLE remapp_ctradiationdose ADD CONSTRAINT remapp_ctradiationdo_scope_of_accumulatio_aa31ecf9_fk_remapp_co
    FOREIGN KEY (scope_of_accumulation_id) REFERENCES remapp_contextid(id) DEFERRABLE INITIALLY DEFERRED;
ALTER TABLE remapp_ctradiationdose ADD CONSTRAINT remapp_ctradiationdo_source_of_dose_infor_c1341ae7_fk_remapp_co
    FOREIGN KEY (source_of_dose_information_id) REFERENCES remapp_contextid(id) DEFERRABLE INITIALLY DEFERRED;
ALTER TABLE remapp_ctradiationdose ADD CONSTRAINT remapp_ctradiationdo_uid_type_id_b3c45f27_fk_remapp_co
    FOREIGN KEY (uid_type_id) REFERENCES remapp_contextid(id) DEFERRABLE INITIALLY DEFERRED;
ALTER TABLE remapp_generalequipmentmoduleattr ADD CONSTRAINT remapp_generalequipm_general_study_module_227d66fd_fk_remapp_ge
    FOREIGN KEY (general_study_module_attributes_id) REFERENCES remapp_generalstudymoduleattr(id) DEFERRABLE INITIALLY DEFERRED;
ALTER TABLE remapp_generalequipmentmoduleattr ADD CONSTRAINT remapp_generalequipm_unique_equipment_nam_afd38b7c_fk_remapp_un
    FOREIGN KEY (unique_equipment_name_id) REFERENCES remapp_uniqueequipmentnames(id) DEFERRABLE INITIALLY DEFERRED;
ALTER TABLE remapp_generalstudymoduleattr_standard_names ADD CONSTRAINT remapp_generalstudym_generalstudymoduleat_e7c24cf5_fk_remapp_ge
    FOREIGN KEY (generalstudymoduleattr_id) REFERENCES remapp_generalstudymoduleattr(id) DEFERRABLE INITIALLY DEFERRED;
ALTER TABLE remapp_generalstudymoduleattr_standard_names ADD CONSTRAINT remapp_generalstudym_standardnames_id_113064ac_fk_remapp_st
    FOREIGN KEY (standardnames_id) REFERENCES remapp_standardnames(id) DEFERRABLE INITIALLY DEFERRED;
ALTER TABLE remapp_objectuidsprocessed ADD CONSTRAINT remapp_objectuidspro_general_study_module_16ebfae9_fk_remapp_ge
    FOREIGN KEY (general_study_module_attributes_id) REFERENCES remapp_generalstudymoduleattr(id) DEFERRABLE INITIALLY DEFERRED;
ALTER TABLE remapp_patientmoduleattr ADD CONSTRAINT remapp_patientmodule_general_study_module_18d9fa52_fk_remapp_ge
    FOREIGN KEY (general_study_module_attributes_id) REFERENCES remapp_generalstudymoduleattr(id) DEFERRABLE INITIALLY DEFERRED;
ALTER TABLE remapp_patientstudymoduleattr ADD CONSTRAINT remapp_patientstudym_general_study_module_732f777d_fk_remapp_ge
    FOREIGN KEY (general_study_module_attributes_id) REFERENCES remapp_generalstudymoduleattr(id) DEFERRABLE INITIALLY DEFERRED;
