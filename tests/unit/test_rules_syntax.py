"""The rules file's newer keys: any/all, the refused bare list, reference levels, precedence, severity,
more criteria, alert recipients; every bad value is one line naming file, rule and key (pure)."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from textwrap import dedent

import pytest

from ctpoller.core.rules import RuleSet, parse_rules
from ctpoller.errors import ConfigError

SOURCE = "/etc/ctpoller/rules.toml"
RULE = '[[rule]]\nname = "ped head"\n'


def parse(text: str) -> RuleSet:
    return parse_rules(dedent(text), source=SOURCE)


def error_of(text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        parse(text)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"rules file {SOURCE}: ")
    return message


# ------------------------------------------------------------------------------------------- any / all


def test_a_bare_list_of_two_is_refused_with_both_readings_in_one_line():
    assert error_of(RULE + 'protocol = ["ped", "head"]\nctdivol = 60') == (
        f"rules file {SOURCE}: rule 'ped head': key 'protocol': "
        '["ped", "head"] is ambiguous: write { all = ["ped", "head"] } (every entry, like the old '
        "script's dose_limit(['ped', 'head'], ...)) or { any = [\"ped\", \"head\"] } (either entry)"
    )


@pytest.mark.parametrize(
    "key",
    [
        "study",
        "not_study",
        "procedure",
        "not_procedure",
        "station",
        "not_station",
        "protocol",
        "not_protocol",
        "standard_name",
        "not_standard_name",
        "manufacturer",
        "not_manufacturer",
        "model",
        "not_model",
        "target_region",
        "not_target_region",
    ],
)
def test_every_text_criterion_refuses_a_bare_list_of_two_or_more(key: str):
    message = error_of(RULE + f'{key} = ["a", ["b c"], "re:d"]\nctdivol = 60')
    assert f"key '{key}': " in message
    assert '{ all = ["a", ["b c"], "re:d"] }' in message and '{ any = ["a", ["b c"], "re:d"] }' in message
    assert "(any one entry)" in message


def test_a_route_station_refuses_a_bare_list_too():
    text = '[[route]]\nname = "North"\nstation = ["ct north", "nct"]\nrecipients = ["n@example.org"]\n'
    message = error_of(text + RULE + "ctdivol = 60")
    assert "route 'North': key 'station': " in message and "{ any = " in message


@pytest.mark.parametrize(
    ("criterion", "words", "regexes"),
    [
        ('"ped head"', [("ped", "head")], [()]),
        ('["ped head"]', [("ped", "head")], [()]),
        ('[["ped", "head"]]', [("ped", "head")], [()]),
        ('{ all = ["ped", "head"] }', [("ped", "head")], [()]),
        ('{ all = ["ped", "re:\\\\bhead\\\\b"] }', [("ped",)], [("\\bhead\\b",)]),
        ('{ any = ["ped", "head"] }', [("ped",), ("head",)], [(), ()]),
        (
            '{ any = ["ped head", ["with contrast"], "re:^x"] }',
            [("ped", "head"), ("with contrast",), ()],
            [(), (), ("^x",)],
        ),
        ('{ any = ["one"] }', [("one",)], [()]),
    ],
)
def test_criteria_become_entries_any_of_which_must_match(criterion: str, words, regexes):
    [rule] = parse(RULE + f"protocol = {criterion}\nctdivol = 60").rules
    assert [entry.words for entry in rule.protocol] == words
    assert [tuple(r.pattern for r in entry.regexes) for entry in rule.protocol] == regexes


@pytest.mark.parametrize(
    ("criterion", "expected"),
    [
        ("{ all = [] }", "all must be a non-empty list"),
        ("{ any = 'x' }", 'any must be a non-empty list of strings and lists of words, not "x"'),
        ("{ any = ['x'], all = ['y'] }", 'not { any = ["x"], all = ["y"] }'),
        (
            "{ every = ['x'] }",
            'a table must be { any = [...] } or { all = [...] } (one of them), not { every = ["x"] }',
        ),
        ("{ any = [{ all = ['x'] }] }", "entries must be strings or lists of words, not a table"),
        ("{ all = ['x', ''] }", "must not contain an empty string"),
        ("{ any = ['re:('] }", "invalid regular expression"),
    ],
)
def test_bad_any_all_tables_are_one_line(criterion: str, expected: str):
    message = error_of(RULE + f"protocol = {criterion}\nctdivol = 60")
    assert "key 'protocol': " in message and expected in message


# ------------------------------------------------------------------------------------- reference levels


def test_reference_levels_give_the_effective_limit_exactly():
    [rule] = parse(
        RULE
        + 'drl_ctdivol = 47\ndrl_dlp = 850.5\ndrl_dlp_total = 1000\nnotify_above = 1.1\nreference = " UK NDRL 2022 "'
    ).rules
    assert (rule.limit("ctdivol"), rule.limit("dlp"), rule.limit("dlp_total")) == (
        Decimal("51.7"),
        Decimal("935.55"),
        Decimal("1100.0"),
    )
    assert (rule.reference_value("ctdivol"), rule.multiple("dlp"), rule.reference) == (
        Decimal(47),
        Decimal("1.1"),
        "UK NDRL 2022",
    )


def test_notify_above_defaults_to_one_and_plain_limits_have_no_reference_value():
    [rule] = parse(RULE + "drl_ctdivol = 47\ndlp = 900\nreference = 'AAPM Dose Check 2011'").rules
    assert (rule.limit("ctdivol"), rule.multiple("ctdivol")) == (Decimal(47), Decimal(1))
    assert (rule.limit("dlp"), rule.reference_value("dlp"), rule.multiple("dlp")) == (Decimal(900), None, None)
    assert rule.limit("dlp_total") is None and rule.reference == "AAPM Dose Check 2011"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("ctdivol = 60\ndrl_ctdivol = 47", "key 'drl_ctdivol': and ctdivol both set: keep one"),
        ("dlp = 60\ndrl_dlp = 47", "key 'drl_dlp': and dlp both set"),
        ("dlp_total = 60\ndrl_dlp_total = 47", "key 'drl_dlp_total': and dlp_total both set"),
        ("ctdivol = 60\nnotify_above = 2", "key 'notify_above': needs a reference level: set drl_ctdivol"),
        ("drl_ctdivol = 0", "key 'drl_ctdivol': must be a number greater than 0, not 0"),
        ("drl_dlp = '850'", "key 'drl_dlp': must be a number greater than 0, not \"850\""),
        ("drl_dlp_total = -1", "key 'drl_dlp_total': must be a number greater than 0, not -1"),
        ("drl_ctdivol = 47\nnotify_above = 0", "key 'notify_above': must be a number greater than 0, not 0"),
        ("drl_ctdivol = 47\nnotify_above = true", "key 'notify_above': must be a number greater than 0, not true"),
        ("drl_ctdivol = 47\nreference = 5", "key 'reference': must name the source in one line"),
        ("drl_ctdivol = 47\nreference = ''", "key 'reference': must name the source"),
        ('drl_ctdivol = 47\nreference = "a\\nb"', "key 'reference': must name the source"),
        (f"drl_ctdivol = 47\nreference = '{'x' * 201}'", "at most 200 printable characters"),
        ("reference = 'UK NDRL'", "has no limit: set at least one of ctdivol, dlp, dlp_total, drl_ctdivol,"),
        ("notify_above = 2", "key 'notify_above': needs a reference level"),
    ],
)
def test_bad_reference_levels_are_one_line(body: str, expected: str):
    message = error_of(RULE + body)
    assert "rule 'ped head'" in message and expected in message


# ------------------------------------------------------------------------------ precedence and severity


def test_rules_come_in_priority_order_ties_in_file_order():
    text = "".join(
        f'[[rule]]\nname = "{name}"\nctdivol = 1\n' + (f"priority = {p}\n" if p is not None else "")
        for name, p in (("a", None), ("b", 5), ("c", -1), ("d", 5), ("e", 0))
    )
    assert [rule.name for rule in parse(text).rules] == ["b", "d", "a", "e", "c"]


def test_priority_stop_and_severity_are_kept():
    [rule] = parse(RULE + 'ctdivol = 1\npriority = -3\nstop = true\nseverity = " Alert "').rules
    assert (rule.priority, rule.stop, rule.severity) == (-3, True, "alert")
    [plain] = parse(RULE + "ctdivol = 1").rules
    assert (plain.priority, plain.stop, plain.severity) == (0, False, "notification")


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("priority = 1.5", "key 'priority': must be a whole number (higher is applied first), not 1.5"),
        ("priority = true", "key 'priority': must be a whole number (higher is applied first), not true"),
        ("priority = '1'", "key 'priority': must be a whole number (higher is applied first), not \"1\""),
        ("stop = 1", "key 'stop': must be true or false, not 1"),
        ("stop = 'yes'", "key 'stop': must be true or false, not \"yes\""),
        ("severity = 'critical'", 'key \'severity\': must be "notification" or "alert", not "critical"'),
        ("severity = ['alert']", 'key \'severity\': must be "notification" or "alert", not an array'),
    ],
)
def test_bad_precedence_and_severity_are_one_line(body: str, expected: str):
    message = error_of(RULE + "ctdivol = 1\n" + body)
    assert "rule 'ped head'" in message and expected in message


def test_alert_recipients_in_defaults_and_routes():
    rules = parse(
        """
        [defaults]
        recipients = ["physics@example.org"]
        alert_recipients = ["rpe@example.org", " RPE@example.org"]
        [[route]]
        name = "North"
        station = "north"
        recipients = ["north@example.org"]
        alert_recipients = ["north-lead@example.org"]
        [[rule]]
        name = "R"
        ctdivol = 1
        severity = "alert"
        """
    )
    assert rules.default_alert_recipients == ("rpe@example.org",)
    assert rules.routes[0].alert_recipients == ("north-lead@example.org",)
    assert rules.without_recipients() == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[defaults]\nalert_recipients = "a@b.org"\n', "[defaults]: key 'alert_recipients': must be a list"),
        ('[defaults]\nalert_recipients = ["rpe"]\n', "[defaults]: key 'alert_recipients': must hold plain"),
        (
            '[[route]]\nname = "N"\nstation = "n"\nrecipients = ["n@b.org"]\nalert_recipients = ["x y@b.org"]\n',
            "route 'N': key 'alert_recipients': must hold plain",
        ),
    ],
)
def test_bad_alert_recipients_are_one_line(text: str, expected: str):
    assert expected in error_of(text + RULE + "ctdivol = 1")


# --------------------------------------------------------------------------------------- more criteria


def test_new_criteria_are_kept():
    [rule] = parse(
        RULE
        + dedent(
            """
            acquisition_type = ["Spiral", "constant angle", "spiral"]
            not_acquisition_type = "free"
            manufacturer = "siemens"
            not_manufacturer = { any = ["ge", "philips"] }
            model = "re:^somatom"
            not_model = "flash"
            target_region = { all = ["chest", "abdomen"] }
            not_target_region = "head"
            weight_min = 0
            weight_max = 40.5
            ctdivol = 1
            """
        )
    ).rules
    assert rule.acquisition_type == ("spiral", "constant_angle") and rule.not_acquisition_type == ("free",)
    assert [e.words for e in rule.not_manufacturer] == [("ge",), ("philips",)]
    assert [e.words for e in rule.target_region] == [("chest", "abdomen")]
    assert (rule.weight_min, rule.weight_max) == (Decimal(0), Decimal("40.5"))
    assert rule.positive_event_criteria and rule.uses("weight_min") and not rule.uses("weight_max_kg")


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("acquisition_type = 'helical'", 'key \'acquisition_type\': must be one of "spiral", "sequenced"'),
        ("acquisition_type = ['spiral', 5]", "key 'acquisition_type': must be one of"),
        ("not_acquisition_type = []", "key 'not_acquisition_type': must be an acquisition type or a non-empty list"),
        ("acquisition_type = { any = ['spiral'] }", "key 'acquisition_type': must be an acquisition type"),
        ("weight_min = -1", "key 'weight_min': must be a number of kg, 0 or more, not -1"),
        ("weight_max = 'heavy'", "key 'weight_max': must be a number of kg, 0 or more, not \"heavy\""),
        ("weight_min = 80\nweight_max = 80", "key 'weight_max': must be greater than weight_min (80), not 80"),
        ("manufacturer = 5", "key 'manufacturer': must be a string, a one-entry list"),
        ("not_model = []", "key 'not_model': must not be an empty list"),
        ("target_region = ''", "key 'target_region': must not contain an empty string"),
        ("target_regions = 'chest'", "key 'target_regions': unknown key (did you mean 'target_region'?)"),
    ],
)
def test_bad_new_criteria_are_one_line(body: str, expected: str):
    message = error_of(RULE + "ctdivol = 1\n" + body)
    assert "rule 'ped head'" in message and expected in message


# ------------------------------------------------------------------------------------- the example file

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "rules.toml"


def commented_section(title: str) -> str:
    """The commented-out rules of one ``# --- title`` section of the example file, uncommented."""
    lines = EXAMPLE.read_text(encoding="utf-8").split("\n# --- ")
    [section] = [part for part in lines if part.startswith(title)]
    kept = [line[2:] for line in section.splitlines()[1:] if line.startswith("# ")]
    start = next(i for i, line in enumerate(kept) if line.startswith(("[[rule]]", "[[trend]]")))
    return "\n".join(line for line in kept[start:] if not line.startswith(("Note:", "  ", "then,", "exceeds both")))


