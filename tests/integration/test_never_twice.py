"""Ages at band edges, one rule identity, one irradiation event one notification: through the real
poll cycle, on a real PostgreSQL written the way OpenREM writes, with a real SMTP server counting."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from decimal import Decimal

import pytest
import sqlalchemy as sa

from ctpoller.demo.exams import GE_VCT, stored_again
from ctpoller.demo.openrem import OpenremImporter, SeedEvent, SeedStudy
from ctpoller.store.store import StateStore
from ctpoller.store.tables import EVENT_KEY_INDEX, exceedance_table
from support.cycle import SETTLE, Harness
from support.smtp import body

pytestmark = [pytest.mark.postgres, pytest.mark.smtp]

SETTLED = SETTLE + timedelta(seconds=1)

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

PAEDIATRIC = """
[defaults]
recipients = ["physics@hospital.example"]

[[rule]]
name = "Paediatric body"
phantom = "body"
age_max = 18
ctdivol = 50

[[rule]]
name = "Infant body"
phantom = "body"
age_max = 1
ctdivol = 50

[[rule]]
name = "Adult body"
phantom = "body"
age_min = 18
ctdivol = 150
"""

#: GE_VCT's event over the body limit: 176.12 mGy.
HIGH_EVENT = 22


@pytest.fixture
def harness(openrem_db, tmp_path, inbox):
    harness = Harness(openrem_db, f"sqlite:///{tmp_path / 'state.sqlite3'}", RULES, inbox.port, tmp_path)
    assert harness.cycle().initialised
    return harness


def settle(harness: Harness):
    """Two cycles: the first sees the new rows, the second comes after the settle time."""
    harness.cycle(after=timedelta(seconds=1))
    return harness.cycle(after=SETTLED)


def told(report) -> list[tuple[str, str, str, Decimal | None]]:
    return sorted((n.rule, n.metric, n.event_key, n.previous_value) for m in report.messages for n in m.notifications)


def copy_of(study: SeedStudy, n: int, **changes: object) -> SeedStudy:
    """The same dose report under another Study Instance UID (``exams.stored_again``), with ``changes``."""
    return dataclasses.replace(stored_again(study, f"{study.uid}.99.{n}"), accession=f"AGAIN{n}", **changes)


def with_event(study: SeedStudy, index: int, event: SeedEvent) -> tuple[SeedEvent, ...]:
    return tuple(event if i == index else e for i, e in enumerate(study.events))


# ------------------------------------------------------------------------------------------ ages


@pytest.mark.parametrize(
    ("age_decimal", "age_string", "rules"),
    [
        (Decimal("18.0"), None, {"Paediatric body", "Adult body"}),  # 17.96 years, stored rounded
        (Decimal("18.0"), "017Y", {"Paediatric body"}),
        (Decimal("18.0"), "018Y", {"Adult body"}),
        (Decimal("1.0"), None, {"Infant body", "Paediatric body"}),  # 11 months, stored rounded
        (Decimal("1.0"), "011M", {"Infant body", "Paediatric body"}),
        (Decimal("1.0"), "012M", {"Paediatric body"}),
    ],
)
def test_a_paediatric_rule_fires_for_a_patient_stored_at_the_band_edge_who_may_be_below_it(
    harness, openrem, inbox, age_decimal, age_string, rules
):
    harness.rules_text = PAEDIATRIC
    openrem.import_study(dataclasses.replace(GE_VCT, patient_age_decimal=age_decimal, patient_age=age_string))
    report = settle(harness)
    assert {n.rule for m in report.messages for n in m.notifications} == rules
    [message] = inbox.messages
    assert all(rule in body(message) for rule in rules)


# ------------------------------------------------------------------------------------------ rule identity


def test_renaming_a_rule_only_in_case_and_spacing_sends_nothing_again(harness, openrem, inbox):
    pk = openrem.import_study(GE_VCT)
    first = settle(harness)
    assert first.sent == 1 and {n.rule for n in first.messages[0].notifications} == {"Body CTDIvol", "Exam DLP"}

    harness.rules_text = RULES.replace('"Body CTDIvol"', '" BODY  ctdivol "').replace('"Exam DLP"', '"exam dlp"')
    openrem.resend_cumulative(pk, GE_VCT)  # the same exam evaluated again under the new names
    again = settle(harness)
    assert again.exams_evaluated == 1 and again.exceedances == 2
    assert again.messages == [] and len(inbox.messages) == 1


def test_renaming_a_rule_for_real_notifies_its_exceedances_again(harness, openrem, inbox):
    pk = openrem.import_study(GE_VCT)
    settle(harness)
    harness.rules_text = RULES.replace('"Body CTDIvol"', '"Body CTDIvol (AAPM)"')
    openrem.resend_cumulative(pk, GE_VCT)
    again = settle(harness)
    assert [n.rule for m in again.messages for n in m.notifications] == ["Body CTDIvol (AAPM)"]
    assert len(inbox.messages) == 2


# ------------------------------------------------------------------------------------------ one event, one notification


def test_the_same_report_under_a_second_study_uid_sends_nothing(harness, openrem, inbox):
    openrem.import_study(GE_VCT)
    first = settle(harness)
    assert told(first) == [
        ("Body CTDIvol", "ctdivol", f"{GE_VCT.uid}.2.23", None),
        ("Exam DLP", "dlp_total", "", None),
    ]

    openrem.import_study(copy_of(GE_VCT, 1))
    again = settle(harness)
    assert again.exams_evaluated == 1 and again.exceedances == 2
    assert again.messages == [] and len(inbox.messages) == 1


def test_the_same_report_under_two_study_uids_in_one_run_is_told_once(harness, openrem, inbox):
    openrem.import_study(GE_VCT)
    openrem.import_study(copy_of(GE_VCT, 1))
    report = settle(harness)
    assert report.exams_evaluated == 2 and report.exceedances == 4
    assert [m.study_uid for m in report.messages] == [GE_VCT.uid]
    assert len(inbox.messages) == 1


def test_a_second_report_whose_event_dose_rose_is_notified_as_risen(harness, openrem, inbox):
    openrem.import_study(GE_VCT)
    settle(harness)
    high = GE_VCT.events[HIGH_EVENT]
    risen = dataclasses.replace(high, ctdivol=Decimal("190.00"))
    again = settle_after(harness, openrem, copy_of(GE_VCT, 2, events=with_event(GE_VCT, HIGH_EVENT, risen)))
    assert told(again) == [("Body CTDIvol", "ctdivol", high.uid, Decimal("176.12"))]
    assert len(inbox.messages) == 2
    assert "from 176.12 to 190 mGy" in body(inbox.messages[-1])


def test_a_second_report_with_an_extra_event_notifies_the_exam_level_limit(harness, openrem, inbox):
    openrem.import_study(GE_VCT)
    settle(harness)
    extra = SeedEvent(
        f"{GE_VCT.uid}.2.99", None, GE_VCT.events[-1].acquisition_type, Decimal("10"), Decimal("100"), None
    )
    total = GE_VCT.total_dlp + Decimal(100)  # type: ignore[operator]
    more = copy_of(GE_VCT, 3, events=(*GE_VCT.events, extra), total_dlp=total)
    again = settle_after(harness, openrem, more)
    assert told(again) == [("Exam DLP", "dlp_total", "", None)]
    assert len(inbox.messages) == 2 and "2102.39" in body(inbox.messages[-1])


def test_a_report_without_irradiation_event_uids_under_a_second_study_uid_is_told_again(harness, openrem, inbox):
    """Without UIDs nothing says two reports hold the same irradiations: never merge them."""
    no_uids = dataclasses.replace(GE_VCT, events=tuple(dataclasses.replace(e, uid=None) for e in GE_VCT.events))
    openrem.import_study(no_uids)
    settle(harness)
    again = settle_after(harness, openrem, copy_of(no_uids, 4))
    assert [(n.rule, n.metric) for m in again.messages for n in m.notifications] == [
        ("Body CTDIvol", "ctdivol"),
        ("Exam DLP", "dlp_total"),
    ]
    assert len(inbox.messages) == 2


def test_a_ledger_written_before_the_upgrade_is_matched_without_case_and_across_study_uids(
    harness, openrem, inbox, tmp_path
):
    """Rows as an earlier ctpoller wrote them (rule as spelt then, no exam-by-events row) still
    keep the per-event exceedance of the same report under another Study Instance UID quiet."""
    openrem.import_study(GE_VCT)
    settle(harness)
    state = StateStore(harness.state_url)
    with state.engine.begin() as conn:
        conn.execute(sa.update(exceedance_table).values(rule=sa.func.upper(exceedance_table.c.rule)))
        conn.execute(sa.delete(exceedance_table).where(exceedance_table.c.study_uid.like("events:%")))
    state.dispose()
    again = settle_after(harness, openrem, copy_of(GE_VCT, 5))
    assert told(again) == [("Exam DLP", "dlp_total", "", None)]  # the exam as a whole was not known by its events


def settle_after(harness: Harness, openrem: OpenremImporter, study: SeedStudy):
    openrem.import_study(study)
    return settle(harness)


def test_a_postgresql_state_store_made_before_gets_the_index_and_keeps_the_promise(
    openrem_db, openrem, inbox, tmp_path, state_pg_url
):
    harness = Harness(openrem_db, state_pg_url, RULES, inbox.port, tmp_path)
    assert harness.cycle().initialised
    store = StateStore(state_pg_url)
    with store.engine.begin() as conn:  # as a store made by an earlier ctpoller
        conn.execute(sa.text(f"DROP INDEX {EVENT_KEY_INDEX}"))
        conn.execute(sa.text("DELETE FROM ctp_meta WHERE key = 'migrations_applied'"))  # written by this ctpoller
    store.dispose()
    openrem.import_study(GE_VCT)
    assert settle(harness).sent == 1
    assert settle_after(harness, openrem, copy_of(GE_VCT, 6)).messages == []
    assert len(inbox.messages) == 1
    store = StateStore(state_pg_url)
    with store.engine.connect() as conn:
        indexes = sa.inspect(conn).get_indexes(exceedance_table.name)
    store.dispose()
    assert [i["column_names"] for i in indexes if i["name"] == EVENT_KEY_INDEX] == [["event_key"]]
