"""``ctpoller explain``, the rules part: every rule in precedence order with why it matched or not, each
check it made (or a higher ``stop`` rule took), the scanner's Dose Check, the trends and cumulative rules.

Everything shown comes from ``core.rules.explain.trace`` and ``core.rules.evaluate``, the functions a run
notifies by, so what ``explain`` says can never differ from what a run does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from decimal import Decimal
from typing import Any

from ctpoller.core.exam import UNIT_MGY, UNIT_MGYCM, Event, Exam, Metric
from ctpoller.core.rules import DOSE_CHECK_RULE, DoseCheckConfig, Rule, RuleSet, evaluate
from ctpoller.core.rules.explain import Check, EventTrace, RuleTrace, Verdict, total_applies, trace
from ctpoller.jobs.table import Paint, aligned, clipped
from ctpoller.mail.render import format_decimal

LIMIT_METRICS: tuple[Metric, ...] = ("dlp_total", "ctdivol", "dlp")
SHORT_LABELS = {"ctdivol": "CTDIvol", "dlp": "DLP", "dlp_total": "DLP total"}
UNITS = {"ctdivol": UNIT_MGY, "dlp": UNIT_MGYCM, "dlp_total": UNIT_MGYCM}
_INDENT = "     "
_PROTOCOL_CELLS = 28
_WHY = {"reason": "reason:", "authorised_by": "authorised by"}  # what the scanner recorded on proceeding


def number(value: Decimal | None) -> str:
    return "–" if value is None else format_decimal(value)


def limit_shown(rule: Rule, metric: Metric) -> str | None:
    """A rule's limit of ``metric`` as it is now: ``80 mGy``, or ``60 × 1.333 = 80 mGy`` for a reference
    level times its multiple; with the source when the rule names one. None when it has no such limit."""
    limit = rule.limit(metric)
    if limit is None:
        return None
    shown = f"{number(limit)} {UNITS[metric]}"
    drl, multiple = rule.reference_value(metric), rule.multiple(metric)
    if drl is not None and multiple is not None:
        shown = f"{number(drl)} × {number(multiple)} = {shown}"
    return shown + (f" ({rule.reference})" if rule.reference else "")


def limits_shown(rule: Rule) -> str:
    """Every limit of a rule in one line, e.g. ``CTDIvol 80 mGy; DLP total 1000 mGy·cm (AAPM)``."""
    found = [(metric, limit_shown(rule, metric)) for metric in LIMIT_METRICS]
    return "; ".join(f"{SHORT_LABELS[metric]} {text}" for metric, text in found if text is not None)


def precedence_shown(rule: Rule) -> str:
    """What decides the rule's place and weight: ``priority 10 · stop · alert`` (empty when all default)."""
    parts = [f"priority {rule.priority}"] if rule.priority else []
    parts += ["stop"] if rule.stop else []
    parts += ["alert"] if rule.severity == "alert" else []
    return " · ".join(parts)


def rule_lines(exam: Exam, rules: RuleSet, paint: Paint) -> list[str]:
    """The rules section: one line per rule that does not match the exam (the first criterion that
    failed), a block per rule that does (its criteria, events and checks)."""
    lines = [paint.bold("Rules") + paint.dim(" (in precedence order: highest priority first, then file order)")]
    if not rules.rules:
        return [*lines, f"{_INDENT}(the rules file has no [[rule]])"]
    for rule_trace in trace(exam, rules):
        lines.extend(_rule_block(rule_trace, paint))
    return lines


def _rule_block(t: RuleTrace, paint: Paint) -> list[str]:
    rule = t.rule
    applies = bool(t.checks)  # it compared something (or a higher stop rule took the comparison)
    head = f"{paint.mark(applies)} {t.position:>2}  {paint.bold(rule.name)}"
    extra = precedence_shown(rule)
    head += paint.dim(f"  {extra}") if extra else ""
    failed = [v for v in t.verdicts if not v.passed]
    if not t.exam_matched:
        more = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
        return [f"{head}  — {_why(failed[0])}{more}"]
    if not applies:
        per_event = any(rule.limit(metric) is not None for metric in ("ctdivol", "dlp"))
        why = "no event passes its event-level criteria" if per_event else f"DLP total not checked: {_total_why(t)}"
        return [f"{head}  — {why}", *_event_lines(t, paint)]
    lines = [head, f"{_INDENT}limits   {limits_shown(rule)}"]
    exam_why = [f"{paint.mark(v.passed)} {_why(v)}" for v in t.verdicts] or ["every exam (no exam-level criteria)"]
    lines += [f"{_INDENT}{'exam' if i == 0 else '':<8} {why}" for i, why in enumerate(exam_why)]
    lines += _event_lines(t, paint)
    lines += _check_lines(t, paint)
    return lines


