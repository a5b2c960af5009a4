"""Evaluating exams and deciding what is news: never notified, or risen since."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from typing import Protocol

from ctpoller.core.exam import Event, Exam, StudyRow
from ctpoller.core.model import (
    Exceedance,
    Ledger,
    Notification,
    StudyHead,
    events_key,
    rule_identity,
)
from ctpoller.core.rules import RuleSet, evaluate
from ctpoller.jobs.report import Report
from ctpoller.jobs.watch import WATCH_METRICS, Watcher
from ctpoller.openrem.reads import Reads
from ctpoller.store.notifications import NewMessage

log = logging.getLogger(__name__)


class ExamStore(Protocol):
    """What evaluating exams asks of the state store: an exam's rows decided before, and the ledger."""

    def decided_pks(self, uids: Iterable[str]) -> dict[str, list[int]]: ...

    def ledger(self, exam_keys: Iterable[str], event_keys: Iterable[str] = ()) -> Ledger: ...


def evaluate_exams(
    reads: Reads,
    state: ExamStore,
    rules: RuleSet,
    heads: Sequence[StudyHead],
    report: Report,
    *,
    now: datetime,
    domain: str,
    status: str = "pending",
    chunk: int = 500,
    watcher: Watcher | None = None,
) -> tuple[list[NewMessage], list[int]]:
    """Evaluate the exams these rows belong to; return the messages to record and vanished pks.

    In chunks of about ``chunk`` rows (rows of one exam stay together), so that memory follows the
    chunk, not the backlog: only the messages, a small share of the exams, are kept. With a
    ``watcher``, each exam is also folded into the ``[[trend]]`` and ``[[cumulative]]`` windows, in
    the order evaluated; what that changes is the watcher's to flush into the cycle's write.
    """
    messages: list[NewMessage] = []
    gone: list[int] = []
    told = Ledger()  # what this call decided to notify: a later chunk must not tell it again
    for batch in _exam_chunks(heads, chunk):
        found, vanished = _evaluate_chunk(
            reads, state, rules, batch, report, now=now, domain=domain, status=status, told=told, watcher=watcher
        )
        messages.extend(found)
        gone.extend(vanished)
    return messages, gone


def _exam_chunks(heads: Sequence[StudyHead], size: int) -> Iterator[list[StudyHead]]:
    """``heads`` in chunks of about ``size``, never splitting the rows of one exam."""
    groups: dict[str | None, list[StudyHead]] = {}
    for head in heads:
        groups.setdefault(head.uid, []).append(head)
    batch: list[StudyHead] = []
    for group in groups.values():
        batch.extend(group)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _evaluate_chunk(
    reads: Reads,
    state: ExamStore,
    rules: RuleSet,
    heads: Sequence[StudyHead],
    report: Report,
    *,
    now: datetime,
    domain: str,
    status: str = "pending",
    told: Ledger | None = None,
    watcher: Watcher | None = None,
) -> tuple[list[NewMessage], list[int]]:
    """Evaluate the exams of these rows; ``told`` holds (and gets) what this run already notified."""
    if not heads:
        return [], []
    told = Ledger() if told is None else told
    uids = {h.uid for h in heads if h.uid}
    others = state.decided_pks(uids)
    wanted = {h.pk for h in heads} | {pk for pks in others.values() for pk in pks}
    rows = reads.study_rows(sorted(wanted))
    gone = sorted(pk for pk in wanted if pk not in rows)
    by_uid: dict[str, list[StudyRow]] = {}
    for head in heads:
        if head.uid and head.pk in rows:
            by_uid.setdefault(head.uid, [])
    for pk in sorted(rows):
        uid = next((h.uid for h in heads if h.pk == pk), None) if rows[pk].uid is None else rows[pk].uid
        if uid in by_uid:
            by_uid[uid].append(rows[pk])
    evaluated: list[tuple[Exam, str | None, list[Exceedance]]] = []
    exams = [Exam(uid=uid, rows=tuple(exam_rows)) for uid, exam_rows in by_uid.items()]
    if watcher:
        watcher.prepare(reads, exams)
    for exam in exams:
        exam_rows = list(exam.rows)
        report.exams_evaluated += 1
        report.events_evaluated += len(exam.events)
        if report.arrivals is not None:  # a run's heartbeat: the newest row of each exam and its station
            newest = max(exam_rows, key=lambda r: r.pk)
            report.arrivals.append((newest.pk, newest.display_name or newest.station_name or "(no station name)"))
        found = evaluate(exam, rules)
        if watcher:  # a trend or cumulative episode this exam starts is told in its message
            found += watcher.fold(exam)
        report.exceedances += len(found)
        evaluated.append((exam, events_key(e.key for e in exam.events) if found else None, found))
    # Only what exceeded is looked up: the exams, each also by its events, and the irradiation
    # event UIDs under any exam (the same report stored again under another Study Instance UID).
    ledger = state.ledger(
        [key for exam, by_events, _ in evaluated for key in (exam.uid, by_events) if key is not None],
        {x.event_key for _, _, found in evaluated for x in found if x.event_key},
    )
    ledger.update(told)
    messages: list[NewMessage] = []
    for exam, by_events, found in evaluated:
        notifications, recipients = _news(exam, by_events, found, ledger)
        for n in notifications:  # an exam later in this run finds them
            for ledger_of in (ledger, told):
                ledger_of.add(exam.uid, n.rule, n.metric, n.event_key, n.value)
                if by_events is not None and not n.event_key:
                    ledger_of.add(by_events, n.rule, n.metric, "", n.value)
        if notifications:
            messages.append(
                NewMessage(
                    message_id=message_id(exam.uid, notifications, domain),
                    study_uid=exam.uid,
                    recipients=recipients,
                    notifications=tuple(notifications),
                    status="pending" if status == "pending" else "not_sent",
                    events_key=by_events,
                )
            )
    return messages, gone


