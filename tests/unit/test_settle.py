"""When a study row is evaluated, and how far the watermark moves (pure, no database)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from ctpoller.core import settle
from ctpoller.core.model import Snapshot, StudyHead

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
SETTLE = timedelta(seconds=120)
GIVE_UP = timedelta(hours=6)
NO_SNAPSHOT = Snapshot()


def head(
    pk: int,
    *,
    fingerprint: str = "a",
    modality: str | None = "CT",
    patient: bool = True,
    uid: str | None = "1.2.3",
    events: int = 2,
) -> StudyHead:
    return StudyHead(pk=pk, uid=uid, modality=modality, has_patient=patient, n_events=events, fingerprint=fingerprint)


def cycle(heads, known, now, snapshot=NO_SNAPSHOT, watermark=0):
    plan = settle.plan(heads, known, now=now, settle=SETTLE, give_up=GIVE_UP, snapshot=snapshot)
    settle.decide(plan, [h.pk for h in plan.ready] + [h.pk for h, _ in plan.forced], now)
    new = settle.advance(watermark, plan, now=now, settle=SETTLE, give_up=GIVE_UP, snapshot=snapshot)
    return plan, new


def test_new_complete_study_waits_for_the_settle_time():
    plan, watermark = cycle([head(5)], {}, T0)
    assert plan.ready == []
    assert plan.waiting and "settling" in plan.waiting[0][1]
    assert watermark == 0


def test_study_unchanged_for_the_settle_time_is_ready():
    first, _ = cycle([head(5)], {}, T0)
    plan, watermark = cycle([head(5)], first.tracked, T0 + SETTLE)
    assert [h.pk for h in plan.ready] == [5]
    assert watermark == 5


def test_a_change_restarts_the_settle_clock():
    first, _ = cycle([head(5, fingerprint="a")], {}, T0)
    second, _ = cycle([head(5, fingerprint="b")], first.tracked, T0 + SETTLE)
    assert second.ready == []
    third, _ = cycle([head(5, fingerprint="b")], second.tracked, T0 + SETTLE + SETTLE - timedelta(seconds=1))
    assert third.ready == []
    fourth, _ = cycle([head(5, fingerprint="b")], third.tracked, T0 + 2 * SETTLE)
    assert [h.pk for h in fourth.ready] == [5]


def test_incomplete_study_is_never_ready_before_give_up():
    first, _ = cycle([head(5, modality=None, patient=False)], {}, T0)
    plan, watermark = cycle([head(5, modality=None, patient=False)], first.tracked, T0 + 3 * SETTLE)
    assert plan.ready == []
    assert "modality not yet written" in plan.waiting[0][1]
    assert watermark == 0


def test_study_without_patient_row_is_incomplete():
    first, _ = cycle([head(5, patient=False)], {}, T0)
    plan, _ = cycle([head(5, patient=False)], first.tracked, T0 + 3 * SETTLE)
    assert plan.ready == []
    assert "patient rows not yet written" in plan.waiting[0][1]


def test_watermark_waits_for_incomplete_study_below_a_decided_one():
    first, _ = cycle([head(5, modality=None, patient=False), head(6)], {}, T0)
    plan, watermark = cycle([head(5, modality=None, patient=False), head(6)], first.tracked, T0 + SETTLE)
    assert [h.pk for h in plan.ready] == [6]
    assert watermark == 0


def test_incomplete_study_with_events_is_evaluated_at_give_up_with_a_reason():
    first, _ = cycle([head(5, modality=None, patient=False)], {}, T0)
    plan, watermark = cycle([head(5, modality=None, patient=False)], first.tracked, T0 + GIVE_UP)
    assert [h.pk for h, _ in plan.forced] == [5]
    assert "evaluated as it stands" in plan.forced[0][1]
    assert watermark == 5


def test_empty_study_is_given_up_and_stops_blocking_the_watermark():
    first, _ = cycle([head(5, modality=None, patient=False, events=0, uid=None), head(6)], {}, T0)
    plan, watermark = cycle(
        [head(5, modality=None, patient=False, events=0, uid=None), head(6)], first.tracked, T0 + GIVE_UP
    )
    assert plan.abandoned and plan.abandoned[0][0] == 5
    assert plan.tracked[5].status == settle.GIVEN_UP
    assert watermark == 6


def test_other_modality_is_skipped_but_still_waits_the_settle_time_for_the_watermark():
    plan, watermark = cycle([head(5, modality="DX")], {}, T0)
    assert plan.tracked[5].status == settle.SKIPPED
    assert watermark == 0
    _, watermark = cycle([head(5, modality="DX")], plan.tracked, T0 + SETTLE)
    assert watermark == 5


def test_watermark_waits_for_transactions_running_when_a_row_was_first_seen():
    seen = Snapshot(xmin=100, xmax=110)
    first, _ = cycle([head(5)], {}, T0, snapshot=seen)
    assert first.tracked[5].first_seen_xmax == 110
    plan, watermark = cycle([head(5)], first.tracked, T0 + SETTLE, snapshot=Snapshot(xmin=105, xmax=120))
    assert [h.pk for h in plan.ready] == [5]
    assert watermark == 0
    _, watermark = cycle([head(5)], plan.tracked, T0 + SETTLE, snapshot=Snapshot(xmin=110, xmax=120))
    assert watermark == 5


def test_vanished_rows_are_forgotten():
    first, _ = cycle([head(5), head(6)], {}, T0)
    plan, _ = cycle([head(6)], first.tracked, T0 + timedelta(seconds=5))
    assert plan.forget == [5]


def test_decided_row_that_changes_is_watched_again():
    first, _ = cycle([head(5)], {}, T0)
    decided, _ = cycle([head(5)], first.tracked, T0 + SETTLE)
    assert decided.tracked[5].status == settle.DECIDED
    changed, _ = cycle([head(5, fingerprint="new")], decided.tracked, T0 + SETTLE + timedelta(seconds=1))
    assert changed.tracked[5].status == settle.PENDING
    assert changed.ready == []
