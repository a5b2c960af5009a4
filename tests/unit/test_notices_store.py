"""Notices in the state store: an older store gains the outbox's notice columns, and a notice is
queued only with the compare-and-set that decides it."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta

from ctpoller.core.model import Notice
from ctpoller.core.silence import Policy, beat
from ctpoller.store.notices import NewNotice
from ctpoller.store.store import StateStore

NOW = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
OLD_OUTBOX = """CREATE TABLE ctp_message (id INTEGER PRIMARY KEY, message_id TEXT NOT NULL UNIQUE,
  study_uid TEXT NOT NULL, created_at VARCHAR(40) NOT NULL, recipients TEXT NOT NULL, status VARCHAR(16) NOT NULL,
  attempts INTEGER NOT NULL, last_attempt_at VARCHAR(40), sent_at VARCHAR(40), last_error TEXT,
  claimed_by VARCHAR(32), claimed_at VARCHAR(40))"""


def test_an_older_store_gains_the_notice_columns_and_its_messages_stay_exam_messages(tmp_path) -> None:
    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as conn:
        conn.execute(OLD_OUTBOX)
        conn.execute(
            "INSERT INTO ctp_message VALUES (1, '<a@h>', '1.2.3', ?, '[\"p@h.example\"]', 'pending', 0,"
            " NULL, NULL, NULL, NULL, NULL)",
            (NOW.isoformat(),),
        )
    state = StateStore(f"sqlite:///{path}")
    try:
        state.ensure_schema()
        state.ensure_schema()  # idempotent
        [old] = state.pending_messages()
        assert old.notice is None and old.study_uid == "1.2.3"
    finally:
        state.dispose()


def test_a_heartbeat_notice_is_recorded_with_its_state_and_only_once(tmp_path) -> None:
    state = StateStore(f"sqlite:///{tmp_path / 's.sqlite3'}")
    try:
        state.ensure_schema()
        policy = Policy(after=timedelta(hours=1), zone=UTC)
        start = state.pulse()
        pulse, _ = beat(start, [(5, "CT1")], NOW, policy)
        notice = NewNotice("<n@h>", ("admin@h.example",), Notice("silence", "subject", "text"))
        assert state.commit_pulse(start, pulse, notice, NOW)
        assert not state.commit_pulse(start, pulse, notice, NOW), "the same move twice"
        assert state.pulse() == pulse
        [queued] = state.pending_messages()
        assert queued.notice == Notice("silence", "subject", "text") and queued.recipients == ("admin@h.example",)
        assert list(state.archive_rows()) == [], "a notice is not a notification"
    finally:
        state.dispose()
