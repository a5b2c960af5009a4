"""The heartbeat: after each run, whether OpenREM (or one station) has gone quiet, told once, and its
return told once. Costs no OpenREM query: the run's evaluated exams are the arrivals.

The most common way dose monitoring fails is an OpenREM that silently stops importing, which looks
exactly like "no exceedances". ``check`` reads the heartbeat's state, moves it with
``core.silence.beat`` and records the new state and its notice together, compare-and-set, before
anything is sent; the run's delivery step sends the notice through the outbox.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime

from ctpoller.core.model import Notice
from ctpoller.core.silence import Change, Policy, Pulse, beat, format_duration, silence_seconds
from ctpoller.jobs.report import Report
from ctpoller.store.notices import NewNotice
from ctpoller.store.store import StateStore

log = logging.getLogger(__name__)

SILENCE = "silence"  # ctp_message.kind of a heartbeat notice
_ACTION = "check the OpenREM importer / the DICOM feed"


@dataclass(frozen=True)
class Heartbeat:
    """The heartbeat's settings: when silence counts, and who is told (CTPOLLER_ADMIN_MAIL_TO)."""

    policy: Policy
    recipients: tuple[str, ...]
    domain: str = "ctpoller.invalid"


def check(state: StateStore, report: Report, heartbeat: Heartbeat, *, now: datetime) -> None:
    """Move the heartbeat after a run; record what changed with its notice (sent by the run's delivery)."""
    before = state.pulse()
    arrivals = report.arrivals or []
    after, changes = beat(before, arrivals, now, heartbeat.policy)
    if before.last_at is not None and not arrivals and not changes:
        after = before
    else:
        notice = _notice(changes, after, now, heartbeat) if changes else None
        if state.commit_pulse(before, after, notice, now):
            for line in describe(changes, after, heartbeat.policy):
                log.warning("heartbeat: %s", line)
        else:
            log.info("heartbeat: another ctpoller run moved it first; this run leaves it")
            after = state.pulse()
    report.silence_seconds = silence_seconds(after, now, heartbeat.policy)
    report.silence_alarm = after.announced is not None


def status_lines(state: StateStore, policy: Policy, now: datetime) -> Iterator[str]:
    """What ``status`` says of the heartbeat."""
    pulse = state.pulse()
    alarm = f"silence alarm after {format_duration(policy.after.total_seconds())}" + _counted(policy)
    if pulse.last_at is None:
        yield f"heartbeat: not started (the next run starts counting); {alarm}"
        return
    quiet = format_duration(silence_seconds(pulse, now, policy) or 0)
    if pulse.last_pk is None:
        yield f"heartbeat: no new CT study since counting began {quiet} ago; {alarm}"
    else:
        yield f"heartbeat: last new CT study {quiet} ago (pk {pulse.last_pk}); {alarm}"
    if pulse.announced is not None:
        yield "  ALARM: OpenREM's silence was announced; it ends when a new CT study arrives"
    for station in pulse.stations:
        if station.silent_since is not None:
            silent = format_duration(policy.counted(station.last_at, now))
            yield f"  ALARM: station {station.name} silent for {silent} (last study pk {station.last_pk})"


def describe(changes: Sequence[Change], pulse: Pulse, policy: Policy) -> list[str]:
    """One sentence per change, for the notice and the log (no patient data: pks, stations, times)."""
    lines = []
    when = _when(pulse.last_at, policy) if pulse.last_at else "unknown"
    for change in changes:
        quiet = format_duration(change.seconds)
        if change.kind == "silent":
            last = f"last study pk {pulse.last_pk} at {when}" if pulse.last_pk is not None else f"counting since {when}"
            lines.append(f"OpenREM has sent no CT study for {quiet}{_counted(policy)}: {last}; {_ACTION}")
        elif change.kind == "recovered":
            lines.append(f"OpenREM sends CT studies again: study pk {pulse.last_pk} at {when}, after {quiet} silent")
        elif change.station is not None and change.kind == "station-silent":
            lines.append(
                f"station {change.station.name} has sent no CT study for {quiet}{_counted(policy)}: last study pk "
                f"{change.station.last_pk} at {_when(change.station.last_at, policy)}; its usual gap is at most "
                f"{format_duration(change.usual or 0)} (9 in 10), the alarm comes after "
                f"{format_duration(change.alarm_after or 0)}; check the scanner's export to OpenREM"
            )
        elif change.station is not None:
            lines.append(f"station {change.station.name} sends CT studies again, after {quiet} of silence")
    return lines


def _notice(changes: Sequence[Change], pulse: Pulse, now: datetime, heartbeat: Heartbeat) -> NewNotice:
    lines = describe(changes, pulse, heartbeat.policy)
    first = changes[0]
    if first.kind == "silent":
        subject = f"ctpoller: OpenREM has sent no CT study for {format_duration(first.seconds)}"
    elif first.kind == "recovered":
        subject = "ctpoller: OpenREM sends CT studies again"
    elif first.station is not None and first.kind == "station-silent":
        subject = f"ctpoller: station {first.station.name} has sent no CT study for {format_duration(first.seconds)}"
    else:
        subject = f"ctpoller: station {first.station.name if first.station else ''} sends CT studies again"
    if len(changes) > 1:
        subject += f" (and {len(changes) - 1} more)"
    body = "\n\n".join(lines)
    if pulse.stations and first.kind == "silent":
        body += "\n\nNewest study per station:\n" + "\n".join(
            f"  {s.name}: pk {s.last_pk} at {_when(s.last_at, heartbeat.policy)}"
            for s in sorted(pulse.stations, key=lambda s: s.last_at, reverse=True)
        )
    body += (
        "\n\nA new CT study is one that ctpoller evaluated (complete and settled). This message is sent once; "
        "another follows when studies arrive again.\n-- \nctpoller\n"
    )
    digest = hashlib.sha256(f"{now.isoformat()}\n{body}".encode()).hexdigest()[:16]
    message_id = f"<ctpoller.{SILENCE}.{now:%Y%m%dT%H%M%S}.{digest}@{heartbeat.domain}>"
    return NewNotice(message_id, heartbeat.recipients, Notice(SILENCE, subject, body))


def _when(moment: datetime | None, policy: Policy) -> str:
    return f"{moment.astimezone(policy.zone):%Y-%m-%d %H:%M %Z}" if moment else "unknown"


def _counted(policy: Policy) -> str:
    return f" (counted within {policy.hours.text})" if policy.hours is not None else ""
