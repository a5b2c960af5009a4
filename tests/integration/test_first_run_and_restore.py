"""Where ctpoller starts and when it must stop: the first run, a first backfill and ``reset`` during an
import, and an OpenREM restored from a backup, on a real PostgreSQL written the way OpenREM writes."""

from __future__ import annotations

import uuid
from datetime import timedelta

import psycopg
import pytest
import sqlalchemy as sa

from ctpoller.demo.exams import GE_OPTIMA, GE_PIXELMED, GE_VCT, SIEMENS_FLASH_QA
from ctpoller.demo.openrem import OpenremImporter
from ctpoller.errors import SourceError
from ctpoller.jobs.start import start_over
from ctpoller.openrem.source import OpenremSource
from ctpoller.store.store import StateStore
from support import pg
from support.cycle import SETTLE, Harness
from support.smtp import Recorder

pytestmark = [pytest.mark.postgres, pytest.mark.smtp]

RULES = """
[defaults]
recipients = ["physics@hospital.example"]

[[rule]]
name = "Body CTDIvol"
phantom = "body"
ctdivol = 50

[[rule]]
name = "Exam DLP"
dlp_total = 1000
"""

SETTLED = SETTLE + timedelta(seconds=1)


@pytest.fixture
def harness(openrem_db, tmp_path, inbox):
    return Harness(openrem_db, f"sqlite:///{tmp_path / 'state.sqlite3'}", RULES, inbox.port, tmp_path)


