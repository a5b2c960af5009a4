"""The OpenREM schema subset and import simulator are faithful to OpenREM 1.0 (see tests/data/openrem)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import Engine, create_engine, func, select, text

from ctpoller.demo import openrem
from ctpoller.demo.exams import (
    CONTINUED_1,
    CONTINUED_2,
    GE_VCT,
    MULTI_SERIES,
    PHILIPS_SC,
    SEED_STUDIES,
    TOSHIBA_DOSECHECK,
)
from ctpoller.demo.openrem import OpenremImporter
from support import pg

SUBSET_TABLES = sorted(openrem.METADATA.tables)
#: Subset tables that OpenREM's reference dump (schema_ct.sql) does not hold: only the columns ctpoller
#: reads, as the notes on OpenREM's data name them. Named one by one, so no other table escapes the check.
NOT_IN_REFERENCE = ("remapp_personparticipant",)
REFERENCE_TABLES = [table for table in SUBSET_TABLES if table not in NOT_IN_REFERENCE]
OPENREM_SCHEMA = pg.OPENREM_DATA / "schema_ct.sql"

postgres = pytest.mark.postgres


@pytest.fixture
def source(openrem_db: str) -> Iterator[Engine]:
    engine = create_engine(openrem_db)
    yield engine
    engine.dispose()


def _columns(url: str, tables: list[str] = SUBSET_TABLES) -> list[tuple[Any, ...]]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT table_name, ordinal_position, column_name, data_type,"
                    " character_maximum_length, numeric_precision, numeric_scale, is_nullable,"
                    " column_default"
                    " FROM information_schema.columns"
                    " WHERE table_schema = 'public' AND table_name = ANY(:tables)"
                    " ORDER BY table_name, ordinal_position"
                ),
                {"tables": tables},
            )
            return [tuple(row) for row in rows]
    finally:
        engine.dispose()


def _indexes_and_foreign_keys(url: str, tables: list[str] = SUBSET_TABLES) -> tuple[list[str], list[str]]:
    """Index and FK definitions with their names left out (real sites name them differently)."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            indexes = conn.execute(
                text(
                    "SELECT tablename || ': ' || regexp_replace(indexdef, '^.* ON ', '')"
                    " FROM pg_indexes WHERE schemaname = 'public' AND tablename = ANY(:tables)"
                ),
                {"tables": tables},
            ).scalars()
            fks = conn.execute(
                text(
                    "SELECT conrelid::regclass::text || ': ' || pg_get_constraintdef(oid)"
                    " FROM pg_constraint WHERE contype = 'f'"
                    " AND conrelid::regclass::text = ANY(:tables)"
                ),
                {"tables": tables},
            ).scalars()
            return sorted(i.replace("public.", "") for i in indexes), sorted(f.replace("public.", "") for f in fks)
    finally:
        engine.dispose()


def _count(conn: Any, table: str, where: str = "true", **params: Any) -> int:
    return int(conn.execute(text(f"SELECT count(*) FROM {table} WHERE {where}"), params).scalar_one())


# --- the SQL subset ------------------------------------------------------------------------------


@postgres
def test_subset_sql_has_the_same_columns_types_and_nullability_as_openrem(
    openrem_db: str, pg_server: pg.PgServer
) -> None:
    with pg.throwaway_database(pg_server, "ctp_ref_") as reference:
        with psycopg.connect(pg.libpq_url(reference), autocommit=True) as conn:
            conn.execute(OPENREM_SCHEMA.read_text(encoding="utf-8"))  # type: ignore[arg-type]
        expected = _columns(reference, REFERENCE_TABLES)
        expected_indexes, expected_fks = _indexes_and_foreign_keys(reference, REFERENCE_TABLES)
        assert not _columns(reference, list(NOT_IN_REFERENCE))  # else compare them too
    assert len({row[0] for row in expected}) == len(REFERENCE_TABLES)
    assert _columns(openrem_db, REFERENCE_TABLES) == expected
    indexes, fks = _indexes_and_foreign_keys(openrem_db, REFERENCE_TABLES)
    assert fks == expected_fks
    assert indexes == expected_indexes


