"""Every exceedance of one exam under a rule set, in a fixed order."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

from ctpoller.core.exam import UNIT_MGY, UNIT_MGYCM, Event, Exam, Metric, Severity, finite
from ctpoller.core.model import Exceedance
from ctpoller.core.rules.explain import exceedances
from ctpoller.core.rules.ruleset import DOSE_CHECK_RULE, Route, RuleSet, unique_addresses
from ctpoller.core.rules.text import any_match


def evaluate(exam: Exam, rules: RuleSet) -> list[Exceedance]:
    """Every exceedance of the rules in one exam, in the documented order: the checks of
    ``explain.trace`` that exceed (so ``explain`` never disagrees), then the Dose Check."""
    routes = routes_of(exam, rules)
    by_severity = {severity: routed_recipients(exam, rules, severity, routes) for severity in ("notification", "alert")}
    found = exceedances(exam, rules, lambda rule: by_severity[rule.severity])
    if rules.dose_check.notify:
        recipients = unique_addresses((*by_severity["notification"], *rules.dose_check.recipients))
        found.extend(_dose_checks(exam.events, recipients))
    return found


def routes_of(exam: Exam, rules: RuleSet) -> tuple[Route, ...]:
    """The routes whose stations match the exam (station or display name of any of its rows)."""
    stations = exam.texts("station_name") + exam.texts("display_name")
    return tuple(
        route
        for route in rules.routes
        if (not route.station or any_match(route.station, stations)) and not any_match(route.not_station, stations)
    )


def routed_recipients(
    exam: Exam, rules: RuleSet, severity: Severity = "notification", routes: Sequence[Route] | None = None
) -> tuple[str, ...]:
    """Who is told about every exceedance of the exam: the recipients of all routes that match it, in
    file order, or the default recipients when no route does; for an alert, those routes' (or the
    defaults') ``alert_recipients`` too. Each rule's own recipients come on top."""
    matched = routes_of(exam, rules) if routes is None else routes
    alert = severity == "alert"
    if not matched:
        return unique_addresses((*rules.default_recipients, *(rules.default_alert_recipients if alert else ())))
    return unique_addresses(
        address for route in matched for address in (*route.recipients, *(route.alert_recipients if alert else ()))
    )


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
