"""The rules file (TOML) turned into a ``RuleSet``, or one line naming the file, the rule and the key."""

from __future__ import annotations

import json
import re
import tomllib
import unicodedata
from typing import Any

from ctpoller.core.model import rule_identity
from ctpoller.core.rules.ruleset import (
    _DRLS,
    _LIMITS,
    _NAME_MAX,
    _NOT_CRITERIA,
    _PHANTOMS,
    _ROUTE_KEYS,
    _RULE_KEYS,
    _SEVERITIES,
    _TEXT_CRITERIA,
    _TOP_KEYS,
    ACQUISITION_TYPES,
    DOSE_CHECK_RULE,
    Criterion,
    DoseCheckConfig,
    Entry,
    Route,
    Rule,
    RuleSet,
    _fold,
)
from ctpoller.core.rules.toml_values import (
    _check_keys,
    _escape,
    _fail,
    _name_problem,
    _number,
    _recipients,
    _show,
    _table,
    named,
)
from ctpoller.errors import ConfigError


def parse_rules(text: str, *, source: str) -> RuleSet:
    """Parse a rules file; ``source`` (its path) names it in error messages."""
    from ctpoller.core.rules.parse_watch import parse_watch  # it builds on this module's helpers

    where = f"rules file {source}"
    try:
        document = tomllib.loads(text)
    except ValueError as e:  # tomllib.TOMLDecodeError: the message names line and column
        raise ConfigError(f"{where}: not valid TOML: {_escape(str(e))}") from None
    except RecursionError:
        raise ConfigError(f"{where}: not valid TOML: arrays or tables nested too deeply") from None
    _check_keys(document, _TOP_KEYS, where)
    defaults = _table(document, "defaults", where)
    _check_keys(defaults, ("recipients", "alert_recipients"), f"{where}: [defaults]")
    recipients = _recipients(defaults, f"{where}: [defaults]")
    alert_recipients = _recipients(defaults, f"{where}: [defaults]", "alert_recipients")
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
    watch = parse_watch(document, where, seen)  # [[trend]], [[cumulative]] (core.rules.parse_watch)
    if not rules and not dose_check.notify and not watch:
        raise ConfigError(f"{where}: has no [[rule]] and [dose_check] notify is not true: nothing to check")
    routes = _parse_routes(document, where)
    return RuleSet(
        default_recipients=recipients,
        rules=tuple(sorted(rules, key=lambda rule: -rule.priority)),  # stable: ties in file order
        dose_check=dose_check,
        routes=routes,
        default_alert_recipients=alert_recipients,
        trends=watch.trends,
        cumulatives=watch.cumulatives,
    )


def _parse_routes(document: dict[str, Any], where: str) -> tuple[Route, ...]:
    tables = document.get("route", [])
    if not isinstance(tables, list):
        _fail(where, "route", f"must be an array of tables, written [[route]], not {_show(tables)}")
    routes: list[Route] = []
    seen: dict[str, int] = {}
    for number, table in enumerate(tables, start=1):
        if not isinstance(table, dict):
            _fail(where, "route", f"entry #{number} must be a table, written [[route]], not {_show(table)}")
        name, here = named(table, "route", number, where, _ROUTE_KEYS)
        if rule_identity(name) in seen:
            _fail(here, "name", f"is already used by route #{seen[rule_identity(name)]}")
        seen[rule_identity(name)] = number
        criteria = {key: _criterion(table[key], here, key) for key in ("station", "not_station") if key in table}
        if not criteria:
            raise ConfigError(f"{here}: has no station: set station (or not_station) to the stations it routes")
        recipients = _recipients(table, here)
        if not recipients:
            _fail(here, "recipients", "is required: the addresses that receive these stations' exams")
        alert_recipients = _recipients(table, here, "alert_recipients")
        routes.append(Route(name=name.strip(), recipients=recipients, alert_recipients=alert_recipients, **criteria))
    return tuple(routes)


