"""The rules file: which exams and events are checked against which dose limits. Pure: no I/O, no clock.

``parse_rules(text, source=path)`` turns the TOML text into a ``RuleSet`` or raises ``ConfigError``
with one line naming the file, the rule and the key. ``evaluate(exam, rules)`` returns every
``Exceedance`` of one exam, in a fixed order. ``screen(rules, protocols)`` turns the rules into
questions the database can answer per study row, so that ``backfill`` reads in full only the exams
that could exceed something. See ``examples/rules.toml`` for a commented file.

The file
    ``[defaults] recipients`` are told about every exceedance. Each ``[[rule]]`` has a unique
    ``name`` (its identity is ``model.rule_identity``: case and spacing do not count; "Scanner Dose
    Check" is reserved), criteria, at least one
    limit and optional ``recipients`` (added to the defaults). ``[dose_check] notify = true`` also
    reports the scanner's own NEMA XR-25 Dose Check values (optional ``recipients``, added to the
    defaults). Any other key, anywhere, is an error. Addresses need one "@" with text on both sides
    and no spaces, commas, semicolons, quotes, angle brackets or control characters.

Criteria (all optional; different keys must all pass, entries of one key are alternatives)
    ``study`` (study description), ``procedure`` (requested procedure or procedure code meaning),
    ``station`` (station name or display name) look at every study row of the exam: a positive key
    passes when ANY value matches, its ``not_`` twin excludes when ANY value matches.
    ``protocol`` (acquisition protocol) and ``standard_name`` (the event's OpenREM standard names and
    those of its study row) look at each event. ``phantom`` ("head" = 16 cm, "body" = 32 cm CTDIw
    phantom) too. ``age_min <= age < age_max`` in years: the patient's possible ages
    (``model.age_range``) must overlap the band; an unknown age never matches an age band.

    A criterion is a string or a list of entries. An entry is a string or a list of words. A string
    matches when all its whitespace-separated words occur in the value, case-insensitively, in any
    order (``"ped head"`` matches "HEAD PED ROUTINE"). In a list of words each word is matched as
    written, spaces included (``[["ped", "head"]]`` is ``"ped head"``; ``[["with contrast"]]`` needs
    the phrase). A string starting ``re:`` is a regular expression (``re.search``, ignoring case).
    Text is compared after Unicode NFC normalisation and case folding. A missing or empty value
    never matches a criterion and never excludes.

Limits (strictly greater than the limit is an exceedance; a missing, infinite or NaN dose never is)
    ``ctdivol`` (mGy) and ``dlp`` (mGy·cm) apply to each event that passes the exam-level and
    event-level criteria. ``dlp_total`` (mGy·cm) applies to the exam's total DLP when the exam-level
    criteria pass, some event passes the positive event-level criteria (if the rule has any) and no
    event is excluded by a ``not_`` event-level criterion (``not_protocol = ["perfusion"]`` keeps a
    perfusion exam out of its total-DLP limit).

Dose Check (``[dose_check] notify = true``)
    For each event and metric, the highest value over a configured (not false), finite, positive
    notification or alert value: notification values against the event's forward estimate (else its
    CTDIvol or DLP), alert values against the accumulated forward estimate only.

Order of the results: rules in file order (the Dose Check last); within a rule ``dlp_total``, then
``ctdivol``, then ``dlp`` (Dose Check: notification CTDIvol, DLP, alert CTDIvol, DLP); then events in
exam order. Every matching rule reports: two rules give two exceedances for one event.
"""

from __future__ import annotations

import difflib
import functools
import math
import re
import tomllib
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any, Literal, NoReturn

from ctpoller.errors import ConfigError
from ctpoller.model import (
    UNIT_MGY,
    UNIT_MGYCM,
    AgeRange,
    Event,
    Exam,
    Exceedance,
    Metric,
    Phantom,
    Screened,
    finite,
    rule_identity,
)

#: The rule name of exceedances found by the scanner's own Dose Check (reserved in the rules file).
DOSE_CHECK_RULE = "Scanner Dose Check"

