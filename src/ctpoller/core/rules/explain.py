"""The trace of one exam under a rule set: for every rule, in precedence order, whether it matched and
why, per event, and every comparison made. ``evaluate`` is this trace filtered to the exceedances, so
``ctpoller explain`` and the notifications can never disagree.

"Matches", exactly (see ``core.rules`` for the whole file):

- a rule matches the EXAM when its exam-level criteria pass (study, procedure, station, manufacturer,
  model, age band, weight band);
- it matches an EVENT when it matches the exam and the event passes its event-level criteria
  (protocol, standard_name, phantom, acquisition_type, target_region pass; no ``not_`` one excludes
  it), whatever the dose;
- its ``dlp_total`` is checked (it "matches the exam for dlp_total") when it matches the exam, some
  event passes the positive event-level criteria (if it has any) and no event is excluded by a
  ``not_`` event-level criterion.

A ``stop`` rule takes, from every rule after it in precedence order, the checks it makes itself: the
per-event metrics it has a limit for on the events it matches, and ``dlp_total`` when it has that
limit and matches the exam for it. Those checks appear in the lower rule's trace with ``stopped_by``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal

from ctpoller.core.exam import UNIT_MGY, UNIT_MGYCM, AgeRange, Event, Exam, Metric, finite, plausible_weight
from ctpoller.core.model import Exceedance
from ctpoller.core.rules.ruleset import ACQUISITION_TYPES, Criterion, Rule, RuleSet, unique_addresses
from ctpoller.core.rules.text import first_match, text_why

_PER_EVENT: tuple[Metric, ...] = ("ctdivol", "dlp")
_UNITS: dict[str, str] = {"ctdivol": UNIT_MGY, "dlp": UNIT_MGYCM, "dlp_total": UNIT_MGYCM}


@dataclass(frozen=True)
class Verdict:
    """One criterion's answer: ``key`` is the rules-file key, ``why`` one line with the exam's value."""

    key: str
    passed: bool
    why: str


@dataclass(frozen=True)
class Check:
    """One metric compared on one event (``event_key``) or on the exam (``event_key`` "").

    ``limit`` is the effective limit (``reference_value`` × ``multiple`` for a reference level);
    ``exceeded`` is value > limit and not stopped; ``stopped_by`` names the higher ``stop`` rule that
    took this check."""

    metric: Metric
    event_key: str
    value: Decimal | None
    limit: Decimal
    reference_value: Decimal | None
    multiple: Decimal | None
    exceeded: bool
    stopped_by: str | None


@dataclass(frozen=True)
class EventTrace:
    """One event under one rule: ``matched`` when it passes every event-level criterion."""

    event_key: str
    number: int  # 1-based place in exam.events
    protocol: str | None
    matched: bool
    verdicts: tuple[Verdict, ...]  # event-level criteria (positive and not_)


@dataclass(frozen=True)
class RuleTrace:
    """One rule over one exam: its exam-level verdicts, each event, every comparison made."""

    rule: Rule
    position: int  # 1-based place in the precedence order
    exam_matched: bool
    verdicts: tuple[Verdict, ...]  # exam-level criteria
    events: tuple[EventTrace, ...]
    checks: tuple[Check, ...]  # every comparison made (and the ones a stop rule took)


def trace(exam: Exam, rules: RuleSet) -> tuple[RuleTrace, ...]:
    """Every rule over ``exam``, in precedence order, with the reasons in words."""
    return _trace(exam, rules, words=True)


def exceedances(exam: Exam, rules: RuleSet, base: Callable[[Rule], tuple[str, ...]]) -> list[Exceedance]:
    """The exceedances of the rules (not the Dose Check) in the documented order, from the trace;
    ``base(rule)`` gives the routed recipients of the rule's severity."""
    found: list[Exceedance] = []
    events = {event.key: event for event in exam.events}
    for rule_trace in _trace(exam, rules, words=False):
        rule = rule_trace.rule
        recipients: tuple[str, ...] | None = None
        for check in rule_trace.checks:
            if not check.exceeded or check.value is None:
                continue
            if recipients is None:
                recipients = unique_addresses((*base(rule), *rule.recipients))
            event = events.get(check.event_key)
            found.append(
                Exceedance(
                    rule.name,
                    check.metric,
                    check.event_key,
                    check.value,
                    check.limit,
                    _UNITS[check.metric],
                    recipients,
                    event.protocol if event is not None else None,
                    severity=rule.severity,
                    reference=rule.reference,
                    reference_value=check.reference_value,
                    multiple=check.multiple,
                )
            )
    return found


