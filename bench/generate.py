"""Build an OpenREM-shaped PostgreSQL database of any size, inside PostgreSQL, for the benchmark.

    .venv/bin/python bench/generate.py --size S            # ctp_bench_s: 50,000 studies
    .venv/bin/python bench/generate.py --size L --server postgresql://postgres@127.0.0.1:5432/postgres

The database gets the tables of ``sql/openrem_subset.sql`` (loaded first, unchanged) and is filled with
set-based ``INSERT ... SELECT ... generate_series`` statements: no row passes through Python. Every
"random" value is a hash of a row number and a seed (``hashint8extended``), so a size and a seed
always give the same rows, and the same SQL with an offset appends more exams (``add_exams``).

The shape follows what OpenREM stores (see the OpenREM facts in ../shared/openrem/README.md beside the repository):

* 8 stations of 5 vendors (``remapp_generalequipmentmoduleattr`` + a shared
  ``remapp_uniqueequipmentnames`` row each). GE ESR and some Toshiba reports have no protocol
  (NULL ``acquisition_protocol``); GE/Toshiba localisers have NULL CTDIvol/DLP/phantom, Siemens
  topograms about 0.14 mGy, Philips surviews 0.
* 21 exam types, each with its protocol, phantom, lognormal CTDIvol (median, sigma) and a
  lognormal scan length giving the DLP; 1-2 localisers plus 1-6 scans, about 3.6 events per study.
  About 2 % of exams exceed a limit of ``examples/rules.toml`` (the AAPM values).
* ``remapp_contextid`` rows keyed by code value: acquisition types (113805, P5-08001, 113804,
  113806), phantoms (113690 head, 113691 body), target regions.
* about 0.5 % "continued" reports: a second study row with the same Study Instance UID.
* complete studies: modality ``CT``, patient rows (age, weight, sex; a few unknown ages), totals,
  event counts, ``remapp_ctradiationdose`` + ``remapp_ctaccumulateddosedata``.
* ``remapp_ctdosecheckdetails`` rows for about 5 % of the events of three stations: Siemens-like
  alert values (CTDIvol 1000, never exceeded) and Philips-like notification values (80/50 mGy).
* study dates: 400 studies a day, ending at END_DATE, so 90 days hold about 36,000 studies at any size.

Not generated (ctpoller does not read them): ``remapp_objectuidsprocessed``, standard names, x-ray
source parameters, scanning lengths. Sequences are set past the generated ids; the tables are
VACUUM ANALYZEd at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

REPO = Path(__file__).resolve().parents[1]
SUBSET_SQL = REPO / "sql" / "openrem_subset.sql"
DEFAULT_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"

SIZES = {"S": 50_000, "M": 600_000, "L": 1_500_000}
END_DATE = date(2026, 2, 27)
STUDIES_PER_DAY = 400
CONTINUED_FRACTION = 0.005
DOSE_CHECK_FRACTION = 0.05

STUDY = "remapp_generalstudymoduleattr"
EVENT = "remapp_ctirradiationeventdata"
# Every table the generator fills, children last (the order deletes go in reverse).
FILLED = (
    STUDY,
    "remapp_generalequipmentmoduleattr",
    "remapp_patientstudymoduleattr",
    "remapp_patientmoduleattr",
    "remapp_ctradiationdose",
    "remapp_ctaccumulateddosedata",
    EVENT,
    "remapp_ctdosecheckdetails",
)

# --- the shape --------------------------------------------------------------------------------------

CONTEXT_CODES = (
    # code_value, code_meaning, cid_table
    ("113805", "Constant Angle Acquisition", "CID 10013"),
    ("P5-08001", "Spiral Acquisition", "CID 10013"),
    ("113804", "Sequenced Acquisition", "CID 10013"),
    ("113806", "Stationary Acquisition", "CID 10013"),
    ("113807", "Free Acquisition", "CID 10013"),
    ("113691", "IEC Body Dosimetry Phantom", "CID 4052"),
    ("113690", "IEC Head Dosimetry Phantom", "CID 4052"),
    ("T-D1100", "Head", "CID 4030"),
    ("T-D1600", "Neck", "CID 4030"),
    ("T-D3000", "Chest", "CID 4030"),
    ("T-D4000", "Abdomen", "CID 4030"),
    ("T-D0010", "Entire body", "CID 4030"),
    ("T-32000", "Heart", "CID 4030"),
    ("T-11503", "Lumbar spine", "CID 4030"),
    ("T-D0300", "Extremity", "CID 4030"),
)


@dataclass(frozen=True)
class ExamType:
    description: str
    protocol: str
    requested: str
    phantom: str  # "head" | "body"
    ctdivol_median: float  # mGy
    ctdivol_sigma: float  # of ln(CTDIvol)
    length_cm: float  # median scan length: DLP = CTDIvol x length
    weight: float  # share of exams, %
    paediatric: bool
    acquisition: str  # code value of the scan events' acquisition type
    region: str  # code value of the target region


EXAM_TYPES = (
    ExamType("Head Routine", "Head Routine", "CT Head", "head", 46, 0.25, 16, 16, False, "P5-08001", "T-D1100"),
    ExamType("Head Trauma", "HEAD TRAUMA", "CT Head", "head", 50, 0.25, 18, 4, False, "P5-08001", "T-D1100"),
    ExamType("CT Sinuses", "Sinus Low Dose", "CT Sinuses", "head", 12, 0.35, 10, 2, False, "P5-08001", "T-D1100"),
    ExamType("CT Neck", "Neck +C", "CT Neck", "body", 12, 0.40, 25, 3, False, "P5-08001", "T-D1600"),
    ExamType("CT Chest", "Chest Routine", "CT Chest", "body", 9, 0.45, 35, 14, False, "P5-08001", "T-D3000"),
    ExamType("CT Chest HRCT", "Chest HRCT", "CT Chest", "body", 6, 0.45, 32, 3, False, "113804", "T-D3000"),
    ExamType(
        "CT Chest Low Dose", "Lung Screening LD", "CT Chest", "body", 2.5, 0.45, 35, 3, False, "P5-08001", "T-D3000"
    ),
    ExamType("CT Pulmonary Angiogram", "CTPA", "CTPA", "body", 10, 0.45, 35, 5, False, "P5-08001", "T-D3000"),
    ExamType(
        "CT Abdomen Pelvis", "Abdomen Pelvis +C", "CT Abdomen", "body", 12, 0.45, 45, 16, False, "P5-08001", "T-D4000"
    ),
    ExamType(
        "CT Chest Abdomen Pelvis",
        "Thorax Abd Pelvis",
        "CT Chest abdomen and pelvis",
        "body",
        11,
        0.45,
        35,
        10,
        False,
        "P5-08001",
        "T-D0010",
    ),
    ExamType("CT KUB", "KUB Low Dose", "CT KUB", "body", 4, 0.40, 40, 3, False, "P5-08001", "T-D4000"),
    ExamType("CT Liver", "Liver 3 Phase", "CT Liver", "body", 13, 0.45, 25, 2, False, "P5-08001", "T-D4000"),
    ExamType(
        "CT Coronary Angiogram",
        "Cardiac CTA Retro",
        "CT Coronary",
        "body",
        35,
        0.50,
        14,
        1.5,
        False,
        "P5-08001",
        "T-32000",
    ),
    ExamType(
        "CT Calcium Score", "Calcium Score", "CT Calcium Score", "body", 3, 0.40, 14, 1, False, "113804", "T-32000"
    ),
    ExamType(
        "CT Coronary Prospective",
        "Cardiac Prosp Seq",
        "CT Coronary",
        "body",
        15,
        0.50,
        14,
        1,
        False,
        "113804",
        "T-32000",
    ),
    ExamType(
        "CT Brain Perfusion", "Perfusion Brain", "CT Perfusion", "head", 220, 0.30, 8, 0.5, False, "113806", "T-D1100"
    ),
    ExamType("CT Lumbar Spine", "Spine Lumbar", "CT Spine", "body", 18, 0.40, 20, 3, False, "P5-08001", "T-11503"),
    ExamType("CT Extremity", "Extremity", "CT Extremity", "body", 6, 0.50, 30, 3, False, "P5-08001", "T-D0300"),
    ExamType("Paed Head", "Ped Head", "CT Head paediatric", "head", 25, 0.35, 14, 2.5, True, "P5-08001", "T-D1100"),
    ExamType(
        "Paed Chest Abdomen", "Ped Body", "CT Body paediatric", "body", 4, 0.45, 30, 1.5, True, "P5-08001", "T-D0010"
    ),
    ExamType("CT Angiogram Aorta", "Angio Aorta", "CT Aorta", "body", 12, 0.45, 60, 3, False, "P5-08001", "T-D0010"),
)


@dataclass(frozen=True)
class Station:
    manufacturer: str
    model: str
    institution: str
    station_name: str
    software: str
    serial: str
    weight: float  # share of exams, %
    localiser_protocol: str | None  # None: GE/Toshiba localisers have no protocol
    localiser_ctdivol: float | None  # None: NULL CTDIvol/DLP/phantom on localisers
    no_protocol: float  # share of scan events stored without a protocol (GE ESR, ToshibaPixelMed)
    dose_check: str | None  # "alert" (Siemens-like), "notify" (Philips-like) or None
    modulation: str | None
    uid_root: str


STATIONS = (
    Station(
        "SIEMENS",
        "SOMATOM Definition Flash",
        "General Hospital",
        "CTAWP10001",
        "syngo CT VA48A",
        "73001",
        20,
        "Topogram",
        0.14,
        0.0,
        "alert",
        "XYZ_EC",
        "1.3.12.2.1107.5.1.4.73001",
    ),
    Station(
        "SIEMENS",
        "SOMATOM Force",
        "General Hospital",
        "CTAWP10002",
        "syngo CT VB20A",
        "75002",
        15,
        "Topogram",
        0.14,
        0.0,
        "alert",
        "XYZ_EC",
        "1.3.12.2.1107.5.1.4.75002",
    ),
    Station(
        "GE MEDICAL SYSTEMS",
        "Revolution CT",
        "General Hospital",
        "GECT1",
        "revo_ct_22",
        "GE7001",
        15,
        None,
        None,
        0.8,
        None,
        None,
        "1.2.840.113619.2.55.3.7001",
    ),
    Station(
        "GE MEDICAL SYSTEMS",
        "Optima CT660",
        "Community Hospital",
        "geoptima",
        "gmp_vct.45",
        "GE7002",
        10,
        None,
        None,
        0.8,
        None,
        None,
        "1.2.840.113619.2.55.3.7002",
    ),
    Station(
        "Philips",
        "Brilliance 64",
        "Community Hospital",
        "HOST-12345",
        "4.1.6",
        "PH4001",
        10,
        "Surview",
        0.0,
        0.0,
        "notify",
        "DOM",
        "1.3.46.670589.33.1.4001",
    ),
    Station(
        "TOSHIBA",
        "Aquilion ONE",
        "University Hospital",
        "CTTOSHIBA1",
        "V6.00",
        "TS1001",
        12,
        None,
        None,
        0.5,
        None,
        "SD",
        "1.2.392.200036.9116.2.6.1001",
    ),
    Station(
        "Canon Medical Systems",
        "Aquilion Prime SP",
        "University Hospital",
        "AquilionPrime",
        "V10.0",
        "TS1002",
        10,
        None,
        None,
        0.1,
        "alert",
        "SD",
        "1.2.392.200036.9116.2.6.1002",
    ),
    Station(
        "SIEMENS",
        "SOMATOM go.Top",
        "Outpatient Imaging Centre",
        "CTAWP10003",
        "syngo CT VA30A",
        "76003",
        8,
        "Topogram",
        0.14,
        0.0,
        None,
        "XYZ_EC",
        "1.3.12.2.1107.5.1.4.76003",
    ),
)


# --- connections and helpers ---------------------------------------------------------------------------


def libpq_url(url: str) -> str:
    """A libpq/psycopg URL from a SQLAlchemy one (drops a ``+driver`` suffix)."""
    scheme, sep, rest = url.partition("://")
    return scheme.split("+", 1)[0] + sep + rest


def database_url(server_url: str, name: str) -> str:
    """``server_url`` with its database replaced by ``name``."""
    base = libpq_url(server_url)
    head, _, tail = base.partition("://")
    authority, _, rest = tail.partition("/")
    query = ("?" + rest.split("?", 1)[1]) if "?" in rest else ""
    return f"{head}://{authority}/{name}{query}"


def size_of(size: str | int) -> int:
    if isinstance(size, int):
        return size
    key = size.strip().upper()
    return SIZES[key] if key in SIZES else int(key.replace("_", ""))


@contextlib.contextmanager
def connect(url: str, *, autocommit: bool = False) -> Iterator[psycopg.Connection[Any]]:
    # Client-side binding: parameters also work in CREATE TABLE AS and other utility statements.
    conn = psycopg.connect(libpq_url(url), autocommit=autocommit, cursor_factory=psycopg.ClientCursor)
    try:
        yield conn
    finally:
        conn.close()


_HELPERS = """
CREATE OR REPLACE FUNCTION pg_temp.u(s integer, k bigint) RETURNS double precision
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT (hashint8extended(k, s) & 9007199254740991)::double precision / 9007199254740992.0 $$;
CREATE OR REPLACE FUNCTION pg_temp.z(s integer, k bigint) RETURNS double precision
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT sqrt(-2.0 * ln(1.0 - pg_temp.u(s, k))) * cos(2.0 * pi() * pg_temp.u(s + 7919, k)) $$;
"""


def _session(conn: psycopg.Connection[Any]) -> None:
    """Fast-loading session settings (this session only) and the hash-based random helpers."""
    with conn.cursor() as cur:
        cur.execute("SET synchronous_commit = off")
        cur.execute("SET work_mem = '256MB'")
        cur.execute("SET maintenance_work_mem = '1GB'")
        cur.execute("SET max_parallel_maintenance_workers = 0")
        cur.execute("SET jit = off")  # compiling costs a second per statement and gains little here
        for statement in _HELPERS.strip().split(";\n"):
            if statement.strip():
                cur.execute(statement)
    conn.commit()


# --- databases -------------------------------------------------------------------------------------


def create_database(server_url: str, name: str) -> str:
    """(Re)create database ``name`` on the server with the OpenREM subset schema; return its URL."""
    with connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = database_url(server_url, name)
    load_schema(url)
    return url


def drop_database(server_url: str, name: str) -> None:
    with connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def load_schema(url: str) -> None:
    """Load sql/openrem_subset.sql, statement by statement, in one transaction."""
    lines = [line for line in SUBSET_SQL.read_text(encoding="utf-8").splitlines() if not line.lstrip().startswith("--")]
    statements = [s.strip() for s in "\n".join(lines).split(";\n") if s.strip()]
    with connect(url) as conn:
        for statement in statements:
            conn.execute(statement.rstrip(";"))  # type: ignore[arg-type]
        conn.commit()


# --- generating --------------------------------------------------------------------------------------


def generate(url: str, n_studies: int, *, seed: int = 1, parallel: bool = True, log: Any = None) -> dict[str, float]:
    """Fill the (empty) OpenREM-shaped database at ``url`` with ``n_studies`` studies.

    Drops the indexes and constraints first and rebuilds them after the load (two connections),
    sets the sequences past the ids, and runs VACUUM ANALYZE. Returns timings in seconds.
    """
    say = log or (lambda _msg: None)
    timings: dict[str, float] = {}
    started = time.monotonic()
    with connect(url) as conn:
        _session(conn)
        if _count(conn, STUDY):
            raise RuntimeError(f"{STUDY} is not empty: generate() fills an empty database (use add_exams)")
        restore = _drop_indexes(conn)
        _lookups(conn)
    timings["prepare"] = time.monotonic() - started
    t = time.monotonic()
    _fill(url, 1, n_studies, timeline=n_studies, seed=seed, parallel=parallel, say=say)
    timings["insert"] = time.monotonic() - t
    t = time.monotonic()
    _restore_indexes(url, restore, parallel=parallel, say=say)
    timings["indexes"] = time.monotonic() - t
    t = time.monotonic()
    with connect(url, autocommit=True) as conn:
        _set_sequences(conn)
        conn.execute(f"COMMENT ON DATABASE {_ident(conn)} IS 'ctpoller bench: {n_studies} studies, seed {seed}'")
        conn.execute("VACUUM (ANALYZE)")
    timings["vacuum_analyze"] = time.monotonic() - t
    timings["total"] = time.monotonic() - started
    return timings


def add_exams(url: str, n: int, *, seed: int = 1) -> tuple[int, int]:
    """Append ``n`` new complete exams above every existing id (the same SQL with an offset).

    Their study date is the newest in the data. Returns the first and last new study pk.
    """
    with connect(url) as conn:
        _session(conn)
        first = _max_id(conn, STUDY) + 1
        timeline = int(conn.execute(f"SELECT coalesce(max(id), 0) FROM {STUDY}").fetchone()[0])  # type: ignore[index]
        conn.commit()
    if n <= 0:
        return first, first - 1
    _fill(url, first, first + n - 1, timeline=timeline, seed=seed, parallel=False, say=lambda _m: None)
    with connect(url, autocommit=True) as conn:
        _set_sequences(conn)
    return first, first + n - 1


def id_marks(url: str) -> dict[str, int]:
    """The highest id of every filled table: what ``delete_above`` returns to."""
    with connect(url) as conn:
        return {table: _max_id(conn, table) for table in FILLED}


def delete_above(url: str, marks: dict[str, int]) -> int:
    """Delete every row with an id above ``marks`` (children first) and set the sequences back."""
    deleted = 0
    with connect(url) as conn:
        for table in reversed(FILLED):
            deleted += conn.execute(
                sql.SQL("DELETE FROM {} WHERE id > %s").format(sql.Identifier(table)), (marks[table],)
            ).rowcount
        conn.commit()
    with connect(url, autocommit=True) as conn:
        _set_sequences(conn)
    return deleted


def table_counts(url: str) -> dict[str, int]:
    with connect(url) as conn:
        return {table: _count(conn, table) for table in FILLED}


def _ident(conn: psycopg.Connection[Any]) -> str:
    name = conn.execute("SELECT current_database()").fetchone()[0]  # type: ignore[index]
    return sql.Identifier(name).as_string(conn)


def _count(conn: psycopg.Connection[Any], table: str) -> int:
    return int(conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))).fetchone()[0])  # type: ignore[index]


def _max_id(conn: psycopg.Connection[Any], table: str) -> int:
    row = conn.execute(sql.SQL("SELECT coalesce(max(id), 0) FROM {}").format(sql.Identifier(table))).fetchone()
    return int(row[0])  # type: ignore[index]


def _lookups(conn: psycopg.Connection[Any]) -> None:
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


def _shape_tables(conn: psycopg.Connection[Any]) -> None:
    """Unlogged work tables with the exam types and stations, ids resolved; dropped by _fill."""
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


_PLAN = """
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

