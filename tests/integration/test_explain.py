"""``ctpoller explain`` on the rows OpenREM's own importers wrote (tests/data/openrem): found by Study
Instance UID or accession number (one of which names two exams), what the rules said and why, a stop rule
taking a check, what was notified when, and one line when nothing is found."""

from __future__ import annotations

import hashlib
import io
import re
from pathlib import Path

import pytest
import sqlalchemy as sa

from ctpoller.core.rules import RuleSet
from ctpoller.jobs.explain import explain_lines
from ctpoller.settings import Settings
from ctpoller.wiring import Parts
from support import pg
from support.process import ctpoller

pytestmark = [pytest.mark.postgres]

EXAMPLE_RULES = Path(__file__).parents[2] / "examples" / "rules.toml"
PIXELMED = "1.2.840.113619.2.55.3.2831209208.960.1363108704.865"  # rt16, head phantom, 222.59 mGy
CONTINUED = "1.3.6.1.4.1.5962.99.1.64928122.996247427.1524778350970.5.0"  # pks 1 and 2
TOSHIBA_DOSE_CHECK = "1.3.6.1.4.1.5962.99.1.4226553877.745998417.1511760107541.3.0"  # pk 14
SHARED_ACCESSION = "3599305798462538"  # pk 5 (Multi-3) and pk 14 (Toshiba Dose Check)
VCT_HASH = hashlib.sha256(b"001234512345678").hexdigest()  # pk 7's accession number as OpenREM hashes it

STOP_RULES = """
[defaults]
recipients = ["physics@hospital.example"]

[[rule]]
name = "Adult head"
phantom = "head"
ctdivol = 80

[[rule]]
name = "Head, this scanner"
station = "rt16"
phantom = "head"
drl_ctdivol = 150
notify_above = 1.5
reference = "local DRL 2025"
priority = 10
stop = true

[[rule]]
name = "Children"
age_max = 18
ctdivol = 20
"""


@pytest.fixture
def real_openrem(pg_server):
    schema, data = pg.OPENREM_DATA / "schema_ct.sql", pg.OPENREM_DATA / "data_ct_testfiles.sql"
    with pg.throwaway_database(pg_server, "ctp_explain_") as url:
        pg.run_sql_file(url, schema)
        pg.run_sql_file(url, data)
        yield url


def environment(tmp_path: Path, source_url: str, rules: str) -> dict[str, str]:
    (tmp_path / "rules.toml").write_text(rules, encoding="utf-8")
    return {
        "CTPOLLER_SOURCE_URL": source_url,
        "CTPOLLER_RULES_FILE": str(tmp_path / "rules.toml"),
        "CTPOLLER_STATE_URL": f"sqlite:///{tmp_path / 'state.sqlite3'}",
        "CTPOLLER_OUTBOX_DIR": str(tmp_path / "outbox"),
        "CTPOLLER_MAIL_FROM": "ctpoller@hospital.example",
        "CTPOLLER_TIMEZONE": "UTC",
    }