_TEXT_CRITERIA = ("study", "procedure", "protocol", "standard_name", "station")
_LIMITS = ("ctdivol", "dlp", "dlp_total")
_NOT_CRITERIA = tuple(f"not_{key}" for key in _TEXT_CRITERIA)
_RULE_KEYS = (
    "name",
    *_TEXT_CRITERIA,
    *_NOT_CRITERIA,
    "age_min",
    "age_max",
    "phantom",
    *_LIMITS,
    "recipients",
)
_TOP_KEYS = ("defaults", "rule", "dose_check")
_PHANTOMS: tuple[Phantom, ...] = ("head", "body")
_NOT_IN_ADDRESS = frozenset(",;<>\"'")
_NAME_MAX = 200


@functools.lru_cache(maxsize=65536)  # the same protocols and descriptions recur in every exam
def _fold(text: str) -> str:
    return unicodedata.normalize("NFC", unicodedata.normalize("NFC", text).casefold())


@dataclass(frozen=True)
class Entry:
    """One alternative of a criterion: all ``words`` (folded substrings), or a ``regex``."""

    words: tuple[str, ...] = ()
    regex: re.Pattern[str] | None = None

    def matches(self, value: str | None) -> bool:
        if not value:
            return False
        if self.regex is not None:
            return self.regex.search(unicodedata.normalize("NFC", value)) is not None
        folded = _fold(value)
        return all(word in folded for word in self.words)


Criterion = tuple[Entry, ...]


@dataclass(frozen=True)
class Rule:
    """One ``[[rule]]``: criteria (empty = no condition), limits (None = not checked), recipients."""

    name: str
    study: Criterion = ()
    not_study: Criterion = ()
    procedure: Criterion = ()
    not_procedure: Criterion = ()
    protocol: Criterion = ()
    not_protocol: Criterion = ()
    standard_name: Criterion = ()
    not_standard_name: Criterion = ()
    station: Criterion = ()
    not_station: Criterion = ()
    age_min: Decimal | None = None
    age_max: Decimal | None = None
    phantom: Phantom | None = None
    ctdivol: Decimal | None = None
    dlp: Decimal | None = None
    dlp_total: Decimal | None = None
    recipients: tuple[str, ...] = ()


@dataclass(frozen=True)
class DoseCheckConfig:
    """``[dose_check]``: whether to report the scanner's own Dose Check, and to whom besides defaults."""

    notify: bool = False
    recipients: tuple[str, ...] = ()


@dataclass(frozen=True)
class RuleSet:
    """A parsed rules file."""

    default_recipients: tuple[str, ...] = ()
    rules: tuple[Rule, ...] = ()
    dose_check: DoseCheckConfig = field(default_factory=DoseCheckConfig)

    def with_recipients(self, extra: Sequence[str]) -> RuleSet:
        """The same rules with ``extra`` default recipients (e.g. CTPOLLER_MAIL_TO) after the file's own."""
        cleaned = [address.strip() for address in extra if address.strip()]
        return replace(self, default_recipients=_unique((*self.default_recipients, *cleaned)))

    def without_recipients(self) -> list[str]:
        """Names of the rules (and the Dose Check) that would notify nobody."""
        if self.default_recipients:
            return []
        missing = [rule.name for rule in self.rules if not rule.recipients]
        if self.dose_check.notify and not self.dose_check.recipients:
            missing.append("[dose_check]")
        return missing

    @property
    def uses_standard_names(self) -> bool:
        return any(rule.standard_name or rule.not_standard_name for rule in self.rules)


# ---------------------------------------------------------------------------------------------- parse