def matched_events(rule: Rule, exam: Exam) -> tuple[Event, ...] | None:
    """The events ``rule``'s criteria match (its limits aside), or None when its exam-level criteria
    fail: what a trend or cumulative rule, which has the same criteria keys, counts."""
    row_names = {row.pk: row.standard_names for row in exam.rows}
    if not all(v.passed for v in exam_verdicts(rule, exam, words=False)):
        return None
    events = exam.events
    return tuple(e for n, e in enumerate(events, 1) if _event_trace(rule, n, e, row_names, False).matched)


def total_matches(rule: Rule, exam: Exam) -> bool:
    """Whether ``rule``'s criteria match ``exam`` the way its ``dlp_total`` is checked (see above)."""
    if not all(v.passed for v in exam_verdicts(rule, exam, words=False)):
        return False
    row_names = {row.pk: row.standard_names for row in exam.rows}
    return total_applies(rule, [_event_trace(rule, n, e, row_names, False) for n, e in enumerate(exam.events, 1)])


def _trace(exam: Exam, rules: RuleSet, *, words: bool) -> tuple[RuleTrace, ...]:
    row_names = {row.pk: row.standard_names for row in exam.rows}
    claimed: dict[tuple[str, str], str] = {}  # (metric, event_key) -> the stop rule that took it
    traces: list[RuleTrace] = []
    for position, rule in enumerate(rules.rules, start=1):
        verdicts = exam_verdicts(rule, exam, words=words)
        matched = all(v.passed for v in verdicts)
        if not matched and not words:
            traces.append(RuleTrace(rule, position, False, verdicts, (), ()))
            continue
        events = tuple(
            _event_trace(rule, number, event, row_names, words) for number, event in enumerate(exam.events, start=1)
        )
        checks = _checks(rule, exam, events, claimed) if matched else ()
        traces.append(RuleTrace(rule, position, matched, verdicts, events, checks))
    return tuple(traces)


def _checks(
    rule: Rule, exam: Exam, events: Sequence[EventTrace], claimed: dict[tuple[str, str], str]
) -> tuple[Check, ...]:
    """The rule's comparisons, in order ``dlp_total``, ``ctdivol``, ``dlp``, events in exam order;
    a ``stop`` rule claims each one it makes for the rules after it."""
    checks: list[Check] = []
    by_key = {event.key: event for event in exam.events}
    limit = rule.limit("dlp_total")
    if limit is not None and total_applies(rule, events):
        checks.append(_check(rule, "dlp_total", "", finite(exam.total_dlp_mgycm), limit, claimed))
    for metric in _PER_EVENT:
        limit = rule.limit(metric)
        if limit is None:
            continue
        for trace_ in events:
            if trace_.matched:
                event = by_key[trace_.event_key]
                value = finite(event.ctdivol_mgy if metric == "ctdivol" else event.dlp_mgycm)
                checks.append(_check(rule, metric, trace_.event_key, value, limit, claimed))
    return tuple(checks)


def _check(
    rule: Rule,
    metric: Metric,
    event_key: str,
    value: Decimal | None,
    limit: Decimal,
    claimed: dict[tuple[str, str], str],
) -> Check:
    stopped_by = claimed.get((metric, event_key))
    if stopped_by is None and rule.stop:
        claimed[(metric, event_key)] = rule.name
    exceeded = stopped_by is None and value is not None and value > limit
    return Check(
        metric, event_key, value, limit, rule.reference_value(metric), rule.multiple(metric), exceeded, stopped_by
    )


