"""The backfill screen: it may send an exam to be read in full for nothing, never skip one that exceeds.

``reference_answers`` is what the database answers (``source._screen_query``) written again over
model objects, with PostgreSQL's ordering of NaN (greater than every number). The SQL itself is
checked against the full evaluation on real databases in tests/integration/test_backfill_screen.py.
"""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ctpoller.core.exam import AGE_DECIMAL_HALF_WIDTH, PLAUSIBLE_AGE_YEARS, DoseCheck, Event, Exam, StudyRow
from ctpoller.core.model import Screened
from ctpoller.core.rules import SCREEN_MARGIN, Bound, Screen, evaluate, parse_rules, screen

NAN, INF = Decimal("NaN"), Decimal("Infinity")


def pg_gt(a: Decimal | None, b: Decimal | None) -> bool | None:
    """``a > b`` as PostgreSQL compares numerics: NULL is unknown, NaN is above everything."""
    if a is None or b is None:
        return None
    if b.is_nan():
        return False
    if a.is_nan():
        return True
    return a > b


def pg_max(values: list[Decimal | None]) -> Decimal | None:
    present = [v for v in values if v is not None]
    if not present:
        return None
    if any(v.is_nan() for v in present):
        return NAN
    return max(present)


def age_may_pass(row: StudyRow, bound: Bound) -> bool:
    """``source._age_may_pass``: a plausible decimal within reach of the band, or any age string."""
    low, high = PLAUSIBLE_AGE_YEARS
    d, reach = row.patient_age_decimal, AGE_DECIMAL_HALF_WIDTH + Decimal("0.001")
    plausible = d is not None and d.is_finite() and low <= d <= high
    near = plausible and (bound.age_min is None or d >= bound.age_min - reach)  # type: ignore[operator]
    near = near and (bound.age_max is None or d < bound.age_max + reach)  # type: ignore[operator]
    return near or row.patient_age is not None


def reference_answers(row: StudyRow, questions: Screen) -> tuple[str, bool | None]:
    answers = []
    for bound in questions.bounds:
        if bound.metric == "dlp_total":
            positive = [e.dlp_mgycm if pg_gt(e.dlp_mgycm, Decimal(0)) else Decimal(0) for e in row.events]
            total = sum(positive, Decimal(0)) if row.events else None
            yes = bool(pg_gt(row.total_dlp_mgycm, bound.threshold)) or bool(pg_gt(total, bound.threshold))
        else:
            chosen = [
                e
                for e in row.events
                if e.phantom in (bound.phantom, None) or bound.phantom is None
                if bound.protocols is None or e.protocol in bound.protocols
                if (e.protocol or "") not in bound.excluded
            ]
            values = [e.ctdivol_mgy if bound.metric == "ctdivol" else e.dlp_mgycm for e in chosen]
            yes = bool(pg_gt(pg_max(values), bound.threshold))
        if bound.age_min is not None or bound.age_max is not None:
            yes = yes and age_may_pass(row, bound)
        answers.append("1" if yes else "0")
    dose = None
    if questions.dose_check:
        dose = False
        for event in row.events:
            for c in event.dose_checks:
                checks = (
                    (c.ctdivol_notification_configured, c.ctdivol_notification_mgy,
                     (c.ctdivol_forward_estimate_mgy, event.ctdivol_mgy)),
                    (c.dlp_notification_configured, c.dlp_notification_mgycm,
                     (c.dlp_forward_estimate_mgycm, event.dlp_mgycm)),
                    (c.ctdivol_alert_configured, c.ctdivol_alert_mgy, (c.accumulated_ctdivol_forward_estimate_mgy,)),
                    (c.dlp_alert_configured, c.dlp_alert_mgycm, (c.accumulated_dlp_forward_estimate_mgycm,)),
                )  # fmt: skip
                for configured, limit, values in checks:
                    if configured is not False and pg_gt(limit, Decimal(0)) and any(pg_gt(v, limit) for v in values):
                        dose = True
    return "".join(answers), dose


def cleared(row: StudyRow, questions: Screen) -> bool:
    """As backfill sees it: the line ``source.screened`` makes of this row (texts only if asked)."""
    answers, dose = reference_answers(row, questions)
    line = Screened(
        pk=row.pk,
        uid=row.uid,
        complete=True,
        n_events=len(row.events),
        answers=answers,
        dose_check=dose,
        row=replace(row, events=()) if "1" in answers else None,
    )
    return not questions.may_exceed(line)


