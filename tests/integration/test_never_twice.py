"""Ages at band edges, one rule identity, one irradiation event one notification: through the real
poll cycle, on a real PostgreSQL written the way OpenREM writes, with a real SMTP server counting."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from decimal import Decimal

import pytest
import sqlalchemy as sa

from ctpoller.demo.exams import GE_VCT
from ctpoller.demo.openrem import OpenremImporter, SeedEvent, SeedStudy

from .poller_harness import SETTLE, Harness, Inbox, start_smtp

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
def inbox():
    inbox = Inbox()
    controller, port = start_smtp(inbox)
    inbox.port = port  # type: ignore[attr-defined]
    yield inbox
    controller.stop()


@pytest.fixture
def openrem(openrem_db):
    engine = sa.create_engine(openrem_db)
    yield OpenremImporter(engine)
    engine.dispose()


@pytest.fixture
def harness(openrem_db, tmp_path, inbox):
    harness = Harness(openrem_db, f"sqlite:///{tmp_path / 'state.sqlite3'}", RULES, inbox.port, tmp_path)
    assert harness.cycle().initialised
    return harness


def settle(harness: Harness):
    """Two cycles: the first sees the new rows, the second comes after the settle time."""
    harness.cycle(after=timedelta(seconds=1))
    return harness.cycle(after=SETTLED)


def body(message) -> str:
    return message.get_body(("plain",)).get_content()


def told(report) -> list[tuple[str, str, str, Decimal | None]]:
    return sorted((n.rule, n.metric, n.event_key, n.previous_value) for m in report.messages for n in m.notifications)


def stored_again(study: SeedStudy, n: int, **changes: object) -> SeedStudy:
    """The same dose report stored under another Study Instance UID (a PACS changed it and
    query-retrieve brought the report in again), with ``changes``."""
    uid = f"{study.uid}.99.{n}"
    return dataclasses.replace(study, uid=uid, accession=f"AGAIN{n}", sop_instance_uid=f"{uid}.1.1", **changes)


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