def _why(verdict: Verdict) -> str:
    """A verdict's reason; a ``not_`` criterion's with its key, so that "no match" reads as "not excluded"."""
    return f"{verdict.key}: {verdict.why}" if verdict.key.startswith("not_") else verdict.why


def _event_lines(t: RuleTrace, paint: Paint) -> list[str]:
    """Each event's verdicts; events with the same verdicts on one line (``1, 3–5``)."""
    if not any(event.verdicts for event in t.events):
        return [f"{_INDENT}events   every event (no event-level criteria)"]
    groups: dict[tuple[bool, str], list[EventTrace]] = {}
    for e in t.events:
        groups.setdefault((e.matched, _whys(e)), []).append(e)
    rows = []
    for (ok, whys), events in groups.items():
        protocols = {e.protocol for e in events}
        protocol = next(iter(protocols)) or "(no protocol)" if len(protocols) == 1 else f"({len(protocols)} protocols)"
        rows.append([paint.mark(ok), _numbers([e.number for e in events]), clipped(protocol, _PROTOCOL_CELLS), whys])
    table = aligned(rows, right=(1,))
    return [f"{_INDENT}{'events' if i == 0 else '':<8} {line}" for i, line in enumerate(table)]


def _numbers(numbers: Sequence[int]) -> str:
    """Event numbers as runs: ``1, 3–5``."""
    runs: list[list[int]] = []
    for n in numbers:
        if runs and n == runs[-1][-1] + 1:
            runs[-1].append(n)
        else:
            runs.append([n])
    return ", ".join(str(run[0]) if len(run) == 1 else f"{run[0]}–{run[-1]}" for run in runs)


def _whys(event: EventTrace) -> str:
    """Why an event failed (its failed verdicts), or passed: its positive verdicts, then the ``not_`` keys
    that did not exclude it (their values are in the failed lines of the events they do exclude)."""
    if not event.matched:
        return "; ".join(_why(v) for v in event.verdicts if not v.passed)
    passed = [v.why for v in event.verdicts if not v.key.startswith("not_")]
    passed += [f"{v.key}: not excluded" for v in event.verdicts if v.key.startswith("not_")]
    return "; ".join(passed)


def _check_lines(t: RuleTrace, paint: Paint) -> list[str]:
    rows = []
    protocols = {e.event_key: (e.number, e.protocol) for e in t.events}
    unrecorded: dict[str, list[int]] = {}  # metric -> the events with no value: one line, not one each
    for check in t.checks:
        if check.value is None and check.stopped_by is None and check.event_key in protocols:
            unrecorded.setdefault(check.metric, []).append(protocols[check.event_key][0])
            continue
        where = "exam"
        if check.event_key:
            place, protocol = protocols.get(check.event_key, (0, None))
            where = f"event {place}" + (f" {clipped(protocol, _PROTOCOL_CELLS)}" if protocol else "")
        value = "–" if check.value is None else f"{number(check.value)} {UNITS[check.metric]}"
        compared = check.value is not None and check.stopped_by is None  # a stopped check compares nothing
        sign = (
            ">"
            if check.exceeded
            else ("≤" if compared and check.value is not None and check.value <= check.limit else "")
        )
        rows.append([where, SHORT_LABELS[check.metric], value, sign, f"{number(check.limit)}", _result(check, paint)])
    for metric, numbers in unrecorded.items():
        where = f"event{'s' if len(numbers) > 1 else ''} {_numbers(numbers)}"
        limit = next(number(c.limit) for c in t.checks if c.metric == metric)
        rows.append([where, SHORT_LABELS[metric], "–", "", limit, paint.dim("no value recorded")])
    lines = aligned(rows, right=(2, 4)) if rows else []
    if t.rule.limit("dlp_total") is not None and not any(c.metric == "dlp_total" for c in t.checks):
        lines.append(f"DLP total not checked: {_total_why(t)}")
    if not lines:
        lines.append("none: no event matches its event-level criteria")
    return [f"{_INDENT}{'checks' if i == 0 else '':<8} {line}" for i, line in enumerate(lines)]


def _result(check: Check, paint: Paint) -> str:
    if check.stopped_by is not None:
        return paint.warn(f"stopped by {check.stopped_by!r}") + paint.dim(" (a stop rule higher in precedence)")
    if check.value is None:
        return paint.dim("no value recorded")
    if check.exceeded:
        ratio = check.value / check.limit if check.limit else Decimal("Infinity")
        return paint.bad("EXCEEDED") + f" {ratio.quantize(Decimal('0.01'))} × the limit"
    return paint.good("within")


def _total_why(t: RuleTrace) -> str:
    excluded = [(e, v) for e in t.events for v in e.verdicts if v.key.startswith("not_") and not v.passed]
    if excluded:
        event, verdict = excluded[0]
        return f"event {event.number} is excluded ({verdict.why})"
    return "no event passes the event-level criteria"


