"""The poll cycle, fast: ``run_once`` and ``backfill`` on the demo's OpenREM-shaped SQLite
database, written the way OpenREM writes it, with a SQLite state store, a virtual clock and a
notifier that records what it is given.

The core promises of tests/integration/test_poller.py, test_first_run_and_restore.py and
test_never_twice.py, without a server: every exceedance is notified, exactly once, nothing is lost.
Those stay, for what only PostgreSQL and a real mail server can show (snapshots, a real standby,
SMTP replies).
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from ctpoller.archive.base import year_file
from ctpoller.archive.columns import Column, columns
from ctpoller.archive.readback import ReadBack, Signature
from ctpoller.core.model import Message
from ctpoller.core.rules import parse_rules
from ctpoller.core.settle import Timing
from ctpoller.demo.exams import (
    CONTINUED_1,
    CONTINUED_2,
    GE_OPTIMA,
    GE_PIXELMED,
    MULTI_SERIES,
    SIEMENS_FLASH_QA,
    as_another_exam,
    stored_again,
)
from ctpoller.demo.openrem import OpenremImporter, SeedStudy, create_schema
from ctpoller.errors import NotifyError
from ctpoller.jobs.backfill import backfill
from ctpoller.jobs.cycle import run_once
from ctpoller.jobs.report import Report
from ctpoller.openrem.source import OpenremSource
from ctpoller.store.store import StateStore

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
TIMING = Timing()
SETTLED = TIMING.settle + timedelta(seconds=1)

RULES = """
[defaults]
recipients = ["physics@hospital.example"]

[[rule]]
name = "Body CTDIvol"
phantom = "body"
ctdivol = 50

[[rule]]
name = "Head CTDIvol"
phantom = "head"
ctdivol = 80
recipients = ["neuro@hospital.example"]

[[rule]]
name = "Exam DLP"
dlp_total = 1000
"""

PAEDIATRIC = """
[defaults]
recipients = ["physics@hospital.example"]

[[rule]]
name = "Paediatric body"
phantom = "body"
age_max = 18
ctdivol = 50

