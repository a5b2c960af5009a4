"""Every exceedance of one exam under a rule set, in a fixed order."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from decimal import Decimal

from ctpoller.core.exam import UNIT_MGY, UNIT_MGYCM, AgeRange, Event, Exam, Metric, finite
from ctpoller.core.model import Exceedance
from ctpoller.core.rules.ruleset import DOSE_CHECK_RULE, Criterion, Route, Rule, RuleSet, unique_addresses


def evaluate(exam: Exam, rules: RuleSet) -> list[Exceedance]:
    """Every exceedance of the rules in one exam, in the documented order."""
    events = exam.events
    row_names = {row.pk: row.standard_names for row in exam.rows}
    found: list[Exceedance] = []
    base = routed_recipients(exam, rules)
    for rule in rules.rules:
        recipients = unique_addresses((*base, *rule.recipients))
        found.extend(_apply(rule, exam, events, row_names, recipients))
    if rules.dose_check.notify:
        recipients = unique_addresses((*base, *rules.dose_check.recipients))
        found.extend(_dose_checks(events, recipients))
    return found


def routes_of(exam: Exam, rules: RuleSet) -> tuple[Route, ...]:
    """The routes whose stations match the exam (station or display name of any of its rows)."""
    stations = exam.texts("station_name") + exam.texts("display_name")
    return tuple(route for route in rules.routes if _passes(route.station, route.not_station, stations))


def routed_recipients(exam: Exam, rules: RuleSet) -> tuple[str, ...]:
    """Who is told about every exceedance of the exam: the recipients of all routes that match it, in
    file order, or the default recipients when no route does. Each rule's own recipients come on top."""
    routes = routes_of(exam, rules)
    if not routes:
        return rules.default_recipients
    return unique_addresses(address for route in routes for address in route.recipients)


def _apply(
    rule: Rule,
    exam: Exam,
    events: Sequence[Event],
    row_names: dict[int, tuple[str, ...]],
    recipients: tuple[str, ...],
) -> list[Exceedance]:
    if not _exam_matches(rule, exam):
        return []
    wanted = [_event_wanted(rule, event, row_names) for event in events]
    excluded = [_event_excluded(rule, event, row_names) for event in events]
    found: list[Exceedance] = []
    has_event_criteria = bool(rule.protocol or rule.standard_name or rule.phantom)
    total = finite(exam.total_dlp_mgycm)
    if (
        rule.dlp_total is not None
        and total is not None
        and total > rule.dlp_total
        and (any(wanted) or not has_event_criteria)
        and not any(excluded)
    ):
        found.append(Exceedance(rule.name, "dlp_total", "", total, rule.dlp_total, UNIT_MGYCM, recipients))
    chosen = [event for event, yes, no in zip(events, wanted, excluded, strict=True) if yes and not no]
    per_event: tuple[tuple[Metric, Decimal | None, str], ...] = (
        ("ctdivol", rule.ctdivol, UNIT_MGY),
        ("dlp", rule.dlp, UNIT_MGYCM),
    )
    for metric, limit, unit in per_event:
        if limit is None:
            continue
        for event in chosen:
            value = finite(event.ctdivol_mgy if metric == "ctdivol" else event.dlp_mgycm)
            if value is not None and value > limit:
                found.append(Exceedance(rule.name, metric, event.key, value, limit, unit, recipients, event.protocol))
    return found


def _exam_matches(rule: Rule, exam: Exam) -> bool:
    return age_passes(rule, exam.age) and texts_pass(rule, exam)


def age_passes(rule: Rule, age: AgeRange | None) -> bool:
    """A patient who may be in the band (``core.exam.age_range``) matches it; an unknown age never does."""
    if rule.age_min is None and rule.age_max is None:
        return True
    return age is not None and age.overlaps(rule.age_min, rule.age_max)