@postgres
def test_subset_sql_has_no_index_on_study_instance_uid_and_deferred_fks_without_on_delete(
    source: Engine,
) -> None:
    with source.connect() as conn:
        study_indexes = conn.execute(
            text("SELECT indexdef FROM pg_indexes WHERE tablename = 'remapp_generalstudymoduleattr'")
        ).scalars()
        assert not [i for i in study_indexes if "study_instance_uid" in i]
        fks = conn.execute(
            text("SELECT condeferrable, condeferred, confdeltype FROM pg_constraint WHERE contype = 'f'")
        ).all()
        assert fks
        assert set(fks) == {(True, True, "a")}  # 'a' = NO ACTION
        identity = conn.execute(
            text("SELECT count(*) FROM information_schema.columns WHERE is_identity = 'YES'")
        ).scalar_one()
        assert identity == 0


@postgres
def test_subset_sql_loads_with_psql_on_error_stop(pg_server: pg.PgServer) -> None:
    psql = shutil.which("psql")
    if psql is None:
        pytest.skip("psql is not installed")
    with pg.throwaway_database(pg_server, "ctp_psql_") as url:
        subprocess.run(
            [psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", pg.libpq_url(url), "-f", str(pg.SUBSET_SQL)],
            check=True,
            capture_output=True,
            timeout=60,
        )
        assert len({row[0] for row in _columns(url)}) == len(SUBSET_TABLES)


def test_subset_sql_statements_split_cleanly_at_line_end_semicolons() -> None:
    statements = pg.split_sql(pg.SUBSET_SQL.read_text(encoding="utf-8"))
    assert statements
    assert not [s for s in statements if ";" in s]
    assert not [s for s in statements if s.lstrip().startswith("\\")]
    assert "public." not in pg.SUBSET_SQL.read_text(encoding="utf-8")
    assert {s.split()[2] for s in statements if s.startswith("CREATE TABLE")} == set(SUBSET_TABLES)


@postgres
def test_sqlalchemy_metadata_creates_the_same_columns_as_the_subset_sql(
    openrem_db: str, pg_server: pg.PgServer
) -> None:
    with pg.throwaway_database(pg_server, "ctp_meta_") as url:
        engine = create_engine(url)
        try:
            openrem.create_schema(engine)
        finally:
            engine.dispose()
        assert _columns(url) == _columns(openrem_db)


# --- the import simulator ------------------------------------------------------------------------


def _study_state(conn: Any, pk: int) -> dict[str, Any]:
    row = conn.execute(
        text("SELECT modality_type, total_dlp, study_instance_uid FROM remapp_generalstudymoduleattr WHERE id = :pk"),
        {"pk": pk},
    ).one_or_none()
    done_events = _count(
        conn,
        "remapp_ctirradiationeventdata e JOIN remapp_ctradiationdose r ON r.id = e.ct_radiation_dose_id",
        "r.general_study_module_attributes_id = :pk AND e.ct_acquisition_type_id IS NOT NULL",
        pk=pk,
    )
    patients = _count(conn, "remapp_patientmoduleattr", "general_study_module_attributes_id = :pk", pk=pk)
    sex = conn.execute(
        text("SELECT patient_sex FROM remapp_patientmoduleattr WHERE general_study_module_attributes_id = :pk"),
        {"pk": pk},
    ).scalar_one_or_none()
    return {
        "exists": row is not None,
        "modality": row[0] if row else None,
        "total_dlp": row[1] if row else None,
        "uid": row[2] if row else None,
        "done_events": done_events,
        "patients": patients,
        "sex": sex,
    }


@postgres
def test_import_steps_make_the_empty_study_row_visible_first(source: Engine) -> None:
    importer = OpenremImporter(source)
    steps = importer.import_steps(TOSHIBA_DOSECHECK)
    label = next(steps)
    assert label.startswith("INSERT remapp_generalstudymoduleattr")
    pk = importer.last_study_pk
    assert pk is not None
    with source.connect() as conn:
        state = _study_state(conn, pk)
    assert state == {
        "exists": True,
        "modality": None,
        "total_dlp": None,
        "uid": None,
        "done_events": 0,
        "patients": 0,
        "sex": None,
    }
    for _ in steps:
        pass
    assert importer.last_study_pk == pk


@postgres
def test_import_steps_write_modality_after_all_events_and_the_patient_last(source: Engine) -> None:
    importer = OpenremImporter(source)
    states: list[tuple[str, dict[str, Any]]] = []
    for label in importer.import_steps(GE_VCT):
        assert importer.last_study_pk is not None
        with source.connect() as conn:
            states.append((label, _study_state(conn, importer.last_study_pk)))

    n_events = len(GE_VCT.events)
    first_ct = next(i for i, (_, s) in enumerate(states) if s["modality"] == "CT")
    assert all(s["done_events"] == n_events for _, s in states[first_ct:])
    assert states[first_ct - 1][0].startswith("UPDATE remapp_ctirradiationeventdata")  # the last event
    assert states[first_ct - 1][1]["done_events"] == n_events
    first_patient = next(i for i, (_, s) in enumerate(states) if s["patients"])
    assert first_patient > first_ct
    assert states[first_patient - 1][1]["total_dlp"] == GE_VCT.total_dlp  # total_dlp before the patient rows
    assert states[-1][0].startswith("UPDATE remapp_patientmoduleattr")  # the last data write
    assert states[-1][1]["sex"] == GE_VCT.patient_sex
    assert all(s["sex"] is None for _, s in states[:-1])
    assert len(states) > 2 * n_events + 15  # one write per step, not a few big transactions


@postgres
def test_philips_sc_style_import_writes_modality_first_and_records_no_sop_uid(source: Engine) -> None:
    importer = OpenremImporter(source)
    steps = importer.import_steps(PHILIPS_SC)
    next(steps)
    assert importer.last_study_pk is not None
    pk = importer.last_study_pk
    with source.connect() as conn:
        assert _study_state(conn, pk)["modality"] == "CT"
    for _ in steps:
        pass
    with source.connect() as conn:
        assert _count(conn, "remapp_objectuidsprocessed") == 0
        surview = conn.execute(
            text("SELECT mean_ctdivol, dlp, ctdiw_phantom_type_id FROM remapp_ctirradiationeventdata ORDER BY id")
        ).first()
    assert surview is not None
    assert tuple(surview) == (0, 0, None)


@postgres
def test_import_study_stores_what_openrem_stores(source: Engine) -> None:
    importer = OpenremImporter(source)
    pks = [importer.import_study(study) for study in SEED_STUDIES]
    assert pks == sorted(pks)
    with source.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT g.id, g.study_instance_uid, g.total_dlp, g.number_of_events, g.number_of_axial,"
                " g.number_of_spiral, g.number_of_stationary, g.number_of_const_angle, g.accession_hashed,"
                " a.ct_dose_length_product_total, u.display_name"
                " FROM remapp_generalstudymoduleattr g"
                " JOIN remapp_ctradiationdose r ON r.general_study_module_attributes_id = g.id"
                " JOIN remapp_ctaccumulateddosedata a ON a.ct_radiation_dose_id = r.id"
                " JOIN remapp_generalequipmentmoduleattr q ON q.general_study_module_attributes_id = g.id"
                " JOIN remapp_uniqueequipmentnames u ON u.id = q.unique_equipment_name_id"
                " ORDER BY g.id"
            )
        ).all()
        vct = rows[SEED_STUDIES.index(GE_VCT)]
        assert vct.number_of_events == 27
        assert (vct.number_of_axial, vct.number_of_spiral, vct.number_of_stationary) == (5, 2, 4)
        assert vct.number_of_const_angle == 16
        assert [r.total_dlp for r in rows] == [s.total_dlp for s in SEED_STUDIES]
        assert [r.ct_dose_length_product_total for r in rows] == [s.total_dlp for s in SEED_STUDIES]
        assert [r.display_name for r in rows] == [s.display_name for s in SEED_STUDIES]
        assert not any(r.accession_hashed for r in rows)
        assert rows[0].study_instance_uid == rows[1].study_instance_uid  # Continued-1 and -2
        codes = conn.execute(text("SELECT code_value, count(*) FROM remapp_contextid GROUP BY 1")).all()
        assert {count for _, count in codes} == {1}
        assert _count(conn, "remapp_ctdosecheckdetails") == sum(
            e.dose_check is not None for s in SEED_STUDIES for e in s.events
        )
        assert _count(conn, "remapp_ctirradiationeventdata") == sum(len(s.events) for s in SEED_STUDIES)
        assert _count(conn, "remapp_ctirradiationeventdata", "mean_ctdivol IS NULL") == sum(
            e.ctdivol is None for s in SEED_STUDIES for e in s.events
        )
        assert _count(conn, "remapp_uniqueequipmentnames") == len({s.display_name for s in SEED_STUDIES})


