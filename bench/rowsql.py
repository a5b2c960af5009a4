"""The SQL that writes the rows: the shared lookup rows, the work tables of the shapes, and one
set-based ``INSERT ... SELECT`` per OpenREM table.

Every "random" value is ``pg_temp.u``/``pg_temp.z`` (database.session) of a row number and the seed,
so the same parameters always give the same rows. generate.py runs these statements.
"""

from __future__ import annotations

from typing import Any

import psycopg

from bench.shapes import CONTEXT_CODES, EXAM_TYPES, STATIONS


def lookups(conn: psycopg.Connection[Any]) -> None:
    """The rows every study shares: context ids (by code value) and one equipment name per station."""
    with conn.cursor() as cur:
        for code, meaning, table in CONTEXT_CODES:
            cur.execute(
                "INSERT INTO remapp_contextid (code_value, code_meaning, cid_table) "
                "SELECT %s, %s, %s WHERE NOT EXISTS (SELECT 1 FROM remapp_contextid WHERE code_value = %s)",
                (code, meaning, table, code),
            )
        for s in STATIONS:
            fields = {
                "manufacturer": s.manufacturer,
                "institution_name": s.institution,
                "station_name": s.station_name,
                "institutional_department_name": "Radiology",
                "manufacturer_model_name": s.model,
                "device_serial_number": s.serial,
                "software_versions": s.software,
            }
            hashes = {f"{k}_hash": f"encode(sha256(convert_to({_lit(v)}, 'UTF8')), 'hex')" for k, v in fields.items()}
            columns = [*fields, *hashes, "display_name", "hash_generated"]
            values = [_lit(v) for v in fields.values()] + list(hashes.values())
            values += [_lit(f"{s.institution} {s.station_name}"), "true"]
            cur.execute(
                f"INSERT INTO remapp_uniqueequipmentnames ({', '.join(columns)}) "
                f"SELECT {', '.join(values)} WHERE NOT EXISTS "
                f"(SELECT 1 FROM remapp_uniqueequipmentnames WHERE station_name = {_lit(s.station_name)})"
            )
    conn.commit()


def _lit(value: object) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return "'" + str(value).replace("'", "''") + "'"


def shape_tables(conn: psycopg.Connection[Any]) -> None:
    """Unlogged work tables with the exam types and stations, ids resolved; generate._fill drops them."""
    ctx = dict(conn.execute("SELECT code_value, min(id) FROM remapp_contextid GROUP BY code_value").fetchall())
    names = dict(
        conn.execute("SELECT station_name, min(id) FROM remapp_uniqueequipmentnames GROUP BY station_name").fetchall()
    )
    phantom = {"head": ctx["113690"], "body": ctx["113691"]}
    types = []
    for i, t in enumerate(EXAM_TYPES, start=1):
        row = (
            i,
            t.description,
            t.protocol,
            t.requested,
            t.phantom,
            phantom[t.phantom],
            t.ctdivol_median,
            t.ctdivol_sigma,
            t.length_cm,
            t.paediatric,
            ctx[t.acquisition],
            ctx[t.region],
        )
        types.append("(" + ", ".join(_lit(v) for v in row) + ")")
    stations = []
    for i, s in enumerate(STATIONS, start=1):
        row = (
            i,
            s.manufacturer,
            s.model,
            s.institution,
            s.station_name,
            s.software,
            s.serial,
            s.localiser_protocol,
            s.localiser_ctdivol,
            s.no_protocol,
            s.dose_check,
            s.modulation,
            s.uid_root,
            names[s.station_name],
        )
        stations.append("(" + ", ".join(_lit(v) for v in row) + ")")
    conn.execute("DROP TABLE IF EXISTS _bench_type, _bench_station, _bench_bucket")
    conn.execute(
        "CREATE UNLOGGED TABLE _bench_type (tid int PRIMARY KEY, description text, protocol text, requested text, "
        "phantom text, phantom_id int, ctdi_med float8, ctdi_sigma float8, length_cm float8, paed bool, acq_id int, "
        "region_id int)"
    )
    conn.execute("INSERT INTO _bench_type VALUES " + ", ".join(types))  # type: ignore[arg-type]
    conn.execute(
        "CREATE UNLOGGED TABLE _bench_station (sid int PRIMARY KEY, manufacturer text, model text, institution text, "
        "station_name text, software text, serial text, loc_protocol text, loc_ctdi float8, no_protocol float8, "
        "dose_check text, modulation text, uid_root text, uen_id int)"
    )
    conn.execute("INSERT INTO _bench_station VALUES " + ", ".join(stations))  # type: ignore[arg-type]
    # 1000 buckets per draw: a uniform number picks an exam type / a station by its weight.
    conn.execute("CREATE UNLOGGED TABLE _bench_bucket (kind text, b int, id int, PRIMARY KEY (kind, b))")
    for kind, weights in (("type", [t.weight for t in EXAM_TYPES]), ("station", [s.weight for s in STATIONS])):
        total, edges, acc = sum(weights), [], 0.0
        for w in weights:
            acc += w
            edges.append(acc / total * 1000)
        rows, j = [], 0
        for b in range(1000):
            while b + 0.5 > edges[j]:
                j += 1
            rows.append(f"('{kind}', {b}, {j + 1})")
        conn.execute("INSERT INTO _bench_bucket VALUES " + ", ".join(rows))  # type: ignore[arg-type]


