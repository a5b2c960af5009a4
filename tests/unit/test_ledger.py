"""One rule identity and the ledger: what counts as notified before."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal as D
from pathlib import Path

import pytest
import sqlalchemy as sa

from ctpoller.core.exam import NO_UID_PREFIX
from ctpoller.core.model import Exceedance, Ledger, Notification, events_key, rule_identity
from ctpoller.core.rules import parse_rules
from ctpoller.errors import ConfigError
from ctpoller.jobs.news import message_id
from ctpoller.store.notifications import NewMessage
from ctpoller.store.store import CycleWrite, StateStore
from ctpoller.store.tables import EVENT_KEY_INDEX, MIGRATIONS, exceedance_table

NOW = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
EXAM_A, EXAM_B = "1.2.826.0.1.1", "1.2.826.0.1.2"


def exceedance(rule: str, metric: str = "ctdivol", event: str = "1.2.3.9", value: str = "70") -> Exceedance:
    return Exceedance(rule, metric, event, D(value), D(60), "mGy")  # type: ignore[arg-type]


def notification(rule: str, metric: str = "ctdivol", event: str = "1.2.3.9", value: str = "70", uid=EXAM_A):
    return Notification(uid, rule, metric, event, D(value), D(60), "mGy")


@pytest.mark.parametrize("other", ["paed head", "PAED HEAD", "  Paed head ", "Paed   head", "Paed\thead", "PAED HEAD"])
def test_a_change_of_case_or_spacing_is_the_same_rule(other: str) -> None:
    assert rule_identity(other) == rule_identity("Paed head")


def test_other_words_are_another_rule() -> None:
    assert rule_identity("Paed head") != rule_identity("Paed head (AAPM)")
    assert rule_identity("Straße") == rule_identity("STRASSE")  # case folding, as the rules file compares


def test_the_rules_file_refuses_two_names_of_one_identity() -> None:
    text = '[[rule]]\nname = "Paed head"\nctdivol = 1\n[[rule]]\nname = "PAED  HEAD"\nctdivol = 2\n'
    with pytest.raises(ConfigError, match="rule 'PAED  HEAD': key 'name': is already used by rule #1"):
        parse_rules(text, source="rules.toml")


def test_the_message_id_does_not_change_with_the_case_of_a_rule_name() -> None:
    assert message_id(EXAM_A, [notification("Paed head")], "x.example") == message_id(
        EXAM_A, [notification("PAED HEAD")], "x.example"
    )
    assert message_id(EXAM_A, [notification("Paed head")], "x.example") != message_id(
        EXAM_A, [notification("Paed head", value="71")], "x.example"
    )


def test_an_irradiation_event_is_known_under_any_study_uid_and_any_case_of_its_rule() -> None:
    ledger = Ledger()
    ledger.add(EXAM_A, "Paed Head", "ctdivol", "1.2.3.9", D(70))
    assert ledger.previous(EXAM_B, None, exceedance("paed head")) == D(70)
    assert ledger.previous(EXAM_B, None, exceedance("paed head", metric="dlp")) is None
    assert ledger.previous(EXAM_B, None, exceedance("other rule")) is None


def test_an_event_without_a_uid_is_known_only_in_its_own_exam() -> None:
    key = NO_UID_PREFIX + "abc"
    ledger = Ledger()
    ledger.add(EXAM_A, "R", "ctdivol", key, D(70))
    assert ledger.previous(EXAM_A, None, exceedance("r", event=key)) == D(70)
    assert ledger.previous(EXAM_B, None, exceedance("r", event=key)) is None


def test_an_exam_level_value_is_known_by_its_exam_or_by_exactly_its_events() -> None:
    same = events_key(["1.2.3.2", "1.2.3.1"])
    assert same == events_key(["1.2.3.1", "1.2.3.2"])
    assert events_key(["1.2.3.1", "1.2.3.2", "1.2.3.3"]) != same
    assert events_key(["1.2.3.1", NO_UID_PREFIX + "abc"]) is None and events_key([]) is None
    ledger = Ledger()
    ledger.add(EXAM_A, "Exam DLP", "dlp_total", "", D(2000))
    ledger.add(str(same), "Exam DLP", "dlp_total", "", D(2000))
    total = exceedance("EXAM DLP", "dlp_total", "", "2000")
    assert ledger.previous(EXAM_B, same, total) == D(2000)
    assert ledger.previous(EXAM_B, events_key(["1.2.3.1", "1.2.3.2", "1.2.3.3"]), total) is None
    assert ledger.previous(EXAM_B, None, total) is None


def test_the_highest_value_notified_counts() -> None:
    ledger, other = Ledger(), Ledger()
    ledger.add(EXAM_A, "R", "ctdivol", "1.2.3.9", D(80))
    ledger.add(EXAM_B, "r", "ctdivol", "1.2.3.9", D(70))
    other.add(EXAM_B, "R", "ctdivol", "1.2.3.9", D(75))
    ledger.update(other)
    assert ledger.previous(EXAM_B, None, exceedance("R")) == D(80)


@pytest.fixture
def store(tmp_path: Path):
    state = StateStore(f"sqlite:///{tmp_path / 'state.sqlite3'}")
    state.ensure_schema()
    yield state
    state.dispose()


def test_the_store_finds_rows_written_in_another_case_and_under_other_study_uids(store: StateStore) -> None:
    exam_events = events_key(["1.2.3.9"])
    message = NewMessage(
        "<a@x>",
        EXAM_A,
        ("p@x.example",),
        (notification("Paed Head"), notification("Exam DLP", "dlp_total", "", "2000")),
        events_key=exam_events,
    )
    store.commit_cycle(CycleWrite(messages=[message]), NOW)
    ledger = store.ledger([EXAM_B, str(exam_events)], ["1.2.3.9"])
    assert ledger.previous(EXAM_B, None, exceedance("PAED HEAD")) == D(70)
    assert ledger.previous(EXAM_B, exam_events, exceedance("exam dlp", "dlp_total", "", "2000")) == D(2000)
    assert store.ledger([EXAM_B], []).exams == {}


def test_a_store_made_before_gets_the_event_key_index(store: StateStore) -> None:
    with store.engine.begin() as conn:
        conn.execute(sa.text(f"DROP INDEX {EVENT_KEY_INDEX}"))
        conn.execute(sa.text("DELETE FROM ctp_meta WHERE key = 'migrations_applied'"))  # written by this ctpoller
    store.ensure_schema()
    store.ensure_schema()
    with store.engine.connect() as conn:
        indexes = sa.inspect(conn).get_indexes(exceedance_table.name)
    assert [i["column_names"] for i in indexes if i["name"] == EVENT_KEY_INDEX] == [["event_key"]]


def test_a_store_made_before_gets_the_emails_columns_null_in_the_rows_it_has(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.sqlite3'}"
    old = StateStore(url)
    old.ensure_schema()
    old.commit_cycle(CycleWrite(messages=[NewMessage("<old@h>", EXAM_A, ("p@h.example",), (notification("a"),))]), NOW)
    with old.engine.begin() as conn:  # as a ctpoller before these columns left it (SQLite >= 3.35 drops columns)
        for column in ("requested_procedure", "age", "sex", "study_pk", "acquisition_type", "phantom", "series"):
            conn.execute(sa.text(f"ALTER TABLE ctp_notification DROP COLUMN {column}"))
        conn.execute(sa.text("ALTER TABLE ctp_notification DROP COLUMN event_number"))
        conn.execute(sa.text("ALTER TABLE ctp_notification DROP COLUMN reason"))
        conn.execute(sa.text("DELETE FROM ctp_meta WHERE key = 'migrations_applied'"))  # written by this ctpoller
    old.dispose()
    store = StateStore(url)
    try:
        store.ensure_schema()
        store.ensure_schema()  # idempotent
        [before] = store.pending_messages()
        assert before.notifications[0].age is None and before.notifications[0].study_pk is None
        told = replace(
            notification("b", event="1.2.3.10"), age="17 y", sex="F", study_pk=8, reason="ok", event_number=2
        )
        store.commit_cycle(CycleWrite(messages=[NewMessage("<new@h>", EXAM_A, ("p@h.example",), (told,))]), NOW)
        assert store.pending_messages()[1].notifications == (told,)
    finally:
        store.dispose()


def test_a_store_of_the_ctpoller_before_gets_the_authoriser_column_by_its_own_migration(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.sqlite3'}"
    old = StateStore(url)
    old.ensure_schema()
    old.commit_cycle(CycleWrite(messages=[NewMessage("<old@h>", EXAM_A, ("p@h.example",), (notification("a"),))]), NOW)
    with old.engine.begin() as conn:  # as the ctpoller before left it: every earlier migration applied
        conn.execute(sa.text("ALTER TABLE ctp_notification DROP COLUMN authorised_by"))
        conn.execute(
            sa.text("UPDATE ctp_meta SET value = :n WHERE key = 'migrations_applied'"),
            {"n": str(applied_before("notification: who authorised proceeding past a Dose Check"))},
        )
    old.dispose()
    store = StateStore(url)
    try:
        store.ensure_schema()
        [before] = store.pending_messages()
        assert before.notifications[0].authorised_by is None
        told = replace(
            notification("b", event="1.2.3.10"), reason="large patient", authorised_by="Radiographer on duty"
        )
        store.commit_cycle(CycleWrite(messages=[NewMessage("<new@h>", EXAM_A, ("p@h.example",), (told,))]), NOW)
        assert store.pending_messages()[1].notifications == (told,)
    finally:
        store.dispose()


def applied_before(name: str) -> int:
    """How many migrations a store of the ctpoller before the migration ``name`` had applied."""
    return [m.name for m in MIGRATIONS].index(name)


NEW_FIELDS = "notification: severity, the reference level a limit came from, and detail"


def test_a_store_of_the_ctpoller_before_gets_severity_and_reference_columns_by_their_own_migration(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'old.sqlite3'}"
    old = StateStore(url)
    old.ensure_schema()
    old.commit_cycle(CycleWrite(messages=[NewMessage("<old@h>", EXAM_A, ("p@h.example",), (notification("a"),))]), NOW)
    with old.engine.begin() as conn:  # as the ctpoller before left it: every earlier migration applied
        for column in ("severity", "reference", "reference_value", "multiple", "detail"):
            conn.execute(sa.text(f"ALTER TABLE ctp_notification DROP COLUMN {column}"))
        conn.execute(
            sa.text("UPDATE ctp_meta SET value = :n WHERE key = 'migrations_applied'"),
            {"n": str(applied_before(NEW_FIELDS))},
        )
    old.dispose()
    store = StateStore(url)
    try:
        store.ensure_schema()
        store.ensure_schema()  # idempotent
        [before] = store.pending_messages()
        assert before.notifications == (notification("a"),)  # the defaults: a notification, no reference
        assert before.notifications[0].severity == "notification" and before.notifications[0].multiple is None
        told = replace(
            notification("b", event="1.2.3.10"),
            limit=D("94.0"),
            severity="alert",
            reference="UK NDRL 2022",
            reference_value=D("47"),
            multiple=D("2.0"),
            detail="one line",
        )
        store.commit_cycle(CycleWrite(messages=[NewMessage("<new@h>", EXAM_A, ("p@h.example",), (told,))]), NOW)
        after = store.pending_messages()[1].notifications
        assert after == (told,) and str(after[0].multiple) == "2.0"  # Decimals as written, exponent kept
        [row] = [r for r in store.archive_rows() if r.notification.rule == "b"]
        assert row.notification == told
    finally:
        store.dispose()


def test_an_update_threads_under_the_first_email_sent_about_its_exam(store: StateStore) -> None:
    for n, mid in enumerate(("<first@h>", "<second@h>", "<third@h>")):
        told = (notification("a", value=str(70 + n)),)
        store.commit_cycle(CycleWrite(messages=[NewMessage(mid, EXAM_A, ("p@h.example",), told)]), NOW)
    first, second, third = store.pending_messages()
    assert (first.thread_root, second.thread_root) == (None, None)  # nothing sent yet: nobody has a root
    store.mark_sent(first, NOW)
    second, third = store.pending_messages()
    assert (second.thread_root, third.thread_root) == ("<first@h>", "<first@h>")
    assert second.is_update