@postgres
def test_acquisition_types_are_matched_on_code_value_never_on_id(source: Engine) -> None:
    with source.begin() as conn:  # another installation saw other codes first, with another meaning
        conn.execute(
            text(
                "INSERT INTO remapp_contextid (code_value, code_meaning, cid_table) VALUES"
                " ('T-D3000', 'Chest', ''), ('P5-08001', 'Spiral Acquisition (site wording)', '')"
            )
        )
    OpenremImporter(source).import_study(CONTINUED_1)
    with source.connect() as conn:
        types = conn.execute(
            text(
                "SELECT c.code_value, c.code_meaning FROM remapp_ctirradiationeventdata e"
                " JOIN remapp_contextid c ON c.id = e.ct_acquisition_type_id ORDER BY e.id"
            )
        ).all()
    assert [tuple(t) for t in types] == [
        ("113805", "Constant Angle Acquisition"),
        ("P5-08001", "Spiral Acquisition (site wording)"),
    ]


@postgres
def test_an_edited_display_name_survives_a_new_import_of_the_same_device(source: Engine) -> None:
    importer = OpenremImporter(source)
    importer.import_study(CONTINUED_1)
    with source.begin() as conn:
        conn.execute(text("UPDATE remapp_uniqueequipmentnames SET display_name = 'CT 1 (edited)'"))
    importer.import_study(CONTINUED_2)
    with source.connect() as conn:
        names = conn.execute(
            text(
                "SELECT u.display_name FROM remapp_generalequipmentmoduleattr q"
                " JOIN remapp_uniqueequipmentnames u ON u.id = q.unique_equipment_name_id ORDER BY q.id"
            )
        ).scalars()
        assert list(names) == ["CT 1 (edited)", "CT 1 (edited)"]


