"""The rules file: parsing, matching exams and events, limits, the scanner's Dose Check (pure)."""

from __future__ import annotations

import json
import math
import string
from decimal import Decimal
from pathlib import Path
from textwrap import dedent

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ctpoller.core.exam import UNIT_MGY, UNIT_MGYCM, DoseCheck, Event, Exam, Phantom, StudyRow
from ctpoller.core.model import Exceedance
from ctpoller.core.rules import DOSE_CHECK_RULE, DoseCheckConfig, Rule, RuleSet, evaluate, parse_rules
from ctpoller.errors import ConfigError

SOURCE = "/etc/ctpoller/rules.toml"
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "rules.toml"

Number = Decimal | int | str | None


# --------------------------------------------------------------------------------------------- helpers


def dec(value: Number) -> Decimal | None:
    return None if value is None else Decimal(value)


def event(
    key: str = "e1",
    *,
    study_pk: int = 1,
    protocol: str | None = None,
    ctdivol: Number = None,
    dlp: Number = None,
    phantom: Phantom | None = None,
    names: tuple[str, ...] = (),
    checks: tuple[DoseCheck, ...] = (),
) -> Event:
    return Event(
        key=key,
        event_pk=sum(map(ord, key)),
        study_pk=study_pk,
        protocol=protocol,
        phantom=phantom,
        ctdivol_mgy=dec(ctdivol),
        dlp_mgycm=dec(dlp),
        standard_names=names,
        dose_checks=checks,
    )


def row(
    *events: Event,
    pk: int = 1,
    description: str | None = None,
    requested: str | None = None,
    procedure: str | None = None,
    station: str | None = None,
    display: str | None = None,
    total_dlp: Number = None,
    age: Number = None,
    age_string: str | None = None,
    names: tuple[str, ...] = (),
) -> StudyRow:
    return StudyRow(
        pk=pk,
        uid="1.2.3",
        description=description,
        requested_procedure=requested,
        procedure=procedure,
        station_name=station,
        display_name=display,
        total_dlp_mgycm=dec(total_dlp),
        patient_age_decimal=dec(age),
        patient_age=age_string,
        standard_names=names,
        events=events,
    )


def exam(*rows: StudyRow) -> Exam:
    return Exam(uid="1.2.3", rows=rows)


def exam_of(*events: Event, **row_fields: object) -> Exam:
    """One study row holding ``events``."""
    return exam(row(*events, **row_fields))  # type: ignore[arg-type]


def parse(text: str) -> RuleSet:
    return parse_rules(dedent(text), source=SOURCE)


def one_rule(body: str, *, name: str = "R") -> RuleSet:
    return parse(f'[[rule]]\nname = "{name}"\n' + dedent(body))


def found(exam_: Exam, rules: RuleSet) -> list[tuple[str, str, str]]:
    return [(x.rule, x.metric, x.event_key) for x in evaluate(exam_, rules)]