PLAN = """
CREATE UNLOGGED TABLE _bench_plan AS
WITH s AS (
    SELECT i::bigint AS id,
           (i > %(first)s AND pg_temp.u(%(g)s + 5, i) < %(cont)s AND pg_temp.u(%(g)s + 5, i - 1) >= %(cont)s) AS cont
    FROM generate_series(%(first)s::bigint, %(last)s::bigint) AS i
), e AS (
    SELECT id, cont, CASE WHEN cont THEN id - 1 ELSE id END AS eid FROM s
), p AS (
    SELECT e.id, e.eid, e.cont, tb.id AS tid, sb.id AS sid,
           CASE WHEN e.cont THEN 0 ELSE 1 + (pg_temp.u(%(g)s + 3, e.id) < 0.5)::int END AS n_loc,
           CASE WHEN pg_temp.u(%(g)s + 4, e.id) < 0.40 THEN 1
                WHEN pg_temp.u(%(g)s + 4, e.id) < 0.70 THEN 2
                WHEN pg_temp.u(%(g)s + 4, e.id) < 0.85 THEN 3
                WHEN pg_temp.u(%(g)s + 4, e.id) < 0.95 THEN 4
                ELSE 6 END AS n_scan
    FROM e
    JOIN _bench_bucket tb ON tb.kind = 'type' AND tb.b = floor(pg_temp.u(%(g)s + 1, e.eid) * 1000)::int
    JOIN _bench_bucket sb ON sb.kind = 'station' AND sb.b = floor(pg_temp.u(%(g)s + 2, e.eid) * 1000)::int
)
SELECT p.id, p.eid, p.cont, p.tid, p.sid, p.n_loc, p.n_scan, p.n_loc + p.n_scan AS n_ev,
       %(ev_base)s + sum(p.n_loc + p.n_scan) OVER (ORDER BY p.id) - (p.n_loc + p.n_scan) + 1 AS first_ev,
       CASE WHEN pg_temp.u(%(g)s + 8, p.eid) < 0.03 THEN NULL
            WHEN t.paed THEN 0.1 + 9.8 * pg_temp.u(%(g)s + 6, p.eid)
            ELSE greatest(18.0, least(98.0, 60.0 + 17.0 * pg_temp.z(%(g)s + 7, p.eid))) END AS age,
       %(end_date)s::date - ((%(timeline)s - least(p.eid, %(timeline)s)) / %(per_day)s)::int AS study_date,
       time '07:00' + make_interval(secs => floor(pg_temp.u(%(g)s + 9, p.eid) * 54000)) AS study_time
FROM p JOIN _bench_type t ON t.tid = p.tid
"""

