"""``backfill --stats``, the alert-rate replay, on the rows OpenREM's own importers wrote (tests/data/openrem):
the counts of a dry run are what a real backfill then records, and the dry run writes and sends nothing."""

from __future__ import annotations

from collections import defaultdict
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa

from ctpoller.core.model import rule_identity
from ctpoller.core.rules import parse_rules
from ctpoller.jobs import backfill as backfill_job
from ctpoller.jobs.stats import RATIO_BINS, rule_stats
from ctpoller.store.tables import notification_table
from support import pg
from support.process import ctpoller

pytestmark = [pytest.mark.postgres]

RULES = """
[defaults]
recipients = ["physics@hospital.example"]

[[rule]]
name = "Any event CTDIvol"
ctdivol = 5

[[rule]]
name = "Head phantom"
phantom = "head"
ctdivol = 40

[[rule]]
name = "Exam total DLP"
dlp_total = 300

[[rule]]
name = "Never"
ctdivol = 100000

[dose_check]
notify = true
"""


@pytest.fixture
def real_openrem(pg_server):
    schema, data = pg.OPENREM_DATA / "schema_ct.sql", pg.OPENREM_DATA / "data_ct_testfiles.sql"
    with pg.throwaway_database(pg_server, "ctp_stats_") as url:
        pg.run_sql_file(url, schema)
        pg.run_sql_file(url, data)
        yield url


@pytest.fixture
def env(tmp_path: Path, real_openrem: str) -> dict[str, str]:
    rules = tmp_path / "rules.toml"
    rules.write_text(RULES, encoding="utf-8")
    return {
        "CTPOLLER_SOURCE_URL": real_openrem,
        "CTPOLLER_RULES_FILE": str(rules),
        "CTPOLLER_STATE_URL": f"sqlite:///{tmp_path / 'state.sqlite3'}",
        "CTPOLLER_OUTBOX_DIR": str(tmp_path / "outbox"),
        "CTPOLLER_ARCHIVE_PATH": str(tmp_path / "archive.xlsx"),
        "CTPOLLER_MAIL_FROM": "ctpoller@hospital.example",
    }


def recorded_stats(state_file: Path) -> dict[str, tuple[Decimal, ...]]:
    """Per rule, the sorted highest value/limit ratio of each exam, from what the state store recorded."""
    engine = sa.create_engine(f"sqlite:///{state_file}")
    try:
        with engine.connect() as conn:
            n = notification_table.c
            rows = conn.execute(sa.select(n.rule, n.study_uid, n.value, n.limit_value)).all()
    finally:
        engine.dispose()
    highest: dict[str, dict[str, Decimal]] = defaultdict(dict)
    for rule, uid, value, limit in rows:
        ratio = Decimal(value) / Decimal(limit)
        exams = highest[rule_identity(rule)]
        exams[uid] = max(ratio, exams.get(uid, ratio))
    return {rule: tuple(sorted(exams.values())) for rule, exams in highest.items()}


def two_places(value: Decimal) -> str:
    return f"{value.quantize(Decimal('0.01'), rounding=ROUND_HALF_UP):f}"


def table_row(stdout: str, name: str) -> list[str]:
    [line] = [line for line in stdout.splitlines() if line.startswith(name + "  ")]
    return line[len(name) :].split()


def test_a_dry_run_counts_what_the_real_backfill_records_and_writes_and_sends_nothing(
    env: dict[str, str], tmp_path: Path
) -> None:
    dry = ctpoller("backfill", "--since", "2000-01-01", "--dry-run", "--stats", env=env, cwd=tmp_path).assert_ok()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "tmp") == ["rules.toml"]  # no store, mail, archive
    assert "alert-rate replay: 13 exams evaluated with a study date from 2000-01-01 (dry run" in dry.stdout
    assert "would notify" not in dry.stdout  # the table replaces the list of exams

    real = ctpoller("backfill", "--since", "2000-01-01", "--no-email", "--stats", env=env, cwd=tmp_path).assert_ok()
    assert "dry run" not in real.stdout
    assert not (tmp_path / "outbox").exists()
    recorded = recorded_stats(tmp_path / "state.sqlite3")
    assert set(recorded) == {"any event ctdivol", "head phantom", "exam total dlp", "scanner dose check"}

    rules = parse_rules(RULES, source="rules.toml")
    for line in rule_stats_from_recorded(recorded, rules):
        name, fired, ratios = line
        for output in (dry.stdout, real.stdout):
            cells = table_row(output, name)
            bar = cells.index("|")  # evaluated, fired, rate, "%", min, median, p90, max, |
            assert cells[bar - 8 : bar - 6] == ["13", str(fired)], (name, output)
            if ratios:
                assert (cells[bar - 4], cells[bar - 1]) == (two_places(ratios[0]), two_places(ratios[-1]))
            histogram = [0 if c == "·" else int(c) for c in cells[cells.index("|") + 1 :]]
            assert len(histogram) == len(RATIO_BINS) and sum(histogram) == fired
    assert table_row(dry.stdout, "Never")[:5] == ["rule", "13", "0", "0.00", "%"]


def rule_stats_from_recorded(recorded, rules) -> list[tuple[str, int, tuple[Decimal, ...]]]:
    names = [rule.name for rule in rules.rules] + ["Scanner Dose Check"]
    return [(name, len(recorded.get(rule_identity(name), ())), recorded.get(rule_identity(name), ())) for name in names]


def test_the_counts_do_not_depend_on_the_messages_a_report_keeps_nor_on_chunks(
    env: dict[str, str], real_openrem: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Counted as messages are created: with one message kept and one study row per chunk (the continued
    exam's second report rises its total DLP in a later chunk), the dry run still counts each exam once."""
    from support.cycle import Harness

    monkeypatch.setattr(backfill_job, "KEPT_MESSAGES", 1)
    monkeypatch.setattr(backfill_job, "BACKFILL_CHUNK", 1)
    harness = Harness(real_openrem, f"sqlite:///{tmp_path / 'state.sqlite3'}", RULES, 1, tmp_path)
    dry = harness.backfill(since=None, email=False, dry_run=True)
    assert len(dry.messages) == 1 and dry.created > 1
    assert recorded_stats(tmp_path / "state.sqlite3") == {}
    real = harness.backfill(since=None, email=False)
    recorded = recorded_stats(tmp_path / "state.sqlite3")
    for stats in (dry, real):
        found = {
            rule_identity(s.name): s.ratios
            for s in rule_stats(stats.fired, harness.rules, stats.exams_evaluated)
            if s.fired
        }
        assert found == recorded
    assert dry.exams_evaluated == real.exams_evaluated
    total = {rule_identity(s.name): s for s in rule_stats(real.fired, harness.rules, real.exams_evaluated)}
    assert total["exam total dlp"].fired >= 3 and total["any event ctdivol"].fired >= 8