def error_of(text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        parse(text)
    return str(caught.value)


# ---------------------------------------------------------------------------------------------- limits


@pytest.mark.parametrize(
    ("ctdivol", "reported"),
    [
        ("60.01", True),
        ("61", True),
        ("60", False),
        ("60.000", False),
        ("59.99", False),
        ("0", False),
        ("-100", False),
        (None, False),
        ("NaN", False),
        ("sNaN", False),
        ("Infinity", False),
        ("-Infinity", False),
    ],
)
def test_event_ctdivol_is_reported_only_when_strictly_above_the_limit(ctdivol: str | None, reported: bool):
    rules = one_rule("ctdivol = 60")
    assert bool(evaluate(exam_of(event(ctdivol=ctdivol)), rules)) is reported


def test_event_exactly_at_limit_is_not_reported():
    rules = one_rule("ctdivol = 60\ndlp = 500\ndlp_total = 500")
    assert evaluate(exam_of(event(ctdivol=60, dlp=500), total_dlp=500), rules) == []


@pytest.mark.parametrize(("dlp", "reported"), [("500.1", True), ("500", False), (None, False), ("NaN", False)])
def test_event_dlp_is_reported_only_when_strictly_above_the_limit(dlp: str | None, reported: bool):
    rules = one_rule("dlp = 500")
    assert bool(evaluate(exam_of(event(dlp=dlp, ctdivol=1000)), rules)) is reported


def test_event_exceedance_carries_value_limit_unit_protocol_and_event_key():
    rules = one_rule('ctdivol = 60\ndlp = 500\nrecipients = ["paeds@example.org"]')
    result = evaluate(exam_of(event("uid-1", protocol="PED HEAD", ctdivol="65.5", dlp="600")), rules)
    assert result == [
        Exceedance(
            "R",
            "ctdivol",
            "uid-1",
            Decimal("65.5"),
            Decimal(60),
            UNIT_MGY,
            ("paeds@example.org",),
            "PED HEAD",
        ),
        Exceedance("R", "dlp", "uid-1", Decimal(600), Decimal(500), UNIT_MGYCM, ("paeds@example.org",), "PED HEAD"),
    ]


def test_float_limit_keeps_its_decimal_value():
    rules = one_rule("ctdivol = 60.1")
    assert rules.rules[0].ctdivol == Decimal("60.1")
    assert evaluate(exam_of(event(ctdivol="60.1")), rules) == []
    assert len(evaluate(exam_of(event(ctdivol="60.11")), rules)) == 1


def test_total_dlp_of_a_continued_exam_counts_both_reports():
    continued = exam(
        row(event("a", dlp="5.05"), event("b", dlp="55.12"), pk=1, total_dlp="60.17"),
        row(event("c", study_pk=2, dlp="4.62"), event("d", study_pk=2, dlp="51.82"), pk=2, total_dlp="56.44"),
    )
    result = evaluate(continued, one_rule("dlp_total = 100"))
    assert result == [Exceedance("R", "dlp_total", "", Decimal("116.61"), Decimal(100), UNIT_MGYCM, (), None)]
    assert evaluate(continued, one_rule("dlp_total = 120")) == []


def test_exam_without_any_dlp_never_exceeds_a_total_limit():
    assert evaluate(exam_of(event(ctdivol=5)), one_rule("dlp_total = 1")) == []


# --------------------------------------------------------------------------------------- matching text

COMPOSED = "t\u00eate"  # tête, one code point for ê
DECOMPOSED = "te\u0302te"  # tête, e + combining circumflex


@pytest.mark.parametrize(
    ("criterion", "protocol", "matches"),
    [
        ('"ped head"', "HEAD PED ROUTINE", True),
        ('"ped head"', "Ped Head", True),
        ('"ped head"', "PEDHEAD", True),
        ('"ped head"', "PED CHEST", False),
        ('"  ped   head "', "head ped", True),
        ('[["ped", "head"]]', "head ped routine", True),
        ('[["ped", "head"]]', "ped chest", False),
        ('[["with contrast"]]', "CT WITH CONTRAST", True),
        ('[["with contrast"]]', "contrast, with", False),
        ('{ any = ["chest", "abdo"] }', "Abdomen Routine ZC (NR)", True),
        ('{ any = ["chest", "abdo"] }', "Head", False),
        ('"re:^ped"', "Ped head", True),
        ('"re:^ped"', "head ped", False),
        ("'re:\\bperf\\b'", "Brain PERF 4D", True),
        ("'re:\\bperf\\b'", "Performance", False),
        ('"straße"', "STRASSE", True),
        (f'"{COMPOSED}"', DECOMPOSED.upper(), True),
        (f'"{DECOMPOSED}"', COMPOSED, True),
        (f'"re:^{COMPOSED}"', DECOMPOSED, True),
        ('"head"', None, False),
        ('"head"', "", False),
        ('"re:.*"', None, False),
        ('"re:.*"', "", False),
    ],
)
def test_protocol_criterion_matches_words_in_any_order_ignoring_case(
    criterion: str, protocol: str | None, matches: bool
):
    rules = one_rule(f"protocol = {criterion}\nctdivol = 1")
    assert bool(evaluate(exam_of(event(protocol=protocol, ctdivol=2)), rules)) is matches


@pytest.mark.parametrize("protocol", [None, "", "Head", "Brain Perfusion"])
def test_not_protocol_excludes_only_a_matching_event(protocol: str | None):
    rules = one_rule('not_protocol = ["perfusion"]\nctdivol = 1')
    result = found(exam_of(event("a", protocol=protocol, ctdivol=2), event("b", protocol="Head", ctdivol=2)), rules)
    expected_a = [] if protocol == "Brain Perfusion" else [("R", "ctdivol", "a")]
    assert result == [*expected_a, ("R", "ctdivol", "b")]


def test_criteria_of_different_keys_must_all_match():
    rules = one_rule('protocol = "head"\nphantom = "head"\nctdivol = 1')
    events = (
        event("both", protocol="Head", phantom="head", ctdivol=2),
        event("protocol only", protocol="Head", phantom="body", ctdivol=2),
        event("phantom only", protocol="Sinus", phantom="head", ctdivol=2),
        event("no phantom", protocol="Head", phantom=None, ctdivol=2),
    )
    assert found(exam_of(*events), rules) == [("R", "ctdivol", "both")]


def test_phantom_criterion_is_case_insensitive_in_the_file():
    rules = one_rule('phantom = "Body"\nctdivol = 1')
    assert rules.rules[0].phantom == "body"
    assert found(exam_of(event("b", phantom="body", ctdivol=2), event("h", phantom="head", ctdivol=2)), rules) == [
        ("R", "ctdivol", "b")
    ]


def test_rule_without_criteria_checks_every_event():
    events = [event(f"e{i}", ctdivol=100) for i in range(3)]
    assert [key for _, _, key in found(exam_of(*events), one_rule("ctdivol = 1"))] == ["e0", "e1", "e2"]


@pytest.mark.parametrize(
    ("criterion", "row_fields", "matches"),
    [
        ('study = "thorax"', {"description": "Thorax^TAP (Adult)"}, True),
        ('study = "thorax"', {"description": "Colonography"}, False),
        ('study = "thorax"', {}, False),
        ('procedure = "thorax abdomen"', {"requested": "CT Thorax abdomen and pelvis"}, True),
        ('procedure = "thorax abdomen"', {"procedure": "CT Thorax abdomen and pelvis"}, True),
        ('procedure = "thorax abdomen"', {"description": "CT Thorax abdomen and pelvis"}, False),
        ('station = "ctawp00001"', {"station": "CTAWP00001"}, True),
        ('station = "number one"', {"display": "Hospital Number One Trust CTAWP00001"}, True),
        ('station = "number one"', {"station": "CTAWP00001"}, False),
        ('not_study = "physics"', {"description": "Specials^PhysicsTesting"}, False),
        ('not_study = "physics"', {"description": "Thorax"}, True),
        ('not_study = "physics"', {}, True),
        ('not_procedure = "thorax"', {"procedure": "Thorax"}, False),
        ('not_station = "qa"', {"display": "QA scanner"}, False),
        ('not_station = "qa"', {"station": "CT1", "display": "Main CT"}, True),
    ],
)
def test_exam_level_criteria_look_at_the_study_row_fields(criterion: str, row_fields: dict[str, str], matches: bool):
    rules = one_rule(f"{criterion}\nctdivol = 1")
    assert bool(evaluate(exam_of(event(ctdivol=2), **row_fields), rules)) is matches


def test_exam_level_criterion_matches_when_any_study_row_matches():
    continued = exam(
        row(event("a", ctdivol=2), pk=1, description="Other"),
        row(event("b", study_pk=2, ctdivol=2), pk=2, description="Thorax"),
    )
    assert found(continued, one_rule('study = "thorax"\nctdivol = 1')) == [
        ("R", "ctdivol", "a"),
        ("R", "ctdivol", "b"),
    ]
    assert found(continued, one_rule('not_study = "thorax"\nctdivol = 1')) == []


def test_standard_name_criterion_sees_the_event_names_and_those_of_its_own_study_row():
    two_rows = exam(
        row(event("a", ctdivol=2), pk=1, names=("CT Head",)),
        row(event("b", study_pk=2, ctdivol=2), event("c", study_pk=2, ctdivol=2, names=("CT Head",)), pk=2),
    )
    rules = one_rule('standard_name = "ct head"\nctdivol = 1')
    assert found(two_rows, rules) == [("R", "ctdivol", "a"), ("R", "ctdivol", "c")]
    assert rules.uses_standard_names
    excluding = one_rule('not_standard_name = "ct head"\nctdivol = 1')
    assert found(two_rows, excluding) == [("R", "ctdivol", "b")]
    assert excluding.uses_standard_names


def test_rules_without_standard_name_criteria_do_not_use_standard_names():
    assert not one_rule('protocol = "head"\nctdivol = 1').uses_standard_names


@pytest.mark.parametrize(
    ("band", "age", "age_string", "matches"),
    [
        ("age_max = 2", "1.9", None, True),
        ("age_max = 2", "2.1", None, False),
        ("age_max = 2", "2", "002Y", False),
        ("age_max = 2", None, "023M", True),
        ("age_max = 2", None, "024M", False),
        ("age_min = 2\nage_max = 6", "2", "002Y", True),
        ("age_min = 2\nage_max = 6", "5.999", None, True),
        ("age_min = 2\nage_max = 6", "6", "006Y", False),
        ("age_min = 2\nage_max = 6", "6.1", None, False),
        ("age_min = 2\nage_max = 6", "1.5", None, False),
        ("age_min = 2\nage_max = 6", "1.9", None, False),
        ("age_min = 18", "18", None, True),
        ("age_min = 18", "17.9", None, False),
        ("age_min = 18", "17.95", None, True),  # a decimal of 17.95 may stand for 18.0
        ("age_min = 0", "0", None, True),
        ("age_max = 10", None, None, False),
        ("age_min = 0", None, None, False),
        ("age_min = 0", "-7976.7", None, False),
        ("age_min = 0", None, "abc", False),
    ],
)
def test_age_band_includes_age_min_and_excludes_age_max(band: str, age: str | None, age_string, matches: bool):
    rules = one_rule(f"{band}\nctdivol = 1")
    assert bool(evaluate(exam_of(event(ctdivol=2), age=age, age_string=age_string), rules)) is matches


@pytest.mark.parametrize(
    ("age", "age_string", "bands"),
    [
        # 17.96 years, stored rounded as 18.0: may be 17.95 to 18.05, so a child too
        ("18.0", None, {"child", "late teen", "adult"}),
        ("18.0", "017Y", {"child", "late teen"}),  # the string says under 18
        ("18.0", "018Y", {"adult"}),  # the string says 18 or more
        ("18.0", "  017Y ", {"child", "late teen"}),  # as sent, padded
        # 11 months old, stored rounded as 1.0 (0.96 years from the birth date)
        ("1.0", None, {"infant", "child"}),
        ("1.0", "011M", {"infant", "child"}),
        ("1.0", "012M", {"child"}),
        ("0.9", "011M", {"infant", "child"}),  # 11/12 rounded: the string alone, 11 to under 12 months
        (None, "011M", {"infant", "child"}),
        (None, "051W", {"infant", "child"}),
        (None, "364D", {"infant", "child"}),
        (None, "366D", {"child"}),
        (None, "017Y", {"child", "late teen"}),
        (None, "018Y", {"adult"}),
        ("-7976.7", "017Y", {"child", "late teen"}),  # nonsense decimal: the string alone
        ("-7976.7", None, set()),  # nonsense and nothing else: unknown
        ("200", "999Y", set()),
        ("17.0", "017Y", {"child", "late teen"}),  # 17.0 may be the string's 17 rounded: 17 to under 18
        ("17.1", "017Y", {"child"}),  # from a birth date: 17.05 to 17.15
        ("40.0", "017Y", {"adult"}),  # they disagree: the decimal's range
    ],
)
def test_a_patient_who_may_be_under_a_band_edge_matches_the_band_below_it(age, age_string, bands):
    rules = parse(
        """
        [[rule]]
        name = "infant"
        age_max = 1
        ctdivol = 1
        [[rule]]
        name = "child"
        age_max = 18
        ctdivol = 1
        [[rule]]
        name = "adult"
        age_min = 18
        ctdivol = 1
        [[rule]]
        name = "late teen"
        age_min = 17.5
        age_max = 18
        ctdivol = 1
        """
    )
    exam = exam_of(event(ctdivol=2), age=age, age_string=age_string)
    assert {x.rule for x in evaluate(exam, rules)} == bands


def test_nonsense_decimal_age_falls_back_to_the_dicom_age_string():
    nm_ct = exam_of(event(ctdivol=2), age="-7976.7", age_string="063Y")
    assert found(nm_ct, one_rule("age_min = 18\nctdivol = 1")) == [("R", "ctdivol", "e1")]
    assert found(nm_ct, one_rule("age_max = 18\nctdivol = 1")) == []


# ------------------------------------------------------------------------------------------- dlp_total


def perfusion_exam() -> Exam:
    return exam_of(
        event("head", protocol="Head", phantom="head", ctdivol=70, dlp=1200),
        event("perf", protocol="Brain Perfusion", phantom="head", ctdivol=300, dlp=2500),
        total_dlp=3700,
    )


def test_not_protocol_keeps_the_whole_exam_out_of_the_total_limit_but_not_other_events():
    rules = one_rule('not_protocol = ["perfusion"]\nctdivol = 60\ndlp_total = 2000')
    assert found(perfusion_exam(), rules) == [("R", "ctdivol", "head")]


def test_total_limit_needs_one_event_matching_the_positive_event_criteria():
    assert found(perfusion_exam(), one_rule('protocol = "perfusion"\ndlp_total = 2000')) == [("R", "dlp_total", "")]
    assert found(perfusion_exam(), one_rule('protocol = "cardiac"\ndlp_total = 2000')) == []
    assert found(perfusion_exam(), one_rule('phantom = "body"\ndlp_total = 2000')) == []
    assert found(perfusion_exam(), one_rule('phantom = "head"\ndlp_total = 2000')) == [("R", "dlp_total", "")]


def test_total_limit_needs_the_exam_level_criteria():
    assert found(perfusion_exam(), one_rule('study = "head"\ndlp_total = 2000')) == []
    assert found(perfusion_exam(), one_rule("dlp_total = 2000")) == [("R", "dlp_total", "")]


# ----------------------------------------------------------------------------------- order, recipients


def test_every_matching_rule_reports_and_results_follow_rule_metric_event_order():
    rules = parse(
        """
        [defaults]
        recipients = ["physics@example.org"]

        [[rule]]
        name = "Head"
        protocol = "head"
        dlp = 100
        ctdivol = 10
        dlp_total = 100

        [[rule]]
        name = "Any"
        ctdivol = 10

        [dose_check]
        notify = true
        """
    )
    check = DoseCheck(
        ctdivol_alert_configured=True,
        ctdivol_alert_mgy=Decimal(10),
        accumulated_ctdivol_forward_estimate_mgy=Decimal(11),
    )
    heads = exam_of(
        event("h1", protocol="Head", ctdivol=20, dlp=200, checks=(check,)),
        event("h2", protocol="Head 2", ctdivol=20, dlp=200),
        total_dlp=400,
    )
    assert found(heads, rules) == [
        ("Head", "dlp_total", ""),
        ("Head", "ctdivol", "h1"),
        ("Head", "ctdivol", "h2"),
        ("Head", "dlp", "h1"),
        ("Head", "dlp", "h2"),
        ("Any", "ctdivol", "h1"),
        ("Any", "ctdivol", "h2"),
        (DOSE_CHECK_RULE, "dose_check_ctdivol_alert", "h1"),
    ]
    assert evaluate(heads, rules) == evaluate(heads, rules)


def test_recipients_are_the_defaults_then_the_rule_own_without_case_insensitive_duplicates():
    rules = parse(
        """
        [defaults]
        recipients = ["physics@example.org", "Physics@Example.org"]
        [[rule]]
        name = "R"
        ctdivol = 1
        recipients = ["PHYSICS@example.org", " paeds@example.org "]
        """
    )
    assert rules.default_recipients == ("physics@example.org",)
    assert evaluate(exam_of(event(ctdivol=2)), rules)[0].recipients == (
        "physics@example.org",
        "paeds@example.org",
    )


def test_with_recipients_adds_default_recipients_after_the_file_own():
    rules = one_rule('ctdivol = 1\nrecipients = ["paeds@example.org"]')
    more = rules.with_recipients(["lead@example.org", "PAEDS@example.org", "  ", "lead@example.org"])
    assert more.default_recipients == ("lead@example.org", "PAEDS@example.org")
    assert rules.default_recipients == ()
    assert evaluate(exam_of(event(ctdivol=2)), more)[0].recipients == (
        "lead@example.org",
        "PAEDS@example.org",
    )
    assert more.rules == rules.rules


def test_rule_with_no_recipients_at_all_is_allowed():
    assert evaluate(exam_of(event(ctdivol=2)), one_rule("ctdivol = 1"))[0].recipients == ()


# ------------------------------------------------------------------------------------------ Dose Check

DOSE_CHECK_ONLY = "[defaults]\nrecipients = ['physics@example.org']\n[dose_check]\nnotify = true\n"


def dose_check(*events: Event, text: str = DOSE_CHECK_ONLY) -> list[tuple[str, str, Decimal, Decimal]]:
    return [(x.metric, x.event_key, x.value, x.limit) for x in evaluate(exam_of(*events), parse(text))]


def test_toshiba_dose_check_alerts_on_accumulated_forward_estimates():
    first = DoseCheck(
        dlp_alert_configured=True,
        ctdivol_alert_configured=True,
        dlp_alert_mgycm=Decimal(100),
        ctdivol_alert_mgy=Decimal(10),
        accumulated_dlp_forward_estimate_mgycm=Decimal("251.2"),
    )
    second = DoseCheck(
        dlp_alert_configured=True,
        ctdivol_alert_configured=True,
        dlp_alert_mgycm=Decimal(100),
        ctdivol_alert_mgy=Decimal(10),
        accumulated_dlp_forward_estimate_mgycm=Decimal("502.4"),
        accumulated_ctdivol_forward_estimate_mgy=Decimal("10.6"),
    )
    events = (
        event("e68", protocol="Abdomen Routine ZC (NR)", ctdivol="5.3", dlp="251.2", checks=(first,)),
        event("e69", protocol="Abdomen Routine ZC (NR)", ctdivol="5.3", dlp="251.2", checks=(second,)),
    )
    result = evaluate(exam_of(*events), parse(DOSE_CHECK_ONLY))
    assert [(x.metric, x.event_key, x.value, x.limit, x.unit) for x in result] == [
        ("dose_check_ctdivol_alert", "e69", Decimal("10.6"), Decimal(10), UNIT_MGY),
        ("dose_check_dlp_alert", "e68", Decimal("251.2"), Decimal(100), UNIT_MGYCM),
        ("dose_check_dlp_alert", "e69", Decimal("502.4"), Decimal(100), UNIT_MGYCM),
    ]
    assert {x.rule for x in result} == {DOSE_CHECK_RULE}
    assert {x.recipients for x in result} == {("physics@example.org",)}
    assert {x.protocol for x in result} == {"Abdomen Routine ZC (NR)"}


def test_philips_notification_value_below_the_event_ctdivol_is_not_reported():
    philips = DoseCheck(
        ctdivol_alert_configured=True,
        ctdivol_alert_mgy=Decimal(1000),
        ctdivol_notification_configured=True,
        ctdivol_notification_mgy=Decimal(60),
    )
    assert dose_check(event(ctdivol="23.7", dlp="541.1", checks=(philips,))) == []
    assert dose_check(event(ctdivol="60.5", checks=(philips,))) == [
        ("dose_check_ctdivol_notification", "e1", Decimal("60.5"), Decimal(60))
    ]


def test_siemens_alert_value_without_an_accumulated_estimate_is_not_reported():
    siemens = DoseCheck(
        ctdivol_alert_configured=True,
        ctdivol_alert_mgy=Decimal(1000),
        dlp_notification_configured=False,
        ctdivol_notification_configured=False,
    )
    assert dose_check(event(ctdivol=5000, dlp=9000, checks=(siemens,))) == []


def test_notification_compares_the_forward_estimate_before_the_event_dose():
    check = DoseCheck(dlp_notification_mgycm=Decimal(100), dlp_forward_estimate_mgycm=Decimal(90))
    assert dose_check(event(dlp=500, checks=(check,))) == []
    check = DoseCheck(dlp_notification_mgycm=Decimal(100), dlp_forward_estimate_mgycm=Decimal(150))
    assert dose_check(event(dlp=5, checks=(check,))) == [("dose_check_dlp_notification", "e1", 150, 100)]


@pytest.mark.parametrize(
    ("configured", "limit", "reported"),
    [(True, "10", True), (None, "10", True), (False, "10", False), (True, "0", False), (True, "NaN", False),
     (True, None, False), (True, "-5", False), (True, "10.6", False)],
)  # fmt: skip
def test_dose_check_value_counts_only_when_configured_and_positive(
    configured: bool | None, limit: str | None, reported: bool
):
    check = DoseCheck(
        ctdivol_alert_configured=configured,
        ctdivol_alert_mgy=dec(limit),
        accumulated_ctdivol_forward_estimate_mgy=Decimal("10.6"),
    )
    assert bool(dose_check(event(checks=(check,)))) is reported


def test_two_dose_check_rows_of_one_event_report_the_highest_value_once():
    low = DoseCheck(dlp_alert_mgycm=Decimal(100), accumulated_dlp_forward_estimate_mgycm=Decimal(150))
    high = DoseCheck(dlp_alert_mgycm=Decimal(200), accumulated_dlp_forward_estimate_mgycm=Decimal(300))
    not_over = DoseCheck(dlp_alert_mgycm=Decimal(1000), accumulated_dlp_forward_estimate_mgycm=Decimal(900))
    assert dose_check(event(checks=(low, high, not_over))) == [("dose_check_dlp_alert", "e1", 300, 200)]
    assert dose_check(event(checks=(not_over, high, low))) == [("dose_check_dlp_alert", "e1", 300, 200)]


def test_dose_check_is_not_reported_unless_notify_is_true():
    check = DoseCheck(dlp_alert_mgycm=Decimal(1), accumulated_dlp_forward_estimate_mgycm=Decimal(2))
    assert dose_check(event(checks=(check,)), text="[dose_check]\nnotify = false\n[[rule]]\nname='R'\ndlp = 1e9") == []
    assert dose_check(event(checks=(check,)), text="[[rule]]\nname='R'\ndlp = 1e9") == []


def test_dose_check_recipients_are_added_to_the_defaults():
    rules = parse(DOSE_CHECK_ONLY + "recipients = ['ct-leads@example.org', 'physics@example.org']")
    assert rules.dose_check == DoseCheckConfig(True, ("ct-leads@example.org", "physics@example.org"))
    check = DoseCheck(dlp_alert_mgycm=Decimal(1), accumulated_dlp_forward_estimate_mgycm=Decimal(2))
    assert evaluate(exam_of(event(checks=(check,))), rules)[0].recipients == (
        "physics@example.org",
        "ct-leads@example.org",
    )


# ---------------------------------------------------------------------------------------------- errors


def test_error_names_the_file_the_rule_and_the_key_in_one_line():
    text = '[[rule]]\nname = "Paediatric head"\nprotocol = ["ped head"]\nctdivol = "sixty"\n'
    assert error_of(text) == (
        "rules file /etc/ctpoller/rules.toml: rule 'Paediatric head': key 'ctdivol': "
        'must be a number greater than 0, not "sixty"'
    )


RULE = '[[rule]]\nname = "R"\n'


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ctdivol = 60", ["key 'ctdivol'", "unknown key"]),
        ("defaults = 5", ["key 'defaults'", "must be a table"]),
        (
            '[defaults]\nrecipient = ["a@b.org"]',
            ["[defaults]", "key 'recipient'", "did you mean 'recipients'"],
        ),
        ('[defaults]\nrecipients = "a@b.org"', ["[defaults]", "key 'recipients'", "must be a list"]),
        ("[dose_check]\nnotfy = true", ["[dose_check]", "key 'notfy'", "unknown key"]),
        ('[dose_check]\nnotify = "yes"', ["[dose_check]", "key 'notify'", 'not "yes"']),
        ("dose_check = 5", ["key 'dose_check'", "must be a table"]),
        ("rule = 5", ["key 'rule'", "[[rule]]"]),
        ('[rule]\nname = "R"\nctdivol = 1', ["key 'rule'", "[[rule]]"]),
        ("rule = [1]", ["key 'rule'", "entry #1 must be a table"]),
        (
            RULE + "protocols = 'head'\nctdivol = 1",
            ["rule 'R'", "key 'protocols'", "did you mean 'protocol'"],
        ),
        (RULE + "not_phantom = 'head'\nctdivol = 1", ["rule 'R'", "key 'not_phantom'", "unknown key"]),
        (RULE + "ctdivol = 0", ["rule 'R'", "key 'ctdivol'", "greater than 0, not 0"]),
        (RULE + "ctdivol = -5", ["key 'ctdivol'", "not -5"]),
        (RULE + "ctdivol = true", ["key 'ctdivol'", "not true"]),
        (RULE + "ctdivol = nan", ["key 'ctdivol'", "not nan"]),
        (RULE + "ctdivol = inf", ["key 'ctdivol'", "not inf"]),
        (RULE + "ctdivol = [60]", ["key 'ctdivol'", "not an array"]),
        (RULE + "ctdivol = 2024-01-01", ["key 'ctdivol'", "not a TOML date"]),
        (RULE + "dlp = 0.0", ["key 'dlp'", "greater than 0"]),
        (RULE + "dlp_total = '1000'", ["key 'dlp_total'", 'not "1000"']),
        (RULE + "protocol = 'head'", ["rule 'R'", "has no limit"]),
        ("[[rule]]\nctdivol = 1", ["rule #1", "key 'name'", "is required"]),
        ("[[rule]]\nname = '  '\nctdivol = 1", ["rule #1", "key 'name'", "must not be empty"]),
        ("[[rule]]\nname = 5\nctdivol = 1", ["rule #1", "key 'name'", "not 5"]),
        ('[[rule]]\nname = "a\\nb"\nctdivol = 1', ["rule #1", "key 'name'", "one line"]),
        ("[[rule]]\nname = 'Scanner DOSE check'\nctdivol = 1", ["key 'name'", "reserved"]),
        (RULE + "age_min = -1\nctdivol = 1", ["key 'age_min'", "0 or more"]),
        (RULE + "age_max = '5'\nctdivol = 1", ["key 'age_max'", 'not "5"']),
        (RULE + "age_min = 6\nage_max = 2\nctdivol = 1", ["key 'age_max'", "greater than age_min (6)"]),
        (RULE + "age_min = 2\nage_max = 2\nctdivol = 1", ["key 'age_max'", "greater than age_min"]),
        (RULE + "phantom = 'neck'\nctdivol = 1", ["key 'phantom'", '"head"', '"body"', 'not "neck"']),
        (RULE + "phantom = 16\nctdivol = 1", ["key 'phantom'", "not 16"]),
        (RULE + "phantom = ['head', 'neck']\nctdivol = 1", ["key 'phantom'", 'not "neck"']),
        (RULE + "phantom = []\nctdivol = 1", ["key 'phantom'", "not an empty list"]),
        (RULE + "phantom = ['head', 'Body']\nctdivol = 1", ["key 'phantom'", "lists both", "leave phantom out"]),
        (RULE + "protocol = []\nctdivol = 1", ["key 'protocol'", "empty list"]),
        (RULE + "protocol = ''\nctdivol = 1", ["key 'protocol'", "empty string"]),
        (RULE + "not_study = { any = ['x', '  '] }\nctdivol = 1", ["key 'not_study'", "empty string"]),
        (RULE + "station = [[]]\nctdivol = 1", ["key 'station'", "empty list of words"]),
        (RULE + "protocol = [['ped', '']]\nctdivol = 1", ["key 'protocol'", "non-empty strings"]),
        (RULE + "protocol = [['ped', 5]]\nctdivol = 1", ["key 'protocol'", "not 5"]),
        (RULE + "protocol = 5\nctdivol = 1", ["key 'protocol'", "not 5"]),
        (RULE + "protocol = [5]\nctdivol = 1", ["key 'protocol'", "not 5"]),
        (RULE + "protocol = [[['x']]]\nctdivol = 1", ["key 'protocol'", "not an array"]),
        (
            RULE + "protocol = {a = 1}\nctdivol = 1",
            ["key 'protocol'", "{ any = [...] } or { all = [...] }", "not { a = 1 }"],
        ),
        (
            RULE + "protocol = 're:('\nctdivol = 1",
            ["rule 'R'", "key 'protocol'", "invalid regular expression"],
        ),
        (RULE + "procedure = 're:a{99999999999}'\nctdivol = 1", ["key 'procedure'", "invalid regular"]),
        (RULE + "protocol = 're:'\nctdivol = 1", ["key 'protocol'", "empty regular expression"]),
        (RULE + "recipients = 'a@b.org'\nctdivol = 1", ["rule 'R'", "key 'recipients'", "must be a list"]),
        (RULE + "recipients = ['physics']\nctdivol = 1", ["key 'recipients'", 'not "physics"']),
        (RULE + "recipients = ['a b@c.org']\nctdivol = 1", ["key 'recipients'", "a b@c.org"]),
        (RULE + "recipients = ['a@b@c.org']\nctdivol = 1", ["key 'recipients'"]),
        (RULE + "recipients = ['@b.org']\nctdivol = 1", ["key 'recipients'"]),
        (RULE + "recipients = ['a@']\nctdivol = 1", ["key 'recipients'"]),
        (RULE + "recipients = ['a@b.org,c@d.org']\nctdivol = 1", ["key 'recipients'"]),
        (RULE + 'recipients = ["a@b.org\\u0000"]\nctdivol = 1', ["key 'recipients'", "\\u0000"]),
        (RULE + "recipients = [5]\nctdivol = 1", ["key 'recipients'", "not 5"]),
        ("ctdivol = = 1", ["not valid TOML", "line 1"]),
        ("ctdivol = ", ["not valid TOML", "end of document"]),
        ('[[rule]]\nname = "R"\nctdivol = 60\nctdivol = 70', ["not valid TOML", "Cannot overwrite"]),
        ("", ["no [[rule]]", "nothing to check"]),
        ("[dose_check]\nnotify = false", ["no [[rule]]", "nothing to check"]),
        ("a = " + "[" * 5000, ["not valid TOML"]),
    ],
)
def test_bad_rules_file_is_one_config_error_line_naming_file_and_key(text: str, expected: list[str]):
    message = error_of(text)
    assert message.startswith(f"rules file {SOURCE}: ")
    assert len(message.splitlines()) == 1
    for part in expected:
        assert part in message


