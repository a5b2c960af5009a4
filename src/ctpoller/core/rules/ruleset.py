"""The rules as values: entries, criteria, a rule, the Dose Check settings, the rule set."""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import TYPE_CHECKING

from ctpoller.core.exam import Metric, Phantom, Severity

if TYPE_CHECKING:  # [[trend]], [[cumulative]]: their modules match exams with this module's rules
    from ctpoller.core.rules.cumulative import Cumulative
    from ctpoller.core.rules.trend import Trend

#: The rule name of exceedances found by the scanner's own Dose Check (reserved in the rules file).
DOSE_CHECK_RULE = "Scanner Dose Check"

#: Exam-level text criteria (any study row of the exam), then event-level ones (each event).
_EXAM_TEXTS = ("study", "procedure", "station", "manufacturer", "model")
_EVENT_TEXTS = ("protocol", "standard_name", "target_region")
_TEXT_CRITERIA = (
    "study",
    "procedure",
    "protocol",
    "standard_name",
    "station",
    "manufacturer",
    "model",
    "target_region",
)
_LIMITS = ("ctdivol", "dlp", "dlp_total")
_DRLS = ("drl_ctdivol", "drl_dlp", "drl_dlp_total")
_NOT_CRITERIA = tuple(f"not_{key}" for key in _TEXT_CRITERIA)
#: The criteria keys of a rule, a trend and a cumulative rule alike.
_CRITERIA_KEYS = (
    *_TEXT_CRITERIA,
    *_NOT_CRITERIA,
    "age_min",
    "age_max",
    "weight_min",
    "weight_max",
    "phantom",
    "acquisition_type",
    "not_acquisition_type",
)
_RULE_KEYS = (
    "name",
    *_CRITERIA_KEYS,
    *_LIMITS,
    *_DRLS,
    "notify_above",
    "reference",
    "priority",
    "stop",
    "severity",
    "recipients",
)
_ROUTE_KEYS = ("name", "station", "not_station", "recipients", "alert_recipients")
_SEVERITIES: tuple[Severity, ...] = ("notification", "alert")

#: The acquisition types a rule may name, and the DICOM codes (CID 10013, OpenREM's ``code_value``)
#: that stand for each: spiral has three codes (SRT, SNOMED CT, UMLS) in the wild.
ACQUISITION_TYPES: dict[str, tuple[str, ...]] = {
    "spiral": ("P5-08001", "116152004", "C0860888"),
    "sequenced": ("113804",),
    "stationary": ("113806",),
    "constant_angle": ("113805",),
    "free": ("113807",),
}
_TOP_KEYS = ("defaults", "rule", "route", "dose_check", "trend", "cumulative")
_PHANTOMS: tuple[Phantom, ...] = ("head", "body")
_NOT_IN_ADDRESS = frozenset(",;<>\"'")
_NAME_MAX = 200


@functools.lru_cache(maxsize=65536)  # the same protocols and descriptions recur in every exam
def _fold(text: str) -> str:
    return unicodedata.normalize("NFC", unicodedata.normalize("NFC", text).casefold())


@dataclass(frozen=True)
class Entry:
    """One alternative of a criterion: every word (folded substring) and every regular expression
    must match the same value."""

    words: tuple[str, ...] = ()
    regexes: tuple[re.Pattern[str], ...] = ()

    def matches(self, value: str | None) -> bool:
        if not value:
            return False
        if self.words:
            folded = _fold(value)
            for word in self.words:  # a loop, not all(): this runs for every rule, event and entry
                if word not in folded:
                    return False
        if self.regexes:
            normal = unicodedata.normalize("NFC", value)
            return all(regex.search(normal) is not None for regex in self.regexes)
        return True

    def shown(self, *, in_list: bool = False) -> str:
        """The entry as the rules file wrote it (folded): ``"ped head"``, ``"re:^NCT"``, a phrase as a
        list of words (``[["with contrast"]]``, in a list ``["with contrast"]``), or
        ``{ all = ["ped", "re:head"] }`` when it mixes words and regular expressions."""
        regexes = [_quoted(f"re:{r.pattern}") for r in self.regexes]
        words = [_quoted(word) for word in self.words]
        if any(c.isspace() for word in self.words for c in word):
            listed = "[" + ", ".join(words) + "]"
            if not regexes:
                return listed if in_list else f"[{listed}]"
            return "{ all = [" + ", ".join([listed, *regexes]) + "] }"
        if not regexes:
            return _quoted(" ".join(self.words))
        if not words and len(regexes) == 1:
            return regexes[0]
        return "{ all = [" + ", ".join([*words, *regexes]) + "] }"