EVENTS = """
INSERT INTO remapp_ctirradiationeventdata (
    id, acquisition_protocol, irradiation_event_uid, exposure_time, nominal_single_collimation_width,
    nominal_total_collimation_width, pitch_factor, number_of_xray_sources, mean_ctdivol, dlp, xray_modulation_type,
    series_description, ct_acquisition_type_id, ct_radiation_dose_id, ctdiw_phantom_type_id, target_region_id)
SELECT v.ev_id,
       v.protocol,
       v.uid_root || '.' || v.eid || '.' || %(seed)s || '.' || v.study_id || '.' || v.k,
       round((CASE WHEN v.loc THEN 2 + 3 * pg_temp.u(%(g)s + 14, v.ev_id)
                   ELSE 1 + 9 * pg_temp.u(%(g)s + 14, v.ev_id) END)::numeric, 2),
       0.6, 38.4,
       CASE WHEN v.acq_id = %(spiral)s THEN round((0.6 + 0.6 * pg_temp.u(%(g)s + 15, v.ev_id))::numeric, 3) END,
       1,
       v.ctdivol,
       CASE WHEN v.ctdivol IS NULL THEN NULL
            WHEN v.loc THEN round(v.ctdivol * (30 + 20 * pg_temp.u(%(g)s + 12, v.ev_id))::numeric, 2)
            ELSE round(v.ctdivol * (v.length_cm * exp(0.2 * pg_temp.z(%(g)s + 12, v.ev_id)))::numeric, 2) END,
       v.modulation,
       coalesce(v.protocol, CASE WHEN v.loc THEN 'Scout' ELSE v.description END) || ' ' || v.k,
       v.acq_id,
       v.study_id + %(off_dose)s,
       v.phantom_id,
       v.region_id
FROM (
    SELECT p.first_ev + k - 1 AS ev_id, p.id AS study_id, p.eid, k, k <= p.n_loc AS loc,
           s.uid_root, s.modulation, t.length_cm, t.description,
           CASE WHEN k <= p.n_loc THEN s.loc_protocol
                WHEN pg_temp.u(%(g)s + 10, p.first_ev + k - 1) < s.no_protocol THEN NULL
                ELSE t.protocol END AS protocol,
           CASE WHEN k <= p.n_loc THEN %(constant_angle)s ELSE t.acq_id END AS acq_id,
           CASE WHEN k > p.n_loc THEN t.phantom_id WHEN coalesce(s.loc_ctdi, 0) > 0 THEN %(body)s END AS phantom_id,
           t.region_id,
           CASE WHEN k <= p.n_loc THEN
                    round((s.loc_ctdi * (0.8 + 0.4 * pg_temp.u(%(g)s + 11, p.first_ev + k - 1)))::numeric, 2)
                ELSE round((t.ctdi_med * exp(t.ctdi_sigma * pg_temp.z(%(g)s + 11, p.first_ev + k - 1)))::numeric, 2)
           END AS ctdivol
    FROM _bench_plan p
    JOIN _bench_type t ON t.tid = p.tid
    JOIN _bench_station s ON s.sid = p.sid
    CROSS JOIN LATERAL generate_series(1, p.n_ev) AS k
) v
"""

DOSE_CHECKS = """
INSERT INTO remapp_ctdosecheckdetails (
    id, dlp_alert_value_configured, ctdivol_alert_value_configured, ctdivol_alert_value,
    dlp_notification_value_configured, ctdivol_notification_value_configured, ctdivol_notification_value,
    ctdivol_forward_estimate, ct_irradiation_event_data_id)
SELECT %(dc_base)s + row_number() OVER (ORDER BY e.id),
       false, true, 1000,
       false, s.dose_check = 'notify',
       CASE WHEN s.dose_check = 'notify' THEN CASE WHEN e.ctdiw_phantom_type_id = %(head)s THEN 80 ELSE 50 END END,
       CASE WHEN s.dose_check = 'notify' THEN least(e.mean_ctdivol, 9999) END,
       e.id
FROM remapp_ctirradiationeventdata e
JOIN _bench_plan p ON p.id = e.ct_radiation_dose_id - %(off_dose)s
JOIN _bench_station s ON s.sid = p.sid
WHERE e.id BETWEEN %(ev_first)s AND %(ev_last)s
  AND s.dose_check IS NOT NULL AND pg_temp.u(%(g)s + 21, e.id) < %(dc_fraction)s
"""

TOTALS = """
CREATE UNLOGGED TABLE _bench_tot AS
SELECT e.ct_radiation_dose_id - %(off_dose)s AS id, round(sum(e.dlp), 2) AS total_dlp, count(*) AS n,
       count(*) FILTER (WHERE e.ct_acquisition_type_id = %(sequenced)s) AS n_axial,
       count(*) FILTER (WHERE e.ct_acquisition_type_id = %(spiral)s) AS n_spiral,
       count(*) FILTER (WHERE e.ct_acquisition_type_id = %(stationary)s) AS n_stationary,
       count(*) FILTER (WHERE e.ct_acquisition_type_id = %(constant_angle)s) AS n_const_angle
FROM remapp_ctirradiationeventdata e
WHERE e.id BETWEEN %(ev_first)s AND %(ev_last)s
GROUP BY 1
"""

