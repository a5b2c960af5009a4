"""The old script's approach, for comparison: every run reads the last 90 days of CT events with their
study and equipment in one query and loads them all into memory (one dict per row), then loops.

    .venv/bin/python bench/oldscript.py postgresql://postgres@127.0.0.1:5432/ctp_bench_l [--days 90]

"The last 90 days" counts back from the newest study date in the data (the generated data ends on a
fixed date). Prints one JSON line: rows, seconds for query + fetch, the cut-off date. Run it as a
subprocess to measure its wall time and peak RSS (bench/run.py does).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import timedelta

import psycopg
from psycopg.rows import dict_row

QUERY = """
SELECT e.*,
       g.study_instance_uid, g.accession_number, g.study_date, g.study_time, g.study_description,
       g.requested_procedure_code_meaning, g.total_dlp, g.number_of_events,
       eq.manufacturer, eq.manufacturer_model_name, eq.institution_name, eq.station_name
FROM remapp_ctirradiationeventdata e
JOIN remapp_ctradiationdose r ON r.id = e.ct_radiation_dose_id
JOIN remapp_generalstudymoduleattr g ON g.id = r.general_study_module_attributes_id
LEFT JOIN remapp_generalequipmentmoduleattr eq ON eq.general_study_module_attributes_id = g.id
WHERE g.modality_type = 'CT' AND g.study_date >= %(since)s
"""


def run(url: str, days: int = 90) -> dict[str, object]:
    scheme, sep, rest = url.partition("://")
    with psycopg.connect(scheme.split("+", 1)[0] + sep + rest) as conn:
        newest = conn.execute("SELECT max(study_date) FROM remapp_generalstudymoduleattr").fetchone()[0]  # type: ignore[index]
        since = newest - timedelta(days=days)
        started = time.perf_counter()
        with conn.cursor(row_factory=dict_row) as cur:
            cur.execute(QUERY, {"since": since})
            rows = cur.fetchall()
        fetched = time.perf_counter() - started
        # what the script did next: look at every event's protocol and CTDIvol
        over = sum(1 for row in rows if row["mean_ctdivol"] is not None and row["mean_ctdivol"] > 50)
        return {"rows": len(rows), "seconds": round(fetched, 4), "since": since.isoformat(), "over_50_mgy": over}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="the old script's 90-day full read, for comparison")
    parser.add_argument("url")
    parser.add_argument("--days", type=int, default=90)
    args = parser.parse_args(argv)
    print(json.dumps(run(args.url, args.days)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