def parse_rules(text: str, *, source: str) -> RuleSet:
    """Parse a rules file; ``source`` (its path) names it in error messages."""
    where = f"rules file {source}"
    try:
        document = tomllib.loads(text)
    except ValueError as e:  # tomllib.TOMLDecodeError: the message names line and column
        raise ConfigError(f"{where}: not valid TOML: {_escape(str(e))}") from None
    except RecursionError:
        raise ConfigError(f"{where}: not valid TOML: arrays or tables nested too deeply") from None
    _check_keys(document, _TOP_KEYS, where)
    defaults = _table(document, "defaults", where)
    _check_keys(defaults, ("recipients",), f"{where}: [defaults]")
    recipients = _recipients(defaults, f"{where}: [defaults]")
    dose_table = _table(document, "dose_check", where)
    _check_keys(dose_table, ("notify", "recipients"), f"{where}: [dose_check]")
    notify = dose_table.get("notify", False)
    if not isinstance(notify, bool):
        _fail(f"{where}: [dose_check]", "notify", f"must be true or false, not {_show(notify)}")
    dose_check = DoseCheckConfig(notify=notify, recipients=_recipients(dose_table, f"{where}: [dose_check]"))
    tables = document.get("rule", [])
    if not isinstance(tables, list):
        _fail(where, "rule", f"must be an array of tables, written [[rule]], not {_show(tables)}")
    rules: list[Rule] = []
    seen: dict[str, str] = {rule_identity(DOSE_CHECK_RULE): "the Scanner Dose Check (reserved name)"}
    for number, table in enumerate(tables, start=1):
        rule = _parse_rule(table, number, where)
        if rule_identity(rule.name) in seen:
            _fail(f"{where}: rule '{rule.name}'", "name", f"is already used by {seen[rule_identity(rule.name)]}")
        seen[rule_identity(rule.name)] = f"rule #{number}"
        rules.append(rule)
    if not rules and not dose_check.notify:
        raise ConfigError(f"{where}: has no [[rule]] and [dose_check] notify is not true: nothing to check")
    return RuleSet(default_recipients=recipients, rules=tuple(rules), dose_check=dose_check)


def _parse_rule(table: object, number: int, where: str) -> Rule:
    if not isinstance(table, dict):
        _fail(where, "rule", f"entry #{number} must be a table, written [[rule]], not {_show(table)}")
    name = table.get("name")
    valid_name = isinstance(name, str) and _name_problem(name) is None
    here = f"{where}: rule '{name.strip()}'" if valid_name and isinstance(name, str) else f"{where}: rule #{number}"
    _check_keys(table, _RULE_KEYS, here)
    if not isinstance(name, str):
        _fail(here, "name", "is required" if name is None else f"must be a string, not {_show(name)}")
    problem = _name_problem(name)
    if problem:
        _fail(here, "name", problem)
    fields: dict[str, Any] = {"name": name.strip(), "recipients": _recipients(table, here)}
    for key in (*_TEXT_CRITERIA, *_NOT_CRITERIA):
        if key in table:
            fields[key] = _criterion(table[key], here, key)
    for key in ("age_min", "age_max"):
        if key in table:
            age = _number(table[key])
            if age is None or age < 0:
                _fail(here, key, f"must be a number of years, 0 or more, not {_show(table[key])}")
            fields[key] = age
    if "age_min" in fields and "age_max" in fields and fields["age_min"] >= fields["age_max"]:
        _fail(here, "age_max", f"must be greater than age_min ({fields['age_min']}), not {fields['age_max']}")
    if "phantom" in table:
        phantom = table["phantom"]
        folded = phantom.strip().casefold() if isinstance(phantom, str) else None
        if folded not in _PHANTOMS:
            _fail(here, "phantom", f'must be "head" (16 cm) or "body" (32 cm), not {_show(phantom)}')
        fields["phantom"] = folded
    for key in _LIMITS:
        if key in table:
            limit = _number(table[key])
            if limit is None or limit <= 0:
                _fail(here, key, f"must be a number greater than 0, not {_show(table[key])}")
            fields[key] = limit
    if not any(key in fields for key in _LIMITS):
        raise ConfigError(f"{here}: has no limit: set at least one of ctdivol, dlp, dlp_total")
    return Rule(**fields)