CHILD_TABLES = {
    "remapp_objectuidsprocessed": "general_study_module_attributes_id",
    "remapp_generalequipmentmoduleattr": "general_study_module_attributes_id",
    "remapp_patientstudymoduleattr": "general_study_module_attributes_id",
    "remapp_patientmoduleattr": "general_study_module_attributes_id",
    "remapp_ctradiationdose": "general_study_module_attributes_id",
    "remapp_generalstudymoduleattr_standard_names": "generalstudymoduleattr_id",
}
ORPHANS = {
    "remapp_ctaccumulateddosedata": "ct_radiation_dose_id NOT IN (SELECT id FROM remapp_ctradiationdose)",
    "remapp_ctirradiationeventdata": "ct_radiation_dose_id NOT IN (SELECT id FROM remapp_ctradiationdose)",
    "remapp_ctdosecheckdetails": ("ct_irradiation_event_data_id NOT IN (SELECT id FROM remapp_ctirradiationeventdata)"),
    "remapp_ctirradiationeventdata_standard_protocols": (
        "ctirradiationeventdata_id NOT IN (SELECT id FROM remapp_ctirradiationeventdata)"
    ),
}


def _assert_gone_without_orphans(conn: Any, pk: int) -> None:
    assert _count(conn, "remapp_generalstudymoduleattr", "id = :pk", pk=pk) == 0
    for table, column in CHILD_TABLES.items():
        assert _count(conn, table, f"{column} = :pk", pk=pk) == 0, table
    for table, orphan in ORPHANS.items():
        assert _count(conn, table, orphan) == 0, table


