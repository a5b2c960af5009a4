"""ctpoller reading a real hot-standby replica: a throwaway primary and standby (see conftest.py)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from datetime import timedelta

import pytest
import sqlalchemy as sa

from ctpoller.demo.exams import GE_OPTIMA, GE_VCT, PHILIPS_BIGBORE, SIEMENS_FLASH_TAP
from ctpoller.demo.openrem import OpenremImporter
from ctpoller.errors import SourceError
from ctpoller.openrem.source import OpenremSource
from support.cycle import SETTLE, Harness
from support.pg import replayed
from support.smtp import Recorder, start_server

pytestmark = [pytest.mark.postgres, pytest.mark.smtp]


def test_ctpoller_reads_a_hot_standby_and_reports_its_lag(primary_and_standby, tmp_path):
    primary, standby = primary_and_standby
    engine = sa.create_engine(primary)
    openrem = OpenremImporter(engine)
    openrem.import_study(GE_OPTIMA)
    inbox = Recorder()
    server = start_server(inbox)
    port = server.port
    try:
        rules = '[defaults]\nrecipients = ["p@h.example"]\n[[rule]]\nname = "Body"\nphantom = "body"\nctdivol = 50\n'
        harness = Harness(standby, f"sqlite:///{tmp_path / 's.sqlite3'}", rules, port, tmp_path)
        replayed(primary, standby)
        assert harness.cycle().initialised
        openrem.import_study(GE_VCT)
        replayed(primary, standby)
        seen = harness.cycle(after=timedelta(seconds=1))
        assert seen.source_lag_seconds is not None and seen.source_lag_seconds >= 0
        done = harness.cycle(after=SETTLE + timedelta(seconds=1))
        assert [m.study_uid for m in done.messages] == [GE_VCT.uid]
        assert done.watermark_after == 2  # the snapshot check works on a standby too
        assert len(inbox.messages) == 1
    finally:
        server.stop()
        engine.dispose()


class _HeldOpen:
    """An engine look-alike for OpenremImporter whose writes all go into one transaction left open
    (each write a savepoint in it), as a slow OpenREM import holds its study row uncommitted."""

    def __init__(self, conn: sa.Connection) -> None:
        self.conn = conn

    @contextlib.contextmanager
    def begin(self) -> Iterator[sa.Connection]:
        with self.conn.begin_nested():
            yield self.conn


def test_the_probes_find_the_late_commit_guard_and_the_study_sequence_on_a_standby(primary_and_standby, caplog):
    primary, standby = primary_and_standby
    replayed(primary, standby)
    source = OpenremSource(standby)
    try:
        with caplog.at_level(logging.DEBUG, logger="ctpoller.openrem.source"):
            source.connect()
            source.tables.clear()  # connect again, now on pooled connections
            source.connect()
        assert source.supports_snapshot
        assert source.study_sequence == "public.remapp_generalstudymoduleattr_id_seq"
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING]  # no guard turned off
    finally:
        source.dispose()


def test_a_lower_pk_committed_late_on_the_primary_is_not_skipped_on_the_standby(primary_and_standby, tmp_path):
    primary, standby = primary_and_standby
    engine = sa.create_engine(primary)
    openrem = OpenremImporter(engine)
    inbox = Recorder()
    server = start_server(inbox)
    port = server.port
    try:
        rules = '[defaults]\nrecipients = ["p@h.example"]\n[[rule]]\nname = "Any"\nctdivol = 1\n'
        harness = Harness(standby, f"sqlite:///{tmp_path / 's.sqlite3'}", rules, port, tmp_path)
        replayed(primary, standby)
        assert harness.cycle().initialised
        with engine.connect() as held, held.begin() as slow:
            late_pk = OpenremImporter(_HeldOpen(held)).import_study(SIEMENS_FLASH_TAP)  # type: ignore[arg-type]
            fast_pk = openrem.import_study(PHILIPS_BIGBORE)
            assert fast_pk > late_pk
            replayed(primary, standby)
            harness.cycle(after=timedelta(seconds=1))
            waiting = harness.cycle(after=SETTLE + timedelta(seconds=1))
            assert [m.study_uid for m in waiting.messages] == [PHILIPS_BIGBORE.uid]
            assert waiting.watermark_after < late_pk  # not past the study still being written
            slow.commit()
        replayed(primary, standby)
        harness.cycle(after=timedelta(seconds=1))
        done = harness.cycle(after=SETTLE + timedelta(seconds=1))
        assert [m.study_uid for m in done.messages] == [SIEMENS_FLASH_TAP.uid]
        assert done.watermark_after == fast_pk
        assert len(inbox.messages) == 2
    finally:
        server.stop()
        engine.dispose()


def test_on_a_standby_deleted_newest_studies_go_on_and_a_restore_stops_at_the_first_reused_pk(
    primary_and_standby, tmp_path
):
    """A standby's study sequence runs ahead of the primary's and proves nothing: the pks decide."""
    primary, standby = primary_and_standby
    engine = sa.create_engine(primary)
    openrem = OpenremImporter(engine)
    inbox = Recorder()
    server = start_server(inbox)
    port = server.port
    settled = SETTLE + timedelta(seconds=1)
    try:
        rules = '[defaults]\nrecipients = ["p@h.example"]\n[[rule]]\nname = "Body"\nphantom = "body"\nctdivol = 50\n'
        harness = Harness(standby, f"sqlite:///{tmp_path / 's.sqlite3'}", rules, port, tmp_path)
        replayed(primary, standby)
        harness.cycle()
        first, _, newest = (openrem.import_study(s) for s in (GE_OPTIMA, GE_VCT, PHILIPS_BIGBORE))
        replayed(primary, standby)
        harness.cycle(after=timedelta(seconds=1))
        assert harness.cycle(after=settled).watermark_after == newest

        openrem.delete_study(newest)  # deleted by hand on the primary: not a restore
        replayed(primary, standby)
        assert harness.cycle(after=timedelta(seconds=1)).watermark_after == newest  # goes on
        later = openrem.import_study(GE_VCT)  # the sequence went on: a pk above the watermark
        replayed(primary, standby)
        harness.cycle(after=timedelta(seconds=1))
        assert harness.cycle(after=settled).watermark_after == later

        for pk in range(later, first, -1):  # restored from a backup that held only the first study
            with contextlib.suppress(Exception):
                openrem.delete_study(pk)
        with engine.begin() as conn:
            conn.execute(sa.text(f"ALTER SEQUENCE remapp_generalstudymoduleattr_id_seq RESTART WITH {first + 1}"))
        replayed(primary, standby)
        assert harness.cycle(after=timedelta(seconds=1)).watermark_after == later  # cannot tell yet
        openrem.import_study(GE_VCT)  # pk first + 1: at or below the watermark
        replayed(primary, standby)
        with pytest.raises(SourceError, match="restored"):
            harness.cycle(after=timedelta(seconds=1))
        for study in (GE_OPTIMA, GE_VCT, PHILIPS_BIGBORE, GE_OPTIMA):  # past the old watermark
            openrem.import_study(study)
        replayed(primary, standby)
        with pytest.raises(SourceError, match="reset"):
            harness.cycle(after=settled)
    finally:
        server.stop()
        engine.dispose()