def test_the_commented_old_script_rules_of_the_example_parse_and_say_all():
    rules = parse(commented_section("Moving from the old script"))
    assert [rule.name for rule in rules.rules] == [
        "ped head",
        "head",
        "chest",
        "abdo",
        "perfusion",
        "cardiac",
        "ped body",
    ]
    assert [e.words for e in rules.rules[0].protocol] == [("ped", "head")]
    assert '# protocol = { all = ["ped", "head"] }' in EXAMPLE.read_text(encoding="utf-8")


def test_the_commented_newer_keys_of_the_example_parse():
    rules = parse(commented_section("The newer keys, by example"))
    by_name = {rule.name: rule for rule in rules.rules}
    assert [rule.name for rule in rules.rules] == [
        "Paediatric head, stop",  # priority 10 first
        "Adult head, UK NDRL",
        "Heavy patients, spiral body",
    ]
    assert by_name["Adult head, UK NDRL"].limit("ctdivol") == Decimal("70.5")
    assert by_name["Paediatric head, stop"].stop and by_name["Heavy patients, spiral body"].severity == "alert"


def test_the_commented_trend_and_cumulative_of_the_example_parse():
    rules = parse(commented_section("Trends and cumulative dose, by example"))
    [trend] = rules.trends
    [cumulative] = rules.cumulatives
    assert (trend.exams, trend.above, trend.armed_above, trend.limit) == (20, 2, 3, Decimal(14))
    assert (cumulative.days, cumulative.dlp_total, cumulative.exams) == (365, Decimal(3000), 6)


