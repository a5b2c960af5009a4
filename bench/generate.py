"""Build an OpenREM-shaped PostgreSQL database of any size, inside PostgreSQL, for the benchmark.

    .venv/bin/python bench/generate.py --size S            # ctp_bench_s: 50,000 studies
    .venv/bin/python bench/generate.py --size L --server postgresql://postgres@127.0.0.1:5432/postgres

The database gets the tables of ``sql/openrem_subset.sql`` (loaded first, unchanged) and is filled with
set-based ``INSERT ... SELECT ... generate_series`` statements: no row passes through Python. Every
"random" value is a hash of a row number and a seed (``hashint8extended``), so a size and a seed
always give the same rows, and the same SQL with an offset appends more exams (``add_exams``).

The data looks like what OpenREM stores; shapes.py describes it and holds the exam types and stations,
rowsql.py the SQL. Not generated (ctpoller does not read them): ``remapp_objectuidsprocessed``, standard
names, x-ray source parameters, scanning lengths. Sequences are set past the generated ids; the tables are
VACUUM ANALYZEd at the end.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from psycopg import sql

if __package__ in (None, ""):  # run as a script: make ``bench`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import rowsql
from bench.bulkload import drop_indexes, restore_indexes, run_together
from bench.database import (
    DEFAULT_SERVER,
    EVENT,
    STUDY,
    connect,
    count,
    database_url,
    ident,
    max_id,
    session,
    set_sequences,
    table_counts,
)
from bench.shapes import CONTINUED_FRACTION, DOSE_CHECK_FRACTION, END_DATE, STUDIES_PER_DAY

REPO = Path(__file__).resolve().parents[1]
SUBSET_SQL = REPO / "sql" / "openrem_subset.sql"

# --- sizes and names -------------------------------------------------------------------------------

SIZES = {"S": 50_000, "M": 600_000, "L": 1_500_000}


def size_of(size: str | int) -> int:
    if isinstance(size, int):
        return size
    key = size.strip().upper()
    return SIZES[key] if key in SIZES else int(key.replace("_", ""))


def bench_database_name(size: str | int) -> str:
    return f"ctp_bench_{str(size).lower()}"


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
        session(conn)
        if count(conn, STUDY):
            raise RuntimeError(f"{STUDY} is not empty: generate() fills an empty database (use add_exams)")
        restore = drop_indexes(conn)
        rowsql.lookups(conn)
    timings["prepare"] = time.monotonic() - started
    t = time.monotonic()
    _fill(url, 1, n_studies, timeline=n_studies, seed=seed, parallel=parallel, say=say)
    timings["insert"] = time.monotonic() - t
    t = time.monotonic()
    restore_indexes(url, restore, parallel=parallel, say=say)
    timings["indexes"] = time.monotonic() - t
    t = time.monotonic()
    with connect(url, autocommit=True) as conn:
        set_sequences(conn)
        conn.execute(f"COMMENT ON DATABASE {ident(conn)} IS 'ctpoller bench: {n_studies} studies, seed {seed}'")
        conn.execute("VACUUM (ANALYZE)")
    timings["vacuum_analyze"] = time.monotonic() - t
    timings["total"] = time.monotonic() - started
    return timings


def add_exams(url: str, n: int, *, seed: int = 1) -> tuple[int, int]:
    """Append ``n`` new complete exams above every existing id (the same SQL with an offset).

    Their study date is the newest in the data. Returns the first and last new study pk.
    """
    with connect(url) as conn:
        session(conn)
        first = max_id(conn, STUDY) + 1
        timeline = int(conn.execute(f"SELECT coalesce(max(id), 0) FROM {STUDY}").fetchone()[0])  # type: ignore[index]
        conn.commit()
    if n <= 0:
        return first, first - 1
    _fill(url, first, first + n - 1, timeline=timeline, seed=seed, parallel=False, say=lambda _m: None)
    with connect(url, autocommit=True) as conn:
        set_sequences(conn)
    return first, first + n - 1


def _fill(url: str, first: int, last: int, *, timeline: int, seed: int, parallel: bool, say: Any) -> None:
    """Insert studies ``first..last`` and everything that belongs to them."""
    with connect(url) as conn:
        session(conn)
        rowsql.shape_tables(conn)
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
            "ev_base": max_id(conn, EVENT),
            "dc_base": max_id(conn, "remapp_ctdosecheckdetails"),
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
            params[key] = max_id(conn, table) + 1 - first
        conn.execute("DROP TABLE IF EXISTS _bench_plan, _bench_tot")
        t = time.monotonic()
        conn.execute(rowsql.PLAN, params)  # type: ignore[arg-type]
        conn.execute("ALTER TABLE _bench_plan ADD PRIMARY KEY (id)")
        conn.execute("ANALYZE _bench_plan")
        conn.commit()
        n_events = int(conn.execute("SELECT coalesce(sum(n_ev), 0) FROM _bench_plan").fetchone()[0])  # type: ignore[index]
        params["ev_first"], params["ev_last"] = params["ev_base"] + 1, params["ev_base"] + n_events
        say(f"plan: {last - first + 1} studies, {n_events} events ({time.monotonic() - t:.1f} s)")

    steps_events = (
        ("events", rowsql.EVENTS),
        ("dose checks", rowsql.DOSE_CHECKS),
        ("totals", rowsql.TOTALS),
        ("studies", rowsql.STUDIES),
        ("accumulated dose", rowsql.ACCUMULATED),
    )
    steps_children = tuple((statement.split()[2], statement) for statement in rowsql.STUDY_CHILDREN)

    def run(steps: Sequence[tuple[str, str]], *, commit_each: bool) -> None:
        with connect(url) as c:
            session(c)
            for label, statement in steps:
                t0 = time.monotonic()
                c.execute(statement, params)  # type: ignore[arg-type]
                if commit_each:
                    c.commit()
                say(f"{label} ({time.monotonic() - t0:.1f} s)")
            c.commit()

    if parallel:  # the bulk load: no foreign keys yet, two connections
        run_together([lambda: run(steps_events, commit_each=True), lambda: run(steps_children, commit_each=True)])
    else:  # one transaction: the (deferred) foreign keys are checked once everything is there
        run(steps_children + steps_events, commit_each=False)
    with connect(url) as conn:
        conn.execute("DROP TABLE IF EXISTS _bench_plan, _bench_tot, _bench_type, _bench_station, _bench_bucket")
        conn.commit()


# --- command line -----------------------------------------------------------------------------------


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
    for table, rows in counts.items():
        print(f"  {table}: {rows:,} rows")
    return 0


if __name__ == "__main__":
    sys.exit(main())
