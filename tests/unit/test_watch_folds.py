"""The [[trend]] and [[cumulative]] folds: windows, re-sends, episodes, arming, out-of-order exams."""

from __future__ import annotations

from datetime import date, time
from decimal import Decimal

import pytest

from ctpoller.core.exam import Event, Exam, StudyRow
from ctpoller.core.rules import parse_rules
from ctpoller.core.rules.cumulative import Cumulative, CumulativeExam, cumulative_exam, fold_cumulative
from ctpoller.core.rules.trend import Trend, fold_trend, trend_order, trend_value
from ctpoller.core.rules.window import NO_STATION, Window, station_of

D = Decimal


def trend(**changes) -> Trend:
    keys = {"name": '"Head trend"', "study": '"head"', "metric": '"ctdivol"', "drl": 65, "exams": 3, "above": 2}
    text = "\n".join(["[[trend]]", *(f"{k} = {v}" for k, v in {**keys, **changes}.items() if v is not None)])
    [found] = parse_rules(text, source="t").trends
    return found


def run(t: Trend, values, window: Window | None = None, station: str = "CT North"):
    """Fold (uid, order, value) in turn; return the final window and the uids whose fold fired."""
    window = window or Window()
    fired = []
    for uid, order, value in values:
        window, found = fold_trend(t, window, uid, order, None if value is None else D(value), station)
        if found is not None:
            fired.append((uid, found))
    return window, fired


def day(n: int) -> str:
    return trend_order(date(2026, 1, n), time(9, 0))


def test_the_window_keeps_the_last_n_exams_by_study_date():
    window, _ = run(trend(), [(f"u{n}", day(n), 10) for n in range(1, 6)])
    assert [c.uid for c in window.exams] == ["u3", "u4", "u5"]


def test_a_full_window_whose_mean_is_above_k_times_drl_fires_once_per_episode():
    _, fired = run(trend(), [("a", day(1), 140), ("b", day(2), 140), ("c", day(3), 140), ("d", day(4), 150)])
    assert [uid for uid, _ in fired] == ["c"]
    [(_, found)] = fired
    assert (found.metric, found.value, found.limit, found.reference_value, found.multiple) == (
        "trend_ctdivol",
        D(140),
        D(130),
        D(65),
        D(2),
    )
    assert found.event_key == "" and found.unit == "mGy"
    assert found.detail == "mean of the last 3 exams on CT North: 140 mGy (2.15 × 65 mGy)"


def test_a_window_not_yet_full_never_fires():
    _, fired = run(trend(), [("a", day(1), 500), ("b", day(2), 500)])
    assert fired == []


def test_a_mean_exactly_at_the_limit_does_not_fire():
    _, fired = run(trend(), [("a", day(1), 130), ("b", day(2), 130), ("c", day(3), 130)])
    assert fired == []


def test_an_episode_ends_and_a_new_one_notifies_again():
    exams = [("a", day(1), 140), ("b", day(2), 140), ("c", day(3), 140)]  # starts at c
    exams += [("d", day(4), 10)]  # mean 96.7: ends
    exams += [("e", day(5), 300), ("f", day(6), 300)]  # mean 203 at e: starts again
    window, fired = run(trend(), exams)
    assert [uid for uid, _ in fired] == ["c", "e"]
    assert window.episodes == {"trend_ctdivol": "e"}


def test_a_resent_exam_replaces_its_own_value_and_is_never_counted_twice():
    window, fired = run(trend(), [("a", day(1), 10), ("b", day(2), 10), ("a", day(1), 400)])
    assert [(c.uid, c.value) for c in window.exams] == [("a", D(400)), ("b", D(10))]
    assert fired == []  # two exams, not three
    window, fired = run(trend(), [("c", day(3), 10)], window)
    assert [uid for uid, _ in fired] == ["c"]  # (400 + 10 + 10) / 3 = 140 > 130


def test_an_exam_that_no_longer_counts_leaves_the_window():
    window, _ = run(trend(), [("a", day(1), 10), ("b", day(2), 10), ("a", day(1), None)])
    assert [c.uid for c in window.exams] == ["b"]