def test_duplicate_rule_names_differing_only_in_case_are_an_error():
    text = '[[rule]]\nname = "Paediatric head"\nctdivol = 1\n[[rule]]\nname = "paediatric HEAD"\nctdivol = 2\n'
    assert error_of(text) == (f"rules file {SOURCE}: rule 'paediatric HEAD': key 'name': is already used by rule #1")


def test_unknown_key_is_reported_before_a_missing_name():
    assert "key 'nmae'" in error_of("[[rule]]\nnmae = 'R'\nctdivol = 1")


def test_dose_check_alone_is_a_valid_rules_file():
    rules = parse(DOSE_CHECK_ONLY)
    assert rules == RuleSet(("physics@example.org",), (), DoseCheckConfig(notify=True))


def test_rule_values_are_kept_as_parsed():
    rules = one_rule(
        """
        protocol = { any = ["ped head", ["with", "contrast"]] }
        age_min = 0.5
        age_max = 18
        ctdivol = 60
        dlp = 1000.5
        dlp_total = 2000
        """,
        name="  Paediatric head  ",
    )
    rule = rules.rules[0]
    assert isinstance(rule, Rule)
    assert rule.name == "Paediatric head"
    assert [entry.words for entry in rule.protocol] == [("ped", "head"), ("with", "contrast")]
    assert (rule.age_min, rule.age_max) == (Decimal("0.5"), Decimal(18))
    assert (rule.ctdivol, rule.dlp, rule.dlp_total) == (Decimal(60), Decimal("1000.5"), Decimal(2000))