STUDIES = """
INSERT INTO remapp_generalstudymoduleattr (
    id, study_instance_uid, study_date, study_time, study_workload_chart_time, study_id, accession_number,
    accession_hashed, study_description, modality_type, requested_procedure_code_meaning, number_of_events,
    number_of_axial, number_of_spiral, number_of_stationary, number_of_const_angle, total_dlp)
SELECT p.id,
       s.uid_root || '.' || p.eid || '.' || %(seed)s,
       p.study_date, p.study_time, timestamptz '1900-01-01 00:00' + p.study_time::interval,
       (p.eid %% 100000)::text,
       CASE WHEN pg_temp.u(%(g)s + 16, p.eid) >= 0.02
            THEN 'A' || lpad(((p.eid * 7919) %% 1000000000)::text, 9, '0') END,
       false, t.description, 'CT',
       CASE WHEN pg_temp.u(%(g)s + 17, p.eid) < 0.3 THEN t.requested END,
       tot.n, tot.n_axial, tot.n_spiral, tot.n_stationary, tot.n_const_angle, tot.total_dlp
FROM _bench_plan p
JOIN _bench_type t ON t.tid = p.tid
JOIN _bench_station s ON s.sid = p.sid
LEFT JOIN _bench_tot tot ON tot.id = p.id
"""

ACCUMULATED = """
INSERT INTO remapp_ctaccumulateddosedata (id, total_number_of_irradiation_events, ct_dose_length_product_total,
                                          ct_radiation_dose_id)
SELECT p.id + %(off_acc)s, tot.n, tot.total_dlp, p.id + %(off_dose)s
FROM _bench_plan p LEFT JOIN _bench_tot tot ON tot.id = p.id
"""

STUDY_CHILDREN = (
    """
INSERT INTO remapp_ctradiationdose (id, start_of_xray_irradiation, general_study_module_attributes_id)
SELECT p.id + %(off_dose)s, (p.study_date + p.study_time)::timestamptz, p.id FROM _bench_plan p
""",
    """
INSERT INTO remapp_generalequipmentmoduleattr (
    id, manufacturer, institution_name, station_name, institutional_department_name, manufacturer_model_name,
    device_serial_number, software_versions, general_study_module_attributes_id, unique_equipment_name_id)
SELECT p.id + %(off_equipment)s, s.manufacturer, s.institution, s.station_name, 'Radiology', s.model, s.serial,
       s.software, p.id, s.uen_id
FROM _bench_plan p JOIN _bench_station s ON s.sid = p.sid
""",
    """
INSERT INTO remapp_patientstudymoduleattr (id, patient_age, patient_age_decimal, patient_weight,
                                           general_study_module_attributes_id)
SELECT p.id + %(off_patient_study)s,
       CASE WHEN p.age IS NULL THEN NULL
            WHEN p.age >= 2 THEN lpad(floor(p.age)::int::text, 3, '0') || 'Y'
            ELSE lpad(floor(p.age * 12)::int::text, 3, '0') || 'M' END,
       round(p.age::numeric, 1),
       CASE WHEN pg_temp.u(%(g)s + 18, p.eid) < 0.3 THEN
            round((CASE WHEN t.paed THEN 4 + 3 * coalesce(p.age, 5)
                        ELSE greatest(40, 78 + 15 * pg_temp.z(%(g)s + 19, p.eid)) END)::numeric, 1) END,
       p.id
FROM _bench_plan p JOIN _bench_type t ON t.tid = p.tid
""",
    """
INSERT INTO remapp_patientmoduleattr (id, name_hashed, id_hashed, patient_sex, general_study_module_attributes_id)
SELECT p.id + %(off_patient)s, false, false,
       CASE WHEN pg_temp.u(%(g)s + 20, p.eid) < 0.49 THEN 'F' WHEN pg_temp.u(%(g)s + 20, p.eid) < 0.985 THEN 'M'
            WHEN pg_temp.u(%(g)s + 20, p.eid) < 0.995 THEN 'O' END,
       p.id
FROM _bench_plan p
""",
)