[[rule]]
name = "Adult body"
phantom = "body"
age_min = 18
ctdivol = 60
"""


def without_fsync(engine: sa.Engine) -> sa.Engine:
    """No fsync on this SQLite engine's connections: power loss is not what these tests are about,
    and a commit that waits for the disk costs more than a whole poll cycle. Registered after the
    state store's own pragmas, it leaves them (WAL, foreign keys) as they are."""

    def connected(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.execute("PRAGMA synchronous=OFF")

    sa.event.listen(engine, "connect", connected)
    return engine


class RecordingNotifier:
    """A Notifier that keeps every message it is given, and refuses the messages of the exams it is
    told to refuse, as a mail server would (``permanent``: a 5xx reply, else a 4xx one)."""

    name = "recording"

    def __init__(self) -> None:
        self.tried: list[Message] = []
        self.sent: list[Message] = []
        self.refusing: dict[str | None, bool] = {}  # Study Instance UID -> permanent

    def refuse(self, study_uid: str | None, *, permanent: bool) -> None:
        self.refusing[study_uid] = permanent

    def accept(self, study_uid: str | None) -> None:
        self.refusing.pop(study_uid, None)

    def send(self, message: Message) -> None:
        self.tried.append(message)
        if message.study_uid in self.refusing:
            permanent = self.refusing[message.study_uid]
            reply = "550 5.1.1 mailbox unavailable" if permanent else "451 4.3.0 try again later"
            raise NotifyError(f"the mail server refused the message ({reply})", permanent=permanent, scope="message")
        self.sent.append(message)

    def close(self) -> None:
        pass


class Shelf:
    """An archive that keeps the rows (cells by header) it was last given per year, and that nobody edits."""

    path = Path("shelf.xlsx")
    zone, zone_name = UTC, "UTC"

    def __init__(self) -> None:
        self.files: dict[Path, list[dict[str, Any]]] = {}
        self.rows: list[dict[str, Any]] | None = None  # every year's rows, a new list at each write

    def columns(self) -> tuple[Column, ...]:
        return columns(self.zone_name)

    def file(self, year: int) -> Path:
        return year_file(self.path, year)

    def years_on_disk(self) -> set[int]:
        return set()

    def write(
        self, path: Path, rows: Iterable[Mapping[str, Any]], *, before_replace: Callable[[], None] | None = None
    ) -> int:
        self.files[path] = [dict(row) for row in rows]
        self.rows = [row for name in sorted(self.files) for row in self.files[name]]
        return len(self.files[path])

    def read(self, path: Path) -> ReadBack:
        return ReadBack()

    def signature(self, path: Path) -> Signature | None:
        rows = self.files.get(path)
        return None if rows is None else Signature(len(rows), 0, "")

    def stamp(self, path: Path) -> str | None:
        signature = self.signature(path)
        return None if signature is None else signature.short()

    def lock_file(self, path: Path) -> Path | None:
        return None


@dataclasses.dataclass
class Site:
    """An OpenREM-shaped SQLite database being imported into, and ctpoller's runs against it."""

    tmp: Path
    openrem: OpenremImporter
    source: OpenremSource  # read-only; one for all runs, so OpenREM's tables are reflected once
    store: StateStore  # one for all runs, so SQL is compiled once; closed after each run, as a process ends
    rules_text: str = RULES
    clock: datetime = T0
    notifier: RecordingNotifier = dataclasses.field(default_factory=RecordingNotifier)
    archive: Shelf = dataclasses.field(default_factory=Shelf)

    def cycle(self, *, after: timedelta = timedelta(0), dry_run: bool = False) -> Report:
        """One poll cycle of ``ctpoller run`` at the virtual time (advanced by ``after`` first)."""
        self.clock += after
        state = self.store
        try:
            state.ensure_schema()
            with state.lock():
                return run_once(
                    self.source,
                    state,
                    parse_rules(self.rules_text, source="test rules"),
                    self.notifier,
                    self.archive,
                    now=self.clock,
                    timing=TIMING,
                    dry_run=dry_run,
                    mail_domain="hospital.example",
                )
        finally:
            state.dispose()

    def settled(self) -> Report:
        """Two cycles: the first sees the new rows, the second comes after the settle time."""
        self.cycle(after=timedelta(seconds=1))
        return self.cycle(after=SETTLED)

    def backfill(self, *, since: date | None, email: bool = True) -> Report:
        state = self.store
        try:
            state.ensure_schema()
            with state.lock():
                return backfill(
                    self.source,
                    state,
                    parse_rules(self.rules_text, source="test rules"),
                    self.notifier,
                    self.archive,
                    now=self.clock,
                    since=since,
                    email=email,
                    timing=TIMING,
                    mail_domain="hospital.example",
                )
        finally:
            state.dispose()

    def outbox(self) -> dict[str, int]:
        try:
            return self.store.outbox_counts()
        finally:
            self.store.dispose()


@pytest.fixture(scope="module")
def empty_openrem(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """OpenREM's tables, made once and copied for each test."""
    path = tmp_path_factory.mktemp("openrem") / "openrem.sqlite3"
    engine = without_fsync(sa.create_engine(f"sqlite:///{path}"))
    create_schema(engine)
    engine.dispose()
    return path


@pytest.fixture
def site(tmp_path: Path, empty_openrem: Path) -> Iterator[Site]:
    shutil.copyfile(empty_openrem, tmp_path / "openrem.sqlite3")
    url = f"sqlite:///{tmp_path / 'openrem.sqlite3'}"
    engine = without_fsync(sa.create_engine(url))
    source = OpenremSource(url)
    store = StateStore(f"sqlite:///{tmp_path / 'state.sqlite3'}")
    without_fsync(store.engine)
    yield Site(tmp_path, OpenremImporter(engine), source, store)
    store.dispose()
    source.dispose()
    engine.dispose()


def started(site: Site) -> Site:
    assert site.cycle().initialised
    return site


def told(report: Report) -> set[tuple[str, str, Decimal]]:
    return {(n.rule, n.metric, n.value) for m in report.messages for n in m.notifications}


def half_written(openrem: OpenremImporter, study: SeedStudy) -> Iterator[str]:
    """An import that has written its study row and an event, then pauses (a parallel import)."""
    steps = openrem.import_steps(study)
    for label in steps:
        if "remapp_ctirradiationeventdata" in label:
            return steps
    raise AssertionError("the import wrote no event")


def test_first_run_starts_at_the_current_end_and_notifies_nothing_from_history(site: Site) -> None:
    pk = site.openrem.import_study(SIEMENS_FLASH_QA)  # over two limits, but history
    first = site.cycle()
    assert first.initialised and first.watermark_after == pk
    later = site.cycle(after=timedelta(hours=1))
    assert later.messages == [] and later.exams_evaluated == 0
    assert later.watermark_after == pk
    assert site.notifier.tried == []


def test_exceeding_exam_is_notified_once_after_it_settles(site: Site) -> None:
    started(site)
    pk = site.openrem.import_study(SIEMENS_FLASH_QA)
    seen = site.cycle(after=timedelta(seconds=1))
    assert [p for p, _ in seen.waiting] == [pk]
    almost = site.cycle(after=TIMING.settle - timedelta(seconds=1))
    assert [p for p, _ in almost.waiting] == [pk] and almost.messages == []
    assert site.notifier.tried == []

    done = site.cycle(after=timedelta(seconds=1))
    assert done.sent == 1
    [message] = site.notifier.sent
    assert {(n.rule, n.metric, n.value) for n in message.notifications} == {
        ("Body CTDIvol", "ctdivol", Decimal("65.47")),
        ("Exam DLP", "dlp_total", Decimal("1590.00")),
    }
    assert message.recipients == ("physics@hospital.example",)
    assert message.message_id == done.messages[0].message_id
    assert done.watermark_after == pk

    again = site.cycle(after=timedelta(minutes=10))
    assert again.messages == [] and again.sent == 0
    assert len(site.notifier.tried) == 1


def test_study_written_over_many_commits_is_evaluated_only_once_complete(site: Site) -> None:
    started(site)
    # A cycle after every write, each write slower than the settle time: only completeness holds
    # the study back.
    labels, evaluated_after = [], []
    for label in site.openrem.import_steps(GE_PIXELMED):
        labels.append(label)
        if site.cycle(after=SETTLED).messages:
            evaluated_after.append(label)
    assert len(labels) > 20 and evaluated_after == labels[-1:]  # after the last write only
    assert site.cycle(after=SETTLED).messages == []
    [message] = site.notifier.sent
    assert [(n.rule, n.value) for n in message.notifications] == [("Head CTDIvol", Decimal("222.59"))]
    assert set(message.recipients) == {"neuro@hospital.example", "physics@hospital.example"}


def test_incomplete_study_older_than_the_settle_time_is_still_not_evaluated(site: Site) -> None:
    started(site)
    for label in site.openrem.import_steps(SIEMENS_FLASH_QA):
        if "remapp_patientstudymoduleattr" in label:
            break  # the import stops before the patient rows: OpenREM's last writes
    site.cycle(after=timedelta(seconds=1))
    report = site.cycle(after=timedelta(hours=1))
    assert report.messages == [] and site.notifier.tried == []
    assert "patient rows not yet written" in report.waiting[0][1]
    assert report.watermark_after == 0


def test_cumulative_resend_notifies_only_what_rose(site: Site) -> None:
    site.rules_text = """
[defaults]
recipients = ["physics@hospital.example"]
[[rule]]
name = "Thorax total"
dlp_total = 50
[[rule]]
name = "Thorax CTDIvol"
ctdivol = 5
"""
    started(site)
    multi_1, multi_2, multi_3 = MULTI_SERIES
    pk = site.openrem.import_study(multi_1)
    site.settled()
    assert site.notifier.tried == []  # 7.46 mGy·cm and 0.15 mGy: under both limits

    pk = site.openrem.resend_cumulative(pk, multi_2)
    assert told(site.settled()) == {
        ("Thorax total", "dlp_total", Decimal("77.27")),
        ("Thorax CTDIvol", "ctdivol", Decimal("8.13")),
    }

    pk = site.openrem.resend_cumulative(pk, multi_3)
    report = site.settled()
    [update] = report.messages
    assert {(n.metric, n.value) for n in update.notifications} == {
        ("dlp_total", Decimal("236.09")),
        ("ctdivol", Decimal("7.02")),
    }
    [total] = [n for n in update.notifications if n.metric == "dlp_total"]
    assert total.previous_value == Decimal("77.27")

    site.openrem.resend_cumulative(pk, multi_3)  # the same report once more: nothing rose
    again = site.settled()
    assert again.exams_evaluated == 1 and again.messages == []
    assert len(site.notifier.sent) == 2


def test_continued_reports_sharing_a_uid_are_one_exam(site: Site) -> None:
    site.rules_text = '[[rule]]\nname = "Exam DLP"\ndlp_total = 100\nrecipients = ["physics@hospital.example"]\n'
    started(site)
    site.openrem.import_study(CONTINUED_1)
    site.settled()
    assert site.notifier.tried == []  # 60.17 alone
    site.openrem.import_study(CONTINUED_2)
    report = site.settled()
    [message] = report.messages
    assert [n.value for n in message.notifications] == [Decimal("116.61")]  # 60.17 + 56.44
    assert len(site.notifier.sent) == 1


def test_a_report_continuing_an_exam_begun_before_the_first_run_counts_the_whole_exam(site: Site) -> None:
    site.rules_text = '[[rule]]\nname = "Exam DLP"\ndlp_total = 100\nrecipients = ["physics@hospital.example"]\n'
    site.openrem.import_study(CONTINUED_1)  # history: imported before ctpoller's first run
    started(site)
    site.openrem.import_study(CONTINUED_2)
    [message] = site.settled().messages
    assert [n.value for n in message.notifications] == [Decimal("116.61")]  # not 56.44 alone
    assert len(site.notifier.sent) == 1


def test_out_of_order_completion_keeps_the_watermark_below_an_incomplete_lower_pk(site: Site) -> None:
    started(site)
    slow = site.openrem.import_steps(GE_PIXELMED)
    next(slow)
    slow_pk = site.openrem.last_study_pk
    assert slow_pk is not None
    fast_pk = site.openrem.import_study(SIEMENS_FLASH_QA)
    assert fast_pk > slow_pk
    report = site.settled()
    assert [m.study_uid for m in report.messages] == [SIEMENS_FLASH_QA.uid]
    assert report.watermark_after is not None and report.watermark_after < slow_pk
    for _ in slow:
        pass
    report = site.settled()
    assert [m.study_uid for m in report.messages] == [GE_PIXELMED.uid]
    assert report.watermark_after == fast_pk
    assert [m.study_uid for m in site.notifier.sent] == [SIEMENS_FLASH_QA.uid, GE_PIXELMED.uid]


def test_a_temporary_refusal_keeps_the_message_queued_and_it_is_sent_once_later(site: Site) -> None:
    started(site)
    site.openrem.import_study(SIEMENS_FLASH_QA)
    site.notifier.refuse(SIEMENS_FLASH_QA.uid, permanent=False)
    deferred = site.settled()
    [recorded] = deferred.messages
    assert deferred.deferred == [recorded.message_id] and not deferred.failed and deferred.sent == 0
    problem = deferred.problem()
    assert isinstance(problem, NotifyError) and problem.temporary  # exit 75: the next run retries
    assert site.outbox() == {"pending": 1}

    site.notifier.accept(SIEMENS_FLASH_QA.uid)
    later = site.cycle(after=timedelta(minutes=1))
    assert later.sent == 1 and later.messages == [] and later.problem() is None
    [sent] = site.notifier.sent
    assert sent.message_id == recorded.message_id and sent.attempts == 1
    assert site.cycle(after=timedelta(minutes=1)).sent == 0
    assert len(site.notifier.sent) == 1 and len(site.notifier.tried) == 2


def test_a_permanent_refusal_marks_the_message_failed_and_the_next_run_warns(
    site: Site, caplog: pytest.LogCaptureFixture
) -> None:
    started(site)
    site.openrem.import_study(SIEMENS_FLASH_QA)
    site.notifier.refuse(SIEMENS_FLASH_QA.uid, permanent=True)
    failed = site.settled()
    [recorded] = failed.messages
    assert failed.failed == [recorded.message_id] and failed.sent == 0 and not failed.deferred
    problem = failed.problem()
    assert isinstance(problem, NotifyError) and problem.permanent  # exit 1: a person must act
    assert site.outbox() == {"failed": 1}
    assert site.archive.rows is not None and {r["Status"] for r in site.archive.rows} == {"failed"}

    site.notifier.accept(SIEMENS_FLASH_QA.uid)
    with caplog.at_level(logging.WARNING, logger="ctpoller.jobs.deliver"):
        later = site.cycle(after=timedelta(minutes=1))
    assert later.sent == 0 and later.failed_waiting == 1  # not retried until a person says so
    assert later.problem() is None  # exit 0, but ...
    assert "1 notifications failed permanently" in caplog.text  # ... it warns
    assert len(site.notifier.tried) == 1 and site.notifier.sent == []


def test_dry_run_writes_and_sends_nothing(site: Site) -> None:
    started(site)
    site.openrem.import_study(SIEMENS_FLASH_QA)
    site.notifier.refuse(SIEMENS_FLASH_QA.uid, permanent=False)
    assert site.settled().deferred  # a message waits in the outbox
    site.openrem.import_study(GE_PIXELMED)
    site.cycle(after=timedelta(seconds=1))
    site.notifier.accept(SIEMENS_FLASH_QA.uid)
    files = {p: p.read_bytes() for p in site.tmp.iterdir() if p.is_file()}
    archived, tried = site.archive.rows, len(site.notifier.tried)

    report = site.cycle(after=SETTLED, dry_run=True)
    assert [m.study_uid for m in report.messages] == [GE_PIXELMED.uid]
    assert len(site.notifier.tried) == tried and site.notifier.sent == []  # neither the new nor the queued one
    assert site.archive.rows is archived
    assert {p: p.read_bytes() for p in site.tmp.iterdir() if p.is_file()} == files

    real = site.cycle()
    assert [m.study_uid for m in real.messages] == [GE_PIXELMED.uid]
    assert [m.study_uid for m in site.notifier.sent] == [SIEMENS_FLASH_QA.uid, GE_PIXELMED.uid]  # the queued one first


def test_backfill_without_email_records_history_and_never_sends_it(site: Site) -> None:
    for study in (SIEMENS_FLASH_QA, GE_PIXELMED, GE_OPTIMA):
        site.openrem.import_study(study)
    started(site)
    report = site.backfill(since=date(2010, 1, 1), email=False)
    assert {m.study_uid for m in report.messages} == {SIEMENS_FLASH_QA.uid, GE_PIXELMED.uid}  # Optima (2006) is older
    assert report.sent == 0 and site.notifier.tried == []
    assert site.archive.rows is not None
    assert len(site.archive.rows) == 3  # Flash QA (CTDIvol, DLP total) + PixelMed (head CTDIvol)
    assert {r["Status"] for r in site.archive.rows} == {"recorded, not emailed"}
    assert site.cycle(after=timedelta(hours=1)).sent == 0
    assert site.backfill(since=date(2000, 1, 1), email=True).messages == []  # already recorded
    assert site.notifier.tried == []


def test_first_run_during_an_import_starts_below_the_study_in_flight(site: Site) -> None:
    site.openrem.import_study(GE_OPTIMA)  # pk 1: history
    writing = half_written(site.openrem, GE_PIXELMED)  # pk 2: still being written when ctpoller starts
    site.openrem.import_study(SIEMENS_FLASH_QA)  # pk 3: a parallel import that finished first: history
    first = site.cycle()
    assert first.initialised
    assert first.watermark_after == 1  # below the study still being written
    assert [pk for pk, _ in first.waiting] == [2]
    for _ in writing:
        pass
    report = site.settled()
    assert [m.study_uid for m in report.messages] == [GE_PIXELMED.uid]  # the one in flight is notified
    assert [m.study_uid for m in site.notifier.sent] == [GE_PIXELMED.uid]  # and the finished one (history) is not
    assert report.watermark_after == 3


def test_the_same_report_under_a_second_study_uid_sends_nothing(site: Site) -> None:
    started(site)
    site.openrem.import_study(SIEMENS_FLASH_QA)
    first = site.settled()
    assert sorted((n.rule, n.metric, n.event_key) for m in first.messages for n in m.notifications) == [
        ("Body CTDIvol", "ctdivol", f"{SIEMENS_FLASH_QA.uid}.2.8"),
        ("Exam DLP", "dlp_total", ""),
    ]
    again_uid = f"{SIEMENS_FLASH_QA.uid}.99.1"
    site.openrem.import_study(dataclasses.replace(stored_again(SIEMENS_FLASH_QA, again_uid), accession="AGAIN1"))
    again = site.settled()
    assert again.exams_evaluated == 1 and again.exceedances == 2
    assert again.messages == [] and len(site.notifier.sent) == 1


def test_an_age_stored_at_a_band_edge_matches_every_band_the_patient_may_be_in(site: Site) -> None:
    site.rules_text = PAEDIATRIC
    started(site)
    expected = {
        None: {"Paediatric body", "Adult body"},  # 18.0 alone may be 17.96 years, stored rounded
        "017Y": {"Paediatric body"},
        "018Y": {"Adult body"},
    }
    uids = {}
    for n, age_string in enumerate(expected, 1):
        exam = dataclasses.replace(
            as_another_exam(SIEMENS_FLASH_QA, f"{SIEMENS_FLASH_QA.uid}.18.{n}"),
            patient_age_decimal=Decimal("18.0"),
            patient_age=age_string,
        )
        site.openrem.import_study(exam)
        uids[exam.uid] = age_string
    report = site.settled()
    found: dict[str | None, set[str]] = {}
    for m in report.messages:
        found.setdefault(uids[m.study_uid], set()).update(n.rule for n in m.notifications)
    assert found == expected
    assert len(site.notifier.sent) == 3