# --------------------------------------------------------------------------------------------- strategies

#: Ages on and around the band edges of RULE_PARTS (2, 6, 18), as OpenREM rounds them, and hostile ones.
AGES = [None, Decimal("4"), Decimal("40"), Decimal("200"), NAN, Decimal("-1"), Decimal("0.0"), Decimal("1.5")]
AGES += [Decimal(edge) + Decimal(step) for edge in (2, 6, 18) for step in ("-0.1", "-0.05", "0", "0.05", "0.1")]
AGE_STRINGS = [None, "001Y", "004Y", "040Y", "018M", "abc", "  ", "999Y", "002Y", "023M", "024M", "104W"]
AGE_STRINGS += ["005Y", "071M", "006Y", "017Y", "018Y", "6574D", "017Y ", "730D"]

PROTOCOLS = ["Head Routine", "Cardiac Prosp Seq", "Chest Abdomen", "Perfusion Brain", "Calcium Score", None]
doses = st.one_of(
    st.none(),
    st.decimals(min_value=0, max_value=3000, places=2),
    st.sampled_from([NAN, INF, -INF, Decimal("-5"), Decimal("1E+30"), Decimal("79.99995"), Decimal("80")]),
)
flags = st.sampled_from([None, True, False])


@st.composite
def dose_checks(draw: st.DrawFn) -> DoseCheck:
    return DoseCheck(
        **{name: draw(flags if name.endswith("_configured") else doses) for name in DoseCheck.__annotations__}
    )


@st.composite
def rows(draw: st.DrawFn) -> StudyRow:
    events = tuple(
        Event(
            key=draw(st.sampled_from(["1.2.3", "1.2.4", "1.2.5"])) + f".{n}",
            event_pk=n,
            study_pk=1,
            protocol=draw(st.sampled_from(PROTOCOLS)),
            phantom=draw(st.sampled_from(["head", "body", None])),
            acquisition_type_code=draw(st.sampled_from(["P5-08001", "113805", "113804", "99999", None])),
            target_region=draw(st.sampled_from(["Chest", "Head", "Unknown", None])),
            ctdivol_mgy=draw(doses),
            dlp_mgycm=draw(doses),
            dose_checks=tuple(draw(st.lists(dose_checks(), max_size=1))),
        )
        for n in range(draw(st.integers(0, 4)))
    )
    return StudyRow(
        pk=1,
        uid="1.2.826.0.1",
        description=draw(st.sampled_from(["CT Chest Abdomen Pelvis", "CT Head", "QA phantom", None])),
        requested_procedure=draw(st.sampled_from(["CT CAP", "CT HEAD", None])),
        station_name=draw(st.sampled_from(["CT1", "CT2", None])),
        total_dlp_mgycm=draw(doses),
        patient_age_decimal=draw(st.sampled_from(AGES)),
        patient_age=draw(st.sampled_from(AGE_STRINGS)),
        events=events,
        manufacturer=draw(st.sampled_from(["Siemens", "GE MEDICAL SYSTEMS", None])),
        model=draw(st.sampled_from(["SOMATOM Definition Flash", "Revolution", None])),
        patient_weight_kg=draw(st.sampled_from([None, Decimal(0), Decimal("12.5"), Decimal(80), Decimal(130), NAN])),
    )


RULE_PARTS = [
    'study = ["chest abdomen"]',
    'not_study = ["QA"]',
    'procedure = ["head"]',
    'station = ["CT1"]',
    'not_station = ["CT2"]',
    'protocol = { any = ["cardiac", "calcium"] }',
    'protocol = { all = ["cardiac", "re:prosp"] }',
    'protocol = ["nothing like it"]',
    'not_protocol = ["perfusion"]',
    'phantom = "head"',
    'phantom = "body"',
    "age_max = 2",
    "age_min = 2\nage_max = 6",
    "age_min = 18",
    "weight_min = 50\nweight_max = 100",
    "weight_max = 20",
    'manufacturer = "siemens"',
    'not_model = "revolution"',
    'acquisition_type = ["spiral", "sequenced"]',
    'not_acquisition_type = "constant_angle"',
    'target_region = "chest"',
    'not_target_region = "head"',
    "priority = 5\nstop = true",
    "stop = true",
    'severity = "alert"\nreference = "local"',
]