@pytest.fixture
def without_sequence(openrem_db, tmp_path, inbox):
    """A harness reading OpenREM as a role that may read the tables but not the study pk sequence, so
    that, as on a hot standby, nothing tells a restore from deleted studies."""
    role = f"ctp_noseq_{uuid.uuid4().hex[:8]}"
    engine = sa.create_engine(openrem_db)
    with engine.begin() as conn:
        conn.execute(sa.text(f"CREATE ROLE {role} LOGIN"))
        conn.execute(sa.text(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}"))
    url = sa.make_url(openrem_db).set(username=role).render_as_string(hide_password=False)
    yield Harness(url, f"sqlite:///{tmp_path / 'state.sqlite3'}", RULES, inbox.port, tmp_path)
    with engine.begin() as conn:
        conn.execute(sa.text(f"DROP OWNED BY {role}"))
        conn.execute(sa.text(f"DROP ROLE {role}"))
    engine.dispose()


def half_written(openrem: OpenremImporter, study):
    """An import that has written its study row and some events, then pauses (parallel imports)."""
    steps = openrem.import_steps(study)
    for label in steps:
        if "remapp_ctirradiationeventdata" in label:
            return steps
    raise AssertionError("the import wrote no event")


def settled(harness: Harness):
    harness.cycle(after=timedelta(seconds=1))
    return harness.cycle(after=SETTLED)


def notified(inbox: Recorder) -> list[str]:
    return [m.get_body(("plain",)).get_content() for m in inbox.messages]


# -- the first run and reset during an import ------------------------------------------------------------


def test_first_run_during_an_import_below_a_finished_parallel_one_misses_neither(harness, openrem, inbox):
    openrem.import_study(GE_OPTIMA)  # pk 1: history
    writing = half_written(openrem, GE_VCT)  # pk 2: still being written when ctpoller starts
    openrem.import_study(SIEMENS_FLASH_QA)  # pk 3: a parallel import that finished first: history
    first = harness.cycle()
    assert first.initialised
    assert first.watermark_after == 1  # below the study still being written
    assert [pk for pk, _ in first.waiting] == [2]
    for _ in writing:
        pass
    report = settled(harness)
    assert [m.study_uid for m in report.messages] == [GE_VCT.uid]  # the one in flight is notified
    assert len(inbox.messages) == 1  # and the finished one (history) is not
    assert report.watermark_after == 3


def test_history_seen_by_the_first_run_is_evaluated_again_only_if_openrem_rewrites_it(harness, openrem, inbox):
    openrem.import_study(GE_OPTIMA)
    writing = half_written(openrem, SIEMENS_FLASH_QA)
    openrem.import_study(GE_VCT)  # history above the first watermark
    harness.cycle()
    for _ in writing:
        pass
    reports = [harness.cycle(after=SETTLED) for _ in range(3)]
    assert [m.study_uid for r in reports for m in r.messages] == [SIEMENS_FLASH_QA.uid]
    assert reports[-1].watermark_after == 3


def test_a_study_row_committed_after_the_first_run_below_its_start_is_not_missed(harness, openrem, inbox, openrem_db):
    openrem.import_study(GE_OPTIMA)
    held = psycopg.connect(pg.libpq_url(openrem_db))  # an import whose first INSERT has not committed yet
    try:
        late = held.execute(
            "INSERT INTO remapp_generalstudymoduleattr (accession_hashed) VALUES (false) RETURNING id"
        ).fetchone()[0]
        openrem.import_study(SIEMENS_FLASH_QA)  # a parallel import that finished meanwhile
        first = harness.cycle()
        assert first.initialised and first.watermark_after == late + 1  # the late row cannot be seen
        held.commit()
    finally:
        held.close()
    for _ in openrem.import_steps(GE_VCT, pk=late):
        pass
    report = settled(harness)
    assert [m.study_uid for m in report.messages] == [GE_VCT.uid]  # evaluated, not skipped
    assert len(inbox.messages) == 1
    assert report.watermark_after == late + 1
    assert harness.cycle(after=SETTLED).messages == []


def test_reset_during_an_import_starts_below_it(harness, openrem, inbox, openrem_db, tmp_path):
    harness.cycle()
    openrem.import_study(GE_OPTIMA)
    settled(harness)
    writing = half_written(openrem, GE_VCT)  # pk 2
    openrem.import_study(GE_PIXELMED)  # pk 3, finished
    source, state = OpenremSource(openrem_db), StateStore(harness.state_url)
    try:
        source.connect()
        before, after, _ = start_over(source, state, now=harness.clock, timing=harness.timing, dry_run=False)
    finally:
        source.dispose()
        state.dispose()
    assert (before, after) == (1, 1)
    for _ in writing:
        pass
    report = settled(harness)
    assert [m.study_uid for m in report.messages] == [GE_VCT.uid]
    assert report.watermark_after == 3


def test_backfill_as_the_first_command_leaves_a_study_in_flight_to_run(harness, openrem, inbox):
    openrem.import_study(GE_OPTIMA)
    writing = half_written(openrem, GE_VCT)  # pk 2, in flight
    openrem.import_study(SIEMENS_FLASH_QA)  # pk 3, finished
    back = harness.backfill()
    assert back.watermark_after == 1
    for _ in writing:
        pass
    report = settled(harness)
    found = sorted(m.study_uid for m in report.messages)
    assert found == sorted([GE_VCT.uid, SIEMENS_FLASH_QA.uid])  # nothing in flight skipped
    assert report.watermark_after == 3


# -- a restore is remembered ---------------------------------------------------------------------------


def restore(openrem_db: str, openrem: OpenremImporter, *, keep: int, newest: int) -> None:
    """OpenREM restored from a backup that held the study rows up to ``keep``: the sequence is back too."""
    for pk in range(newest, keep, -1):
        openrem.delete_study(pk)
    engine = sa.create_engine(openrem_db)
    with engine.begin() as conn:
        conn.execute(sa.text(f"ALTER SEQUENCE remapp_generalstudymoduleattr_id_seq RESTART WITH {keep + 1}"))
    engine.dispose()


def test_a_restore_stops_every_run_until_reset_also_once_new_pks_pass_the_watermark(
    harness, openrem, inbox, openrem_db
):
    harness.cycle()
    for study in (GE_OPTIMA, GE_PIXELMED, SIEMENS_FLASH_QA):
        openrem.import_study(study)
    assert settled(harness).watermark_after == 3
    restore(openrem_db, openrem, keep=1, newest=3)
    with pytest.raises(SourceError, match="restored"):
        harness.cycle(after=timedelta(seconds=1))
    for study in (GE_VCT, GE_PIXELMED, SIEMENS_FLASH_QA):  # pks 2, 3, 4: past the old watermark 3
        openrem.import_study(study)
    for _ in range(2):
        with pytest.raises(SourceError, match="reset") as caught:
            harness.cycle(after=SETTLED)
        assert not caught.value.temporary
    sent_before = len(inbox.messages)

    source, state = OpenremSource(openrem_db), StateStore(harness.state_url)
    try:
        source.connect()
        before, after, _ = start_over(source, state, now=harness.clock, timing=harness.timing, dry_run=False)
    finally:
        source.dispose()
        state.dispose()
    assert (before, after) == (3, 1)  # where OpenREM stood when the restore was seen
    report = settled(harness)
    assert GE_VCT.uid in [m.study_uid for m in report.messages]  # imported after the restore: not missed
    assert SIEMENS_FLASH_QA.uid not in [m.study_uid for m in report.messages]  # notified before: not twice
    assert len(inbox.messages) == sent_before + 1
    assert report.watermark_after == 4


def test_without_a_sequence_to_tell_a_restore_ctpoller_goes_on_and_stops_at_the_first_reused_pk(
    without_sequence, openrem, openrem_db
):
    """As on a hot standby, whose study sequence proves nothing: the pks in between decide."""
    harness = without_sequence
    harness.cycle()
    for study in (GE_OPTIMA, GE_PIXELMED, SIEMENS_FLASH_QA):
        openrem.import_study(study)
    assert settled(harness).watermark_after == 3
    restore(openrem_db, openrem, keep=1, newest=3)
    assert harness.cycle(after=timedelta(seconds=1)).watermark_after == 3  # cannot tell yet: goes on
    openrem.import_study(GE_VCT)  # gets pk 2, at or below the watermark: a restore, proven
    with pytest.raises(SourceError, match="restored"):
        harness.cycle(after=timedelta(seconds=1))
    openrem.import_study(GE_PIXELMED)
    openrem.import_study(GE_OPTIMA)  # pk 4, past the watermark: still stopped
    with pytest.raises(SourceError, match="reset"):
        harness.cycle(after=SETTLED)


def test_without_a_sequence_deleted_newest_studies_are_told_by_the_next_pk(without_sequence, openrem):
    harness = without_sequence
    harness.cycle()
    for study in (GE_OPTIMA, GE_PIXELMED, SIEMENS_FLASH_QA):
        openrem.import_study(study)
    assert settled(harness).watermark_after == 3
    openrem.delete_study(3)
    openrem.delete_study(2)  # deleted by hand: the sequence goes on at 4
    assert harness.cycle(after=timedelta(seconds=1)).watermark_after == 3
    openrem.import_study(GE_VCT)  # pk 4
    report = settled(harness)
    assert [m.study_uid for m in report.messages] == [GE_VCT.uid]
    assert report.watermark_after == 4
    again = harness.cycle(after=SETTLED)  # the doubt is cleared for good
    assert again.watermark_after == 4
