"""A notification's review: the fields a reviewer fills in, their fixed lists, the notification's
identity, and the current review as the fold of its append-only changes.

Pure: the clock and the person are parameters. The workbook is a form; the state store keeps every
change (who, when, old, new), and the review shown anywhere is ``fold`` of those changes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, time

from ctpoller.core.model import rule_identity

#: (field name in the store, column header in the workbook), in column order.
FIELDS: tuple[tuple[str, str], ...] = (
    ("reviewed_by", "Reviewed by"),
    ("reviewed_on", "Reviewed on"),
    ("outcome", "Outcome"),
    ("reason", "Reason"),
    ("comment", "Comment"),
    ("action_taken", "Action taken"),
    ("regulator_reference", "Regulator reference"),
)
HEADERS = {name: header for name, header in FIELDS}
FIELD_OF_HEADER = {header: name for name, header in FIELDS}

OUTCOMES: tuple[str, ...] = (
    "justified",
    "not justified - action taken",
    "under investigation",
    "reportable",
    "false positive",
)
REASONS: tuple[str, ...] = (
    "patient size / habitus",
    "off-centre / positioning",
    "metal / implants",
    "repeat / rescan",
    "combined / multi-region study",
    "bolus tracking / monitoring series",
    "cardiac gating mode",
    "perfusion / dynamic (intended)",
    "wrong protocol selected",
    "manual technique / AEC off",
    "protocol needs optimisation",
    "equipment fault",
    "adult protocol on child",
    "data / documentation error",
    "other (see comment)",
)
UNKNOWN_REVIEWER = "unknown"

Review = dict[str, str]  # field name -> value; a field never set or cleared is absent


@dataclass(frozen=True)
class Change:
    """One change of one review field, as the store keeps it (append-only)."""

    key: str
    field: str
    old: str | None
    new: str | None
    who: str
    at: datetime


def notification_key(study_uid: str, rule: str, metric: str, event_key: str, message_id: str) -> str:
    """A notification's identity: a digest of what it is (the exam, the rule by its identity, the
    metric, the irradiation event) and of the message that told it. Stable across runs and stores,
    never a row position; it is the workbook's hidden "Notification key" column."""
    text = "\x1f".join((study_uid, rule_identity(rule), metric, event_key, message_id))
    return "n" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:31]


def cell_value(value: object) -> str | None:
    """A review cell as text, the same whichever way Excel or a person stored it: empty is None,
    a date is ``YYYY-MM-DD``, a date and time ``YYYY-MM-DD HH:MM``, a whole number has no ``.0``."""
    if value is None:
        return None
    if isinstance(value, datetime):
        if value.time() == time(0):
            return value.date().isoformat()
        return value.strftime("%Y-%m-%d %H:%M")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value).strip()
    return text or None


def fold(changes: Iterable[Change]) -> dict[str, Review]:
    """The current review of each notification: the newest value of each field (``changes`` oldest first)."""
    reviews: dict[str, Review] = {}
    for change in changes:
        review = reviews.setdefault(change.key, {})
        if change.new is None:
            review.pop(change.field, None)
        else:
            review[change.field] = change.new
    return reviews


def diff(key: str, current: Mapping[str, str], seen: Mapping[str, str | None], *, at: datetime) -> list[Change]:
    """The changes that turn ``current`` (the store's) into ``seen`` (the workbook's), by ``seen``'s
    "Reviewed by" (or "unknown"). Only the fields in ``seen`` are compared."""
    who = seen.get("reviewed_by") or current.get("reviewed_by") or UNKNOWN_REVIEWER
    changes = []
    for name, _ in FIELDS:
        if name not in seen:
            continue
        old, new = current.get(name), seen[name]
        if old != new:
            changes.append(Change(key=key, field=name, old=old, new=new, who=who, at=at))
    return changes


def reviewed(review: Mapping[str, str]) -> bool:
    """Whether anything was decided: an outcome, a reason or a reviewer."""
    return any(review.get(name) for name in ("outcome", "reason", "reviewed_by", "reviewed_on"))