_EVENTS = """
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

_DOSE_CHECKS = """
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

_TOTALS = """
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

_STUDIES = """
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

_ACCUMULATED = """
INSERT INTO remapp_ctaccumulateddosedata (id, total_number_of_irradiation_events, ct_dose_length_product_total,
                                          ct_radiation_dose_id)
SELECT p.id + %(off_acc)s, tot.n, tot.total_dlp, p.id + %(off_dose)s
FROM _bench_plan p LEFT JOIN _bench_tot tot ON tot.id = p.id
"""

_STUDY_CHILDREN = (
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


def _fill(url: str, first: int, last: int, *, timeline: int, seed: int, parallel: bool, say: Any) -> None:
    """Insert studies ``first..last`` and everything that belongs to them."""
    with connect(url) as conn:
        _session(conn)
        _shape_tables(conn)
        ctx = dict(conn.execute("SELECT code_value, min(id) FROM remapp_contextid GROUP BY code_value").fetchall())
        params: dict[str, Any] = {
            "first": first,
            "last": last,
            "g": seed * 1000,
            "seed": seed,
            "cont": CONTINUED_FRACTION,
            "timeline": max(timeline, 1),
            "per_day": STUDIES_PER_DAY,
            "end_date": END_DATE,
            "ev_base": _max_id(conn, EVENT),
            "dc_base": _max_id(conn, "remapp_ctdosecheckdetails"),
            "dc_fraction": DOSE_CHECK_FRACTION,
            "spiral": ctx["P5-08001"],
            "sequenced": ctx["113804"],
            "stationary": ctx["113806"],
            "constant_angle": ctx["113805"],
            "body": ctx["113691"],
            "head": ctx["113690"],
        }
        # The 1:1 child tables get ids that continue their own sequence (equal to the study id at first).
        for key, table in (
            ("off_dose", "remapp_ctradiationdose"),
            ("off_acc", "remapp_ctaccumulateddosedata"),
            ("off_equipment", "remapp_generalequipmentmoduleattr"),
            ("off_patient_study", "remapp_patientstudymoduleattr"),
            ("off_patient", "remapp_patientmoduleattr"),
        ):
            params[key] = _max_id(conn, table) + 1 - first
        conn.execute("DROP TABLE IF EXISTS _bench_plan, _bench_tot")
        t = time.monotonic()
        conn.execute(_PLAN, params)  # type: ignore[arg-type]
        conn.execute("ALTER TABLE _bench_plan ADD PRIMARY KEY (id)")
        conn.execute("ANALYZE _bench_plan")
        conn.commit()
        n_events = int(conn.execute("SELECT coalesce(sum(n_ev), 0) FROM _bench_plan").fetchone()[0])  # type: ignore[index]
        params["ev_first"], params["ev_last"] = params["ev_base"] + 1, params["ev_base"] + n_events
        say(f"plan: {last - first + 1} studies, {n_events} events ({time.monotonic() - t:.1f} s)")

    steps_events = (
        ("events", _EVENTS),
        ("dose checks", _DOSE_CHECKS),
        ("totals", _TOTALS),
        ("studies", _STUDIES),
        ("accumulated dose", _ACCUMULATED),
    )
    steps_children = tuple((statement.split()[2], statement) for statement in _STUDY_CHILDREN)

    def run(steps: Sequence[tuple[str, str]], *, commit_each: bool) -> None:
        with connect(url) as c:
            _session(c)
            for label, statement in steps:
                t0 = time.monotonic()
                c.execute(statement, params)  # type: ignore[arg-type]
                if commit_each:
                    c.commit()
                say(f"{label} ({time.monotonic() - t0:.1f} s)")
            c.commit()

    if parallel:  # the bulk load: no foreign keys yet, two connections
        _run_together([lambda: run(steps_events, commit_each=True), lambda: run(steps_children, commit_each=True)])
    else:  # one transaction: the (deferred) foreign keys are checked once everything is there
        run(steps_children + steps_events, commit_each=False)
    with connect(url) as conn:
        conn.execute("DROP TABLE IF EXISTS _bench_plan, _bench_tot, _bench_type, _bench_station, _bench_bucket")
        conn.commit()


def _run_together(jobs: Sequence[Any]) -> None:
    """Run each job in its own thread (its own connection); re-raise the first failure."""
    errors: list[BaseException] = []

    def wrap(job: Any) -> None:
        try:
            job()
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=wrap, args=(job,)) for job in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


