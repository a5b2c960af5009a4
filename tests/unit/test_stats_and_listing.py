"""The pure parts of ``backfill --stats`` (counting, ratios, histogram), ``check``'s rules listing and the
terminal columns ``explain`` and both print."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from ctpoller.core.model import Notification
from ctpoller.core.rules import parse_rules
from ctpoller.jobs.check import rules_listed
from ctpoller.jobs.report import Report
from ctpoller.jobs.stats import FiredStats, RuleStats, histogram_bin, rule_stats, stats_lines
from ctpoller.jobs.table import aligned, clipped, width
from ctpoller.store.notifications import NewMessage

RULES = parse_rules(
    """
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
drl_ctdivol = 60
notify_above = 1.5
reference = "UK NDRL 2022"
priority = 10
stop = true
severity = "alert"

[[rule]]
name = "Exam total"
dlp_total = 1000
reference = "AAPM Dose Check 2011"

[dose_check]
notify = true
""",
    source="rules.toml",
)


def message(uid: str, *found: tuple[str, str, str]) -> NewMessage:
    """A message about exam ``uid`` with notifications (rule, value, limit)."""
    notifications = tuple(
        Notification(uid, rule, "ctdivol", f"event-{i}", Decimal(value), Decimal(limit), "mGy")
        for i, (rule, value, limit) in enumerate(found)
    )
    return NewMessage(message_id=f"<{uid}@x>", study_uid=uid, recipients=(), notifications=notifications)


@pytest.mark.parametrize(
    ("ratio", "shown"),
    [("1.0001", "1–1.1"), ("1.1", "1.1–1.25"), ("1.2499", "1.1–1.25"), ("1.25", "1.25–1.5"), ("2", "2–3"), ("3", "≥3")],
)
def test_a_ratio_falls_in_the_bin_from_its_lower_edge(ratio: str, shown: str) -> None:
    assert histogram_bin(Decimal(ratio)) == shown


def test_an_exam_counts_once_per_rule_with_its_highest_ratio_whatever_the_case_of_the_rule_name() -> None:
    fired = FiredStats()
    fired.add([message("1.2.3", ("Adult head", "88", "80"), ("Adult head", "100", "80"))])
    fired.add([message("1.2.3", ("ADULT  head", "120", "80")), message("1.2.4", ("Exam total", "1500", "1000"))])
    stats = {s.name: s for s in rule_stats(fired, RULES, evaluated=40)}
    assert stats["Adult head"].ratios == (Decimal("1.5"),)
    assert stats["Adult head"].rate_percent == Decimal("2.5")
    assert stats["Exam total"].histogram == (0, 0, 0, 1, 0, 0)
    assert stats["Head, this scanner"].fired == 0 and stats["Scanner Dose Check"].kind == "Dose Check"
    assert [s.name for s in rule_stats(fired, RULES, 40)][:3] == ["Head, this scanner", "Adult head", "Exam total"]


def test_a_rule_no_longer_in_the_file_is_still_counted() -> None:
    fired = FiredStats()
    fired.add([message("1.2.3", ("Old rule", "2", "1"))])
    assert rule_stats(fired, RULES, 1)[-1] == RuleStats("Old rule", "not in the rules", 1, (Decimal(2),))


def test_median_and_p90_by_nearest_rank() -> None:
    stats = RuleStats("r", "rule", 100, tuple(Decimal(n) for n in range(1, 11)))
    assert (stats.median, stats.p90) == (Decimal("5.5"), Decimal(9))
    one = RuleStats("r", "rule", 100, (Decimal("1.3"),))
    assert (one.median, one.p90, one.histogram) == (Decimal("1.3"), Decimal("1.3"), (0, 0, 1, 0, 0, 0))


def test_the_table_says_what_the_rate_is_of_and_aligns_its_columns() -> None:
    report = Report(exams_evaluated=1234)
    report.fired.add([message(f"1.{i}", ("Adult head", str(81 + i), "80")) for i in range(12)])
    lines = stats_lines(report, RULES, since=None, would=True)
    assert lines[0].startswith("alert-rate replay: 1,234 exams evaluated of the whole history (dry run: nothing")
    assert "rate: fired / all 1,234 exams evaluated" in lines[2]
    table = lines[5:]
    assert len({width(line.split("|")[0]) for line in table}) == 1  # the bar lines up: columns aligned
    [adult] = [line for line in table if line.startswith("Adult head")]
    assert adult.split()[3:6] == ["1,234", "12", "0.97"]


def test_check_lists_each_rule_with_its_limits_now_precedence_and_severity() -> None:
    lines = rules_listed(RULES)
    assert lines[0].startswith("rule  1  Head, this scanner")
    assert "Head, this scanner" in lines[0] and "CTDIvol 60 × 1.5 = 90 mGy (UK NDRL 2022)" in lines[0]
    assert lines[0].endswith("priority 10, stop  alert")
    assert "DLP total 1000 mGy·cm (AAPM Dose Check 2011)" in lines[2] and lines[2].endswith("notification")
    assert len({line.index("CTDIvol" if "CTDIvol" in line else "DLP") for line in lines}) == 1


def test_columns_count_terminal_cells_not_characters() -> None:
    assert width("頭部") == 4 and width("e\u0301") == 1 and width("\x1b[1;31mX\x1b[0m") == 1
    assert aligned([["頭部", "1"], ["head", "22"]], right=(1,)) == ["頭部   1", "head  22"]
    assert clipped("a long protocol name", 8) == "a long …"


def test_the_openrem_lookup_by_uid_or_accession_is_never_on_the_polling_path() -> None:
    """Only ``explain`` imports ``openrem.lookup`` (a sequential scan of OpenREM's study table)."""
    source = Path(__file__).resolve().parents[2] / "src" / "ctpoller"
    users = {
        path.relative_to(source).as_posix()
        for path in source.rglob("*.py")
        if "openrem.lookup" in path.read_text(encoding="utf-8") and path.name != "lookup.py"
    }
    assert users == {"jobs/explain.py"}