Criterion = tuple[Entry, ...]


@dataclass(frozen=True)
class Rule:
    """One ``[[rule]]``: criteria (empty = no condition), limits (None = not checked), recipients.

    A limit is plain (``ctdivol``) or a reference level (``drl_ctdivol``) times ``notify_above``;
    ``limit(metric)`` is the effective one. ``acquisition_type`` holds names (keys of
    ``ACQUISITION_TYPES``)."""

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
    manufacturer: Criterion = ()
    not_manufacturer: Criterion = ()
    model: Criterion = ()
    not_model: Criterion = ()
    target_region: Criterion = ()
    not_target_region: Criterion = ()
    age_min: Decimal | None = None
    age_max: Decimal | None = None
    weight_min: Decimal | None = None
    weight_max: Decimal | None = None
    phantom: Phantom | None = None
    acquisition_type: tuple[str, ...] = ()
    not_acquisition_type: tuple[str, ...] = ()
    ctdivol: Decimal | None = None
    dlp: Decimal | None = None
    dlp_total: Decimal | None = None
    drl_ctdivol: Decimal | None = None
    drl_dlp: Decimal | None = None
    drl_dlp_total: Decimal | None = None
    notify_above: Decimal | None = None  # None: 1 (only with a drl_* key)
    reference: str | None = None
    priority: int = 0
    stop: bool = False
    severity: Severity = "notification"
    recipients: tuple[str, ...] = ()

    def reference_value(self, metric: Metric) -> Decimal | None:
        """The reference level (``drl_*``) of ``metric``, None for a plain limit or none."""
        value: Decimal | None = getattr(self, f"drl_{metric}", None)
        return value

    def multiple(self, metric: Metric) -> Decimal | None:
        """``notify_above`` (default 1) when ``metric`` has a reference level, else None."""
        if self.reference_value(metric) is None:
            return None
        return self.notify_above if self.notify_above is not None else Decimal(1)

    def limit(self, metric: Metric) -> Decimal | None:
        """The effective limit of ``metric``: the plain one, or reference level × multiple (exact)."""
        plain: Decimal | None = getattr(self, metric, None) if metric in _LIMITS else None
        if plain is not None:
            return plain
        drl, multiple = self.reference_value(metric), self.multiple(metric)
        return drl * multiple if drl is not None and multiple is not None else None

    def uses(self, key: str) -> bool:
        """Whether the rules file set ``key`` on this rule (a criterion, a limit, ...)."""
        value = getattr(self, key, None)
        return value is not None and value != ()

    @property
    def positive_event_criteria(self) -> bool:
        """Whether the rule picks events (protocol, standard name, phantom, acquisition type, region)."""
        return bool(self.protocol or self.standard_name or self.phantom or self.acquisition_type or self.target_region)


@dataclass(frozen=True)
class Route:
    """One ``[[route]]``: the exams of these stations (station or display name) go to ``recipients``
    instead of the default recipients."""

    name: str
    station: Criterion = ()
    not_station: Criterion = ()
    recipients: tuple[str, ...] = ()
    alert_recipients: tuple[str, ...] = ()  # told about alerts only, on top of ``recipients``

    def shown(self) -> str:
        """Its stations as the rules file wrote them (folded), e.g. ``station "ct north", "re:^NCT"``."""
        keys = (("station", self.station), ("not_station", self.not_station))
        return "; ".join(f"{key} {shown_criterion(value)}" for key, value in keys if value)