# ------------------------------------------------------------------------------------ the example file


def example_rules() -> RuleSet:
    return parse_rules(EXAMPLE.read_text(encoding="utf-8"), source=str(EXAMPLE))


def test_example_rules_file_parses_with_aapm_values():
    rules = example_rules()
    limits = {rule.name: rule.ctdivol for rule in rules.rules}
    assert limits["Adult head"] == 80
    assert limits["Brain perfusion"] == 600
    assert limits["Paediatric torso, under 10 years, 32 cm phantom"] == 10
    assert any(rule.dlp_total is not None for rule in rules.rules)
    assert rules.dose_check.notify


@pytest.mark.parametrize(
    ("age", "protocol", "phantom", "ctdivol", "expected"),
    [
        ("45", "Head Routine", "head", 85, ["Adult head"]),
        ("45", "Head Routine", "head", 80, []),
        ("45", "Brain Perfusion", "head", 650, ["Brain perfusion"]),
        ("45", None, "body", 55, ["Adult torso (chest, abdomen-pelvis)"]),
        (None, "Chest", "body", 55, ["Adult torso (chest, abdomen-pelvis)"]),
        ("45", "Cardiac Retro", "body", 160, ["Cardiac, retrospective gating (spiral)"]),
        ("45", "Coronary Prospective", "body", 60, ["Cardiac, prospective gating (sequential)"]),
        ("1", "PED HEAD", "head", 55, ["Paediatric head, under 2 years"]),
        ("5.5", "PED HEAD", "head", 55, []),
        ("5.5", "PED HEAD", "head", 61, ["Paediatric head, 2 to 5 years"]),
        ("4", "Ped Chest", "head", 30, ["Paediatric torso, under 10 years, 16 cm phantom"]),
        ("4", "Ped Chest", "body", 11, ["Paediatric torso, under 10 years, 32 cm phantom"]),
    ],
)
def test_example_rules_match_the_exams_they_describe(
    age: str | None, protocol: str | None, phantom: Phantom, ctdivol: int, expected: list[str]
):
    result = evaluate(exam_of(event(protocol=protocol, phantom=phantom, ctdivol=ctdivol), age=age), example_rules())
    assert [x.rule for x in result] == expected