# --- indexes and constraints during the bulk load -------------------------------------------------------


@dataclass
class Restore:
    keys: list[tuple[str, str]]  # (table, ALTER TABLE ... ADD CONSTRAINT ...) primary keys and uniques
    indexes: list[tuple[str, str]]  # (table, CREATE INDEX ...)
    foreign_keys: list[tuple[str, str]]


def _drop_indexes(conn: psycopg.Connection[Any]) -> Restore:
    """Drop the foreign keys, indexes and keys of the filled tables; return how to rebuild them."""
    tables = list(FILLED)
    fks = conn.execute(
        "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint "
        "WHERE contype = 'f' AND (conrelid::regclass::text = ANY(%s) OR confrelid::regclass::text = ANY(%s))",
        (tables, tables),
    ).fetchall()
    keys = conn.execute(
        "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint "
        "WHERE contype IN ('p', 'u') AND conrelid::regclass::text = ANY(%s)",
        (tables,),
    ).fetchall()
    indexes = conn.execute(
        "SELECT i.indrelid::regclass::text, i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid) "
        "FROM pg_index i WHERE i.indrelid::regclass::text = ANY(%s) "
        "AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid AND c.contype IN ('p', 'u'))",
        (tables,),
    ).fetchall()
    for table, name, _ in fks:
        conn.execute(sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(sql.Identifier(table), sql.Identifier(name)))
    for _, name, _ in indexes:
        conn.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(name)))
    for table, name, _ in keys:
        conn.execute(sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(sql.Identifier(table), sql.Identifier(name)))
    conn.commit()

    def add(table: str, name: str, definition: str) -> str:
        return f"ALTER TABLE {table} ADD CONSTRAINT {name} {definition}"

    return Restore(
        keys=[(t, add(t, n, d)) for t, n, d in keys],
        indexes=[(t, d) for t, _, d in indexes],
        foreign_keys=[(t, add(t, n, d)) for t, n, d in fks],
    )