@postgres
def test_cumulative_resend_replaces_the_study_under_a_higher_pk(source: Engine) -> None:
    multi_1, multi_2, multi_3 = MULTI_SERIES
    importer = OpenremImporter(source)
    first = importer.import_study(replace(multi_1, study_standard_names=("CT Chest",)))
    second = importer.resend_cumulative(first, multi_2)
    third = importer.resend_cumulative(second, multi_3)
    assert first < second < third
    with source.connect() as conn:
        for old in (first, second):
            _assert_gone_without_orphans(conn, old)
        uids = conn.execute(text("SELECT study_instance_uid FROM remapp_generalstudymoduleattr")).scalars()
        assert list(uids) == [multi_3.uid]
        sops = conn.execute(
            text(
                "SELECT sop_instance_uid FROM remapp_objectuidsprocessed"
                " WHERE general_study_module_attributes_id = :pk ORDER BY id"
            ),
            {"pk": third},
        ).scalars()
        assert list(sops) == [s.sop_instance_uid for s in MULTI_SERIES]
        event_uids = conn.execute(
            text("SELECT irradiation_event_uid FROM remapp_ctirradiationeventdata ORDER BY id")
        ).scalars()
        assert list(event_uids) == [e.uid for e in multi_3.events]
        assert _count(conn, "remapp_uniqueequipmentnames") == 1  # never deleted with the study
        assert _count(conn, "remapp_standardnames") == 1


@postgres
def test_resend_steps_delete_in_one_step_then_reimport_from_an_empty_row(source: Engine) -> None:
    multi_1, multi_2, _ = MULTI_SERIES
    importer = OpenremImporter(source)
    old = importer.import_study(multi_1)
    steps = importer.resend_steps(old, multi_2)
    assert next(steps).startswith("DELETE remapp_generalstudymoduleattr")
    with source.connect() as conn:  # the window: the old study is gone, the new one not there yet
        _assert_gone_without_orphans(conn, old)
        assert _count(conn, "remapp_generalstudymoduleattr") == 0
    next(steps)
    new = importer.last_study_pk
    assert new is not None
    assert new > old
    with source.connect() as conn:
        assert _study_state(conn, new)["uid"] is None
    for _ in steps:
        pass
    with source.connect() as conn:
        assert _study_state(conn, new)["uid"] == multi_2.uid


@postgres
def test_delete_study_refuses_an_unknown_pk(source: Engine) -> None:
    with pytest.raises(LookupError):
        OpenremImporter(source).delete_study(12345)


@postgres
def test_standard_names_are_linked_after_the_patient(source: Engine) -> None:
    study = replace(CONTINUED_1, study_standard_names=("CT Chest",), event_standard_names={1: ("Chest helical",)})
    labels = list(OpenremImporter(source).import_steps(study))
    patient = next(i for i, label in enumerate(labels) if label.startswith("UPDATE remapp_patientmoduleattr"))
    assert [label.split()[1] for label in labels[patient + 1 :]] == [
        "remapp_standardnames",
        "remapp_generalstudymoduleattr_standard_names",
        "remapp_standardnames",
        "remapp_ctirradiationeventdata_standard_protocols",
    ]
    with source.connect() as conn:
        protocol = conn.execute(
            text(
                "SELECT e.acquisition_protocol FROM remapp_ctirradiationeventdata_standard_protocols l"
                " JOIN remapp_ctirradiationeventdata e ON e.id = l.ctirradiationeventdata_id"
            )
        ).scalar_one()
    assert protocol == "Thorax"


# --- SQLite (ctpoller demo) ----------------------------------------------------------------------


def test_the_simulator_works_on_sqlite_and_never_reuses_a_deleted_pk(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'x.sqlite3'}")
    try:
        openrem.create_schema(engine)
        openrem.create_schema(engine)  # idempotent
        importer = OpenremImporter(engine)
        for study in (CONTINUED_1, CONTINUED_2, PHILIPS_SC, TOSHIBA_DOSECHECK):
            importer.import_study(study)
        first = importer.import_study(MULTI_SERIES[0])
        second = importer.resend_cumulative(first, MULTI_SERIES[1])
        importer.delete_study(second)
        third = importer.import_study(MULTI_SERIES[2])
        assert first < second < third
        with engine.connect() as conn:
            assert conn.execute(select(func.count()).select_from(openrem.STUDY)).scalar_one() == 5
            assert conn.execute(select(func.max(openrem.STUDY.c.id))).scalar_one() == third
            _assert_gone_without_orphans(conn, second)
            total = conn.execute(select(openrem.STUDY.c.total_dlp).where(openrem.STUDY.c.id == third)).scalar_one()
            assert total == MULTI_SERIES[2].total_dlp
    finally:
        engine.dispose()
