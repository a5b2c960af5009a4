"""What the newer keys match, precedence (priority, stop), reference levels, severity, and the trace that
``evaluate`` is built from (pure)."""

from __future__ import annotations

from decimal import Decimal
from textwrap import dedent

import pytest

from ctpoller.core.exam import Event, Exam, Phantom, StudyRow
from ctpoller.core.rules import RuleSet, evaluate, parse_rules, trace

HEADER = '[defaults]\nrecipients = ["physics@example.org"]\n'


def parse(text: str) -> RuleSet:
    return parse_rules(HEADER + dedent(text), source="rules.toml")


def rule(body: str, name: str = "R") -> RuleSet:
    return parse(f'[[rule]]\nname = "{name}"\n' + dedent(body))


def ev(
    key: str = "e1",
    protocol: str | None = "Head",
    ctdivol: str | None = "100",
    dlp: str | None = None,
    *,
    phantom: Phantom | None = None,
    code: str | None = None,
    region: str | None = None,
) -> Event:
    return Event(
        key=key,
        event_pk=len(key),
        study_pk=1,
        protocol=protocol,
        acquisition_type_code=code,
        phantom=phantom,
        ctdivol_mgy=None if ctdivol is None else Decimal(ctdivol),
        dlp_mgycm=None if dlp is None else Decimal(dlp),
        target_region=region,
    )


def exam(*events: Event, total_dlp: str | None = None, **fields: object) -> Exam:
    total = None if total_dlp is None else Decimal(total_dlp)
    row = StudyRow(pk=1, uid="1.2.3", events=events, total_dlp_mgycm=total, **fields)  # type: ignore[arg-type]
    return Exam(uid="1.2.3", rows=(row,))


def found(exam_: Exam, rules: RuleSet) -> list[tuple[str, str, str]]:
    return [(x.rule, x.metric, x.event_key) for x in evaluate(exam_, rules)]


# -------------------------------------------------------------------------------------------- any / all


@pytest.mark.parametrize(
    ("criterion", "protocol", "matches"),
    [
        ('{ all = ["ped", "head"] }', "HEAD PED ROUTINE", True),
        ('{ all = ["ped", "head"] }', "Thorax", False),  # the trial user's 100-year-old's thorax
        ('{ all = ["ped", "head"] }', "PED CHEST", False),
        ('{ any = ["ped", "head"] }', "PED CHEST", True),
        ('{ any = ["ped", "head"] }', "Thorax", False),
        ('{ all = ["ped", "re:\\\\bhead\\\\b"] }', "PED HEAD", True),
        ('{ all = ["ped", "re:\\\\bhead\\\\b"] }', "PED FOREHEAD", False),
        ('{ all = ["re:^ped", "re:head$"] }', "Ped Head", True),
        ('{ all = ["re:^ped", "re:head$"] }', "Head Ped", False),
        ('{ any = [["with contrast"], "re:\\\\+C"] }', "Chest +C", True),
        ('{ any = [["with contrast"], "re:\\\\+C"] }', "Chest contrast with", False),
        ('["ped head"]', "Head Ped", True),
    ],
)
def test_any_and_all(criterion: str, protocol: str, matches: bool):
    rules = rule(f"protocol = {criterion}\nctdivol = 60")
    assert bool(evaluate(exam(ev(protocol=protocol)), rules)) is matches


# ------------------------------------------------------------------------------------------- criteria


@pytest.mark.parametrize(
    ("body", "code", "matches"),
    [
        ('acquisition_type = "spiral"', "P5-08001", True),
        ('acquisition_type = "spiral"', "116152004", True),  # the SNOMED CT code for the same
        ('acquisition_type = "spiral"', " P5-08001 ", True),
        ('acquisition_type = "spiral"', "113804", False),
        ('acquisition_type = ["sequenced", "stationary"]', "113806", True),
        ('acquisition_type = "constant_angle"', "113805", True),
        ('acquisition_type = "free"', "113807", True),
        ('acquisition_type = "spiral"', "99999", False),  # an unknown code never matches
        ('acquisition_type = "spiral"', None, False),
        ('not_acquisition_type = "constant_angle"', "113805", False),
        ('not_acquisition_type = "constant_angle"', "P5-08001", True),
        ('not_acquisition_type = "constant_angle"', "99999", True),  # ... and never excludes
        ('not_acquisition_type = "constant_angle"', None, True),
    ],
)
def test_acquisition_type_is_matched_on_the_code(body: str, code: str | None, matches: bool):
    rules = rule(f"{body}\nctdivol = 60")
    assert bool(evaluate(exam(ev(code=code)), rules)) is matches