def _criterion(value: object, where: str, key: str) -> Criterion:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list):
        _fail(where, key, f"must be a string or a list of strings and lists of words, not {_show(value)}")
    if not items:
        _fail(where, key, "must not be an empty list")
    entries: list[Entry] = []
    for item in items:
        if isinstance(item, str) and item.startswith("re:"):
            entries.append(_regex(item, where, key))
        elif isinstance(item, str):
            if not item.split():
                _fail(where, key, "must not contain an empty string")
            entries.append(Entry(words=tuple(_fold(word) for word in item.split())))
        elif isinstance(item, list):
            if not item:
                _fail(where, key, "must not contain an empty list of words")
            bad = next((word for word in item if not isinstance(word, str) or not word.strip()), None)
            if bad is not None:
                _fail(where, key, f"a list of words must hold non-empty strings, not {_show(bad)}")
            entries.append(Entry(words=tuple(_fold(word.strip()) for word in item)))
        else:
            _fail(where, key, f"entries must be strings or lists of words, not {_show(item)}")
    return tuple(entries)


def _regex(item: str, where: str, key: str) -> Entry:
    pattern = unicodedata.normalize("NFC", item[3:])
    if not pattern.strip():
        _fail(where, key, f"empty regular expression {_show(item)}")
    try:
        return Entry(regex=re.compile(pattern, re.IGNORECASE))
    except (re.error, OverflowError, RecursionError, ValueError) as e:
        _fail(where, key, f"invalid regular expression {_show(item)}: {_escape(str(e))}")


def _recipients(table: dict[str, Any], where: str) -> tuple[str, ...]:
    value = table.get("recipients", [])
    if not isinstance(value, list):
        _fail(where, "recipients", f"must be a list of e-mail addresses, not {_show(value)}")
    for address in value:
        if not isinstance(address, str) or not _looks_like_address(address.strip()):
            _fail(
                where,
                "recipients",
                f"must hold plain (ASCII) e-mail addresses such as physics@example.org, not {_show(address)}",
            )
    return _unique(address.strip() for address in value)


def _looks_like_address(text: str) -> bool:
    local, at, domain = text.partition("@")
    return (
        bool(local and at and domain)
        and text.isascii()  # many mail servers take no internationalised (SMTPUTF8) addresses
        and "@" not in domain
        and not any(c.isspace() or not c.isprintable() or c in _NOT_IN_ADDRESS for c in text)
    )


def _name_problem(name: str) -> str | None:
    if not name.strip():
        return "must not be empty"
    if len(name.strip()) > _NAME_MAX or not name.isprintable():
        return f"must be one line of at most {_NAME_MAX} printable characters, not {_show(name)}"
    return None