def total_applies(rule: Rule, events: Sequence[EventTrace]) -> bool:
    """Whether the rule's ``dlp_total`` is checked on an exam it matches: some event passes the
    positive event-level criteria (when it has any), and no event is excluded by a ``not_`` one."""
    positive = not rule.positive_event_criteria
    for event in events:
        for verdict in event.verdicts:
            if verdict.key.startswith("not_") and not verdict.passed:
                return False
        if not positive and all(v.passed for v in event.verdicts if not v.key.startswith("not_")):
            positive = True
    return positive


# ---------------------------------------------------------------------------------------------- exam level


def exam_verdicts(rule: Rule, exam: Exam, *, words: bool = True) -> tuple[Verdict, ...]:
    """The rule's exam-level criteria over ``exam``, in the order of the rules file's documentation."""
    found: list[Verdict] = []
    texts: tuple[tuple[str, str, Criterion, Criterion, Callable[[], tuple[str, ...]]], ...] = (
        ("study", "study description", rule.study, rule.not_study, lambda: exam.texts("description")),
        ("procedure", "procedure", rule.procedure, rule.not_procedure, lambda: _procedures(exam)),
        ("station", "station", rule.station, rule.not_station, lambda: _stations(exam)),
        ("manufacturer", "manufacturer", rule.manufacturer, rule.not_manufacturer, lambda: exam.texts("manufacturer")),
        ("model", "model", rule.model, rule.not_model, lambda: exam.texts("model")),
    )
    for key, label, wanted, unwanted, values in texts:
        if wanted or unwanted:
            found.extend(text_verdicts(key, label, wanted, unwanted, values(), words))
    if rule.age_min is not None or rule.age_max is not None:
        found.append(_age_verdict(rule, exam.age, words))
    if rule.weight_min is not None or rule.weight_max is not None:
        found.append(_weight_verdict(rule, exam_weight(exam), words))
    return tuple(found)


def _procedures(exam: Exam) -> tuple[str, ...]:
    return exam.texts("requested_procedure") + exam.texts("procedure")


def _stations(exam: Exam) -> tuple[str, ...]:
    return exam.texts("station_name") + exam.texts("display_name")


def exam_weight(exam: Exam) -> Decimal | None:
    """The patient's weight (kg) by the first row with a plausible one (above 0, at most 500 kg)."""
    for row in exam.rows:
        weight = plausible_weight(row.patient_weight_kg)
        if weight is not None:
            return weight
    return None


def age_passes(rule: Rule, age: AgeRange | None) -> bool:
    """A patient who may be in the band (``core.exam.age_range``) matches it; an unknown age never does."""
    if rule.age_min is None and rule.age_max is None:
        return True
    return age is not None and age.overlaps(rule.age_min, rule.age_max)


def weight_passes(rule: Rule, weight: Decimal | None) -> bool:
    """``weight_min <= weight < weight_max``; an unknown weight never matches a weight band."""
    if rule.weight_min is None and rule.weight_max is None:
        return True
    if weight is None:
        return False
    return (rule.weight_min is None or weight >= rule.weight_min) and (
        rule.weight_max is None or weight < rule.weight_max
    )


def _age_verdict(rule: Rule, age: AgeRange | None, words: bool) -> Verdict:
    passed = age_passes(rule, age)
    too_old = not passed and age is not None and age.overlaps(rule.age_min, None)
    key = "age_max" if rule.age_min is None or too_old else "age_min"
    if not words:
        return Verdict(key, passed, "")
    band = _band(rule.age_min, rule.age_max, "y")
    if age is None:
        return Verdict(key, passed, f"age not recorded: never in an age band ({band})")
    return Verdict(key, passed, f"age {age.shown()}: {'' if passed else 'not '}{band}")


def _weight_verdict(rule: Rule, weight: Decimal | None, words: bool) -> Verdict:
    passed = weight_passes(rule, weight)
    low_ok = weight is not None and (rule.weight_min is None or weight >= rule.weight_min)
    key = "weight_max" if rule.weight_min is None or (not passed and low_ok) else "weight_min"
    if not words:
        return Verdict(key, passed, "")
    band = _band(rule.weight_min, rule.weight_max, "kg")
    if weight is None:
        return Verdict(key, passed, f"weight not recorded: never in a weight band ({band})")
    return Verdict(key, passed, f"weight {_number(weight)} kg: {'' if passed else 'not '}{band}")