@pytest.mark.parametrize(
    ("body", "fields", "matches"),
    [
        ('manufacturer = "siemens"', {"manufacturer": "SIEMENS"}, True),
        ('manufacturer = "siemens"', {"manufacturer": "GE MEDICAL SYSTEMS"}, False),
        ('manufacturer = "siemens"', {}, False),  # not recorded never matches
        ('not_manufacturer = "siemens"', {}, True),  # ... and never excludes
        ('not_manufacturer = { any = ["ge", "philips"] }', {"manufacturer": "GE Medical Systems"}, False),
        ('model = "re:^somatom"', {"model": "SOMATOM Definition Flash"}, True),
        ('model = { all = ["aquilion", "one"] }', {"model": "Aquilion ONE"}, True),
        ('model = { all = ["aquilion", "one"] }', {"model": "Aquilion Precision"}, False),
        ('not_model = "precision"', {"model": "Aquilion Precision"}, False),
        ("weight_min = 50\nweight_max = 100", {"patient_weight_kg": Decimal(50)}, True),
        ("weight_min = 50\nweight_max = 100", {"patient_weight_kg": Decimal("99.99")}, True),
        ("weight_min = 50\nweight_max = 100", {"patient_weight_kg": Decimal(100)}, False),  # exclusive
        ("weight_min = 50\nweight_max = 100", {"patient_weight_kg": Decimal("49.9")}, False),
        ("weight_max = 20", {}, False),  # an unknown weight never matches
        ("weight_max = 20", {"patient_weight_kg": Decimal(0)}, False),  # OpenREM's 0: unknown
        ("weight_max = 20", {"patient_weight_kg": Decimal("NaN")}, False),
        ("weight_min = 100", {"patient_weight_kg": Decimal(501)}, False),  # not a plausible weight
        ("weight_min = 100", {"patient_weight_kg": Decimal(500)}, True),
        ("weight_min = 0", {"patient_weight_kg": Decimal(3)}, True),
    ],
)
def test_exam_level_criteria(body: str, fields: dict[str, object], matches: bool):
    assert bool(evaluate(exam(ev(), **fields), rule(f"{body}\nctdivol = 60"))) is matches


def test_manufacturer_and_weight_look_at_every_row_of_the_exam():
    rows = (
        StudyRow(pk=1, uid="1.2.3", manufacturer=None, events=(ev("a"),)),
        StudyRow(pk=2, uid="1.2.3", manufacturer="Siemens", patient_weight_kg=Decimal(70), events=(ev("b"),)),
    )
    rules = rule('manufacturer = "siemens"\nweight_min = 60\nctdivol = 60')
    assert found(Exam(uid="1.2.3", rows=rows), rules) == [("R", "ctdivol", "a"), ("R", "ctdivol", "b")]


@pytest.mark.parametrize(
    ("body", "region", "matches"),
    [
        ('target_region = "chest"', "Chest", True),
        ('target_region = "chest"', "Chest, Abdomen and Pelvis", True),
        ('target_region = "re:^chest$"', "Chest, Abdomen and Pelvis", False),
        ('target_region = "chest"', None, False),
        ('not_target_region = "head"', "Head", False),
        ('not_target_region = "head"', None, True),
    ],
)
def test_target_region_is_an_event_level_text_criterion(body: str, region: str | None, matches: bool):
    assert bool(evaluate(exam(ev(region=region)), rule(f"{body}\nctdivol = 60"))) is matches


def test_a_not_event_criterion_keeps_the_exam_out_of_dlp_total():
    rules = rule('not_acquisition_type = "stationary"\ndlp_total = 100')
    assert found(exam(ev(dlp="200", code="P5-08001"), total_dlp="200"), rules) == [("R", "dlp_total", "")]
    assert found(exam(ev(dlp="200", code="113806"), total_dlp="200"), rules) == []
    positive = rule('target_region = "chest"\ndlp_total = 100')
    assert found(exam(ev(region="Head"), total_dlp="200"), positive) == []
    assert found(exam(ev(region="Chest"), total_dlp="200"), positive) == [("R", "dlp_total", "")]