def test_an_out_of_order_older_exam_takes_its_place_by_study_date_or_stays_out():
    window, _ = run(trend(), [("b", day(2), 10), ("c", day(3), 10), ("d", day(4), 10), ("a", day(1), 999)])
    assert [c.uid for c in window.exams] == ["b", "c", "d"]  # older than the whole full window
    window, _ = run(trend(exams=4), [("b", day(2), 10), ("d", day(4), 10), ("c", day(3), 10)])
    assert [c.uid for c in window.exams] == ["b", "c", "d"]


def test_armed_above_fires_only_while_some_exam_in_the_window_exceeded_m_times_drl():
    armed = trend(armed_above=3, reference='"BfS DRW 2022"')
    _, fired = run(armed, [("a", day(1), 140), ("b", day(2), 140), ("c", day(3), 140)])
    assert fired == []  # mean 140 > 130, but no exam above 195
    window, fired = run(armed, [("a", day(1), 140), ("b", day(2), 200), ("c", day(3), 140)])
    [(uid, found)] = fired
    assert uid == "c"
    assert found.reference == "BfS DRW 2022"
    assert found.detail == (
        "mean of the last 3 exams on CT North: 160 mGy (2.46 × 65 mGy BfS DRW 2022); "
        "armed by the exam of 2026-01-02 09:00 at 200 mGy (3.08 ×)"
    )
    window, fired = run(armed, [("d", day(4), 190), ("e", day(5), 190)], window)
    assert fired == [] and window.episodes == {}  # b left the window: disarmed, the episode ended


def test_the_trend_value_is_the_highest_ctdivol_of_the_matching_events_or_the_exam_total():
    exam = make_exam("u", events=[("HEAD", "50"), ("HEAD", "70"), ("CHEST", "99")], study="CT HEAD", total="900")
    assert trend_value(trend(protocol='"head"'), exam) == D(70)
    assert trend_value(trend(study=None, protocol='"chest"'), exam) == D(99)
    assert trend_value(trend(), exam) == D(99)
    assert trend_value(trend(metric='"dlp_total"'), exam) == D(900)
    assert trend_value(trend(not_protocol='"chest"', metric='"dlp_total"'), exam) is None
    assert trend_value(trend(), make_exam("v", events=[("HEAD", None)], study="CT HEAD")) is None
    assert trend_value(trend(), make_exam("w", events=[("HEAD", "50")], study="THORAX")) is None


def test_an_exam_is_counted_on_its_display_name_else_its_station_name():
    assert station_of(make_exam("u", station="CTN01", display="CT North")) == "CT North"
    assert station_of(make_exam("u", station="CTN01")) == "CTN01"
    assert station_of(make_exam("u")) == NO_STATION


def make_exam(uid, *, events=(), study="CT HEAD", total=None, station=None, display=None, when=date(2026, 1, 1)):
    row = StudyRow(
        pk=1,
        uid=uid,
        study_date=when,
        study_time=time(9),
        description=study,
        station_name=station,
        display_name=display,
        total_dlp_mgycm=D(total) if total else None,
        events=tuple(
            Event(key=f"{uid}.{n}", event_pk=n, study_pk=1, protocol=p, ctdivol_mgy=D(v) if v else None)
            for n, (p, v) in enumerate(events)
        ),
    )
    return Exam(uid=uid, rows=(row,))


# -- cumulative ----------------------------------------------------------------------------------------


def cumulative(**changes) -> Cumulative:
    lines = ["[[cumulative]]", 'name = "Patient DLP"', *(f"{k} = {v}" for k, v in changes.items())]
    [found] = parse_rules("\n".join(lines), source="t").cumulatives
    return found


def fold_all(c: Cumulative, exams, window: Window | None = None):
    window = window or Window()
    fired = []
    for uid, when, dlp in exams:
        counted = CumulativeExam(counts=True, study_date=when, dlp=None if dlp is None else D(dlp))
        window, found = fold_cumulative(c, window, uid, counted)
        fired.extend((uid, x) for x in found)
    return window, fired


