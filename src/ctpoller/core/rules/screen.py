"""The rules as questions the database answers per study row, so that ``backfill`` reads in full only
the exams that could exceed something."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Literal

from ctpoller.core.exam import Exam, Phantom
from ctpoller.core.model import Screened
from ctpoller.core.rules.explain import exam_verdicts
from ctpoller.core.rules.ruleset import Rule, RuleSet
from ctpoller.core.rules.text import any_match

SCREEN_MARGIN = Decimal("0.000001")

BoundMetric = Literal["ctdivol", "dlp", "dlp_total"]


@dataclass(frozen=True)
class Bound:
    """One question about a single study row that the database answers over all its events at once.

    ``ctdivol`` / ``dlp``: is any event's value above ``threshold``, among the events that could
    pass the rule's event-level criteria: not recorded on the other phantom (``phantom``), when
    the rule names protocols with one of ``protocols``, and with none of ``excluded`` (OpenREM's
    raw values that the rule's ``not_protocol`` matches)? ``dlp_total``: is
    the row's own total DLP, or the sum of its events' positive DLPs, above ``threshold``? A value
    that is not a number (NaN, infinite, text) counts as above. With ``age_min`` or ``age_max``,
    also: may the patient's age be in the band, where a plausible ``patient_age_decimal`` may be
    if its range (``core.exam.age_range``) overlaps the band, and any row with an age string may be.
    ``rule`` indexes ``RuleSet.rules``.
    """

    rule: int
    metric: BoundMetric
    threshold: Decimal
    phantom: Phantom | None = None
    protocols: tuple[str, ...] | None = None
    age_min: Decimal | None = None
    age_max: Decimal | None = None
    excluded: tuple[str, ...] = ()


@dataclass
class Screen:
    """What ``backfill`` asks the database about each study row, to skip reading exams in full.

    ``evaluate`` can only report an exceedance in a one-row exam when ``may_exceed`` says so; the
    questions over-approximate every event-level criterion (standard names, acquisition types and
    target regions are ignored; protocols, excluded protocols and phantoms only narrow), and the
    exam-level criteria (description, procedure, station, manufacturer, model, age, weight) are
    applied exactly, as ``evaluate`` does. Limits are the effective ones (reference level ×
    multiple); ``stop`` and ``priority`` only take exceedances away, so they are ignored.
    """

    rules: RuleSet
    bounds: tuple[Bound, ...]
    dose_check: bool
    _texts: dict[tuple[object, ...], bool] = field(default_factory=dict, repr=False)

    def may_exceed(self, screened: Screened) -> bool:
        """Whether the exam of this one study row could exceed anything, going by the database's
        answers to ``bounds`` (``screened.answers``, "1" for yes) and to the Dose Check question,
        and by the row's exam-level texts and age (``screened.row``, present when an answer is yes).
        """
        if self.dose_check and screened.dose_check:
            return True
        row = screened.row
        if row is None:  # no question answered yes
            return False
        exam = Exam(uid=row.uid or "", rows=(row,))
        for bound, answer in zip(self.bounds, screened.answers, strict=True):
            if answer != "1":
                continue
            rule = self.rules.rules[bound.rule]
            if self._texts_pass(bound.rule, rule, exam):
                return True
        return False

    def _texts_pass(self, index: int, rule: Rule, exam: Exam) -> bool:
        row = exam.first
        key = (
            index,
            row.description,
            row.requested_procedure,
            row.procedure,
            row.station_name,
            row.display_name,
            row.patient_age_decimal,
            row.patient_age,
            row.manufacturer,
            row.model,
            row.patient_weight_kg,
        )
        known = self._texts.get(key)
        if known is None:
            if len(self._texts) > 100_000:  # many distinct texts: stay bounded
                self._texts.clear()
            known = self._texts[key] = _screened_criteria_pass(rule, exam)
        return known


#: The exam-level criteria the screen applies to a one-row exam's row, exactly as ``evaluate`` does
#: (``openrem.history`` reads their columns into ``Screened.row``). Every one of them only narrows what
#: ``evaluate`` reports, so a key left out here would merely be read in full.
_SCREENED_KEYS = frozenset(
    (
        *("study", "not_study", "procedure", "not_procedure", "station", "not_station"),
        *("manufacturer", "not_manufacturer", "model", "not_model", "age_min", "age_max", "weight_min", "weight_max"),
    )
)


def _screened_criteria_pass(rule: Rule, exam: Exam) -> bool:
    return all(v.passed for v in exam_verdicts(rule, exam, words=False) if v.key in _SCREENED_KEYS)


def screen(rules: RuleSet, protocols: Iterable[str | None]) -> Screen:
    """The questions for ``rules``; ``protocols`` are the distinct raw protocol values in OpenREM.

    A rule that names protocols none of which occur can report nothing, so it asks nothing.
    """
    distinct = sorted({p for p in protocols if p is not None})
    bounds: list[Bound] = []
    for index, rule in enumerate(rules.rules):
        allowed: tuple[str, ...] | None = None
        if rule.protocol:
            allowed = tuple(p for p in distinct if any_match(rule.protocol, (p.strip() or None,)))
            if not allowed:
                continue
        # an excluded event never counts for the rule's per-event limits (it does for dlp_total: any
        # excluded event takes the exam out of it, which the screen does not try to tell)
        excluded = tuple(p for p in distinct if any_match(rule.not_protocol, (p.strip() or None,)))
        per_event: tuple[tuple[BoundMetric, Decimal | None], ...] = (
            ("ctdivol", rule.limit("ctdivol")),
            ("dlp", rule.limit("dlp")),
        )
        for metric, limit in per_event:
            if limit is not None:
                bounds.append(
                    Bound(index, metric, _threshold(limit), rule.phantom, allowed, rule.age_min, rule.age_max, excluded)
                )
        total = rule.limit("dlp_total")
        if total is not None:
            bounds.append(Bound(index, "dlp_total", _threshold(total), age_min=rule.age_min, age_max=rule.age_max))
    return Screen(rules=rules, bounds=tuple(bounds), dose_check=rules.dose_check.notify)


def _threshold(limit: Decimal) -> Decimal:
    return limit - limit * SCREEN_MARGIN
