"""The newer criteria (acquisition type, manufacturer, model, weight band, target region), reference
levels and precedence against the rows OpenREM's own importers wrote (tests/data/openrem), on real
PostgreSQL; and what happens when this role may not read, or OpenREM does not have, a column a rule
needs."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace

import psycopg
import pytest
from sqlalchemy.engine import make_url

from ctpoller import wiring
from ctpoller.core.exam import Exam, StudyRow
from ctpoller.core.rules import RuleSet, evaluate, parse_rules, trace
from ctpoller.errors import ConfigError
from ctpoller.jobs.check import run_checks
from ctpoller.jobs.cycle import connect_for
from ctpoller.openrem.source import OpenremSource
from ctpoller.settings import Settings
from support import pg

pytestmark = [pytest.mark.postgres]

ROLE_SQL = Path(__file__).parents[2] / "sql" / "readonly_role.sql"
ROLE = "ctpoller_reader"
HEADER = '[defaults]\nrecipients = ["physics@example.org"]\n'


@pytest.fixture
def real_openrem(pg_server):
    with pg.throwaway_database(pg_server, "ctp_criteria_") as url:
        pg.run_sql_file(url, pg.OPENREM_DATA / "schema_ct.sql")
        pg.run_sql_file(url, pg.OPENREM_DATA / "data_ct_testfiles.sql")
        yield url


@pytest.fixture
def reader_url(real_openrem):
    admin = pg.libpq_url(real_openrem)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(ROLE_SQL.read_text(encoding="utf-8"))
    yield make_url(real_openrem).set(username=ROLE).render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"DROP OWNED BY {ROLE}")
        conn.execute(f"DROP ROLE {ROLE}")


def admin(url: str, statement: str) -> None:
    with psycopg.connect(pg.libpq_url(url), autocommit=True) as conn:
        conn.execute(statement)


def read_rows(url: str, rules: RuleSet | None = None) -> dict[int, StudyRow]:
    source = OpenremSource(url)
    try:
        if rules is not None:
            connect_for(source, rules)
        with source.reading() as reads:
            return dict(reads.study_rows(list(range(1, 20))))
    finally:
        source.dispose()


def exams(rows: dict[int, StudyRow]) -> list[Exam]:
    by_uid: dict[str, list[StudyRow]] = {}
    for pk in sorted(rows):
        by_uid.setdefault(rows[pk].uid or "", []).append(rows[pk])
    return [Exam(uid=uid, rows=tuple(group)) for uid, group in by_uid.items()]


def found(url: str, text: str) -> list[tuple[str, str, str | None, Decimal]]:
    """(rule, metric, protocol, value) of every exceedance in the real rows, by study pk order."""
    rules = parse_rules(HEADER + text, source="rules.toml")
    return [(x.rule, x.metric, x.protocol, x.value) for e in exams(read_rows(url, rules)) for x in evaluate(e, rules)]


def test_the_new_columns_are_read_as_openrem_wrote_them(real_openrem):
    rows = read_rows(real_openrem)
    assert (rows[11].manufacturer, rows[11].model, rows[11].patient_weight_kg) == (
        "SIEMENS",
        "SOMATOM Definition Flash",
        Decimal(87),
    )
    assert (rows[6].manufacturer, rows[6].model, rows[6].patient_weight_kg) == (
        "GE Medical Systems",
        "Optima CT660",
        Decimal("78.2"),
    )
    assert rows[8].patient_weight_kg is None and rows[8].model == "LightSpeed RT16"  # no weight recorded
    assert {e.target_region for e in rows[13].events} == {"Chest, Abdomen and Pelvis"}
    assert {e.target_region for e in rows[7].events} == {"Unknown"}
    assert {e.target_region for e in rows[16].events} == {None}  # Philips: none recorded
    assert [e.acquisition_type_code for e in rows[12].events] == ["113805", "113806", "113806", "113807", "113807"]


def test_acquisition_type_and_manufacturer(real_openrem):
    text = """
        [[rule]]
        name = "Siemens spiral"
        manufacturer = "siemens"
        acquisition_type = "spiral"
        ctdivol = 5
        [[rule]]
        name = "GE sequenced or stationary"
        manufacturer = "re:^ge\\\\b"
        acquisition_type = ["sequenced", "stationary"]
        ctdivol = 30
        [[rule]]
        name = "Free acquisition, not the Siemens"
        not_manufacturer = "siemens"
        acquisition_type = "free"
        ctdivol = 15
        """
    assert found(real_openrem, text) == [
        ("Siemens spiral", "ctdivol", "4DCT", Decimal("8.13")),
        ("Siemens spiral", "ctdivol", "4DCT", Decimal("7.02")),
        ("GE sequenced or stationary", "ctdivol", None, Decimal("32.83")),
        ("GE sequenced or stationary", "ctdivol", None, Decimal("176.12")),
        ("GE sequenced or stationary", "ctdivol", None, Decimal("31.66")),
        ("GE sequenced or stationary", "ctdivol", None, Decimal("32.83")),
        ("GE sequenced or stationary", "ctdivol", "10.13 RADIOTHERAPY QA", Decimal("222.59")),
        ("Siemens spiral", "ctdivol", "DS_helical", Decimal("65.47")),
        ("Siemens spiral", "ctdivol", "DS_hel p 0.23", Decimal("29.67")),
        ("Siemens spiral", "ctdivol", "TAP", Decimal("9.91")),
        ("Free acquisition, not the Siemens", "ctdivol", "Daily QA", Decimal("16.2604")),
    ]


def test_model_weight_band_and_target_region(real_openrem):
    text = """
        [[rule]]
        name = "Aquilion ONE"
        model = { all = ["aquilion", "one"] }
        ctdivol = 3
        [[rule]]
        name = "75 to 90 kg"
        weight_min = 75
        weight_max = 90
        dlp_total = 400
        [[rule]]
        name = "Chest, not the localiser"
        target_region = "chest"
        not_acquisition_type = "constant_angle"
        ctdivol = 7
        """
    assert found(real_openrem, text) == [
        ("Chest, not the localiser", "ctdivol", "4DCT", Decimal("8.13")),
        ("Chest, not the localiser", "ctdivol", "4DCT", Decimal("7.02")),
        ("75 to 90 kg", "dlp_total", None, Decimal("415.82")),  # GE Optima, 78.2 kg
        ("75 to 90 kg", "dlp_total", None, Decimal("1590")),  # Siemens physics testing, 75 kg
        ("75 to 90 kg", "dlp_total", None, Decimal("724.52")),  # Siemens TAP, 87 kg
        # (the Toshiba, 75 kg, totals 349.7; the PET/CT, 110 kg, is out of the band)
        ("Chest, not the localiser", "ctdivol", None, Decimal("25.4")),  # "Chest, Abdomen and Pelvis"
        ("Chest, not the localiser", "ctdivol", None, Decimal("24.7")),
        ("Aquilion ONE", "ctdivol", "100sec Neck & Chest +C (vHP)", Decimal("3.2")),
    ]


def test_reference_levels_and_a_stop_rule_on_real_rows(real_openrem):
    text = """
        [[rule]]
        name = "Generic body"
        phantom = "body"
        ctdivol = 20
        [[rule]]
        name = "Siemens body, DRL"
        manufacturer = "siemens"
        phantom = "body"
        drl_ctdivol = 15
        notify_above = 2
        reference = "a local DRL"
        priority = 1
        stop = true
        """
    rules = parse_rules(HEADER + text, source="rules.toml")
    rows = read_rows(real_openrem, rules)
    physics = next(e for e in exams(rows) if e.first.pk == 10)  # Siemens, body phantom, 15-65 mGy
    xs = evaluate(physics, rules)
    assert [(x.rule, x.value, x.limit, x.reference_value, x.multiple, x.reference) for x in xs] == [
        ("Siemens body, DRL", Decimal("33.83"), Decimal(30), Decimal(15), Decimal(2), "a local DRL"),
        ("Siemens body, DRL", Decimal("65.47"), Decimal(30), Decimal(15), Decimal(2), "a local DRL"),
    ]
    siemens, generic = trace(physics, rules)
    assert len(siemens.checks) == 9 and all(c.stopped_by == "Siemens body, DRL" for c in generic.checks)
    toshiba = next(e for e in exams(rows) if e.first.pk == 13)  # not Siemens: the generic rule
    assert [(x.rule, x.value) for x in evaluate(toshiba, rules)] == [
        ("Generic body", Decimal("25.4")),
        ("Generic body", Decimal("24.7")),
    ]


RULES_USING = {
    "manufacturer": '[[rule]]\nname = "By maker"\nnot_manufacturer = "ge"\nctdivol = 5\n',
    "manufacturer_model_name": '[[rule]]\nname = "By model"\nmodel = "aquilion"\nctdivol = 5\n',
    "patient_weight": '[[rule]]\nname = "Heavy"\nweight_min = 120\nctdivol = 5\n',
    "target_region_id": '[[rule]]\nname = "Chest"\nnot_target_region = "head"\nctdivol = 5\n',
}
TABLE_OF = {
    "manufacturer": "remapp_generalequipmentmoduleattr",
    "manufacturer_model_name": "remapp_generalequipmentmoduleattr",
    "patient_weight": "remapp_patientstudymoduleattr",
    "target_region_id": "remapp_ctirradiationeventdata",
}
KEY_OF = {
    "manufacturer": ("By maker", "not_manufacturer"),
    "manufacturer_model_name": ("By model", "model"),
    "patient_weight": ("Heavy", "weight_min"),
    "target_region_id": ("Chest", "not_target_region"),
}


@pytest.mark.parametrize("column", list(RULES_USING))
def test_a_rule_needing_a_column_this_role_may_not_read_stops_connect_with_one_line(real_openrem, reader_url, column):
    table = TABLE_OF[column]
    admin(real_openrem, f"REVOKE SELECT ({column}) ON {table} FROM {ROLE}")
    rule, key = KEY_OF[column]
    with pytest.raises(ConfigError) as caught:
        read_rows(reader_url, parse_rules(HEADER + RULES_USING[column], source="rules.toml"))
    assert str(caught.value) == (
        f"rule '{rule}': key '{key}' needs OpenREM column {table}.{column}, but this role may not SELECT it "
        "(grant it, see sql/readonly_role.sql)"
    )
    # rules that do not use it run, and read everything else; the column reads as not recorded
    others = parse_rules(HEADER + '[[rule]]\nname = "Any"\nctdivol = 5\n', source="rules.toml")
    rows = read_rows(reader_url, others)
    assert rows[11].station_name == "CTAWP00001" and len(rows[11].events) == 4
    seen = {
        "manufacturer": rows[11].manufacturer,
        "manufacturer_model_name": rows[11].model,
        "patient_weight": rows[11].patient_weight_kg,
        "target_region_id": rows[11].events[3].target_region,
    }
    assert seen[column] is None
    assert [v for c, v in seen.items() if c != column] == [
        v for c, v in {"manufacturer": "SIEMENS", "manufacturer_model_name": "SOMATOM Definition Flash",
                       "patient_weight": Decimal(87), "target_region_id": "Abdomen"}.items() if c != column
    ]  # fmt: skip


def test_the_granted_role_reads_every_new_column(reader_url):
    rules = parse_rules(HEADER + "".join(RULES_USING.values()), source="rules.toml")
    rows = read_rows(reader_url, rules)
    assert (rows[11].manufacturer, rows[11].patient_weight_kg, rows[11].events[3].target_region) == (
        "SIEMENS",
        Decimal(87),
        "Abdomen",
    )


def test_a_rule_needing_a_column_openrem_does_not_have_stops_connect(real_openrem):
    admin(real_openrem, "ALTER TABLE remapp_patientstudymoduleattr DROP COLUMN patient_weight")
    with pytest.raises(ConfigError) as caught:
        read_rows(real_openrem, parse_rules(HEADER + RULES_USING["patient_weight"], source="rules.toml"))
    assert str(caught.value) == (
        "rule 'Heavy': key 'weight_min' needs OpenREM column remapp_patientstudymoduleattr.patient_weight, "
        "but this OpenREM database does not have it"
    )
    rows = read_rows(real_openrem, parse_rules(HEADER + RULES_USING["manufacturer"], source="rules.toml"))
    assert rows[11].patient_weight_kg is None and rows[11].manufacturer == "SIEMENS"


def test_check_names_the_rule_key_and_column_the_role_may_not_read(real_openrem, reader_url, tmp_path):
    admin(real_openrem, f"REVOKE SELECT (target_region_id) ON remapp_ctirradiationeventdata FROM {ROLE}")
    rules_file = tmp_path / "rules.toml"
    rules_file.write_text(HEADER + RULES_USING["target_region_id"], encoding="utf-8")
    settings = Settings(_env_file=None, source_url=reader_url, rules_file=rules_file)
    failed = [(line, error) for ok, line, error in run_checks(wiring.Parts(settings)) if not ok]
    assert [line for line, _ in failed if "OpenREM column" in line] == [
        "rule 'Chest': key 'not_target_region' needs OpenREM column remapp_ctirradiationeventdata.target_region_id, "
        "but this role may not SELECT it (grant it, see sql/readonly_role.sql)"
    ]


def test_the_criteria_of_a_trend_or_cumulative_rule_are_looked_at_too(real_openrem, reader_url):
    """``[[trend]]`` and ``[[cumulative]]`` carry their criteria as a rule (``criteria``)."""
    admin(real_openrem, f"REVOKE SELECT (manufacturer) ON remapp_generalequipmentmoduleattr FROM {ROLE}")
    [criteria] = parse_rules(HEADER + RULES_USING["manufacturer"], source="rules.toml").rules
    watched = SimpleNamespace(criteria=replace(criteria, name="Trend by maker"))
    for field in ("trends", "cumulatives"):
        rules = SimpleNamespace(rules=(), **{field: (watched,)})
        source = OpenremSource(reader_url)
        try:
            assert source.criteria_problem(rules) == (  # type: ignore[arg-type]
                "rule 'Trend by maker': key 'not_manufacturer' needs OpenREM column "
                "remapp_generalequipmentmoduleattr.manufacturer, but this role may not SELECT it "
                "(grant it, see sql/readonly_role.sql)"
            )
        finally:
            source.dispose()