@pytest.mark.parametrize(
    ("criterion", "shown"),
    [
        ('"Ped  Head"', '"ped head"'),
        ('[["ped", "head"]]', '"ped head"'),
        ('[["with contrast"]]', '[["with contrast"]]'),
        ('"re:^NCT\\\\d"', '"re:^NCT\\d"'),
        ('{ all = ["ped", "re:\\\\bhead"] }', '{ all = ["ped", "re:\\bhead"] }'),
        ('{ all = [["with contrast"], "re:x"] }', '{ all = [["with contrast"], "re:x"] }'),
        (
            '{ any = ["ct north", ["with contrast"], "re:^NCT"] }',
            '{ any = ["ct north", ["with contrast"], "re:^NCT"] }',
        ),
    ],
)
def test_a_criterion_is_shown_as_the_file_would_write_it(criterion: str, shown: str):
    [route] = parse(
        f'[[route]]\nname = "N"\nstation = {criterion}\nrecipients = ["n@b.org"]\n' + RULE + "ctdivol = 1"
    ).routes
    assert route.shown() == f"station {shown}"


@pytest.mark.parametrize("phantom", ['"Head"', '["head"]', '[" HEAD ", "head"]'])
def test_phantom_is_one_value_or_a_list_of_one(phantom: str):
    [rule] = parse(RULE + f"phantom = {phantom}\nctdivol = 1").rules
    assert rule.phantom == "head"