def shown_criterion(criterion: Criterion) -> str:
    """A criterion in one line: its entries quoted, a regular expression with its ``re:``; several
    entries (any of them) as ``{ any = [...] }``."""
    if len(criterion) == 1:
        return criterion[0].shown()
    return "{ any = [" + ", ".join(entry.shown(in_list=True) for entry in criterion) + "] }"


def printable(text: str) -> str:
    """``text`` on one line as people can read it: a non-printable character as ``\\uXXXX``."""
    return "".join(c if c.isprintable() else f"\\u{ord(c):04x}" for c in text)


def _quoted(text: str) -> str:
    return '"' + printable(text) + '"'


@dataclass(frozen=True)
class DoseCheckConfig:
    """``[dose_check]``: whether to report the scanner's own Dose Check, and to whom besides defaults."""

    notify: bool = False
    recipients: tuple[str, ...] = ()


@dataclass(frozen=True)
class RuleSet:
    """A parsed rules file. ``default_recipients`` receive the exams that no route matches (and
    ``default_alert_recipients`` their alerts besides). ``rules`` are in precedence order: highest
    ``priority`` first, ties in file order."""

    default_recipients: tuple[str, ...] = ()
    rules: tuple[Rule, ...] = ()
    dose_check: DoseCheckConfig = field(default_factory=DoseCheckConfig)
    routes: tuple[Route, ...] = ()
    default_alert_recipients: tuple[str, ...] = ()
    trends: tuple[Trend, ...] = ()
    cumulatives: tuple[Cumulative, ...] = ()

    def with_recipients(self, extra: Sequence[str]) -> RuleSet:
        """The same rules with ``extra`` default recipients (e.g. CTPOLLER_MAIL_TO) after the file's own."""
        cleaned = [address.strip() for address in extra if address.strip()]
        return replace(self, default_recipients=unique_addresses((*self.default_recipients, *cleaned)))

    def without_recipients(self) -> list[str]:
        """Names of the rules, trends, cumulative rules (and the Dose Check) that would notify nobody about
        an exam no route matches."""
        if self.default_recipients:
            return []
        watches: tuple[Rule | Trend | Cumulative, ...] = (*self.rules, *self.trends, *self.cumulatives)
        missing = [rule.name for rule in watches if not rule.recipients and not self._alerted(rule)]
        if self.dose_check.notify and not self.dose_check.recipients:
            missing.append("[dose_check]")
        return missing

    def _alerted(self, rule: Rule | Trend | Cumulative) -> bool:
        return rule.severity == "alert" and bool(self.default_alert_recipients)

    @property
    def uses_standard_names(self) -> bool:
        return any(rule.standard_name or rule.not_standard_name for rule in self.rules)


# ---------------------------------------------------------------------------------------------- parse


def unique_addresses(addresses: Iterable[str]) -> tuple[str, ...]:
    """The addresses in order, each once (compared without case)."""
    seen: set[str] = set()
    kept: list[str] = []
    for address in addresses:
        if address.casefold() not in seen:
            seen.add(address.casefold())
            kept.append(address)
    return tuple(kept)


def is_address(text: str) -> bool:
    """One plain e-mail address: one "@" with text on both sides, ASCII (many mail servers take no
    internationalised addresses), no spaces, commas, semicolons, quotes, angle brackets or control
    characters. The one check of an address, in the rules file and in the settings alike."""
    local, at, domain = text.partition("@")
    return (
        bool(local and at and domain)
        and text.isascii()
        and "@" not in domain
        and not any(c.isspace() or not c.isprintable() or c in _NOT_IN_ADDRESS for c in text)
    )