# ----------------------------------------------------------------------------------- reference levels


def test_a_reference_level_exceedance_carries_reference_value_multiple_and_the_effective_limit():
    rules = rule('drl_ctdivol = 60\nnotify_above = 1.5\nreference = "UK NDRL 2022"\nseverity = "alert"')
    assert evaluate(exam(ev(ctdivol="90")), rules) == []  # 90 = 1.5 × 60: not above
    [x] = evaluate(exam(ev(ctdivol="90.01")), rules)
    assert (x.limit, x.reference_value, x.multiple, x.reference, x.severity) == (
        Decimal("90.0"),
        Decimal(60),
        Decimal("1.5"),
        "UK NDRL 2022",
        "alert",
    )


def test_a_plain_limit_may_name_its_source_without_a_reference_value():
    [x] = evaluate(exam(ev(ctdivol="81")), rule('ctdivol = 80\nreference = "AAPM Dose Check 2011"'))
    assert (x.limit, x.reference, x.reference_value, x.multiple, x.severity) == (
        Decimal(80),
        "AAPM Dose Check 2011",
        None,
        None,
        "notification",
    )


def test_reference_levels_for_dlp_and_dlp_total():
    rules = rule("drl_dlp = 500\ndrl_dlp_total = 1000\nnotify_above = 2")
    xs = evaluate(exam(ev("a", dlp="1001"), ev("b", dlp="999"), total_dlp="2000.5"), rules)
    assert [(x.metric, x.event_key, x.limit, x.reference_value) for x in xs] == [
        ("dlp_total", "", Decimal(2000), Decimal(1000)),
        ("dlp", "a", Decimal(1000), Decimal(500)),
    ]


# ------------------------------------------------------------------------------------------- severity


ROUTED = """
[defaults]
recipients = ["physics@example.org"]
alert_recipients = ["rpe@example.org"]
[[route]]
name = "North"
station = "north"
recipients = ["north@example.org"]
alert_recipients = ["north-lead@example.org"]
[[rule]]
name = "Alert"
ctdivol = 50
severity = "alert"
recipients = ["own@example.org"]
[[rule]]
name = "Note"
ctdivol = 50
"""


@pytest.mark.parametrize(
    ("station", "alert", "note"),
    [
        (
            "CT North",
            ("north@example.org", "north-lead@example.org", "own@example.org"),
            ("north@example.org",),
        ),
        ("CT South", ("physics@example.org", "rpe@example.org", "own@example.org"), ("physics@example.org",)),
    ],
)
def test_alert_recipients_are_told_about_alerts_only(station: str, alert: tuple[str, ...], note: tuple[str, ...]):
    rules = parse_rules(ROUTED, source="rules.toml")
    xs = evaluate(exam(ev(), station_name=station), rules)
    assert [(x.rule, x.severity, x.recipients) for x in xs] == [
        ("Alert", "alert", alert),
        ("Note", "notification", note),
    ]


# ----------------------------------------------------------------------------------------- precedence


ADULT_AND_CHILD = """
[[rule]]
name = "Adult head"
protocol = "head"
ctdivol = 80
dlp = 1000
dlp_total = 2000
[[rule]]
name = "Paediatric head"
protocol = { all = ["ped", "head"] }
age_max = 16
priority = 10
stop = true
ctdivol = 60
"""


def test_a_paediatric_head_stop_rule_replaces_the_adult_head_rule_for_its_own_metrics():
    rules = parse(ADULT_AND_CHILD)
    assert [r.name for r in rules.rules] == ["Paediatric head", "Adult head"]  # priority first
    child = exam(ev("a", "PED HEAD", "90", "1200"), patient_age_decimal=Decimal(5), total_dlp="2500")
    # ctdivol: only the paediatric rule; dlp and dlp_total it has no limit for: the adult rule
    assert found(child, rules) == [
        ("Paediatric head", "ctdivol", "a"),
        ("Adult head", "dlp_total", ""),
        ("Adult head", "dlp", "a"),
    ]