def _table(document: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    value = document.get(key, {})
    if not isinstance(value, dict):
        _fail(where, key, f"must be a table, written [{key}], not {_show(value)}")
    return value


def _check_keys(table: dict[str, Any], allowed: Sequence[str], where: str) -> None:
    for key in table:
        if key not in allowed:
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f"did you mean '{close[0]}'?" if close else f"expected one of: {', '.join(allowed)}"
            _fail(where, key, f"unknown key ({hint})")


def _number(value: object) -> Decimal | None:
    """A TOML integer or finite float as a Decimal (60.1 stays 60.1); None for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, float) and math.isfinite(value):
        return Decimal(str(value))
    return None


def _unique(addresses: Iterable[str]) -> tuple[str, ...]:
    seen: set[str] = set()
    kept: list[str] = []
    for address in addresses:
        if address.casefold() not in seen:
            seen.add(address.casefold())
            kept.append(address)
    return tuple(kept)


def _escape(text: str) -> str:
    return "".join(c if c.isprintable() else f"\\u{ord(c):04x}" for c in text)


def _show(value: object) -> str:
    """A value from the file as a person would recognise it in a one-line message."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        text = _escape(value).replace('"', '\\"')
        return f'"{text}"' if len(text) <= 60 else f'"{text[:57]}..."'
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return f"a TOML {type(value).__name__}"


def _fail(where: str, key: str, problem: str) -> NoReturn:
    raise ConfigError(f"{where}: key '{_escape(key)}': {problem}")


# ---------------------------------------------------------------------------------------------- evaluate


def evaluate(exam: Exam, rules: RuleSet) -> list[Exceedance]:
    """Every exceedance of the rules in one exam, in the documented order."""
    events = exam.events
    row_names = {row.pk: row.standard_names for row in exam.rows}
    found: list[Exceedance] = []
    for rule in rules.rules:
        recipients = _unique((*rules.default_recipients, *rule.recipients))
        found.extend(_apply(rule, exam, events, row_names, recipients))
    if rules.dose_check.notify:
        recipients = _unique((*rules.default_recipients, *rules.dose_check.recipients))
        found.extend(_dose_checks(events, recipients))
    return found


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
    return _age_passes(rule, exam.age) and _texts_pass(rule, exam)


def _age_passes(rule: Rule, age: AgeRange | None) -> bool:
    """A patient who may be in the band (``model.age_range``) matches it; an unknown age never does."""
    if rule.age_min is None and rule.age_max is None:
        return True
    return age is not None and age.overlaps(rule.age_min, rule.age_max)


def _texts_pass(rule: Rule, exam: Exam) -> bool:
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
    if rule.protocol and not _any_match(rule.protocol, (event.protocol,)):
        return False
    return not rule.standard_name or _any_match(rule.standard_name, _standard_names(event, row_names))


def _event_excluded(rule: Rule, event: Event, row_names: dict[int, tuple[str, ...]]) -> bool:
    return _any_match(rule.not_protocol, (event.protocol,)) or _any_match(
        rule.not_standard_name, _standard_names(event, row_names)
    )


def _standard_names(event: Event, row_names: dict[int, tuple[str, ...]]) -> tuple[str, ...]:
    return event.standard_names + row_names.get(event.study_pk, ())


def _passes(wanted: Criterion, unwanted: Criterion, values: Sequence[str | None]) -> bool:
    return (not wanted or _any_match(wanted, values)) and not _any_match(unwanted, values)


def _any_match(entries: Criterion, values: Iterable[str | None]) -> bool:
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
    if its range (``model.age_range``) overlaps the band, and any row with an age string may be.
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
    questions over-approximate every event-level criterion (standard names are ignored; protocols,
    excluded protocols and phantoms only narrow), and the exam-level criteria (description,
    procedure, station, age) are applied exactly, as ``evaluate`` does.
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
            if _age_passes(rule, exam.age) and self._texts_pass(bound.rule, rule, exam):
                return True
        return False

    def _texts_pass(self, index: int, rule: Rule, exam: Exam) -> bool:
        row = exam.first
        key = (index, row.description, row.requested_procedure, row.procedure, row.station_name, row.display_name)
        known = self._texts.get(key)
        if known is None:
            if len(self._texts) > 100_000:  # many distinct texts: stay bounded
                self._texts.clear()
            known = self._texts[key] = _texts_pass(rule, exam)
        return known


def screen(rules: RuleSet, protocols: Iterable[str | None]) -> Screen:
    """The questions for ``rules``; ``protocols`` are the distinct raw protocol values in OpenREM.

    A rule that names protocols none of which occur can report nothing, so it asks nothing.
    """
    distinct = sorted({p for p in protocols if p is not None})
    bounds: list[Bound] = []
    for index, rule in enumerate(rules.rules):
        allowed: tuple[str, ...] | None = None
        if rule.protocol:
            allowed = tuple(p for p in distinct if _any_match(rule.protocol, (p.strip() or None,)))
            if not allowed:
                continue
        # an excluded event never counts for the rule's per-event limits (it does for dlp_total: any
        # excluded event takes the exam out of it, which the screen does not try to tell)
        excluded = tuple(p for p in distinct if _any_match(rule.not_protocol, (p.strip() or None,)))
        per_event: tuple[tuple[BoundMetric, Decimal | None], ...] = (("ctdivol", rule.ctdivol), ("dlp", rule.dlp))
        for metric, limit in per_event:
            if limit is not None:
                bounds.append(
                    Bound(index, metric, _threshold(limit), rule.phantom, allowed, rule.age_min, rule.age_max, excluded)
                )
        if rule.dlp_total is not None:
            bounds.append(
                Bound(index, "dlp_total", _threshold(rule.dlp_total), age_min=rule.age_min, age_max=rule.age_max)
            )
    return Screen(rules=rules, bounds=tuple(bounds), dose_check=rules.dose_check.notify)


def _threshold(limit: Decimal) -> Decimal:
    return limit - limit * SCREEN_MARGIN
