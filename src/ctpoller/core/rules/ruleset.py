"""The rules as values: entries, criteria, a rule, the Dose Check settings, the rule set."""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import TYPE_CHECKING

from ctpoller.core.exam import Phantom

if TYPE_CHECKING:  # [[trend]], [[cumulative]]: their modules match exams with this module's rules
    from ctpoller.core.rules.cumulative import Cumulative
    from ctpoller.core.rules.trend import Trend

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
_ROUTE_KEYS = ("name", "station", "not_station", "recipients")
_TOP_KEYS = ("defaults", "rule", "route", "dose_check", "trend", "cumulative")
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
class Route:
    """One ``[[route]]``: the exams of these stations (station or display name) go to ``recipients``
    instead of the default recipients."""

    name: str
    station: Criterion = ()
    not_station: Criterion = ()
    recipients: tuple[str, ...] = ()

    def shown(self) -> str:
        """Its stations as the rules file wrote them (folded), e.g. ``station "ct north", "re:^NCT"``."""
        keys = (("station", self.station), ("not_station", self.not_station))
        return "; ".join(f"{key} {shown_criterion(value)}" for key, value in keys if value)


def shown_criterion(criterion: Criterion) -> str:
    """A criterion in one line: its entries quoted, a regular expression with its ``re:``."""
    texts = (f"re:{e.regex.pattern}" if e.regex is not None else " ".join(e.words) for e in criterion)
    return ", ".join('"' + "".join(c if c.isprintable() else f"\\u{ord(c):04x}" for c in text) + '"' for text in texts)


@dataclass(frozen=True)
class DoseCheckConfig:
    """``[dose_check]``: whether to report the scanner's own Dose Check, and to whom besides defaults."""

    notify: bool = False
    recipients: tuple[str, ...] = ()


@dataclass(frozen=True)
class RuleSet:
    """A parsed rules file. ``default_recipients`` receive the exams that no route matches."""

    default_recipients: tuple[str, ...] = ()
    rules: tuple[Rule, ...] = ()
    dose_check: DoseCheckConfig = field(default_factory=DoseCheckConfig)
    routes: tuple[Route, ...] = ()
    trends: tuple[Trend, ...] = ()
    cumulatives: tuple[Cumulative, ...] = ()

    def with_recipients(self, extra: Sequence[str]) -> RuleSet:
        """The same rules with ``extra`` default recipients (e.g. CTPOLLER_MAIL_TO) after the file's own."""
        cleaned = [address.strip() for address in extra if address.strip()]
        return replace(self, default_recipients=unique_addresses((*self.default_recipients, *cleaned)))

    def without_recipients(self) -> list[str]:
        """Names of the rules (and the Dose Check) that would notify nobody about an exam no route matches."""
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