def test_example_paediatric_rule_tells_the_defaults_and_the_paediatric_physicists():
    result = evaluate(exam_of(event(protocol="PED HEAD", phantom="head", ctdivol=55), age="1"), example_rules())
    assert result[0].recipients == ("physics@example.org", "paeds-physics@example.org")


def test_example_total_dlp_rule_skips_exams_with_perfusion():
    tap = dict(description="Thorax^TAP (Adult)", total_dlp=2500, age="67")
    plain = exam_of(event("a", protocol="TAP", phantom="body", ctdivol=9, dlp=2400), **tap)
    assert found(plain, example_rules()) == [("Chest-abdomen-pelvis, exam total DLP", "dlp_total", "")]
    with_perfusion = exam_of(event("a", protocol="Perfusion", ctdivol=9, dlp=2400), **tap)
    assert found(with_perfusion, example_rules()) == []


def test_example_old_script_lines_map_one_to_one_to_rules():
    text = EXAMPLE.read_text(encoding="utf-8")
    block = text[text.index('# [[rule]]\n# name = "ped head"') : text.index("# Note: like the old script")]
    uncommented = "\n".join(line.removeprefix("#").removeprefix(" ") for line in block.splitlines())
    rules = parse(uncommented)
    assert [(r.name, r.ctdivol) for r in rules.rules] == [
        ("ped head", 60), ("head", 80), ("chest", 50), ("abdo", 50), ("perfusion", 600), ("cardiac", 150),
        ("ped body", 25),
    ]  # fmt: skip
    result = evaluate(exam_of(event(protocol="HEAD PED ROUTINE", ctdivol=85)), rules)
    assert [x.rule for x in result] == ["ped head", "head"]