def _restore_indexes(url: str, restore: Restore, *, parallel: bool, say: Any) -> None:
    """Keys and indexes on two connections (the event table alone on one), then the foreign keys."""
    big = [EVENT] if parallel else []
    lanes: list[list[tuple[str, str]]] = [[], []]
    for table, statement in restore.keys + restore.indexes:
        lanes[0 if table in big else 1].append((table, statement))
    # keys first within each lane (an index never needs them, but the foreign keys do)
    lanes = [sorted(lane, key=lambda ts: 0 if "ADD CONSTRAINT" in ts[1] else 1) for lane in lanes]

    def run(statements: list[tuple[str, str]]) -> None:
        with connect(url, autocommit=True) as c:
            _session(c)
            for _, statement in statements:
                t0 = time.monotonic()
                c.execute(statement)  # type: ignore[arg-type]
                say(f"{statement[:90]} ({time.monotonic() - t0:.1f} s)")

    if parallel:
        _run_together([lambda: run(lanes[0]), lambda: run(lanes[1])])
    else:
        run(lanes[0] + lanes[1])
    run(restore.foreign_keys)


def _set_sequences(conn: psycopg.Connection[Any]) -> None:
    """Every serial sequence past its table's highest id, so the next insert gets a higher pk."""
    rows = conn.execute(
        "SELECT t.relname, s.oid::regclass::text FROM pg_class s "
        "JOIN pg_depend d ON d.classid = 'pg_class'::regclass AND d.objid = s.oid AND d.deptype = 'a' "
        "JOIN pg_class t ON t.oid = d.refobjid "
        "JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = d.refobjsubid AND a.attname = 'id' "
        "WHERE s.relkind = 'S'"
    ).fetchall()
    for table, sequence in rows:
        conn.execute(
            sql.SQL("SELECT setval(%s, coalesce(max(id), 0) + 1, false) FROM {}").format(sql.Identifier(table)),
            (sequence,),
        )


# --- command line -----------------------------------------------------------------------------------


def bench_database_name(size: str | int) -> str:
    return f"ctp_bench_{str(size).lower()}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", required=True, help="S (50,000 studies), M (600,000), L (1,500,000) or a number")
    parser.add_argument("--server", default=DEFAULT_SERVER, help=f"server-level URL (default {DEFAULT_SERVER})")
    parser.add_argument("--name", help="database name (default ctp_bench_<size>)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--serial", action="store_true", help="one connection instead of two")
    args = parser.parse_args(argv)
    n = size_of(args.size)
    name = args.name or bench_database_name(args.size)
    started = time.monotonic()
    url = create_database(args.server, name)
    print(f"{name}: generating {n:,} studies", flush=True)
    timings = generate(url, n, seed=args.seed, parallel=not args.serial, log=lambda m: print("  " + m, flush=True))
    counts = table_counts(url)
    print(
        f"{name}: done in {time.monotonic() - started:.1f} s " + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items())
    )
    for table, count in counts.items():
        print(f"  {table}: {count:,} rows")
    return 0


if __name__ == "__main__":
    sys.exit(main())
