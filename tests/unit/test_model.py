"""The exam: rows sharing a Study Instance UID, each irradiation event counted once."""

from __future__ import annotations

from decimal import Decimal as D

import pytest

from ctpoller.core.exam import AgeRange, Event, Exam, StudyRow, age_range


def event(key: str, pk: int, study: int, dlp: str | None = "10", ctdivol: str | None = "1") -> Event:
    return Event(
        key=key,
        event_pk=pk,
        study_pk=study,
        dlp_mgycm=D(dlp) if dlp else None,
        ctdivol_mgy=D(ctdivol) if ctdivol else None,
    )


def row(pk: int, total: str | None, *events: Event) -> StudyRow:
    return StudyRow(pk=pk, uid="1.2.3", total_dlp_mgycm=D(total) if total else None, events=events)


def test_continued_reports_add_their_own_totals():
    exam = Exam("1.2.3", (row(1, "60.17", event("a", 1, 1)), row(2, "56.44", event("b", 2, 2))))
    assert exam.total_dlp_mgycm == D("116.61")
    assert [e.key for e in exam.events] == ["a", "b"]


def test_an_event_a_later_report_repeats_counts_once():
    first = row(1, "30", event("a", 1, 1, dlp="10"), event("b", 2, 1, dlp="20"))
    later = row(2, "50", event("b", 3, 2, dlp="20"), event("c", 4, 2, dlp="30"))
    exam = Exam("1.2.3", (first, later))
    assert [e.key for e in exam.events] == ["a", "b", "c"]
    assert exam.total_dlp_mgycm == D("60")


def test_events_sharing_a_uid_within_one_report_both_count_with_their_own_keys():
    exam = Exam("1.2.3", (row(1, "900", event("x", 1, 1, ctdivol="0.1"), event("x", 2, 1, ctdivol="90")),))
    assert [(e.key, e.ctdivol_mgy) for e in exam.events] == [("x", D("0.1")), ("x#2", D("90"))]
    assert exam.total_dlp_mgycm == D("900")


def test_identical_events_without_uid_in_two_reports_are_two_irradiations():
    same = "no-uid:abc"
    exam = Exam("1.2.3", (row(1, "800", event(same, 1, 1, dlp="800")), row(2, "800", event(same, 2, 2, dlp="800"))))
    assert [e.key for e in exam.events] == [same, f"{same}#2"]
    assert exam.total_dlp_mgycm == D("1600")


def test_a_report_without_total_contributes_its_events():
    exam = Exam("1.2.3", (row(1, None, event("a", 1, 1, dlp="5"), event("b", 2, 1, dlp=None)),))
    assert exam.total_dlp_mgycm == D("5")
    assert Exam("1.2.3", (row(1, None, event("a", 1, 1, dlp=None)),)).total_dlp_mgycm is None


def test_a_nan_total_counts_as_no_total():
    assert Exam("1.2.3", (row(1, "NaN", event("a", 1, 1, dlp="7")),)).total_dlp_mgycm == D("7")


@pytest.mark.parametrize(
    ("decimal", "text", "ages"),
    [
        (D("60.0"), "060Y", AgeRange(D("60"), D("61"), high_open=True)),  # maybe just the string, rounded
        (D("60.3"), "060Y", AgeRange(D("60.25"), D("60.35"))),  # both: the ages both allow
        (D("-7976.7"), "063Y", AgeRange(D("63"), D("64"), high_open=True)),
        (None, "018M", AgeRange(D("1.5"), D("1.583334"), high_open=True)),
        (None, "003W", AgeRange(D("0.057494"), D("0.076660"), high_open=True)),
        (None, "010D", AgeRange(D("0.027378"), D("0.030117"), high_open=True)),
        (D("131"), None, None),
        (None, "abc", None),
        (None, "999Y", None),
        (None, None, None),
        (D("NaN"), "040Y", AgeRange(D("40"), D("41"), high_open=True)),
        (D("0.0"), None, AgeRange(D("0"), D("0.05"))),
    ],
)
def test_an_age_is_the_range_of_ages_a_plausible_decimal_and_the_dicom_string_allow(decimal, text, ages):
    assert age_range(decimal, text) == ages
