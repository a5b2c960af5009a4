"""``[[route]]``: who receives an exam's email, by station, beside the rules' own recipients (pure)."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from textwrap import dedent

import pytest

from ctpoller.core.exam import DoseCheck, Event, Exam, StudyRow
from ctpoller.core.rules import RuleSet, evaluate, parse_rules, routed_recipients
from ctpoller.errors import ConfigError
from ctpoller.jobs.check import who_receives

SOURCE = "/etc/ctpoller/rules.toml"

RULES = """
[defaults]
recipients = ["physics@example.org"]

[[route]]
name = "North site"
station = { any = ["ct north", "re:^NCT\\\\d"] }
recipients = ["north@example.org"]

[[route]]
name = "South site"
station = "south"
not_station = "mobile"
recipients = ["south@example.org", "NORTH@example.org"]

[[rule]]
name = "Body"
ctdivol = 50

[[rule]]
name = "Paediatric"
ctdivol = 20
age_max = 18
recipients = ["paeds@example.org"]
"""


def parse(text: str) -> RuleSet:
    return parse_rules(dedent(text), source=SOURCE)


def event(key: str = "e1", *, study_pk: int = 1, ctdivol: str = "60", checks: tuple[DoseCheck, ...] = ()) -> Event:
    return Event(key=key, event_pk=1, study_pk=study_pk, ctdivol_mgy=Decimal(ctdivol), dose_checks=checks)


def row(*events: Event, pk: int = 1, station: str | None = None, display: str | None = None, age: str | None = None):
    return StudyRow(
        pk=pk,
        uid="1.2.3",
        station_name=station,
        display_name=display,
        patient_age_decimal=Decimal(age) if age else None,
        events=events,
    )


def exam(*rows: StudyRow) -> Exam:
    return Exam(uid="1.2.3", rows=rows)


def stations(station: str | None = None, display: str | None = None, age: str | None = None) -> Exam:
    return exam(row(event(), station=station, display=display, age=age))


def told(exam_: Exam, rules: RuleSet) -> dict[str, tuple[str, ...]]:
    return {x.rule: x.recipients for x in evaluate(exam_, rules)}


@pytest.mark.parametrize(
    ("station", "display", "expected"),
    [
        ("CT NORTH 1", None, ("north@example.org",)),
        (None, "North CT", ("north@example.org",)),  # the display name counts as well
        ("NCT7", None, ("north@example.org",)),  # a regular expression
        ("SOUTH-CT", None, ("south@example.org", "NORTH@example.org")),
        ("SOUTH MOBILE", None, ("physics@example.org",)),  # not_station excludes: no route, the defaults
        ("WEST", "West CT", ("physics@example.org",)),
        (None, None, ("physics@example.org",)),  # no station recorded: no route matches
        ("CT NORTH", "South CT", ("north@example.org", "south@example.org")),  # both routes, each address once
    ],
)
def test_an_exam_goes_to_its_routes_recipients_else_to_the_defaults(station, display, expected):
    rules = parse(RULES)
    assert routed_recipients(stations(station, display), rules) == expected
    assert told(stations(station, display), rules)["Body"] == expected


def test_a_rule_own_recipients_are_added_to_the_route_recipients_and_the_defaults_are_left_out():
    rules = parse(RULES)
    child_north = stations("CT NORTH", age="5")
    assert told(child_north, rules) == {
        "Body": ("north@example.org",),
        "Paediatric": ("north@example.org", "paeds@example.org"),
    }
    child_elsewhere = stations("WEST", age="5")
    assert told(child_elsewhere, rules)["Paediatric"] == ("physics@example.org", "paeds@example.org")


def test_a_route_matches_any_row_of_a_continued_exam():
    rules = parse(RULES)
    two_rows = exam(row(event(), pk=1, station="WEST"), row(event("e2", study_pk=2), pk=2, station="CT NORTH"))
    assert told(two_rows, rules)["Body"] == ("north@example.org",)


def test_dose_check_recipients_follow_the_routes_too():
    rules = parse(RULES + '[dose_check]\nnotify = true\nrecipients = ["ct-leads@example.org"]\n')
    check = DoseCheck(ctdivol_notification_configured=True, ctdivol_notification_mgy=Decimal(10))
    scanned = exam(row(event(ctdivol="15", checks=(check,)), station="CT NORTH"))
    assert told(scanned, rules)["Scanner Dose Check"] == ("north@example.org", "ct-leads@example.org")


def test_a_file_without_routes_sends_every_exam_to_the_defaults_as_before():
    rules = parse(RULES.split("[[route]]")[0] + "[[rule]]\nname = 'Any'\nctdivol = 1\n")
    assert rules.routes == ()
    assert told(stations("CT NORTH"), rules)["Any"] == ("physics@example.org",)


@pytest.mark.parametrize(
    ("route", "expected"),
    [
        ('name = "A"\nrecipients = ["a@example.org"]', "route 'A': has no station: set station (or not_station)"),
        ('name = "A"\nstation = "ct"', "route 'A': key 'recipients': is required"),
        ('name = "A"\nstation = "ct"\nrecipients = []', "route 'A': key 'recipients': is required"),
        ('name = "A"\nstation = "ct"\nrecipients = ["nobody"]', "route 'A': key 'recipients': must hold plain"),
        ('station = "ct"\nrecipients = ["a@example.org"]', "route #1: key 'name': is required"),
        ('name = "A"\nstation = "re:("\nrecipients = ["a@example.org"]', "route 'A': key 'station': invalid regular"),
        ('name = "A"\nstation = []\nrecipients = ["a@example.org"]', "route 'A': key 'station': must not be an empty"),
        ('name = "A"\nstations = "ct"\nrecipients = ["a@example.org"]', "did you mean 'station'?"),
        ('name = "A"\nprotocol = "head"\nrecipients = ["a@example.org"]', "route 'A': key 'protocol': unknown key"),
    ],
)
def test_a_bad_route_is_one_config_error_line_naming_file_route_and_key(route: str, expected: str):
    with pytest.raises(ConfigError) as caught:
        parse(f"[[rule]]\nname = 'R'\nctdivol = 1\n[[route]]\n{route}\n")
    message = str(caught.value)
    assert message.startswith(f"rules file {SOURCE}: ") and "\n" not in message
    assert expected in message


def test_two_routes_with_one_name_are_an_error_and_route_must_be_an_array_of_tables():
    with pytest.raises(ConfigError, match=r"route 'north  site': key 'name': is already used by route #1"):
        parse(RULES + '[[route]]\nname = " north  site"\nstation = "x"\nrecipients = ["x@example.org"]\n')
    with pytest.raises(ConfigError, match=r"key 'route': must be an array of tables, written \[\[route\]\]"):
        parse("[[rule]]\nname = 'R'\nctdivol = 1\n[route]\nname = 'A'\n")


def test_check_lists_who_receives_what_one_line_each():
    rules = parse(RULES + "[dose_check]\nnotify = true\n").with_recipients(["lead@example.org"])
    assert who_receives(rules) == [
        'recipients: route \'North site\': station { any = ["ct north", "re:^NCT\\d"] } -> north@example.org',
        'recipients: route \'South site\': station "south"; not_station "mobile" -> '
        "south@example.org, NORTH@example.org",
        "recipients: [defaults] (exams no route matches) -> physics@example.org, lead@example.org",
        "recipients: rule 'Body' -> the route's recipients or the defaults",
        "recipients: rule 'Paediatric' -> the route's recipients or the defaults, plus paeds@example.org",
        "recipients: [dose_check] -> the route's recipients or the defaults",
    ]
    plain = parse("[defaults]\nrecipients = ['physics@example.org']\n[[rule]]\nname = 'R'\nctdivol = 1\n")
    assert who_receives(plain) == [
        "recipients: [defaults] (every exam) -> physics@example.org",
        "recipients: rule 'R' -> the defaults",
    ]


def test_the_commented_routes_of_the_example_rules_file_parse_when_uncommented():
    example = Path(__file__).resolve().parents[2] / "examples" / "rules.toml"
    text = example.read_text(encoding="utf-8")
    routes = text[text.index("# [[route]]") : text.index("# --- Adults")]
    uncommented = "\n".join(line.removeprefix("# ") for line in routes.splitlines() if line.startswith("# "))
    rules = parse_rules(text + "\n" + uncommented, source=str(example))
    assert [route.name for route in rules.routes] == ["North site", "South site"]
    assert routed_recipients(stations("NCT2"), rules) == ("north-physics@example.org",)
    assert routed_recipients(stations("CT NORTH MOBILE"), rules) == ("physics@example.org",)
    assert routed_recipients(stations(None, "South CT"), rules) == ("south-physics@example.org",)
