"""Text criteria: whether an entry matches any of an exam's values, and, for ``explain``, why in words."""

from __future__ import annotations

from collections.abc import Sequence

from ctpoller.core.rules.ruleset import Criterion, printable, shown_criterion


def first_match(criterion: Criterion, values: Sequence[str | None]) -> str | None:
    """The first value some entry of the criterion matches, or None."""
    for value in values:  # loops, not any(): this runs for every rule, event and entry
        if value:
            for entry in criterion:
                if entry.matches(value):
                    return value
    return None


def text_why(label: str, criterion: Criterion, values: Sequence[str | None], hit: str | None, verb: str) -> str:
    """One line: the value that matched (``hit``) and what, or the values that did not (up to three)."""
    shown = shown_criterion(criterion)
    if hit is not None:
        return f"{label} {_quote(hit)} {verb} {shown}"
    present = [v for v in values if v]
    if not present:
        return f"{label} not recorded: no match for {shown}"
    return (
        f"{label} {', '.join(_quote(v) for v in present[:3])}{' ...' if len(present) > 3 else ''}: no match for {shown}"
    )


def _quote(text: str) -> str:
    return '"' + printable(text) + '"'


def any_match(entries: Criterion, values: Sequence[str | None]) -> bool:
    return first_match(entries, values) is not None