def test_a_patients_total_dlp_within_the_days_fires_for_the_exam_that_takes_it_over():
    c = cumulative(days=365, dlp_total=3000)
    _, fired = fold_all(
        c, [("a", date(2025, 1, 1), 1000), ("b", date(2025, 6, 1), 1500), ("c", date(2025, 12, 1), 740)]
    )
    [(uid, found)] = fired
    assert uid == "c" and found.metric == "cumulative_dlp_total" and found.value == D(3240)
    assert found.limit == D(3000) and found.unit == "mGy·cm"
    assert found.detail == "this patient's 3rd CT exam within 365 days (total DLP 3,240 mGy·cm over 3 exams)"


def test_exams_older_than_the_days_leave_the_window():
    c = cumulative(days=365, dlp_total=3000)
    window, fired = fold_all(c, [("a", date(2025, 1, 1), 2000), ("b", date(2026, 1, 1), 1500)])
    assert fired == [] and [e.uid for e in window.exams] == ["b"]  # 2025-01-01 is 365 days before
    window, fired = fold_all(c, [("a", date(2025, 1, 2), 2000), ("b", date(2026, 1, 1), 1500)])
    assert [uid for uid, _ in fired] == ["b"]  # 365 days: 2025-01-02 is the window's first day


def test_the_number_of_exams_fires_once_per_episode_and_a_resend_counts_once():
    c = cumulative(days=30, exams=2)
    exams = [("a", date(2026, 1, 1), 10), ("b", date(2026, 1, 2), 10), ("b", date(2026, 1, 2), 20)]
    window, fired = fold_all(c, exams)
    assert fired == [] and len(window.exams) == 2
    window, fired = fold_all(c, [("c", date(2026, 1, 3), None), ("d", date(2026, 1, 4), None)], window)
    [(uid, found)] = fired
    assert uid == "c" and (found.metric, found.value, found.limit, found.unit) == ("cumulative_exams", 3, 2, "exams")
    assert found.detail == (
        "this patient's 3rd CT exam within 30 days (total DLP 30 mGy·cm over 3 exams, 1 without a recorded DLP)"
    )
    window, fired = fold_all(c, [("e", date(2026, 3, 1), 1)], window)  # the others left: ended
    assert window.episodes == {} and [e.uid for e in window.exams] == ["e"]
    window, fired = fold_all(c, [("f", date(2026, 3, 2), 1), ("g", date(2026, 3, 3), 1)], window)
    assert [uid for uid, _ in fired] == ["g"]


def test_an_exam_that_does_not_match_or_has_no_date_does_not_count():
    c = cumulative(days=30, exams=1, study='"head"')
    assert cumulative_exam(c, make_exam("u", study="CT HEAD")).counts
    assert not cumulative_exam(c, make_exam("u", study="THORAX")).counts
    assert not cumulative_exam(c, make_exam("u", study="CT HEAD", when=None)).counts


@pytest.mark.parametrize("detail_has", ["this patient's", "within"])
def test_a_cumulative_detail_names_no_identifier(detail_has):
    c = cumulative(days=30, exams=1)
    _, fired = fold_all(c, [("1.2.3", date(2026, 1, 1), 5), ("1.2.4", date(2026, 1, 2), 5)])
    [(_, found)] = fired
    assert detail_has in (found.detail or "") and "1.2." not in (found.detail or "")


def test_a_patient_back_after_the_days_starts_a_new_episode_even_when_one_exam_alone_exceeds():
    c = cumulative(days=365, dlp_total=3000)
    window, fired = fold_all(c, [("a", date(2024, 1, 1), 4000)])
    assert [uid for uid, _ in fired] == ["a"]
    window, fired = fold_all(c, [("b", date(2024, 2, 1), 100)], window)
    assert fired == [] and window.episodes == {"cumulative_dlp_total": "a"}  # still over: the same episode
    window, fired = fold_all(c, [("c", date(2026, 1, 1), 4000)], window)
    assert [uid for uid, _ in fired] == ["c"] and [e.uid for e in window.exams] == ["c"]
