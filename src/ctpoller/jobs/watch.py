"""Folding each evaluated exam into the ``[[trend]]`` and ``[[cumulative]]`` windows.

``Watcher`` is made once per run (or backfill) and asked per chunk of exams: ``prepare`` reads the
windows those exams touch (and, for cumulatives, the keyed hashes of their patients), ``fold``
returns an exam's trend and cumulative exceedances (an episode that starts with it), which go into
that exam's message like a rule's, and ``flush`` hands what changed to ``CycleWrite.windows``, so it
is committed with the cycle's messages and watermark or not at all. Windows already read stay in
memory for the rest of the run: the cost per cycle follows the new exams, never the history.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import date
from decimal import Decimal
from typing import Protocol

from ctpoller.core.exam import Exam
from ctpoller.core.model import Exceedance, rule_identity
from ctpoller.core.rules import RuleSet, routed_recipients
from ctpoller.core.rules.cumulative import CumulativeExam, cumulative_exam, first_day, fold_cumulative
from ctpoller.core.rules.ruleset import unique_addresses
from ctpoller.core.rules.trend import fold_trend, trend_order, trend_value
from ctpoller.core.rules.window import Window, station_of
from ctpoller.errors import ConfigError
from ctpoller.openrem.patients import patient_id_problem, patient_keys
from ctpoller.openrem.reads import Reads
from ctpoller.openrem.source import OpenremSource
from ctpoller.store.windows import WindowKey, WindowWrite

log = logging.getLogger(__name__)

#: The metrics of trend and cumulative exceedances (an episode that starts).
WATCH_METRICS = frozenset({"trend_ctdivol", "trend_dlp_total", "cumulative_dlp_total", "cumulative_exams"})


class WindowStore(Protocol):
    """What folding asks of the state store."""

    def windows(self, keys: Iterable[WindowKey]) -> dict[WindowKey, Window]: ...

    def windows_holding(self, uids: Iterable[str]) -> set[WindowKey]: ...

    def patient_secret(self, *, create: bool) -> bytes | None: ...


def check_patient_ids(source: OpenremSource, rules: RuleSet) -> None:
    """A ``[[cumulative]]`` needs the patient IDs: stop with one line when this role may not read them."""
    if rules.cumulatives:
        problem = patient_id_problem(source)
        if problem:
            raise ConfigError(problem)


class Watcher:
    """The windows of one run: read as exams need them, changed in memory, flushed with each commit.

    ``dry_run``: no patient key is made if the store has none (a throwaway one is used instead).
    ``today`` (the run's date) caps the study dates that make a cumulative's older exams expire: the
    exams older than its days before the newest study date folded are deleted with each flush, so a
    patient who never comes back leaves nothing behind.
    """

    def __init__(self, state: WindowStore, rules: RuleSet, *, today: date, dry_run: bool = False) -> None:
        self.state = state
        self.today = today
        self.newest: dict[str, date] = {}  # cumulative -> the newest study date folded (not after today)
        self.rules = rules
        self.dry_run = dry_run
        self.current: dict[WindowKey, Window] = {}  # every window read, as it is now
        self.stored: dict[WindowKey, Window] = {}  # ... as the store (or a dry run's scratch) has it
        self.holding: dict[str, set[WindowKey]] = {}  # study uid -> the windows that count it
        self.patients: dict[str, str] = {}  # study uid -> keyed hash of the patient ID, this chunk
        self._prepared: dict[str, dict[str, tuple[WindowKey | None, Decimal | CumulativeExam | None]]] = {}
        self._secret: bytes | None = None

    def __bool__(self) -> bool:
        return bool(self.rules.trends or self.rules.cumulatives)

    def prepare(self, reads: Reads, exams: Sequence[Exam]) -> None:
        """Read what folding these exams needs: their patients' keys and the windows they touch (the
        windows they would count in, and those the store has them in: one query by the uid index)."""
        if not self or not exams:
            return
        if self.rules.cumulatives:
            keys = patient_keys(reads, [pk for exam in exams for pk in exam.study_pks], self.secret())
            self.patients = {}
            for exam in exams:
                key = next((keys[pk] for pk in exam.study_pks if pk in keys), None)
                if key is not None:
                    self.patients[exam.uid] = key
        self._prepared = {exam.uid: self._targets(exam) for exam in exams}
        wanted = {key for targets in self._prepared.values() for key, _ in targets.values() if key is not None}
        self._load(wanted | self.state.windows_holding(exam.uid for exam in exams))

    def secret(self) -> bytes:
        if self._secret is None:
            self._secret = self.state.patient_secret(create=not self.dry_run) or secrets.token_bytes(32)
        return self._secret

    def fold(self, exam: Exam) -> list[Exceedance]:
        """The exam folded into every window it counts in (or leaves): the exceedances of the episodes
        it starts, with the recipients of the exam's routes (or the defaults) and the watch's own."""
        if not self:
            return []
        found: list[Exceedance] = []
        targets = self._prepared.pop(exam.uid, None) or self._targets(exam)
        order = trend_order(exam.first.study_date, exam.first.study_time)
        for trend in self.rules.trends:
            target, value = targets[rule_identity(trend.name)]
            for key in self._touched(exam.uid, rule_identity(trend.name), target):
                counts = value if key == target and isinstance(value, Decimal) else None
                window, fired = fold_trend(trend, self.current[key], exam.uid, order, counts, key[1])
                self._put(key, window)
                found.extend([fired] if fired is not None else [])
        for cumulative in self.rules.cumulatives:
            target, counted = targets[rule_identity(cumulative.name)]
            assert isinstance(counted, CumulativeExam)
            if counted.counts and counted.study_date is not None and counted.study_date <= self.today:
                watch = rule_identity(cumulative.name)
                self.newest[watch] = max(counted.study_date, self.newest.get(watch, counted.study_date))
            for key in self._touched(exam.uid, rule_identity(cumulative.name), target):
                here = counted if key == target else replace(counted, counts=False)
                window, started = fold_cumulative(cumulative, self.current[key], exam.uid, here)
                self._put(key, window)
                found.extend(started)
        if not found:
            return []
        base = routed_recipients(exam, self.rules)
        return [replace(x, recipients=unique_addresses((*base, *x.recipients))) for x in found]

    def flush(self) -> WindowWrite:
        """What changed since the last flush, as the store writes it; from now on that is stored."""
        write = WindowWrite()
        for key, now in self.current.items():
            before = self.stored.get(key, Window())
            if now is before:
                continue
            watch, group = key
            old = {c.uid: c for c in before.exams}
            new = {c.uid: c for c in now.exams}
            write.put.extend((watch, group, c) for uid, c in new.items() if old.get(uid) != c)
            write.drop.extend((watch, group, uid) for uid in old if uid not in new)
            for metric, uid in now.episodes.items():
                if before.episodes.get(metric) != uid:
                    write.started.append((watch, metric, group, uid))
            write.ended.extend((watch, metric, group) for metric in before.episodes if metric not in now.episodes)
            self.stored[key] = now
        log.debug(
            "trend and cumulative windows: %d exams in, %d out, %d episodes started, %d ended",
            len(write.put), len(write.drop), len(write.started), len(write.ended),
        )  # fmt: skip
        for cumulative in self.rules.cumulatives:
            newest = self.newest.get(rule_identity(cumulative.name))
            if newest is not None:
                write.expire.append((rule_identity(cumulative.name), first_day(cumulative, newest).isoformat()))
        return write

    def forget(self) -> None:
        """Drop the windows held in memory (after a commit: the store has them), so that a backfill's
        memory follows its chunk, not the history."""
        self.current.clear()
        self.stored.clear()
        self.holding.clear()

    # -- plumbing ---------------------------------------------------------------------------------

    def _targets(self, exam: Exam) -> dict[str, tuple[WindowKey | None, Decimal | CumulativeExam | None]]:
        """Per watch identity: the window the exam counts in (None: it counts in none) and what it counts."""
        station = station_of(exam)
        targets: dict[str, tuple[WindowKey | None, Decimal | CumulativeExam | None]] = {}
        for trend in self.rules.trends:
            watch = rule_identity(trend.name)
            value = trend_value(trend, exam)
            targets[watch] = ((watch, station) if value is not None else None, value)
        patient = self.patients.get(exam.uid)
        for cumulative in self.rules.cumulatives:
            watch = rule_identity(cumulative.name)
            counted = cumulative_exam(cumulative, exam)
            targets[watch] = ((watch, patient) if patient is not None and counted.counts else None, counted)
        return targets

    def _touched(self, uid: str, watch: str, target: WindowKey | None) -> list[WindowKey]:
        """The windows of ``watch`` the exam goes into or leaves: its target and those that count it."""
        keys = sorted(key for key in self.holding.get(uid, ()) if key[0] == watch and key != target)
        if target is not None:
            keys.append(target)
        self._load(keys)
        return [key for key in keys if key == target or self.current[key].holds(uid)]

    def _load(self, keys: Iterable[WindowKey]) -> None:
        missing = [key for key in keys if key not in self.current]
        if not missing:
            return
        for key, window in self.state.windows(missing).items():
            self.current[key] = self.stored[key] = window
            for counted in window.exams:
                self.holding.setdefault(counted.uid, set()).add(key)

    def _put(self, key: WindowKey, window: Window) -> None:
        before = self.current[key]
        if window == before:
            return
        self.current[key] = window
        now = {c.uid for c in window.exams}
        for gone in {c.uid for c in before.exams} - now:
            self.holding.get(gone, set()).discard(key)
        for uid in now:
            self.holding.setdefault(uid, set()).add(key)
