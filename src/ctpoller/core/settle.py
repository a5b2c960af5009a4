"""Deciding when an OpenREM study row may be evaluated, and how far the watermark may move. Pure.

OpenREM writes a study over dozens of autocommits: the row appears empty, its events arrive one by
one, the modality is set after the events and the patient rows come last. A re-sent cumulative report
deletes the study and writes it again under a higher pk; parallel imports commit out of pk order.
So a row is evaluated only when it is

* complete: modality ``CT``, a Study Instance UID and its patient row present, and
* settled: its fingerprint (everything a poll can see change) unchanged for ``settle`` seconds,
  as observed by ctpoller itself.

The watermark (the highest pk at and below which everything is decided) moves over a row only when
that row is decided, was first seen at least ``settle`` ago, and, on PostgreSQL, every transaction
that was running when it was first seen has ended, so no lower pk can still be committed. A row that
never completes is given up after ``give_up`` seconds with a warning: evaluated as it stands if it
has CT events, otherwise left. Nothing here reads a clock or a database.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from ctpoller.core.model import Snapshot, StudyHead, Tracked

DECIDED = "decided"
PENDING = "pending"
SKIPPED = "skipped"
GIVEN_UP = "given_up"
HISTORY = "history"  # complete before ctpoller started (first run, reset): part of an exam, never evaluated
FINAL = (DECIDED, SKIPPED, GIVEN_UP, HISTORY)
BELONGS_TO_AN_EXAM = (DECIDED, HISTORY)  # kept once the watermark passes: an exam's other rows


@dataclass
class Plan:
    """What one cycle does with the study rows above the watermark."""

    ready: list[StudyHead] = field(default_factory=list)
    forced: list[tuple[StudyHead, str]] = field(default_factory=list)  # evaluated at the give-up time
    tracked: dict[int, Tracked] = field(default_factory=dict)  # the new tracking state of every row seen
    changed: set[int] = field(default_factory=set)  # pks whose tracking must be written
    forget: list[int] = field(default_factory=list)
    waiting: list[tuple[int, str]] = field(default_factory=list)
    abandoned: list[tuple[int, str]] = field(default_factory=list)


def plan(
    heads: Sequence[StudyHead],
    known: dict[int, Tracked],
    *,
    now: datetime,
    settle: timedelta,
    give_up: timedelta,
    snapshot: Snapshot,
) -> Plan:
    """Compare what the source shows now with what ctpoller saw before."""
    result = Plan()
    seen = set()
    for head in heads:
        seen.add(head.pk)
        before = known.get(head.pk)
        if before is None:
            tracked = Tracked(
                pk=head.pk,
                uid=head.uid,
                status=PENDING,
                fingerprint=head.fingerprint,
                first_seen_at=now,
                changed_at=now,
                first_seen_xmax=snapshot.xmax,
            )
            result.changed.add(head.pk)
        elif before.fingerprint != head.fingerprint:
            # Still being written (or re-written): watch it again from now.
            tracked = replace(
                before,
                uid=head.uid,
                status=PENDING,
                fingerprint=head.fingerprint,
                changed_at=now,
                decided_at=None,
            )
            result.changed.add(head.pk)
        else:
            tracked = before
        result.tracked[head.pk] = tracked
        if tracked.status in FINAL:
            continue
        age = now - tracked.first_seen_at
        quiet = now - tracked.changed_at
        if head.other_modality:
            result.tracked[head.pk] = replace(tracked, status=SKIPPED, decided_at=now)
            result.changed.add(head.pk)
        elif head.complete and quiet >= settle:
            result.ready.append(head)
        elif age >= give_up:
            if head.uid and head.n_events > 0:
                why = "kept changing" if head.complete else _missing(head)
                result.forced.append((head, f"{why} for {_span(age)}; evaluated as it stands"))
            else:
                result.abandoned.append((head.pk, f"{_missing(head)} for {_span(age)}; given up"))
                result.tracked[head.pk] = replace(tracked, status=GIVEN_UP, decided_at=now)
                result.changed.add(head.pk)
        elif head.complete:
            result.waiting.append((head.pk, f"settling: unchanged for {_span(quiet)} of {_span(settle)}"))
        else:
            result.waiting.append((head.pk, f"incomplete: {_missing(head)}"))
    result.forget = sorted(pk for pk in known if pk not in seen)
    return result


def first_seen(heads: Sequence[StudyHead], *, now: datetime, snapshot: Snapshot) -> list[Tracked]:
    """How a first run (or a reset) tracks the rows above its start.

    A complete CT row is history: never evaluated (unless OpenREM writes it again, which changes its
    fingerprint), but the watermark passes it only as it passes any row. A row still being written
    is pending, exactly as if a later run had seen it first; a row of another modality is skipped.
    """
    tracked = []
    for head in heads:
        status = SKIPPED if head.other_modality else HISTORY if head.complete else PENDING
        tracked.append(
            Tracked(
                pk=head.pk,
                uid=head.uid,
                status=status,
                fingerprint=head.fingerprint,
                first_seen_at=now,
                changed_at=now,
                first_seen_xmax=snapshot.xmax,
                decided_at=None if status == PENDING else now,
            )
        )
    return tracked


def decide(result: Plan, pks: Sequence[int], now: datetime) -> None:
    """Mark these rows decided (they were evaluated in this cycle)."""
    for pk in pks:
        result.tracked[pk] = replace(result.tracked[pk], status=DECIDED, decided_at=now)
        result.changed.add(pk)


def advance(
    watermark: int,
    result: Plan,
    *,
    now: datetime,
    settle: timedelta,
    give_up: timedelta,
    snapshot: Snapshot,
) -> int:
    """The highest pk the watermark may move to: every row up to it is decided and old enough.

    A row below the watermark (committed late, just after a first run) holds it where it is until
    that row is decided; it never moves the watermark back.
    """
    new = watermark
    for pk in sorted(result.tracked):
        t = result.tracked[pk]
        if t.status not in FINAL:
            break
        if pk <= watermark:
            continue
        age = now - t.first_seen_at
        if age < settle:
            break
        running_then_ended = t.first_seen_xmax is None or snapshot.xmin is None or snapshot.xmin >= t.first_seen_xmax
        if not running_then_ended and age < give_up:
            break
        new = pk
    return new


def _missing(head: StudyHead) -> str:
    parts = []
    if not head.uid:
        parts.append("no Study Instance UID")
    if head.modality is None:
        parts.append("modality not yet written")
    if not head.has_patient:
        parts.append("patient rows not yet written")
    return ", ".join(parts) or "incomplete"


def _span(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h"


@dataclass(frozen=True)
class Timing:
    settle: timedelta = timedelta(seconds=120)
    give_up: timedelta = timedelta(hours=6)
    batch_size: int = 500


DEFAULT_TIMING = Timing()