@st.composite
def rule_files(draw: st.DrawFn) -> str:
    text = '[defaults]\nrecipients = ["physics@example.org"]\n'
    for n in range(draw(st.integers(1, 4))):
        parts = draw(st.lists(st.sampled_from(RULE_PARTS), max_size=3, unique=True))
        keys = [line.split(" ", 1)[0] for part in parts for line in part.splitlines()]
        ages = {k: float(line.split("=")[1]) for part in parts for line in part.splitlines() for k in [line.split()[0]]
                if k.startswith("age")}  # fmt: skip
        if len(keys) != len(set(keys)) or ages.get("age_min", 0) >= ages.get("age_max", 999):
            parts = parts[:1]
        kinds = draw(st.lists(st.sampled_from(["ctdivol", "dlp", "dlp_total"]), min_size=1, max_size=3, unique=True))
        limits = [f"drl_{kind}" if draw(st.booleans()) else kind for kind in kinds]
        values = {limit: draw(st.sampled_from(["10", "50", "80", "79.99995", "2000"])) for limit in limits}
        if any(limit.startswith("drl_") for limit in limits) and draw(st.booleans()):
            values["notify_above"] = draw(st.sampled_from(["0.5", "1.3", "3"]))
        text += f'[[rule]]\nname = "rule {n}"\n' + "".join(f"{p}\n" for p in parts)
        text += "".join(f"{limit} = {value}\n" for limit, value in values.items())
    if draw(st.booleans()):
        text += "[dose_check]\nnotify = true\n"
    return text


# --------------------------------------------------------------------------------------------- tests


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(row=rows(), text=rule_files())
def test_the_screen_never_clears_an_exam_the_rules_would_report(row: StudyRow, text: str) -> None:
    rules = parse_rules(text, source="rules.toml")
    questions = screen(rules, PROTOCOLS)
    if evaluate(Exam(uid=row.uid or "", rows=(row,)), rules):
        assert not cleared(row, questions), f"cleared an exam with exceedances: {row}"


RULES = """
[defaults]
recipients = ["physics@example.org"]
[[rule]]
name = "Adult head"
phantom = "head"
age_min = 18
ctdivol = 80
[[rule]]
name = "Cardiac"
protocol = ["cardiac"]
ctdivol = 50
[[rule]]
name = "CAP"
study = ["chest abdomen"]
dlp_total = 2000
"""


def head_exam(ctdivol: str, *, protocol: str = "Head Routine", phantom: str = "head", age: str = "40") -> StudyRow:
    event = Event(key="1.2.3", event_pk=1, study_pk=1, protocol=protocol, phantom=phantom,  # type: ignore[arg-type]
                  ctdivol_mgy=Decimal(ctdivol), dlp_mgycm=Decimal(900))  # fmt: skip
    return StudyRow(pk=1, uid="1.2.826.0.1", description="CT Head", total_dlp_mgycm=Decimal(900),
                    patient_age_decimal=Decimal(age), events=(event,))  # fmt: skip


def test_a_rule_naming_protocols_that_do_not_occur_asks_nothing() -> None:
    rules = parse_rules(RULES, source="rules.toml")
    assert [b.rule for b in screen(rules, ["Head Routine"]).bounds] == [0, 2]
    assert [b.protocols for b in screen(rules, ["Head Routine", " Cardiac CTA "]).bounds] == [
        None,
        (" Cardiac CTA ",),  # OpenREM's raw value, matched after stripping as the rules do
        None,
    ]


def test_thresholds_sit_just_under_the_limits() -> None:
    bound = screen(parse_rules(RULES, source="rules.toml"), []).bounds[0]
    assert bound.threshold == Decimal(80) * (1 - SCREEN_MARGIN)
    assert not cleared(head_exam("80.0000001"), screen(parse_rules(RULES, source="rules.toml"), []))


@pytest.mark.parametrize(
    ("exam", "is_cleared"),
    [
        (head_exam("60"), True),  # under every limit
        (head_exam("90"), False),  # adult head over 80
        (head_exam("90", age="10"), True),  # a child: the adult rule's age band fails
        (head_exam("90", phantom="body"), True),  # body phantom: not the head rule's events
        (head_exam("60", protocol="Cardiac CTA"), False),  # cardiac protocol over 50
        (head_exam("NaN"), False),  # not a number: read it and let the rules decide
    ],
)
def test_the_screen_clears_only_what_no_rule_can_report(exam: StudyRow, is_cleared: bool) -> None:
    rules = parse_rules(RULES, source="rules.toml")
    assert cleared(exam, screen(rules, ["Head Routine", "Cardiac CTA"])) is is_cleared
