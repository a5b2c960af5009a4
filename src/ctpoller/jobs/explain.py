"""``ctpoller explain <accession number | Study Instance UID>``: one exam as the rules see it, and what
ctpoller notified about it when. How a physicist tunes the rules; never used on the polling path.

The exam (every study row of its Study Instance UID) is looked up in OpenREM with ``openrem.lookup``:
OpenREM indexes neither column, so that is a sequential scan of its study table, and the output says so.
The rules part is ``jobs.explain_rules`` (``core.rules.explain.trace``, what a run notifies by); the
record is read from the state store, which explain never changes.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import datetime, tzinfo
from typing import TextIO

from ctpoller.core.exam import Exam
from ctpoller.core.model import ArchiveRow
from ctpoller.core.rules import RuleSet
from ctpoller.core.rules.explain import acquisition_name, exam_weight
from ctpoller.errors import ConfigError, CtpollerError
from ctpoller.jobs.check import Parts
from ctpoller.jobs.cycle import connect_for
from ctpoller.jobs.explain_rules import dose_check_lines, number, rule_lines, watch_lines
from ctpoller.jobs.table import Paint, aligned, clipped, wants_colour
from ctpoller.openrem.lookup import Lookup, find_exams
from ctpoller.settings import zone_info
from ctpoller.store.store import StateStore

#: What ``explain --help`` and the output say about the lookup's cost.
COST = (
    "OpenREM has no index on study_instance_uid or accession_number: a lookup is a sequential scan of its "
    "study table (the output says how many rows), so explain is for a person, never on the polling path"
)
_INDENT = "  "
_PROTOCOL_CELLS = 36


class NotFound(CtpollerError):
    """No CT exam has that accession number or Study Instance UID (exit 1)."""


def explain_lines(parts: Parts, text: str, *, terminal: TextIO | None = None) -> list[str]:
    """Everything ``ctpoller explain`` prints about the exams ``text`` names, as lines, in colour when
    they go to a ``terminal`` that wants it (``jobs.table.wants_colour``: never with NO_COLOR).

    Raises ``ConfigError`` for bad settings or rules (exit 2) and ``NotFound`` (exit 1, one line)."""
    wanted = text.strip()
    if not wanted or not wanted.isprintable():
        raise ConfigError("explain: give an accession number or a Study Instance UID (printable text)")
    rules = parts.rules()
    zone = zone_info(parts.settings.timezone)
    found, seconds = _look_up(parts, rules, wanted)
    paint = Paint(terminal is not None and wants_colour(terminal))
    lines: list[str] = []
    if len(found.exams) > 1:
        lines.append(f"accession number {wanted} names {len(found.exams)} exams (one per Study Instance UID):")
        lines.extend(f"{_INDENT}{exam.uid}  {_when(exam)}  {_station(exam)}" for exam in found.exams)
        lines.append("")
    records = _records(parts, found.exams)
    for i, (exam, how) in enumerate(zip(found.exams, found.matched_by, strict=True)):
        if i:
            lines += ["", paint.dim("─" * 100), ""]
        lines += exam_lines(exam, how, found, seconds, paint)
        lines += ["", *rule_lines(exam, rules, paint), "", *dose_check_lines(exam, rules, paint)]
        watched = watch_lines(exam, rules, paint)
        lines += ["", *watched] if watched else []
        lines += ["", *records[exam.uid].lines(paint, zone)]
    return lines


def _look_up(parts: Parts, rules: RuleSet, wanted: str) -> tuple[Lookup, float]:
    source = parts.source()
    try:
        connect_for(source, rules)
        started = time.monotonic()
        with source.reading("looking up the exam") as reads:
            found = find_exams(reads, wanted)
        seconds = time.monotonic() - started
    finally:
        source.dispose()
    if not found.exams:
        other = f" (it names a study of modality {', '.join(found.other_modalities)}: explain is for CT)"
        raise NotFound(
            f"no CT exam with accession number or Study Instance UID {wanted!r} in OpenREM {source.where}"
            f"{other if found.other_modalities else ''}; the lookup was {found.cost}"
        )
    return found, seconds


# ---------------------------------------------------------------------------------------------- the exam


def exam_lines(exam: Exam, how: str, found: Lookup, seconds: float, paint: Paint) -> list[str]:
    """The header (what OpenREM holds about the exam, how it was found) and its events."""
    first = exam.first
    age = exam.age.shown() if exam.age is not None else "not recorded"
    weight = exam_weight(exam)
    scanner = " ".join(exam.texts("manufacturer") + exam.texts("model"))
    reports = "one report" if len(exam.rows) == 1 else f"{len(exam.rows)} reports (a continued exam)"
    total = f"{number(exam.total_dlp_mgycm)} mGy·cm" if exam.total_dlp_mgycm is not None else "not recorded"
    facts = [
        ("accession", first.accession_number or "not recorded"),
        ("date", _when(exam)),
        ("station", _station(exam)),
        ("scanner", scanner or "not recorded"),
        ("study", _joined(exam.texts("description"))),
        ("procedure", _joined(exam.texts("requested_procedure") + exam.texts("procedure"))),
        ("patient", f"age {age}; weight {f'{number(weight)} kg' if weight is not None else 'not recorded'}"),
        ("total DLP", f"{total}, {len(exam.events)} events in {reports}, OpenREM study pk(s) {_pks(exam.study_pks)}"),
        ("found by", f"{how}: {found.cost}, {seconds * 1000:.0f} ms"),
    ]
    lines = [paint.bold(f"Exam {exam.uid}")]
    lines += aligned([[paint.dim(key), value] for key, value in facts], indent=_INDENT)
    return [*lines, "", *event_lines(exam, paint)]


def event_lines(exam: Exam, paint: Paint) -> list[str]:
    """The exam's irradiation events (each counted once), as the rules see them."""
    lines = [paint.bold("Events")]
    if not exam.events:
        return [*lines, f"{_INDENT}none recorded"]
    regions = any(event.target_region for event in exam.events)
    several = len(exam.rows) > 1
    header = ["#", "protocol", "acquisition", "phantom", "CTDIvol mGy", "DLP mGy·cm", "Dose Check"]
    header += ["region"] if regions else []
    header += ["report (pk)"] if several else []
    rows = [[paint.dim(cell) for cell in header]]
    for i, event in enumerate(exam.events, start=1):
        kind = acquisition_name(event.acquisition_type_code) or event.acquisition_type or "–"
        row = [
            str(i),
            clipped(event.protocol or "(no protocol)", _PROTOCOL_CELLS),
            kind.replace("_", " "),
            event.phantom or "–",
            number(event.ctdivol_mgy),
            number(event.dlp_mgycm),
            "yes" if event.dose_checks else "–",
        ]
        row += [event.target_region or "–"] if regions else []
        row += [str(event.study_pk)] if several else []
        rows.append(row)
    return [*lines, *aligned(rows, right=(0, 4, 5), indent=_INDENT)]