def texts_pass(rule: Rule, exam: Exam) -> bool:
    procedures = exam.texts("requested_procedure") + exam.texts("procedure")
    stations = exam.texts("station_name") + exam.texts("display_name")
    return (
        _passes(rule.study, rule.not_study, exam.texts("description"))
        and _passes(rule.procedure, rule.not_procedure, procedures)
        and _passes(rule.station, rule.not_station, stations)
    )


def _event_wanted(rule: Rule, event: Event, row_names: dict[int, tuple[str, ...]]) -> bool:
    """Whether the event passes the positive event-level criteria (protocol, standard name, phantom)."""
    if rule.phantom is not None and event.phantom != rule.phantom:
        return False
    if rule.protocol and not any_match(rule.protocol, (event.protocol,)):
        return False
    return not rule.standard_name or any_match(rule.standard_name, _standard_names(event, row_names))


def _event_excluded(rule: Rule, event: Event, row_names: dict[int, tuple[str, ...]]) -> bool:
    return any_match(rule.not_protocol, (event.protocol,)) or any_match(
        rule.not_standard_name, _standard_names(event, row_names)
    )


def _standard_names(event: Event, row_names: dict[int, tuple[str, ...]]) -> tuple[str, ...]:
    return event.standard_names + row_names.get(event.study_pk, ())


def _passes(wanted: Criterion, unwanted: Criterion, values: Sequence[str | None]) -> bool:
    return (not wanted or any_match(wanted, values)) and not any_match(unwanted, values)


def any_match(entries: Criterion, values: Iterable[str | None]) -> bool:
    return any(entry.matches(value) for value in values for entry in entries)


#: The four Dose Check comparisons in report order: metric, DoseCheck fields "configured", limit and
#: value, the Event field used when the value is missing (notifications only), unit.
_DOSE_CHECKS: tuple[tuple[Metric, str, str, str, str | None, str], ...] = (
    ("dose_check_ctdivol_notification", "ctdivol_notification_configured", "ctdivol_notification_mgy",
     "ctdivol_forward_estimate_mgy", "ctdivol_mgy", UNIT_MGY),
    ("dose_check_dlp_notification", "dlp_notification_configured", "dlp_notification_mgycm",
     "dlp_forward_estimate_mgycm", "dlp_mgycm", UNIT_MGYCM),
    ("dose_check_ctdivol_alert", "ctdivol_alert_configured", "ctdivol_alert_mgy",
     "accumulated_ctdivol_forward_estimate_mgy", None, UNIT_MGY),
    ("dose_check_dlp_alert", "dlp_alert_configured", "dlp_alert_mgycm",
     "accumulated_dlp_forward_estimate_mgycm", None, UNIT_MGYCM),
)  # fmt: skip


def _dose_checks(events: Sequence[Event], recipients: tuple[str, ...]) -> list[Exceedance]:
    """The scanner's Dose Check values exceeded, once per event and metric (the highest value)."""
    best: dict[tuple[int, int], Exceedance] = {}
    for event_index, event in enumerate(events):
        for check in event.dose_checks:
            for metric_index, (metric, configured, limit_field, value_field, fallback, unit) in enumerate(_DOSE_CHECKS):
                limit: Decimal | None = finite(getattr(check, limit_field))
                value: Decimal | None = finite(getattr(check, value_field))
                if value is None and fallback is not None:
                    value = finite(getattr(event, fallback))
                if getattr(check, configured) is False or limit is None or limit <= 0:
                    continue
                if value is None or value <= limit:
                    continue
                previous = best.get((metric_index, event_index))
                if previous is None or value > previous.value:
                    best[(metric_index, event_index)] = Exceedance(
                        DOSE_CHECK_RULE, metric, event.key, value, limit, unit, recipients, event.protocol
                    )
    return [best[key] for key in sorted(best)]


# ---------------------------------------------------------------------------------------------- screen

#: A screen's thresholds sit this fraction below the limits, so that no rounding anywhere (the
#: database's sums, Decimal's 28 digits) can make a screened-out exam one the rules would flag.