def _parse_rule(table: object, number: int, where: str) -> Rule:
    if not isinstance(table, dict):
        _fail(where, "rule", f"entry #{number} must be a table, written [[rule]], not {_show(table)}")
    name, here = named(table, "rule", number, where, _RULE_KEYS)
    fields: dict[str, Any] = {"name": name, "recipients": _recipients(table, here)}
    for key in (*_TEXT_CRITERIA, *_NOT_CRITERIA):
        if key in table:
            fields[key] = _criterion(table[key], here, key)
    _bands(table, here, fields)
    if "phantom" in table:
        fields["phantom"] = _phantom(table["phantom"], here)
    for key in ("acquisition_type", "not_acquisition_type"):
        if key in table:
            fields[key] = _acquisition_types(table[key], here, key)
    _limits(table, here, fields)
    _precedence(table, here, fields)
    return Rule(**fields)


def _bands(table: dict[str, Any], here: str, fields: dict[str, Any]) -> None:
    """``age_min``/``age_max`` (years) and ``weight_min``/``weight_max`` (kg): numbers, 0 or more, min < max."""
    for low, high, unit in (("age_min", "age_max", "years"), ("weight_min", "weight_max", "kg")):
        for key in (low, high):
            if key in table:
                value = _number(table[key])
                if value is None or value < 0:
                    _fail(here, key, f"must be a number of {unit}, 0 or more, not {_show(table[key])}")
                fields[key] = value
        if low in fields and high in fields and fields[low] >= fields[high]:
            _fail(here, high, f"must be greater than {low} ({fields[low]}), not {fields[high]}")


def _limits(table: dict[str, Any], here: str, fields: dict[str, Any]) -> None:
    """Plain limits, reference levels (``drl_*``), ``notify_above`` and ``reference``."""
    for key in (*_LIMITS, *_DRLS, "notify_above"):
        if key in table:
            limit = _number(table[key])
            if limit is None or limit <= 0:
                _fail(here, key, f"must be a number greater than 0, not {_show(table[key])}")
            fields[key] = limit
    for plain in _LIMITS:
        if plain in fields and f"drl_{plain}" in fields:
            _fail(here, f"drl_{plain}", f"and {plain} both set: keep one (drl_{plain} × notify_above, or {plain})")
    if "notify_above" in fields and not any(key in fields for key in _DRLS):
        _fail(here, "notify_above", "needs a reference level: set drl_ctdivol, drl_dlp or drl_dlp_total")
    if "reference" in table:
        reference = table["reference"]
        if not isinstance(reference, str) or _name_problem(reference) is not None:
            _fail(
                here,
                "reference",
                f"must name the source in one line of at most {_NAME_MAX} printable characters, not {_show(reference)}",
            )
        fields["reference"] = reference.strip()
    if not any(key in fields for key in (*_LIMITS, *_DRLS)):
        raise ConfigError(
            f"{here}: has no limit: set at least one of ctdivol, dlp, dlp_total, drl_ctdivol, drl_dlp, drl_dlp_total"
        )


def _precedence(table: dict[str, Any], here: str, fields: dict[str, Any]) -> None:
    """``priority`` (an integer, higher first), ``stop`` (true or false), ``severity``."""
    if "priority" in table:
        priority = table["priority"]
        if not isinstance(priority, int) or isinstance(priority, bool):
            _fail(here, "priority", f"must be a whole number (higher is applied first), not {_show(priority)}")
        fields["priority"] = priority
    if "stop" in table:
        stop = table["stop"]
        if not isinstance(stop, bool):
            _fail(here, "stop", f"must be true or false, not {_show(stop)}")
        fields["stop"] = stop
    if "severity" in table:
        severity = table["severity"]
        folded = severity.strip().casefold() if isinstance(severity, str) else None
        if folded not in _SEVERITIES:
            _fail(here, "severity", f'must be "notification" or "alert", not {_show(severity)}')
        fields["severity"] = folded


def _phantom(value: object, where: str) -> str:
    """``"head"`` or ``"body"``, or a list of them (one of: an event has one phantom). Both at once
    would only leave out the events with none recorded: refused as a likely slip."""
    names: list[str] = []
    for item in value if isinstance(value, list) else [value]:
        folded = item.strip().casefold() if isinstance(item, str) else None
        if folded not in _PHANTOMS:
            _fail(where, "phantom", f'must be "head" (16 cm) or "body" (32 cm), not {_show(item)}')
        names.append(folded)
    if not names:
        _fail(where, "phantom", 'must be "head" (16 cm) or "body" (32 cm), not an empty list')
    if len(set(names)) > 1:
        _fail(where, "phantom", 'lists both "head" and "body": leave phantom out to check events on either')
    return names[0]


