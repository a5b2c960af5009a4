"""The performance benchmark in bench/ keeps working: a tiny generated OpenREM and every measurement once.

Never timed: the figures of a 300-study database on a shared test server mean nothing. What counts is
that the generator builds complete, OpenREM-shaped rows with the same SQL at any size, and that the
benchmark functions run end to end and fill every row of the table (bench/RESULTS.md has the real run).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from support import pg

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import database, figures, generate, report, run  # noqa: E402

pytestmark = pytest.mark.postgres

STUDIES = 300


@pytest.fixture
def bench_db(pg_server: pg.PgServer):
    """A throwaway database with the OpenREM subset schema and 300 generated studies."""
    with pg.throwaway_database(pg_server, "ctp_bench_smoke_") as url:
        generate.load_schema(url)
        generate.generate(url, STUDIES)
        yield url


def test_generator_builds_complete_openrem_shaped_studies(bench_db: str) -> None:
    counts = database.table_counts(bench_db)
    assert counts["remapp_generalstudymoduleattr"] == STUDIES
    for one_per_study in (
        "remapp_generalequipmentmoduleattr",
        "remapp_patientstudymoduleattr",
        "remapp_patientmoduleattr",
        "remapp_ctradiationdose",
    ):
        assert counts[one_per_study] == STUDIES
    assert 3 * STUDIES < counts["remapp_ctirradiationeventdata"] < 4.5 * STUDIES
    with database.connect(bench_db) as conn:
        modalities = conn.execute("SELECT DISTINCT modality_type FROM remapp_generalstudymoduleattr").fetchall()
        assert modalities == [("CT",)]
        # localisers without CTDIvol, events without protocol, acquisition types by code value
        nulls = conn.execute(
            "SELECT count(*) FILTER (WHERE mean_ctdivol IS NULL), count(*) FILTER (WHERE acquisition_protocol IS NULL) "
            "FROM remapp_ctirradiationeventdata"
        ).fetchone()
        assert nulls is not None and nulls[0] > 0 and nulls[1] > 0
        codes = {row[0] for row in conn.execute("SELECT code_value FROM remapp_contextid").fetchall()}
        assert {"113805", "P5-08001", "113690", "113691"} <= codes
        # sequences are past the generated ids: the next study OpenREM writes gets a higher pk
        next_pk = conn.execute("SELECT nextval('remapp_generalstudymoduleattr_id_seq')").fetchone()
        assert next_pk is not None and next_pk[0] > STUDIES


def test_adding_exams_and_deleting_them_again_restores_the_database(bench_db: str) -> None:
    marks = database.id_marks(bench_db)
    first, last = generate.add_exams(bench_db, 25)
    assert (first, last) == (STUDIES + 1, STUDIES + 25)
    assert database.table_counts(bench_db)["remapp_patientmoduleattr"] == STUDIES + 25
    database.delete_above(bench_db, marks)
    assert database.id_marks(bench_db) == marks


def test_benchmark_runs_once_and_fills_every_row_of_the_table(bench_db: str, tmp_path: Path) -> None:
    results = run.run_benchmark(
        {"S": bench_db, "M": bench_db},
        figures.Results(),
        repeats=1,
        repeats_slow=1,
        backlog=500,
        say=lambda _message: None,
    )
    expected = [
        "cycle.idle",
        "cycle.seen.100",
        "cycle.eval.100",
        "cycle.sql.100",
        "cycle.seen.1000",
        "cycle.eval.1000",
        "process.init",
        "rss.process.init",
        "process.second",
        "process.idle",
        "process.floor",
        "rss.process.idle",
        "process.run.100",
        "process.run.1000",
        "rss.process.run.1000",
        "process.backlog",
        "rss.process.backlog",
        "backfill.time",
        "backfill.read",
        "backfill.exams_per_s",
        "backfill.events_per_s",
        "rss.backfill",
        "copy.time",
        "ratio.backfill_copy",
        "old.time",
        "old.rss",
        "old.rows",
    ]
    for key in expected:
        column = "M" if key.startswith(("backfill.", "copy.", "ratio.", "rss.backfill")) else "S"
        value = results.value(key, column)
        assert isinstance(value, float) and value >= 0, key
    plans = [key for key in results.rows if key.startswith("plan.")]
    assert {"plan.heads_after_keyset_page", "plan.study_rows_events", "plan.study_rows_studies"} <= set(plans)

    text = report.table(results)
    lines = text.splitlines()
    assert lines[0].startswith("| # | measure | S | M | L |")
    assert len([line for line in lines if line.startswith("| ")]) == len(results.rows) + 1
    for measure in (
        "in-process cycle evaluating 100 new exams",
        "`ctpoller run` process, nothing new",
        "backfill time / COPY time",
        "old script",
    ):
        assert measure in text
    for target in ("T1 ", "T2 ", "T3 ", "T4 ", "T5 "):
        assert any(line.strip().startswith(target) for line in lines), target

    saved = tmp_path / "results.json"
    results.save(saved)
    again = figures.Results()
    again.load(saved)
    assert report.table(again) == text


def test_the_archive_benchmark_runs_at_a_tiny_size_and_writes_one_workbook_per_year(tmp_path: Path) -> None:
    from bench import archive

    figures = archive.measure(notifications=60, years=3, repeats=2, tmp=tmp_path)
    assert len(figures.idle) == len(figures.one_more) == 2
    lines = figures.lines()
    assert lines[0].startswith("archive: 60 notifications over 3 years") and "target" in lines[-1]
    assert sorted(p.name for p in tmp_path.glob("ctpoller-notifications-*.xlsx")) == [
        "ctpoller-notifications-2023.xlsx",
        "ctpoller-notifications-2024.xlsx",
        "ctpoller-notifications-2025.xlsx",
        "ctpoller-notifications-2026.xlsx",
    ]
