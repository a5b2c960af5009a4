"""[[trend]] and [[cumulative]] in the rules file: what they parse to, and one line for every bad key."""

from __future__ import annotations

from decimal import Decimal

import pytest

from ctpoller.core.rules import parse_rules
from ctpoller.errors import ConfigError

TREND = """
[[trend]]
name = "Head CT group criterion (StrlSchV Anlage 14 I.1)"
study = "head"
protocol = ["re:\\\\bhead\\\\b"]
metric = "ctdivol"
drl = 65
reference = "BfS DRW 2022"
exams = 20
above = 2
armed_above = 3
severity = "alert"
recipients = ["physics@hospital.example"]
"""

CUMULATIVE = """
[[cumulative]]
name = "Patient cumulative DLP, 12 months"
days = 365
dlp_total = 3000
exams = 5
"""


def test_a_trend_and_a_cumulative_parse_to_their_values():
    rules = parse_rules(TREND + CUMULATIVE, source="r.toml")
    [trend] = rules.trends
    assert (trend.metric, trend.drl, trend.exams, trend.above, trend.armed_above) == (
        "ctdivol",
        Decimal(65),
        20,
        Decimal(2),
        Decimal(3),
    )
    assert (trend.reference, trend.severity, trend.recipients) == (
        "BfS DRW 2022",
        "alert",
        ("physics@hospital.example",),
    )
    assert trend.limit == Decimal(130) and trend.criteria.study and trend.criteria.protocol
    [cumulative] = rules.cumulatives
    assert (cumulative.days, cumulative.dlp_total, cumulative.exams, cumulative.severity) == (
        365,
        Decimal(3000),
        5,
        "notification",
    )
    assert rules.rules == ()  # a file of trends alone is a rules file


def test_a_trend_without_above_compares_with_the_reference_itself():
    [trend] = parse_rules('[[trend]]\nname = "t"\nmetric = "dlp_total"\ndrl = 900\nexams = 2\n', source="r").trends
    assert trend.above == 1 and trend.limit == Decimal(900) and trend.unit == "mGy·cm"


T = '[[trend]]\nname = "t"\nmetric = "ctdivol"\ndrl = 1\nexams = 2\n'
C = '[[cumulative]]\nname = "c"\n'
BAD = [
    ('[[trend]]\nname = "t"\nmetric = "dlp"\ndrl = 1\nexams = 2', "trend 't': key 'metric': must be one of: ctdivol, dlp_total, not \"dlp\""),  # noqa: E501
    ('[[trend]]\nname = "t"\ndrl = 1\nexams = 2', "trend 't': key 'metric': is required"),
    ('[[trend]]\nname = "t"\nmetric = "ctdivol"\nexams = 2', "trend 't': key 'drl': is required"),
    ('[[trend]]\nname = "t"\nmetric = "ctdivol"\ndrl = 0\nexams = 2', "trend 't': key 'drl': must be a number greater than 0, not 0"),  # noqa: E501
    ('[[trend]]\nname = "t"\nmetric = "ctdivol"\ndrl = 1\nexams = 1', "trend 't': key 'exams': must be a whole number from 2 to 1000, not 1"),  # noqa: E501
    ('[[trend]]\nname = "t"\nmetric = "ctdivol"\ndrl = 1\nexams = 2.5', "trend 't': key 'exams': must be a whole number from 2 to 1000, not 2.5"),  # noqa: E501
    ('[[trend]]\nname = "t"\nmetric = "ctdivol"\ndrl = 1\nexams = true', "trend 't': key 'exams': must be a whole number from 2 to 1000, not true"),  # noqa: E501
    ('[[trend]]\nname = "t"\nmetric = "ctdivol"\ndrl = 1', "trend 't': key 'exams': is required"),
    (T + 'above = -1', "trend 't': key 'above': must be a number greater than 0"),
    (T + 'armed_above = "3"', "trend 't': key 'armed_above': must be a number greater than 0"),
    (T + 'severity = "high"', "trend 't': key 'severity': must be \"notification\" or \"alert\""),
    (T + 'reference = ""', "trend 't': key 'reference': must be one line"),
    (T + 'ctdivol = 5', "trend 't': key 'ctdivol': unknown key"),
    (T + 'study = []', "trend 't': key 'study': must not be an empty list"),
    (T + 'phantom = "leg"', "trend 't': key 'phantom': must be \"head\""),
    (T + 'recipients = ["x"]', "trend 't': key 'recipients': must hold plain"),
    ('[[trend]]\nmetric = "ctdivol"', "trend #1: key 'name': is required"),
    ("trend = 3", "key 'trend': must be an array of tables, written [[trend]]"),
    (C + 'dlp_total = 5', "cumulative 'c': key 'days': is required"),
    (C + 'days = 0\nexams = 5', "cumulative 'c': key 'days': must be a whole number from 1 to 3650, not 0"),
    (C + 'days = 30', "cumulative 'c': has no limit: set dlp_total (mGy·cm) and/or exams"),
    (C + 'days = 30\nexams = 0', "cumulative 'c': key 'exams': must be a whole number from 1 to 100000, not 0"),
    (C + 'days = 30\nexams = 2\ndrl = 5', "cumulative 'c': key 'drl': unknown key"),
    (C + 'days = 30\nexams = 2\nage_min = 10\nage_max = 5', "cumulative 'c': key 'age_max': must be greater than age_min"),  # noqa: E501
    ('[[rule]]\nname = "Head"\nctdivol = 1\n[[trend]]\nname = "HEAD "\nmetric = "ctdivol"\ndrl = 1\nexams = 2',
     "trend 'HEAD': key 'name': is already used by rule #1 (names are unique among rules, trends and cumulatives)"),
    ('[[trend]]\nname = "x"\nmetric = "ctdivol"\ndrl = 1\nexams = 2\n[[cumulative]]\nname = "X"\ndays = 1\nexams = 1',
     "cumulative 'X': key 'name': is already used by trend #1"),
    ('[[cumulative]]\nname = "Scanner Dose Check"\ndays = 1\nexams = 1', "is already used by the Scanner Dose Check"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "message"), BAD)
def test_every_bad_key_is_one_line_naming_the_file_the_table_and_the_key(text, message):
    with pytest.raises(ConfigError) as raised:
        parse_rules(text, source="r.toml")
    assert message in str(raised.value)
    assert str(raised.value).startswith("rules file r.toml: ") and "\n" not in str(raised.value)


def test_a_trend_takes_every_criterion_a_rule_takes():
    text = T + (
        'manufacturer = "siemens"\nnot_model = "re:^Force$"\nweight_min = 40\nweight_max = 100\n'
        'acquisition_type = "spiral"\nnot_target_region = "head"\nage_min = 18\n'
    )
    [trend] = parse_rules(text, source="r.toml").trends
    criteria = trend.criteria
    assert criteria.manufacturer and criteria.not_model and criteria.not_target_region
    assert (criteria.weight_min, criteria.weight_max, criteria.age_min) == (40, 100, 18)
    assert criteria.acquisition_type == ("spiral",)
