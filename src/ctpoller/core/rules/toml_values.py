"""Reading one value of the rules file: its one-line errors (``_fail``, naming the file, the table and
the key), how a value is shown in them, numbers, names, unknown keys and recipients. Shared by the
parsers of rules and routes (``parse``) and of trends and cumulative rules (``parse_watch``)."""

from __future__ import annotations

import difflib
import math
from collections.abc import Sequence
from decimal import Decimal
from typing import Any, NoReturn

from ctpoller.core.rules.ruleset import _NAME_MAX, is_address, printable, unique_addresses
from ctpoller.errors import ConfigError


def _recipients(table: dict[str, Any], where: str, key: str = "recipients") -> tuple[str, ...]:
    value = table.get(key, [])
    if not isinstance(value, list):
        _fail(where, key, f"must be a list of e-mail addresses, not {_show(value)}")
    for address in value:
        if not isinstance(address, str) or not is_address(address.strip()):
            _fail(
                where,
                key,
                f"must hold plain (ASCII) e-mail addresses such as physics@example.org, not {_show(address)}",
            )
    return unique_addresses(address.strip() for address in value)


def named(
    table: dict[str, Any], kind: str, number: int, where: str, keys: Sequence[str] | None = None
) -> tuple[str, str]:
    """The name of one ``[[kind]]`` table (stripped) and where errors place it: ``rule 'X'``, or
    ``rule #3`` while it has no valid name. ``keys``, the keys it may hold, are checked first."""
    name = table.get("name")
    valid = isinstance(name, str) and _name_problem(name) is None
    here = f"{where}: {kind} '{name.strip()}'" if valid and isinstance(name, str) else f"{where}: {kind} #{number}"
    if keys is not None:
        _check_keys(table, keys, here)
    if not isinstance(name, str):
        _fail(here, "name", "is required" if name is None else f"must be a string, not {_show(name)}")
    problem = _name_problem(name)
    if problem:
        _fail(here, "name", problem)
    return name.strip(), here


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


_escape = printable


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