def test_a_stop_rule_takes_the_check_whether_or_not_the_value_exceeds_its_limit():
    rules = parse(ADULT_AND_CHILD)
    child = exam(ev("a", "PED HEAD", "59"), patient_age_decimal=Decimal(5))  # under 60 (and 80)
    assert found(child, rules) == []
    child = exam(ev("a", "PED HEAD", "85"), patient_age_decimal=Decimal(5))  # over both limits
    assert found(child, rules) == [("Paediatric head", "ctdivol", "a")]


def test_a_stop_rule_takes_only_the_events_it_matches():
    rules = parse(ADULT_AND_CHILD)
    # exam level fails (an adult, or unknown age): the adult head rule checks everything
    adult = exam(ev("a", "PED HEAD", "85"), patient_age_decimal=Decimal(40))
    assert found(adult, rules) == [("Adult head", "ctdivol", "a")]
    unknown = exam(ev("a", "PED HEAD", "85"))
    assert found(unknown, rules) == [("Adult head", "ctdivol", "a")]
    # exam level passes, event level fails for one event: that one stays with the adult rule
    child = exam(ev("a", "PED HEAD", "85"), ev("b", "HEAD ROUTINE", "85"), patient_age_decimal=Decimal(5))
    assert found(child, rules) == [("Paediatric head", "ctdivol", "a"), ("Adult head", "ctdivol", "b")]


def test_a_stop_rule_event_excluded_by_a_not_criterion_is_not_taken():
    rules = parse(
        """
        [[rule]]
        name = "Generic"
        ctdivol = 10
        [[rule]]
        name = "Specific"
        stop = true
        priority = 1
        not_protocol = "perfusion"
        ctdivol = 100
        """
    )
    xs = found(exam(ev("a", "Head Perfusion", "50"), ev("b", "Head", "50")), rules)
    assert xs == [("Generic", "ctdivol", "a")]


def test_a_stop_rule_takes_dlp_total_only_when_it_would_check_it():
    text = """
        [[rule]]
        name = "Generic total"
        dlp_total = 1000
        [[rule]]
        name = "CAP total"
        study = "chest abdomen"
        not_protocol = "perfusion"
        priority = 1
        stop = true
        dlp_total = 3000
        """
    rules = parse(text)
    cap = exam(ev("a", "Body", None, "1500"), description="CT Chest Abdomen", total_dlp="1500")
    assert found(cap, rules) == []  # the CAP rule took dlp_total (1500 is under its 3000)
    with_perfusion = exam(ev("a", "Perfusion", None, "1500"), description="CT Chest Abdomen", total_dlp="1500")
    assert found(with_perfusion, rules) == [("Generic total", "dlp_total", "")]
    head = exam(ev("a", "Head", None, "1500"), description="CT Head", total_dlp="1500")
    assert found(head, rules) == [("Generic total", "dlp_total", "")]


def test_of_two_stop_rules_with_one_priority_the_first_in_the_file_wins_and_lower_ones_never_stop_higher():
    rules = parse(
        """
        [[rule]]
        name = "Low"
        priority = -1
        stop = true
        ctdivol = 1
        [[rule]]
        name = "First"
        stop = true
        ctdivol = 10
        [[rule]]
        name = "Second"
        stop = true
        ctdivol = 5
        """
    )
    assert found(exam(ev("a", "Head", "20")), rules) == [("First", "ctdivol", "a")]
    [first, second, low] = trace(exam(ev("a", "Head", "20")), rules)
    assert [c.stopped_by for c in second.checks] == ["First"] and [c.stopped_by for c in low.checks] == ["First"]
    assert [t.position for t in (first, second, low)] == [1, 2, 3]


def test_without_stop_every_matching_rule_reports_in_priority_order():
    rules = parse(ADULT_AND_CHILD.replace("stop = true\n", ""))
    child = exam(ev("a", "PED HEAD", "90"), patient_age_decimal=Decimal(5))
    assert found(child, rules) == [("Paediatric head", "ctdivol", "a"), ("Adult head", "ctdivol", "a")]


# ---------------------------------------------------------------------------------------------- trace