def _acquisition_types(value: object, where: str, key: str) -> tuple[str, ...]:
    """One acquisition type or a list of them (one of): names from ``ACQUISITION_TYPES``."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items:
        _fail(where, key, f"must be an acquisition type or a non-empty list of them, not {_show(value)}")
    names: list[str] = []
    for item in items:
        folded = "_".join(item.replace("-", " ").casefold().split()) if isinstance(item, str) else None
        if folded not in ACQUISITION_TYPES:
            known = ", ".join(f'"{name}"' for name in ACQUISITION_TYPES)
            _fail(where, key, f"must be one of {known} (constant_angle: the localiser), not {_show(item)}")
        if folded not in names:
            names.append(folded)
    return tuple(names)


def _criterion(value: object, where: str, key: str) -> Criterion:
    """A text criterion: a string, a one-entry list, or ``{ any = [...] }`` / ``{ all = [...] }``.
    A bare list of two or more entries is refused: the old script read it as "all", we once as "any"."""
    if isinstance(value, str):
        return (_entry(value, where, key),)
    if isinstance(value, dict):
        return _any_all(value, where, key)
    if not isinstance(value, list):
        _fail(
            where,
            key,
            f"must be a string, a one-entry list or {{ any = [...] }} / {{ all = [...] }}, not {_show(value)}",
        )
    if not value:
        _fail(where, key, "must not be an empty list")
    if len(value) > 1:
        shown = _toml(value)
        either = "either entry" if len(value) == 2 else "any one entry"
        _fail(
            where,
            key,
            f"{shown} is ambiguous: write {{ all = {shown} }} (every entry, like the old script's"
            f" dose_limit({_python(value)}, ...)) or {{ any = {shown} }} ({either})",
        )
    return (_entry(value[0], where, key),)


def _any_all(table: dict[str, Any], where: str, key: str) -> Criterion:
    if len(table) != 1 or next(iter(table)) not in ("any", "all"):
        _fail(where, key, f"a table must be {{ any = [...] }} or {{ all = [...] }} (one of them), not {_toml(table)}")
    ((mode, items),) = table.items()
    if not isinstance(items, list) or not items:
        _fail(where, key, f"{mode} must be a non-empty list of strings and lists of words, not {_show(items)}")
    entries = tuple(_entry(item, where, key) for item in items)
    if mode == "any":
        return entries
    return (
        Entry(words=tuple(w for e in entries for w in e.words), regexes=tuple(r for e in entries for r in e.regexes)),
    )


def _entry(item: object, where: str, key: str) -> Entry:
    """One entry: a string of words, a ``re:`` regular expression, or a list of words (phrases)."""
    if isinstance(item, str) and item.startswith("re:"):
        return _regex(item, where, key)
    if isinstance(item, str):
        if not item.split():
            _fail(where, key, "must not contain an empty string")
        return Entry(words=tuple(_fold(word) for word in item.split()))
    if isinstance(item, list):
        if not item:
            _fail(where, key, "must not contain an empty list of words")
        bad = next((word for word in item if not isinstance(word, str) or not word.strip()), None)
        if bad is not None:
            _fail(where, key, f"a list of words must hold non-empty strings, not {_show(bad)}")
        return Entry(words=tuple(_fold(word.strip()) for word in item))
    _fail(where, key, f"entries must be strings or lists of words, not {_show(item)}")


def _toml(value: object) -> str:
    """A short list or table from the file in TOML spelling, on one line."""
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_escape(str(k))} = {_toml(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(_toml(item) for item in value) + "]"
    if isinstance(value, str):
        return _escape(json.dumps(value, ensure_ascii=False))
    return _show(value)


def _python(value: object) -> str:
    """The old script's spelling of a list: ``['ped', 'head']``."""
    if isinstance(value, list):
        return "[" + ", ".join(_python(item) for item in value) + "]"
    return _escape(repr(value))


def _regex(item: str, where: str, key: str) -> Entry:
    pattern = unicodedata.normalize("NFC", item[3:])
    if not pattern.strip():
        _fail(where, key, f"empty regular expression {_show(item)}")
    try:
        return Entry(regexes=(re.compile(pattern, re.IGNORECASE),))
    except (re.error, OverflowError, RecursionError, ValueError) as e:
        _fail(where, key, f"invalid regular expression {_show(item)}: {_escape(str(e))}")