# ------------------------------------------------------------------------------------------ properties


def toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    return repr(value)


KEYS = ["name", "protocol", "not_protocol", "study", "station", "standard_name", "age_min", "age_max"]
KEYS += ["phantom", "ctdivol", "dlp", "dlp_total", "recipients", "not_phantom", "other"]
scalars = (
    st.text(st.characters(exclude_categories=("Cs",)), max_size=12)
    | st.sampled_from(["head", "body", "re:(", "re:ped", "a@b.org", "x y", "Scanner Dose Check"])
    | st.integers(-5, 10**20)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.booleans()
)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3), max_leaves=6)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.dictionaries(st.sampled_from(KEYS), values, max_size=6), max_size=3), values)
def test_rules_of_any_shape_either_parse_or_raise_one_config_error_line(
    tables: list[dict[str, object]], notify: object
):
    text = f"[dose_check]\nnotify = {toml_value(notify)}\n"
    for table in tables:
        text += "[[rule]]\n" + "".join(f"{key} = {toml_value(value)}\n" for key, value in table.items())
    try:
        rules = parse_rules(text, source=SOURCE)
    except ConfigError as e:
        assert len(str(e).splitlines()) == 1
        assert str(e).startswith(f"rules file {SOURCE}: ")
    else:
        assert all(rule.ctdivol or rule.dlp or rule.dlp_total for rule in rules.rules)


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_random_text_never_raises_anything_but_config_error(text: str):
    try:
        parse_rules(text, source=SOURCE)
    except ConfigError as e:
        assert len(str(e).splitlines()) == 1


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_truncated_or_damaged_example_file_raises_only_config_error(data: st.DataObject):
    text = EXAMPLE.read_text(encoding="utf-8")
    cut = data.draw(st.integers(0, len(text)))
    damage = data.draw(st.text(max_size=3))
    try:
        parse_rules(text[:cut] + damage + text[cut + len(damage) :], source=SOURCE)
    except ConfigError as e:
        assert len(str(e).splitlines()) == 1