def test_the_trace_says_why_in_one_line_per_criterion():
    rules = parse(
        ADULT_AND_CHILD
        + """
        [[rule]]
        name = "Heavy Siemens spiral"
        manufacturer = "siemens"
        weight_min = 100
        acquisition_type = "spiral"
        not_target_region = "head"
        drl_ctdivol = 20
        notify_above = 2
        """
    )
    teen = exam(
        ev("a", "HEAD PED", "70", code="P5-08001", region="Head"),
        patient_age="017Y",
        manufacturer="GE MEDICAL SYSTEMS",
        patient_weight_kg=Decimal("80.5"),
    )
    ped, adult, heavy = trace(teen, rules)
    assert [(v.key, v.passed, v.why) for v in ped.verdicts] == [
        ("age_max", False, "age 17 y: not under 16 y"),
    ]
    assert not ped.exam_matched and ped.checks == ()
    assert [(v.key, v.passed, v.why) for v in ped.events[0].verdicts] == [
        ("protocol", True, 'protocol "HEAD PED" has "ped head"'),
    ]
    assert adult.exam_matched and [(c.metric, c.value, c.limit, c.exceeded, c.stopped_by) for c in adult.checks] == [
        ("dlp_total", None, Decimal(2000), False, None),  # no DLP recorded: compared, never exceeded
        ("ctdivol", Decimal(70), Decimal(80), False, None),
        ("dlp", None, Decimal(1000), False, None),
    ]
    assert [(v.key, v.passed, v.why) for v in heavy.verdicts] == [
        ("manufacturer", False, 'manufacturer "GE MEDICAL SYSTEMS": no match for "siemens"'),
        ("weight_min", False, "weight 80.5 kg: not 100 kg or more"),
    ]
    assert [(v.key, v.passed, v.why) for v in heavy.events[0].verdicts] == [
        ("acquisition_type", True, "acquisition type spiral: is spiral"),
        ("not_target_region", False, 'target region "Head" excluded by "head"'),
    ]
    assert (heavy.events[0].number, heavy.events[0].protocol, heavy.events[0].matched) == (1, "HEAD PED", False)


def test_the_trace_check_of_a_reference_level_and_a_stopped_check():
    rules = parse(ADULT_AND_CHILD.replace("ctdivol = 60", 'drl_ctdivol = 40\nnotify_above = 1.5\nreference = "local"'))
    ped, adult = trace(exam(ev("a", "PED HEAD", "61"), patient_age_decimal=Decimal(5)), rules)
    [check] = ped.checks
    assert (check.value, check.limit, check.reference_value, check.multiple, check.exceeded) == (
        Decimal(61),
        Decimal("60.0"),
        Decimal(40),
        Decimal("1.5"),
        True,
    )
    assert [(c.metric, c.value, c.exceeded, c.stopped_by) for c in adult.checks] == [
        ("dlp_total", None, False, None),
        ("ctdivol", Decimal(61), False, "Paediatric head"),
        ("dlp", None, False, None),
    ]


@pytest.mark.parametrize("age", [None, "3", "40"])
@pytest.mark.parametrize("ctdivol", ["50", "70", "90", None])
def test_evaluate_is_the_trace_filtered_to_the_exceedances(age: str | None, ctdivol: str | None):
    rules = parse(ADULT_AND_CHILD)
    exam_ = exam(
        ev("a", "PED HEAD", ctdivol, "1500"),
        ev("b", "Head", ctdivol),
        patient_age_decimal=None if age is None else Decimal(age),
        total_dlp="2500",
    )
    from_trace = [(t.rule.name, c.metric, c.event_key) for t in trace(exam_, rules) for c in t.checks if c.exceeded]
    assert found(exam_, rules) == from_trace