def section(output: str, title: str) -> str:
    """The lines of one section of the output (from its title to the next blank line)."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(title))
    end = next((i for i in range(start + 1, len(lines)) if not lines[i].strip()), len(lines))
    return "\n".join(lines[start:end])


def test_an_exam_found_by_uid_shows_each_rule_check_and_what_was_notified_when(real_openrem, tmp_path):
    env = environment(tmp_path, real_openrem, EXAMPLE_RULES.read_text(encoding="utf-8"))
    before = ctpoller("explain", PIXELMED, env=env, cwd=tmp_path).assert_ok()
    out = before.stdout
    assert "\x1b[" not in out  # not a terminal: no colour
    assert out.startswith(f"Exam {PIXELMED}\n")
    header = section(out, "Exam")
    assert re.search(r"date +2013-03-13 08:58:44", header)
    assert re.search(r"station +OpenREM centre médical rt16 \(station name rt16\)", header)
    assert "Study Instance UID: a sequential scan of 15 study rows (OpenREM has no index on" in header
    assert re.search(r"total DLP +586.34 mGy·cm, 2 events in one report, OpenREM study pk\(s\) 8", header)
    rules = section(out, "Rules")
    [head] = [line for line in rules.splitlines() if "Adult head" in line]
    assert head.startswith("✓")
    assert re.search(r"event 2 .* CTDIvol +222\.59 mGy +> +80 +EXCEEDED 2\.78 × the limit", rules), rules
    assert re.search(r"✗ +\d+  Paediatric head .*— age 99.5–100.5 y|✗ +\d+  Paediatric head", rules), rules
    assert "nothing: the state store does not exist yet" in out
    assert not (tmp_path / "state.sqlite3").exists()  # explain creates nothing

    ctpoller("backfill", "--since", "2000-01-01", "--no-email", env=env, cwd=tmp_path).assert_ok()
    after = ctpoller("explain", PIXELMED, env=env, cwd=tmp_path).assert_ok().stdout
    record = section(after, "What ctpoller notified")
    assert "OpenREM study pk 8: evaluated" in record
    assert re.search(r"UTC +not sent +– +<[0-9a-f]{32}@[^>]+> +Adult head: CTDIvol \(event\) 222\.59 mGy > 80", record)


def test_an_accession_number_naming_two_exams_explains_both(real_openrem, tmp_path):
    env = environment(tmp_path, real_openrem, EXAMPLE_RULES.read_text(encoding="utf-8"))
    out = ctpoller("explain", f" {SHARED_ACCESSION} ", env=env, cwd=tmp_path).assert_ok().stdout
    assert out.startswith(f"accession number {SHARED_ACCESSION} names 2 exams (one per Study Instance UID):")
    assert out.count("\nExam ") == 2 and TOSHIBA_DOSE_CHECK in out
    assert "accession number: 2 sequential scans of 15 study rows" in out
    dose_check = section(out.split(f"Exam {TOSHIBA_DOSE_CHECK}")[1], "Scanner Dose Check")
    assert "[dose_check] notify = true: reported" in dose_check
    assert re.search(
        r"event 2 .*accumulated DLP over its alert value +502\.4 mGy·cm > 100 mGy·cm +EXCEEDED", dose_check
    )
    assert re.search(r"event 2 .*accumulated CTDIvol over its alert value +10\.6 mGy > 10 mGy +EXCEEDED", dose_check)


def test_an_accession_number_openrem_stores_hashed_is_found_by_the_number(real_openrem, tmp_path):
    engine = sa.create_engine(real_openrem)
    with engine.begin() as conn:  # OpenREM with accession_hashed on: SHA-256 hex of the number
        conn.execute(
            sa.text("UPDATE remapp_generalstudymoduleattr SET accession_number = :h WHERE id = 7"), {"h": VCT_HASH}
        )
    engine.dispose()
    env = environment(tmp_path, real_openrem, EXAMPLE_RULES.read_text(encoding="utf-8"))
    out = ctpoller("explain", "001234512345678", env=env, cwd=tmp_path).assert_ok().stdout
    assert "found by   accession number, as OpenREM's SHA-256 hash of it: 2 sequential scans" in out
    assert re.search(f"accession +{VCT_HASH}", out)


def test_a_continued_exam_is_every_row_of_its_uid(real_openrem, tmp_path):
    env = environment(tmp_path, real_openrem, EXAMPLE_RULES.read_text(encoding="utf-8"))
    out = ctpoller("explain", "4885555100963520", env=env, cwd=tmp_path).assert_ok().stdout
    assert "116.61 mGy·cm, 4 events in 2 reports (a continued exam), OpenREM study pk(s) 1, 2" in out
    assert "report (pk)" in section(out, "Events")


def test_events_with_no_value_share_one_line(real_openrem, tmp_path):
    rules = '[defaults]\nrecipients = ["physics@hospital.example"]\n\n[[rule]]\nname = "Every event"\nctdivol = 1000\n'
    env = environment(tmp_path, real_openrem, rules)
    out = ctpoller("explain", "001234512345678", env=env, cwd=tmp_path).assert_ok().stdout  # pk 7: 27 events
    checks = section(out, "Rules")
    assert re.search(r"events 1–4, 8–11, 14–21 +CTDIvol +– +1000 +no value recorded", checks)
    assert checks.count("no value recorded") == 1 and checks.count("within") == 11


def test_a_stop_rule_takes_the_check_of_a_lower_rule_as_a_run_does(real_openrem, tmp_path):
    env = environment(tmp_path, real_openrem, STOP_RULES)
    out = ctpoller("explain", PIXELMED, env=env, cwd=tmp_path).assert_ok().stdout
    rules = section(out, "Rules")
    lines = rules.splitlines()
    assert lines[1].startswith("✓  1  Head, this scanner  priority 10 · stop"), rules
    assert "limits   CTDIvol 150 × 1.5 = 225 mGy (local DRL 2025)" in rules
    assert re.search(r"event 2 .* CTDIvol +222\.59 mGy +≤ +225 +within", rules), rules
    assert re.search(r"event 2 .* CTDIvol +222\.59 mGy +80 +stopped by 'Head, this scanner'", rules), rules
    assert re.search(r"event 1 +CTDIvol +60\.41 mGy +80 +stopped by 'Head, this scanner'", rules), rules
    assert re.search(r"✗  3  Children +— age 100 y: not .*18 y", rules), rules
    ctpoller("backfill", "--since", "2000-01-01", "--no-email", env=env, cwd=tmp_path).assert_ok()
    record = section(ctpoller("explain", PIXELMED, env=env, cwd=tmp_path).assert_ok().stdout, "What ctpoller")
    assert "nothing notified about this exam" in record  # the run agrees: the stop rule took the check
    listed = ctpoller("check", env=env, cwd=tmp_path).stdout  # the rules as check lists them
    assert re.search(
        r"ok      rule  1  Head, this scanner +CTDIvol 150 × 1\.5 = 225 mGy \(local DRL 2025\) +priority 10, stop",
        listed,
    )
    assert re.search(r"ok      rule  2  Adult head +CTDIvol 80 mGy +notification", listed), listed


def test_nothing_found_is_one_line_and_exit_1(real_openrem, tmp_path):
    env = environment(tmp_path, real_openrem, EXAMPLE_RULES.read_text(encoding="utf-8"))
    last = ctpoller("explain", "1.2.3.4.5", env=env, cwd=tmp_path).assert_failed(1, "no CT exam with")
    assert "'1.2.3.4.5'" in last and "a sequential scan of 15 study rows" in last


def test_a_bad_rules_file_exits_2(real_openrem, tmp_path):
    env = environment(tmp_path, real_openrem, '[[rule]]\nname = "x"\nprotocol = ["ped", "head"]\nctdivol = 1\n')
    ctpoller("explain", PIXELMED, env=env, cwd=tmp_path).assert_failed(2, "ambiguous")


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_colour_only_on_a_terminal_and_never_with_no_color(real_openrem, tmp_path, monkeypatch):
    environment(tmp_path, real_openrem, EXAMPLE_RULES.read_text(encoding="utf-8"))
    parts = Parts(
        Settings(_env_file=None, source_url=real_openrem, rules_file=tmp_path / "rules.toml", outbox_dir=tmp_path)
    )
    coloured = "\n".join(explain_lines(parts, PIXELMED, terminal=Terminal()))
    assert "\x1b[1;31mEXCEEDED\x1b[0m" in coloured
    plain = [re.sub(r"\x1b\[[0-9;]*m", "", line) for line in coloured.splitlines()]
    monkeypatch.setenv("NO_COLOR", "1")
    again = explain_lines(parts, PIXELMED, terminal=Terminal())
    assert untimed(again) == untimed(plain)  # the same columns, without colour


def untimed(lines: list[str]) -> list[str]:
    return [re.sub(r", \d+ ms$", "", line) for line in lines]


WATCH_RULES = """
[defaults]
recipients = ["physics@hospital.example"]