doses = (
    st.none()
    | st.decimals(places=2, min_value=-1000, max_value=1000)
    | st.sampled_from([Decimal("NaN"), Decimal("sNaN"), Decimal("Infinity"), Decimal("-Infinity")])
)


@given(st.decimals(min_value=Decimal("0.01"), max_value=Decimal(1000), places=2), st.lists(doses, max_size=6))
def test_exactly_the_events_strictly_above_the_limit_are_reported_in_event_order(
    limit: Decimal, ctdivols: list[Decimal | None]
):
    events = [event(f"e{i}", ctdivol=value) for i, value in enumerate(ctdivols)]
    rules = RuleSet(rules=(Rule(name="R", ctdivol=limit),))
    result = evaluate(exam_of(*events), rules)
    expected = [f"e{i}" for i, v in enumerate(ctdivols) if v is not None and v.is_finite() and v > limit]
    assert [x.event_key for x in result] == expected
    assert all(x.value > x.limit == limit for x in result)


words = st.lists(st.text(string.ascii_letters + string.digits + "/+", min_size=1, max_size=6), min_size=1, max_size=4)


@given(words, st.data())
def test_words_match_in_any_order_case_and_surrounding_text(entry: list[str], data: st.DataObject):
    shuffled = data.draw(st.permutations(entry))
    noise = data.draw(st.lists(st.sampled_from([" ", "_", "^", " ROUTINE ", "(NR)"]), min_size=len(entry) + 1,
                               max_size=len(entry) + 1))  # fmt: skip
    recased = [w.upper() if data.draw(st.booleans()) else w.lower() for w in shuffled]
    protocol = noise[0] + "".join(w + n for w, n in zip(recased, noise[1:], strict=True))
    for criterion in (json.dumps(" ".join(entry)), json.dumps([entry])):
        rules = one_rule(f"protocol = {criterion}\nctdivol = 1")
        assert found(exam_of(event(protocol=protocol, ctdivol=2)), rules) == [("R", "ctdivol", "e1")]