@pytest.mark.parametrize(
    ("body", "fields", "expected"),
    [
        ("age_min = 2\nage_max = 6", {}, ("age_min", False, "age not recorded: never in an age band (2 to under 6 y)")),
        ("age_min = 2\nage_max = 6", {"patient_age": "004Y"}, ("age_min", True, "age 4 y: 2 to under 6 y")),
        ("age_min = 2\nage_max = 6", {"patient_age": "001Y"}, ("age_min", False, "age 12–23 mo: not 2 to under 6 y")),
        ("age_min = 2\nage_max = 6", {"patient_age": "007Y"}, ("age_max", False, "age 7 y: not 2 to under 6 y")),
        ("age_min = 18", {"patient_age_decimal": Decimal("17.96")}, ("age_min", True, "age 17–18 y: 18 y or more")),
        (
            "weight_max = 30",
            {"patient_weight_kg": Decimal(0)},
            ("weight_max", False, "weight not recorded: never in a weight band (under 30 kg)"),
        ),
        (
            "weight_min = 60\nweight_max = 90.5",
            {"patient_weight_kg": Decimal("70.20")},
            ("weight_min", True, "weight 70.2 kg: 60 to under 90.5 kg"),
        ),
        (
            "weight_min = 60\nweight_max = 90",
            {"patient_weight_kg": Decimal(95)},
            ("weight_max", False, "weight 95 kg: not 60 to under 90 kg"),
        ),
        ('station = "north"', {}, ("station", False, 'station not recorded: no match for "north"')),
        (
            'station = "north"',
            {"station_name": "CT1", "display_name": "South"},
            ("station", False, 'station "CT1", "South": no match for "north"'),
        ),
        (
            'not_station = { any = ["north", "re:^ct"] }',
            {"station_name": "CT1"},
            ("not_station", False, 'station "CT1" excluded by { any = ["north", "re:^ct"] }'),
        ),
        (
            'model = "flash"',
            {"model": "SOMATOM Definition Flash"},
            ("model", True, 'model "SOMATOM Definition Flash" has "flash"'),
        ),
    ],
)
def test_exam_level_verdicts_say_why_with_the_exam_value(body: str, fields: dict[str, object], expected):
    [rule_trace] = trace(exam(ev(), **fields), rule(f"{body}\nctdivol = 60"))
    assert [(v.key, v.passed, v.why) for v in rule_trace.verdicts] == [expected]


@pytest.mark.parametrize(
    ("body", "event", "expected"),
    [
        ('phantom = "head"', ev(phantom="body"), [("phantom", False, "phantom body: is not head")]),
        ('phantom = "head"', ev(), [("phantom", False, "phantom not recorded: is not head")]),
        (
            'not_acquisition_type = ["constant_angle", "free"]',
            ev(code="113805"),
            [("not_acquisition_type", False, "acquisition type constant_angle: excluded by constant_angle or free")],
        ),
        (
            'acquisition_type = "spiral"',
            ev(code="X1"),
            [("acquisition_type", False, "acquisition type unknown code X1: is not spiral")],
        ),
        (
            'acquisition_type = "spiral"',
            ev(),
            [("acquisition_type", False, "acquisition type not recorded: is not spiral")],
        ),
        (
            'protocol = "head"\nnot_protocol = "perf"',
            ev(protocol="Head Perfusion"),
            [
                ("protocol", True, 'protocol "Head Perfusion" has "head"'),
                ("not_protocol", False, 'protocol "Head Perfusion" excluded by "perf"'),
            ],
        ),
        (
            'target_region = "chest"',
            ev(region="Head"),
            [("target_region", False, 'target region "Head": no match for "chest"')],
        ),
    ],
)
def test_event_level_verdicts_say_why_with_the_event_value(body: str, event: Event, expected):
    [rule_trace] = trace(exam(event), rule(f"{body}\nctdivol = 60"))
    assert [(v.key, v.passed, v.why) for v in rule_trace.events[0].verdicts] == expected
    assert rule_trace.events[0].matched is all(passed for _, passed, _ in expected)


def test_matched_events_and_total_matches_give_the_criteria_alone():
    from ctpoller.core.rules.explain import matched_events, total_matches

    [r] = rule('protocol = "head"\nnot_protocol = "perf"\nage_min = 18\nctdivol = 1').rules
    adult = exam(ev("a", "Head"), ev("b", "Head Perf"), ev("c", "Chest"), patient_age_decimal=Decimal(40))
    assert [e.key for e in matched_events(r, adult) or ()] == ["a"]
    assert not total_matches(r, adult)  # the perfusion event takes the exam out
    assert total_matches(r, exam(ev("a", "Head"), patient_age_decimal=Decimal(40)))
    child = exam(ev("a", "Head"), patient_age_decimal=Decimal(4))
    assert matched_events(r, child) is None and not total_matches(r, child)
