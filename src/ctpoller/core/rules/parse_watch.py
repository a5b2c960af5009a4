"""``[[trend]]`` and ``[[cumulative]]`` of a rules file, or one line naming the file, the table and the key.

Their names are unique among rules, trends and cumulatives (``core.model.rule_identity``). Their
criteria are a rule's criteria, parsed and matched by the rule's own code.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from ctpoller.core.exam import Severity
from ctpoller.core.model import rule_identity
from ctpoller.core.rules.cumulative import Cumulative
from ctpoller.core.rules.parse import _acquisition_types, _bands, _criterion
from ctpoller.core.rules.ruleset import (
    _CRITERIA_KEYS,
    _NAME_MAX,
    _NOT_CRITERIA,
    _PHANTOMS,
    _SEVERITIES,
    _TEXT_CRITERIA,
    Rule,
)
from ctpoller.core.rules.toml_values import _check_keys, _fail, _number, _recipients, _show, named
from ctpoller.core.rules.trend import Trend
from ctpoller.errors import ConfigError

#: The criteria keys a trend or a cumulative takes (as a rule's).
CRITERIA_KEYS = _CRITERIA_KEYS
TREND_KEYS = (
    "name",
    *CRITERIA_KEYS,
    "metric",
    "drl",
    "reference",
    "exams",
    "above",
    "armed_above",
    "severity",
    "recipients",
)
CUMULATIVE_KEYS = ("name", *CRITERIA_KEYS, "days", "dlp_total", "exams", "severity", "recipients")
TREND_EXAMS = (2, 1000)
CUMULATIVE_DAYS = (1, 3650)


@dataclass(frozen=True)
class Watches:
    """The trends and cumulatives of one rules file."""

    trends: tuple[Trend, ...] = ()
    cumulatives: tuple[Cumulative, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.trends or self.cumulatives)


def parse_watch(document: dict[str, Any], where: str, seen: dict[str, str]) -> Watches:
    """The ``[[trend]]`` and ``[[cumulative]]`` tables; ``seen`` maps the rule identities already
    taken (by the rules) to what took them, and gets these names too."""
    trends = tuple(_parse_trend(table, here) for table, here in _tables(document, "trend", where, seen))
    cumulatives = tuple(_parse_cumulative(table, here) for table, here in _tables(document, "cumulative", where, seen))
    return Watches(trends, cumulatives)


def _tables(document: dict[str, Any], kind: str, where: str, seen: dict[str, str]) -> list[tuple[dict[str, Any], str]]:
    """Each table of ``[[kind]]`` with the name that errors give it; names checked and made unique."""
    tables = document.get(kind, [])
    if not isinstance(tables, list):
        _fail(where, kind, f"must be an array of tables, written [[{kind}]], not {_show(tables)}")
    found: list[tuple[dict[str, Any], str]] = []
    for number, table in enumerate(tables, start=1):
        if not isinstance(table, dict):
            _fail(where, kind, f"entry #{number} must be a table, written [[{kind}]], not {_show(table)}")
        name, here = named(table, kind, number, where)
        if rule_identity(name) in seen:
            _fail(here, "name", f"is already used by {seen[rule_identity(name)]} (names are unique among rules, "
                  "trends and cumulatives)")  # fmt: skip
        seen[rule_identity(name)] = f"{kind} #{number}"
        found.append((table, here))
    return found


def _parse_trend(table: dict[str, Any], here: str) -> Trend:
    _check_keys(table, TREND_KEYS, here)
    metric = table.get("metric")
    if metric not in ("ctdivol", "dlp_total"):
        problem = "is required" if metric is None else f"must be one of: ctdivol, dlp_total, not {_show(metric)}"
        _fail(here, "metric", f'{problem} ("ctdivol": the highest CTDIvol of an exam\'s matching events; '
              '"dlp_total": the exam\'s total DLP)')  # fmt: skip
    exams = _integer(table, "exams", TREND_EXAMS, here, required=True)
    assert exams is not None
    drl = _positive(table, "drl", here)
    if drl is None:
        _fail(here, "drl", "is required: the reference value (mGy for ctdivol, mGy·cm for dlp_total)")
    return Trend(
        name=table["name"].strip(),
        criteria=_criteria(table, here),
        metric=metric,
        drl=drl,
        exams=exams,
        above=_positive(table, "above", here) or Decimal(1),
        armed_above=_positive(table, "armed_above", here),
        reference=_reference(table, here),
        severity=_severity(table, here),
        recipients=_recipients(table, here),
    )


def _parse_cumulative(table: dict[str, Any], here: str) -> Cumulative:
    _check_keys(table, CUMULATIVE_KEYS, here)
    days = _integer(table, "days", CUMULATIVE_DAYS, here, required=True)
    assert days is not None
    exams = _integer(table, "exams", (1, 100_000), here, required=False)
    dlp_total = _positive(table, "dlp_total", here)
    if dlp_total is None and exams is None:
        raise ConfigError(f"{here}: has no limit: set dlp_total (mGy·cm) and/or exams (a number of CT exams)")
    return Cumulative(
        name=table["name"].strip(),
        criteria=_criteria(table, here),
        days=days,
        dlp_total=dlp_total,
        exams=exams,
        severity=_severity(table, here),
        recipients=_recipients(table, here),
    )


def _criteria(table: dict[str, Any], here: str) -> Rule:
    """The table's criteria as a rule without a limit (named like the table), parsed by the rules' own
    helpers (``core.rules.parse``), so that a key means here what it means in a ``[[rule]]``."""
    fields: dict[str, Any] = {"name": table["name"].strip()}
    for key in (*_TEXT_CRITERIA, *_NOT_CRITERIA):
        if key in table:
            fields[key] = _criterion(table[key], here, key)
    _bands(table, here, fields)
    if "phantom" in table:
        phantom = table["phantom"]
        folded = phantom.strip().casefold() if isinstance(phantom, str) else None
        if folded not in _PHANTOMS:
            _fail(here, "phantom", f'must be "head" (16 cm) or "body" (32 cm), not {_show(phantom)}')
        fields["phantom"] = folded
    for key in ("acquisition_type", "not_acquisition_type"):
        if key in table:
            fields[key] = _acquisition_types(table[key], here, key)
    return Rule(**fields)


def _integer(table: dict[str, Any], key: str, bounds: tuple[int, int], here: str, *, required: bool) -> int | None:
    value = table.get(key)
    if value is None:
        if required:
            _fail(here, key, f"is required: a whole number from {bounds[0]} to {bounds[1]}")
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not bounds[0] <= value <= bounds[1]:
        _fail(here, key, f"must be a whole number from {bounds[0]} to {bounds[1]}, not {_show(value)}")
    return value


def _positive(table: dict[str, Any], key: str, here: str) -> Decimal | None:
    if key not in table:
        return None
    value = _number(table[key])
    if value is None or value <= 0:
        _fail(here, key, f"must be a number greater than 0, not {_show(table[key])}")
    return value


def _reference(table: dict[str, Any], here: str) -> str | None:
    value = table.get("reference")
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip() or len(value.strip()) > _NAME_MAX or not value.isprintable():
        _fail(here, "reference", f"must be one line of at most {_NAME_MAX} printable characters, not {_show(value)}")
    return value.strip()


def _severity(table: dict[str, Any], here: str) -> Severity:
    value = table.get("severity", "notification")
    folded = value.strip().casefold() if isinstance(value, str) else None
    for severity in _SEVERITIES:
        if folded == severity:
            return severity
    _fail(here, "severity", f'must be "notification" or "alert", not {_show(value)}')
