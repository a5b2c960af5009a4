"""``backfill --stats``: per rule (and trend, cumulative rule, Dose Check), how many exams fired, the rate,
and how far over their limits they were: the alert-rate replay a site tunes its rules with.

A rule fired for an exam when the backfill recorded a notification of that rule about it (a dry run: would
have recorded). The rate's denominator is every exam the backfill evaluated, whatever it matched. The ratio
of an exam is value / limit, the highest of that rule's notifications about it (an event or the exam).
Counted as the messages are created (``Report.messages`` keeps only the first ones), so the counts are
exactly what the state store holds after a real backfill.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from typing import TYPE_CHECKING

from ctpoller.core.model import rule_identity
from ctpoller.core.rules import DOSE_CHECK_RULE, RuleSet
from ctpoller.jobs.table import aligned, clipped
from ctpoller.store.notifications import NewMessage

if TYPE_CHECKING:
    from ctpoller.jobs.report import Report

#: The histogram of value/limit ratios: each bin holds ratios from its lower edge (included) up to the
#: next edge (excluded); a notification's ratio is always above 1 (a dose strictly above its limit).
RATIO_EDGES = (Decimal("1.1"), Decimal("1.25"), Decimal("1.5"), Decimal(2), Decimal(3))
RATIO_BINS = ("1–1.1", "1.1–1.25", "1.25–1.5", "1.5–2", "2–3", "≥3")
_NAME_CELLS = 40


@dataclass
class FiredExams:
    """The exams one rule fired for, each with its highest value/limit ratio."""

    name: str
    ratios: dict[str, Decimal] = field(default_factory=dict)  # study uid -> highest ratio


@dataclass
class FiredStats:
    """What the notifications a backfill records say per rule (by ``core.model.rule_identity``)."""

    rules: dict[str, FiredExams] = field(default_factory=dict)

    def add(self, messages: Iterable[NewMessage]) -> None:
        """Count the notifications of these messages (call it with every message the backfill records)."""
        for message in messages:
            for n in message.notifications:
                fired = self.rules.setdefault(rule_identity(n.rule), FiredExams(n.rule))
                before = fired.ratios.get(message.study_uid)
                if before is None or n.ratio > before:
                    fired.ratios[message.study_uid] = n.ratio


@dataclass(frozen=True)
class RuleStats:
    """One line of the table: a rule's exams evaluated and fired, and its ratios, sorted."""

    name: str
    kind: str  # "rule", "trend", "cumulative", "Dose Check", or "not in the rules" (a rule since removed)
    evaluated: int
    ratios: tuple[Decimal, ...]

    @property
    def fired(self) -> int:
        return len(self.ratios)

    @property
    def rate_percent(self) -> Decimal | None:
        return None if not self.evaluated else Decimal(100 * self.fired) / Decimal(self.evaluated)

    @property
    def median(self) -> Decimal | None:
        return statistics.median(self.ratios) if self.ratios else None

    @property
    def p90(self) -> Decimal | None:
        """The 90th percentile by the nearest rank: the smallest ratio at least 90 % of the exams reach."""
        return self.ratios[math.ceil(0.9 * len(self.ratios)) - 1] if self.ratios else None

    @property
    def histogram(self) -> tuple[int, ...]:
        counts = [0] * len(RATIO_BINS)
        for ratio in self.ratios:
            counts[sum(1 for edge in RATIO_EDGES if ratio >= edge)] += 1
        return tuple(counts)


def rule_stats(fired: FiredStats, rules: RuleSet, evaluated: int) -> list[RuleStats]:
    """A line per rule in precedence order, then trends, cumulative rules and the Dose Check (also those
    that never fired), then any other rule a notification names."""
    named: list[tuple[str, str]] = [(rule.name, "rule") for rule in rules.rules]
    named += [(trend.name, "trend") for trend in getattr(rules, "trends", ())]
    named += [(cumulative.name, "cumulative") for cumulative in getattr(rules, "cumulatives", ())]
    if rules.dose_check.notify:
        named.append((DOSE_CHECK_RULE, "Dose Check"))
    known = {rule_identity(name) for name, _ in named}
    named += [(exams.name, "not in the rules") for key, exams in fired.rules.items() if key not in known]
    found = []
    for name, kind in named:
        exams = fired.rules.get(rule_identity(name))
        ratios = tuple(sorted(exams.ratios.values())) if exams is not None else ()
        found.append(RuleStats(name, kind, evaluated, ratios))
    return found


def stats_lines(report: Report, rules: RuleSet, *, since: date | None, would: bool) -> list[str]:
    """The table ``backfill --stats`` prints, with a header that says what is counted and how."""
    evaluated = report.exams_evaluated
    period = f"with a study date from {since.isoformat()}" if since is not None else "of the whole history"
    verb = "would have notified" if would else "notified"
    lines = [
        f"alert-rate replay: {evaluated:,} exams evaluated {period}"
        + (" (dry run: nothing written, nothing sent)" if would else ""),
        f"  fired: exams this backfill {verb} for the rule (exceedances notified before are not told again)",
        f"  rate: fired / all {evaluated:,} exams evaluated in the period, whatever the rule matched",
        "  ratio: value / limit, per exam the highest of the rule's notifications; p90 by nearest rank",
        "",
    ]
    header = ["rule", "kind", "evaluated", "fired", "rate", "min", "median", "p90", "max", "|", *RATIO_BINS]
    rows = [header]
    for s in rule_stats(report.fired, rules, evaluated):
        low, high = (s.ratios[0], s.ratios[-1]) if s.ratios else (None, None)
        rate = "–" if s.rate_percent is None else f"{_places(s.rate_percent, 2)} %"
        ratios = [_ratio(value) for value in (low, s.median, s.p90, high)]
        counts = [str(n) if n else "·" for n in s.histogram]
        name = clipped(s.name, _NAME_CELLS)
        rows.append([name, s.kind, f"{s.evaluated:,}", f"{s.fired:,}", rate, *ratios, "|", *counts])
    lines.extend(aligned(rows, right=range(2, len(header))))
    if len(rows) == 1:
        lines.append("(the rules file has no rules)")
    return lines


def _ratio(value: Decimal | None) -> str:
    if value is None:
        return "–"
    if not value.is_finite():
        return "∞"
    return _places(value, 2)


def _places(value: Decimal, places: int) -> str:
    return f"{value.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP):f}"


def histogram_bin(ratio: Decimal) -> str:
    """The histogram bin a ratio falls in (its label)."""
    return RATIO_BINS[sum(1 for edge in RATIO_EDGES if ratio >= edge)]