def _when(exam: Exam) -> str:
    first = exam.first
    if first.study_date is None:
        return "no study date"
    return first.study_date.isoformat() + (f" {first.study_time.strftime('%H:%M:%S')}" if first.study_time else "")


def _station(exam: Exam) -> str:
    names, displays = exam.texts("station_name"), exam.texts("display_name")
    if not names and not displays:
        return "not recorded"
    shown = " / ".join(displays or names)
    return f"{shown} (station name {' / '.join(names)})" if displays and names and names != displays else shown


def _joined(values: Sequence[str]) -> str:
    """Distinct values of the exam's rows (a continued report may differ), or "not recorded"."""
    return " / ".join(dict.fromkeys(values)) or "not recorded"


def _pks(pks: Sequence[int]) -> str:
    return ", ".join(str(pk) for pk in pks)


# ---------------------------------------------------------------------------------------------- the record


class _Record:
    """What the state store holds about one exam: its study rows' status and the notifications."""

    def __init__(
        self, where: str, exam: Exam, watermark: int | None, statuses: dict[int, str], rows: list[ArchiveRow] | None
    ) -> None:
        self.where, self.exam, self.watermark, self.statuses, self.rows = where, exam, watermark, statuses, rows

    def lines(self, paint: Paint, zone: tzinfo | None) -> list[str]:
        lines = [paint.bold("What ctpoller notified") + paint.dim(f" (state store {self.where})")]
        if self.rows is None:
            return [*lines, f"{_INDENT}nothing: the state store does not exist yet (the first run creates it)"]
        lines += [f"{_INDENT}OpenREM study pk {pk}: {self._status(pk)}" for pk in self.exam.study_pks]
        if not self.rows:
            return [*lines, f"{_INDENT}nothing notified about this exam"]
        table = [[paint.dim(c) for c in ("recorded", "status", "sent", "Message-ID", "notification")]]
        for row in self.rows:
            n = row.notification
            what = f"{n.rule}: {n.metric_label} {number(n.value)} {n.unit} > {number(n.limit)}"
            what += f" (event {n.event_number})" if n.event_number else ""
            what += f", rose from {number(n.previous_value)}" if n.previous_value is not None else ""
            what += f"; {n.detail}" if n.detail else ""
            what = (paint.bad("ALERT") + " " if n.severity == "alert" else "") + what
            status = row.status.replace("_", " ")
            status += f" ({clipped(row.error, 60)})" if row.error and row.status == "failed" else ""
            table.append([_time(row.created_at, zone), status, _time(row.sent_at, zone), row.message_id, what])
        return [*lines, *aligned(table, indent=_INDENT)]

    def _status(self, pk: int) -> str:
        status = self.statuses.get(pk)
        if status is not None:
            return _STATUSES.get(status, status.replace("_", " "))
        if self.watermark is None:
            return "not seen: ctpoller has not started yet"
        if pk <= self.watermark:
            return f"at or below where ctpoller started (pk {self.watermark}): evaluated only by a backfill"
        return "not seen yet (the next run reads it)"


_STATUSES = {
    "decided": "evaluated",
    "pending": "waiting to settle",
    "history": "remembered from before the first run, not evaluated",
    "skipped": "skipped (not a complete CT study)",
    "given_up": "given up: it never settled",
}


def _records(parts: Parts, exams: Sequence[Exam]) -> dict[str, _Record]:
    """The record of each exam, read without changing anything (nothing when the store does not exist)."""
    state: StateStore = parts.state()
    try:
        if not state.exists():
            return {exam.uid: _Record(state.where, exam, None, {}, None) for exam in exams}
        watermark = state.watermark()
        statuses = {pk: t.status for pk, t in state.tracked([pk for e in exams for pk in e.study_pks]).items()}
        rows: dict[str, list[ArchiveRow]] = {exam.uid: [] for exam in exams}
        for row in state.archive_rows(study_uids=[exam.uid for exam in exams]):
            rows.setdefault(row.notification.study_uid, []).append(row)
        return {exam.uid: _Record(state.where, exam, watermark, statuses, rows[exam.uid]) for exam in exams}
    finally:
        state.dispose()


def _time(when: datetime | None, zone: tzinfo | None) -> str:
    if when is None:
        return "–"
    return when.astimezone(zone).strftime("%Y-%m-%d %H:%M %Z")
