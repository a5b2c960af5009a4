"""Turning what OpenREM stored into model values: text, numbers, dates, and an event's identity."""

from __future__ import annotations

import hashlib
import logging
from datetime import date, time
from decimal import Decimal, InvalidOperation
from typing import Any

from ctpoller.core.exam import (
    NO_UID_PREFIX,
)

log = logging.getLogger(__name__)


def event_key(
    uid: str | None,
    ordinal: int,
    protocol: str | None,
    acq_code: str | None,
    ctdivol: Decimal | None,
    dlp: Decimal | None,
) -> str:
    """An event's identity across re-imports: its irradiation event UID, else a digest of its content.

    The fallback uses the event's position in its report and what it measured, never an OpenREM pk,
    so a re-imported report produces the same keys.
    """
    uid = text_or_none(uid)
    if uid:
        return uid
    content = "|".join(str(part) for part in (ordinal, protocol, acq_code, plain(ctdivol), plain(dlp)))
    return NO_UID_PREFIX + hashlib.sha256(content.encode("utf-8", "surrogatepass")).hexdigest()[:24]


def plain(value: Decimal | None) -> str:
    if value is None or not value.is_finite():
        return str(value)
    return format(value.normalize(), "f")


def group_names(rows: Any) -> dict[int, tuple[str, ...]]:
    grouped: dict[int, list[str]] = {}
    for key, name in rows:
        if name and name not in grouped.setdefault(key, []):
            grouped[key].append(name)
    return {key: tuple(names) for key, names in grouped.items()}


def text_or_none(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def decimal_or_none(value: Any) -> Decimal | None:
    if value is None:
        return None
    if isinstance(value, Decimal):
        return value
    try:
        return Decimal(str(value))
    except (InvalidOperation, ValueError):
        log.warning("ignoring a value that is not a number: %.40r", value)
        return None


def date_or_none(value: Any) -> date | None:
    if value is None or isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value).strip()[:10])
    except ValueError:
        return None


def time_or_none(value: Any) -> time | None:
    if value is None or isinstance(value, time):
        return value
    try:
        return time.fromisoformat(str(value).strip())
    except ValueError:
        return None


def bool_or_none(value: Any) -> bool | None:
    return None if value is None else bool(value)