[[rule]]
name = "Any event CTDIvol"
ctdivol = 5

[[trend]]
name = "Body CTDIvol trend"
phantom = "body"
metric = "ctdivol"
drl = 2
exams = 2
above = 1.5
reference = "test DRL"

[[trend]]
name = "Head only trend"
phantom = "head"
metric = "ctdivol"
drl = 50
exams = 2

[[cumulative]]
name = "Patient exams"
days = 3650
exams = 1
"""


@pytest.mark.skipif(not hasattr(RuleSet(), "trends"), reason="[[trend]] and [[cumulative]] are not in this branch yet")
def test_trends_and_cumulative_rules_say_whether_the_exam_counts_and_stats_count_them_as_recorded(
    real_openrem, tmp_path
):
    env = environment(tmp_path, real_openrem, WATCH_RULES)
    dry = ctpoller("backfill", "--since", "2000-01-01", "--dry-run", "--stats", env=env, cwd=tmp_path).assert_ok()
    real = ctpoller("backfill", "--since", "2000-01-01", "--no-email", "--stats", env=env, cwd=tmp_path).assert_ok()
    for name, kind in (("Body CTDIvol trend", "trend"), ("Patient exams", "cumulative")):
        [line] = [line for line in dry.stdout.splitlines() if line.startswith(name + "  ")]
        assert line.split()[len(name.split())] == kind
        assert line in real.stdout  # the same counts and ratios after the real backfill
    out = ctpoller("explain", TOSHIBA_DOSE_CHECK, env=env, cwd=tmp_path).assert_ok().stdout
    trends = section(out, "Trends")
    assert re.search(r"✓  Body CTDIvol trend  — counts 5\.3 mGy .* window of 2 exams, limit 3 mGy", trends), trends
    assert re.search(r"✗  Head only trend  — no event passes its event-level criteria", trends), trends
    assert "✓  Patient exams  — counts as one of its patient's CT exams (its total DLP 502" in section(out, "Cumul")
