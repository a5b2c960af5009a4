"""``ctpoller backfill --since 1900-01-01 --no-email`` over a whole bench database, against
``psql -c "COPY (<the same join>) TO STDOUT" > /dev/null`` on the same database: the limit.
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa

from bench import database
from bench.child import READ_IN_FULL, ChildRun, check, run_child, summary_counts
from bench.figures import Figure, Results
from bench.parts import ctpoller_env

# The rows of the backfill-versus-COPY join: what source.study_rows/_events read, all at once.
COPY_JOIN = """
SELECT g.id, g.study_instance_uid, g.accession_number, g.study_date, g.study_time, g.study_description,
       g.requested_procedure_code_meaning, g.procedure_code_meaning, g.modality_type, g.total_dlp,
       g.number_of_events, ps.patient_age_decimal, ps.patient_age, eq.station_name, u.display_name,
       e.id, e.irradiation_event_uid, e.acquisition_protocol, e.mean_ctdivol, e.dlp, e.series_description,
       acq.code_value, acq.code_meaning, ph.code_value,
       dc.ctdivol_alert_value_configured, dc.ctdivol_alert_value, dc.dlp_alert_value_configured,
       dc.dlp_alert_value, dc.accumulated_ctdivol_forward_estimate, dc.accumulated_dlp_forward_estimate,
       dc.ctdivol_notification_value_configured, dc.ctdivol_notification_value,
       dc.dlp_notification_value_configured, dc.dlp_notification_value, dc.ctdivol_forward_estimate,
       dc.dlp_forward_estimate
FROM remapp_generalstudymoduleattr g
LEFT JOIN remapp_patientstudymoduleattr ps ON ps.general_study_module_attributes_id = g.id
LEFT JOIN remapp_generalequipmentmoduleattr eq ON eq.general_study_module_attributes_id = g.id
LEFT JOIN remapp_uniqueequipmentnames u ON u.id = eq.unique_equipment_name_id
JOIN remapp_ctradiationdose r ON r.general_study_module_attributes_id = g.id
JOIN remapp_ctirradiationeventdata e ON e.ct_radiation_dose_id = r.id
LEFT JOIN remapp_contextid acq ON acq.id = e.ct_acquisition_type_id
LEFT JOIN remapp_contextid ph ON ph.id = e.ctdiw_phantom_type_id
LEFT JOIN remapp_ctdosecheckdetails dc ON dc.ct_irradiation_event_data_id = e.id
WHERE g.modality_type = 'CT'
"""


def backfill_vs_copy(
    url: str, column: str, results: Results, *, repeats: int = 3, say: Callable[[str], None] = print
) -> None:
    """``ctpoller backfill --no-email`` over the whole database, and the COPY of the same rows."""
    runs: list[ChildRun] = []
    counts: tuple[int, int, int, int] | None = None
    for _ in range(repeats):
        with tempfile.TemporaryDirectory(prefix="ctp-bench-") as name:
            tmp = Path(name)
            run = run_child(
                [sys.executable, "-m", "ctpoller", "backfill", "--since", "1900-01-01", "--no-email"],
                env=ctpoller_env(url, tmp),
                cwd=tmp,
            )
            check(run, "ctpoller backfill")
            counts = summary_counts(run.stderr)
            if counts is None:
                raise AssertionError(f"no summary line from backfill: {run.stderr.strip()[-300:]}")
            runs.append(run)
            say(f"  {column}: backfill {run.seconds:.1f} s, {run.max_rss_mb:.1f} MB, {counts}")
    assert counts is not None
    _, exams, events, exceedances = counts
    results.add(
        Figure(
            "backfill.time", "`ctpoller backfill --no-email`, whole database", "s", column, [r.seconds for r in runs]
        )
    )
    results.add(Figure("backfill.exams", "  exams evaluated", "exams", column, [float(exams)]))
    read = READ_IN_FULL.findall(runs[-1].stderr)
    if read:
        results.add(
            Figure(
                "backfill.read",
                "  of which read in full (the screen could not clear them)",
                "exams",
                column,
                [float(read[-1])],
            )
        )
    results.add(Figure("backfill.exceedances", "  exceedances found", "exams", column, [float(exceedances)]))
    results.add(Figure("backfill.exams_per_s", "  backfill exams/s", "1/s", column, [exams / r.seconds for r in runs]))
    results.add(
        Figure("backfill.events_per_s", "  backfill events/s", "1/s", column, [events / r.seconds for r in runs])
    )
    results.add(
        Figure("rss.backfill", "  peak RSS of the backfill process", "MB", column, [r.max_rss_mb for r in runs])
    )
    psql = shutil.which("psql")
    if psql is None:
        say("  psql is not on PATH: no COPY limit")
        return
    copies = []
    target = sa.engine.make_url(database.libpq_url(url))
    env = dict(os.environ)
    if target.password:  # never on a command line
        env["PGPASSWORD"] = str(target.password)
    dsn = target.set(password=None).render_as_string(hide_password=False)
    for _ in range(repeats):
        copies.append(
            run_child(
                [psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", dsn, "-c", f"COPY ({COPY_JOIN}) TO STDOUT"], env=env
            )
        )
        check(copies[-1], "psql COPY")
        say(f"  {column}: COPY {copies[-1].seconds:.1f} s")
    with database.connect(url) as conn:
        rows = int(conn.execute(f"SELECT count(*) FROM ({COPY_JOIN}) AS j").fetchone()[0])  # type: ignore[index]
    results.add(
        Figure("copy.time", "`psql COPY (same join) TO STDOUT > /dev/null`", "s", column, [c.seconds for c in copies])
    )
    results.add(Figure("copy.rows", "  COPY rows (one per event)", "rows", column, [float(rows)]))
    results.add(Figure("copy.rows_per_s", "  COPY rows/s", "1/s", column, [rows / c.seconds for c in copies]))
    ratio = statistics.median(r.seconds for r in runs) / statistics.median(c.seconds for c in copies)
    results.add(Figure("ratio.backfill_copy", "backfill time / COPY time", "x", column, [ratio]))