def _news(
    exam: Exam, by_events: str | None, found: Sequence[Exceedance], ledger: Ledger
) -> tuple[list[Notification], tuple[str, ...]]:
    """Exceedances never notified, or whose value rose since: the ones to tell people about.

    Never notified means: not in this exam for the same rule (by ``core.model.rule_identity``) and
    metric; for an event with an irradiation event UID, not for that event under any Study
    Instance UID; for an exam-level metric, not in an exam with exactly the same irradiation
    events (``by_events``, the exam's ``core.model.events_key``) either.
    """
    news: list[Notification] = []
    recipients: list[str] = []
    for x in found:
        # A trend or cumulative exceedance is an episode that starts: its own state (committed with
        # the messages) tells it once, and a new episode is news even at a lower value.
        previous = None if x.metric in WATCH_METRICS else ledger.previous(exam.uid, by_events, x)
        if previous is not None and x.value <= previous:
            continue
        row = _row_of(exam, x.event_key)
        event = exam.event(x.event_key) if x.event_key else None
        age = exam.age
        news.append(
            Notification(
                study_uid=exam.uid,
                rule=x.rule,
                metric=x.metric,
                event_key=x.event_key,
                value=x.value,
                limit=x.limit,
                unit=x.unit,
                previous_value=previous,
                protocol=x.protocol,
                station_name=row.station_name,
                display_name=row.display_name,
                study_date=row.study_date,
                study_time=row.study_time,
                description=row.description,
                accession_number=row.accession_number,
                requested_procedure=row.requested_procedure,
                age=age.shown() if age is not None else None,
                sex=next((r.patient_sex for r in exam.rows if r.patient_sex), None),
                study_pk=row.pk,
                acquisition_type=event.acquisition_type if event else None,
                phantom=event.phantom if event else None,
                series=event.series_description if event else None,
                event_number=exam.events.index(event) + 1 if event else None,
                reason=_proceeding(event, x.metric, "reason"),
                authorised_by=_proceeding(event, x.metric, "authorised_by"),
                severity=x.severity,
                reference=x.reference,
                reference_value=x.reference_value,
                multiple=x.multiple,
                detail=x.detail,
            )
        )
        for address in x.recipients:
            if address.casefold() not in (r.casefold() for r in recipients):
                recipients.append(address)
    return news, tuple(recipients)


def _proceeding(event: Event | None, metric: str, what: str) -> str | None:
    """The operator's reason for proceeding (``what`` "reason") past the Dose Check value ``metric``
    compares with, or who authorised it ("authorised_by")."""
    if event is None or not metric.startswith("dose_check_"):
        return None
    field = f"{'alert' if metric.endswith('_alert') else 'notification'}_{what}"
    found = (getattr(check, field) for check in event.dose_checks)
    return next((text for text in found if text), None)


def _row_of(exam: Exam, event_key: str) -> StudyRow:
    event = exam.event(event_key) if event_key else None
    if event is not None:
        for row in exam.rows:
            if row.pk == event.study_pk:
                return row
    return exam.first


def message_id(uid: str, notifications: Sequence[Notification], domain: str) -> str:
    """A Message-ID fixed by what the message says, so the same news always has the same id."""
    content = "\n".join(
        [
            uid,
            *sorted(f"{rule_identity(n.rule)}|{n.metric}|{n.event_key}|{n.value.normalize()}" for n in notifications),
        ]
    )
    digest = hashlib.sha256(content.encode("utf-8", "surrogatepass")).hexdigest()[:32]
    return f"<{digest}@{domain}>"