# ---------------------------------------------------------------------------------------------- Dose Check


def dose_check_lines(exam: Exam, rules: RuleSet, paint: Paint) -> list[str]:
    """The scanner's own Dose Check: the values its events exceeded (as ``evaluate`` finds them)."""
    reported = rules.dose_check.notify
    state = "[dose_check] notify = true: reported" if reported else "[dose_check] notify is off: not reported"
    lines = [paint.bold("Scanner Dose Check") + paint.dim(f" ({state})")]
    with_rows = [event for event in exam.events if event.dose_checks]
    if not with_rows:
        return [*lines, "  no Dose Check recorded for this exam's events"]
    found = evaluate(exam, replace(rules, rules=(), dose_check=DoseCheckConfig(notify=True)))
    numbers = {event.key: (i, event) for i, event in enumerate(exam.events, start=1)}
    rows = []
    ordered = sorted((x for x in found if x.rule == DOSE_CHECK_RULE), key=lambda x: numbers[x.event_key][0])
    for x in ordered:
        place, event = numbers[x.event_key]
        kind = "alert" if x.metric.endswith("_alert") else "notification"
        why = [f"{shown} {text}" for what, shown in _WHY.items() if (text := _recorded(event, f"{kind}_{what}"))]
        shown = paint.bad("EXCEEDED") if reported else paint.warn("exceeded, not reported")
        where = f"event {place}" + (f" {clipped(event.protocol, _PROTOCOL_CELLS)}" if event.protocol else "")
        value = f"{number(x.value)} {x.unit} > {number(x.limit)} {x.unit}"
        metric = SHORT_LABELS[x.metric.split("_")[2]]  # dose_check_ctdivol_alert -> CTDIvol
        label = f"accumulated {metric} over its alert value" if kind == "alert" else f"{metric} over its {kind} value"
        rows.append([where, label, value, shown, "; ".join(why)])
    if not rows:
        return [*lines, f"  {len(with_rows)} event(s) with a Dose Check, none over a configured value"]
    return [*lines, *aligned(rows, indent="  ")]


def _recorded(event: Event, field: str) -> str | None:
    """What the scanner recorded on proceeding past a Dose Check value (reason, who authorised it)."""
    return next((text for check in event.dose_checks if (text := getattr(check, field))), None)


# ---------------------------------------------------------------------------------------------- trends


def watch_lines(exam: Exam, rules: RuleSet, paint: Paint) -> list[str]:
    """Trends and cumulative rules: whether the exam is of their type (criteria as a rule's) and what it
    counts; their windows are in the state store, their notifications under "What ctpoller notified"."""
    lines: list[str] = []
    for title, items in (("Trends", getattr(rules, "trends", ())), ("Cumulative", getattr(rules, "cumulatives", ()))):
        if not items:
            continue
        lines.append(paint.bold(title))
        for item in items:
            lines.append(_watch_line(exam, item, title == "Trends", paint))
    return lines


def _watch_line(exam: Exam, item: Any, is_trend: bool, paint: Paint) -> str:
    """✓ and what the exam counts in the watch's window, or ✗ and why it does not count."""
    criteria: Rule = item.criteria
    [t] = trace(exam, RuleSet(rules=(criteria,)))
    matched = [event for event, e in zip(exam.events, t.events, strict=True) if e.matched]
    metric = item.metric if is_trend else "dlp_total"
    failed = next((_why(v) for v in t.verdicts if not v.passed), None)
    if failed is None and not matched and criteria.positive_event_criteria:
        failed = "no event passes its event-level criteria"
    if failed is None and metric == "dlp_total" and not total_applies(criteria, t.events):
        failed = f"its total DLP is not counted: {_total_why(t)}"
    if failed is None and metric == "ctdivol":
        value = max((v for event in matched if (v := event.ctdivol_mgy) is not None and v.is_finite()), default=None)
        what = "the highest CTDIvol of its matching events"
    else:
        value, what = exam.total_dlp_mgycm, "its total DLP"
    if failed is None and is_trend and value is None:
        failed = "not counted: no value recorded"
    if failed is None and not is_trend and all(row.study_date is None for row in exam.rows):
        failed = "not counted: no study date"
    head = f"  {paint.mark(failed is None)}  {paint.bold(item.name)}"
    if failed is not None:
        return f"{head}  — {failed}"
    if not is_trend:
        dlp = f"{what} {number(value)} {UNIT_MGYCM}"
        return f"{head}  — counts as one of its patient's CT exams ({dlp}) where OpenREM holds the patient ID"
    unit, window = UNITS[metric], f"its station's window of {item.exams} exams"
    return f"{head}  — counts {number(value)} {unit} ({what}) in {window}, limit {number(item.limit)} {unit}"