def _band(low: Decimal | None, high: Decimal | None, unit: str) -> str:
    """``under 6 y``, ``100 kg or more``, ``2 to under 6 y``."""
    if low is None:
        return f"under {_number(high)} {unit}"
    if high is None:
        return f"{_number(low)} {unit} or more"
    return f"{_number(low)} to under {_number(high)} {unit}"


def _number(value: Decimal | None) -> str:
    if value is None:
        return "?"
    return format(value.normalize(), "f")


# ---------------------------------------------------------------------------------------------- event level


def _event_trace(
    rule: Rule, number: int, event: Event, row_names: dict[int, tuple[str, ...]], words: bool
) -> EventTrace:
    found: list[Verdict] = []
    if rule.protocol or rule.not_protocol:
        found.extend(text_verdicts("protocol", "protocol", rule.protocol, rule.not_protocol, (event.protocol,), words))
    if rule.standard_name or rule.not_standard_name:
        names = event.standard_names + row_names.get(event.study_pk, ())
        found.extend(
            text_verdicts("standard_name", "standard name", rule.standard_name, rule.not_standard_name, names, words)
        )
    if rule.phantom is not None:
        passed = event.phantom == rule.phantom
        why = (
            f"phantom {event.phantom or 'not recorded'}: {'is' if passed else 'is not'} {rule.phantom}" if words else ""
        )
        found.append(Verdict("phantom", passed, why))
    if rule.acquisition_type or rule.not_acquisition_type:
        found.extend(_acquisition_verdicts(rule, event, words))
    if rule.target_region or rule.not_target_region:
        found.extend(
            text_verdicts(
                "target_region",
                "target region",
                rule.target_region,
                rule.not_target_region,
                (event.target_region,),
                words,
            )
        )
    verdicts = tuple(found)
    return EventTrace(event.key, number, event.protocol, all(v.passed for v in verdicts), verdicts)


def acquisition_name(code: str | None) -> str | None:
    """The rules-file name of an acquisition type code (OpenREM's ``code_value``), None if unknown."""
    code = (code or "").strip()
    return next((name for name, codes in ACQUISITION_TYPES.items() if code in codes), None)


def _acquisition_verdicts(rule: Rule, event: Event, words: bool) -> list[Verdict]:
    name = acquisition_name(event.acquisition_type_code)
    shown = name or (f"unknown code {event.acquisition_type_code}" if event.acquisition_type_code else "not recorded")
    found: list[Verdict] = []
    if rule.acquisition_type:
        passed = name in rule.acquisition_type
        wanted = " or ".join(rule.acquisition_type)
        why = f"acquisition type {shown}: {'is' if passed else 'is not'} {wanted}" if words else ""
        found.append(Verdict("acquisition_type", passed, why))
    if rule.not_acquisition_type:
        excluded = name in rule.not_acquisition_type
        unwanted = " or ".join(rule.not_acquisition_type)
        why = f"acquisition type {shown}: {'excluded' if excluded else 'not excluded'} by {unwanted}" if words else ""
        found.append(Verdict("not_acquisition_type", not excluded, why))
    return found


# ---------------------------------------------------------------------------------------------- text


def text_verdicts(
    key: str, label: str, wanted: Criterion, unwanted: Criterion, values: Sequence[str | None], words: bool
) -> list[Verdict]:
    """The verdicts of a text criterion and its ``not_`` twin over the values (any value counts)."""
    found: list[Verdict] = []
    if wanted:
        hit = first_match(wanted, values)
        why = text_why(label, wanted, values, hit, "has") if words else ""
        found.append(Verdict(key, hit is not None, why))
    if unwanted:
        hit = first_match(unwanted, values)
        why = text_why(label, unwanted, values, hit, "excluded by") if words else ""
        found.append(Verdict(f"not_{key}", hit is None, why))
    return found
