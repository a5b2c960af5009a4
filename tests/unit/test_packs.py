"""The rule packs in examples/packs: each parses, each number is the reference's number, and each value the
reference does not vouch for says so on its line.

The reference is ``/work/shared/reference/dose-references.md`` (the dose facts with their sources); the
table ``REFERENCE`` below is copied from it by hand, so a typo in a pack (or here) fails a test.
"""

from __future__ import annotations

import re
import tomllib
from decimal import Decimal
from pathlib import Path

import pytest

from ctpoller.core.exam import Event, Exam, StudyRow
from ctpoller.core.model import rule_identity
from ctpoller.core.rules import RuleSet, evaluate, parse_rules

PACKS = Path(__file__).parents[2] / "examples" / "packs"
PACK_FILES = ("aapm-dose-check.toml", "uk-ndrl-2022.toml", "strlschv-anlage14.toml", "euclid.toml", "local-drl.toml")

UNVERIFIED = "[unverified]"
THIRD_PARTY = "[3rd-party transcription]"
PLACEHOLDER = "PLACEHOLDER"

#: The dose numbers a table of a pack may hold.
DOSE_KEYS = ("ctdivol", "dlp", "dlp_total", "drl_ctdivol", "drl_dlp", "drl_dlp_total", "drl")
#: The text criteria (and their not_ twins), where a bare list of two or more entries is refused.
TEXT_CRITERIA = ("study", "procedure", "protocol", "standard_name", "station", "manufacturer", "model")
TEXT_KEYS = (*TEXT_CRITERIA, *(f"not_{key}" for key in TEXT_CRITERIA), "target_region", "not_target_region")

# fmt: off
#: name -> (value, the marker the reference gives it, or None). From dose-references.md.
REFERENCE: dict[str, tuple[str, str | None]] = {
    # 1.1 / Earlier survey: AAPM CT Dose Check v1.0 (April 2011), CTDIvol per scan series, mGy
    "AAPM adult head": ("80", None),
    "AAPM adult torso": ("50", None),
    "AAPM paediatric head < 2 y": ("50", None),
    "AAPM paediatric head 2-5 y": ("60", None),
    "AAPM paediatric torso < 10 y, 16 cm": ("25", None),
    "AAPM paediatric torso < 10 y, 32 cm": ("10", None),
    "AAPM brain perfusion": ("600", None),
    "AAPM cardiac retrospective (spiral)": ("150", None),
    "AAPM cardiac prospective (sequential)": ("50", None),
    "AAPM alert value (as an AAPM figure)": ("1000", UNVERIFIED),
    # 1.2 / UK NDRL adult table (2022 values, gov.uk page of 20 Nov 2024): CTDIvol mGy, DLP mGy·cm
    "UK head CTDIvol": ("47", None), "UK head DLP": ("790", None),
    "UK sinuses CTDIvol": ("12", None), "UK sinuses DLP": ("160", None),
    "UK c-spine CTDIvol": ("16", None), "UK c-spine DLP": ("400", None),
    "UK chest CTDIvol": ("8.5", None), "UK chest DLP": ("290", None),
    "UK HRCT CTDIvol": ("8", None), "UK HRCT DLP": ("300", None),
    "UK CTPA CTDIvol": ("9.1", None), "UK CTPA DLP": ("310", None),
    "UK chest-abdomen DLP": ("470", None),
    "UK CAP DLP": ("660", None),
    "UK NCAP DLP": ("850", None),
    "UK abdomen-pelvis CTDIvol": ("10", None), "UK abdomen-pelvis DLP": ("530", None),
    "UK KUB CTDIvol": ("6.3", None), "UK KUB DLP": ("290", None),
    "UK urogram DLP": ("890", None),
    "UK virtual colonoscopy DLP": ("690", None),
    # 1.3: StrlSchV Anlage 14 I.2 a) (verbatim) and the BfS DRW 2022 NNH values (secondary source)
    "StrlSchV I.2a brain": ("120", None),
    "StrlSchV I.2a body": ("80", None),
    "DRW 2022 NNH CTDIvol": ("7", UNVERIFIED),
    "DRW 2022 NNH DLP": ("70", UNVERIFIED),
    # 1.4: EUCLID (RP 195), CTDIvol / DLP
    "EUCLID sinusitis CTDIvol": ("11", THIRD_PARTY), "EUCLID sinusitis DLP": ("188", THIRD_PARTY),
    "EUCLID stroke CTDIvol": ("48", THIRD_PARTY), "EUCLID stroke DLP": ("807", THIRD_PARTY),
    "EUCLID c-spine CTDIvol": ("17", THIRD_PARTY), "EUCLID c-spine DLP": ("455", THIRD_PARTY),
    "EUCLID calcium CTDIvol": ("4", THIRD_PARTY), "EUCLID calcium DLP": ("72", THIRD_PARTY),
    "EUCLID lung cancer CTDIvol": ("8", THIRD_PARTY), "EUCLID lung cancer DLP": ("348", THIRD_PARTY),
    "EUCLID PE CTDIvol": ("9", THIRD_PARTY), "EUCLID PE DLP": ("307", THIRD_PARTY),
    "EUCLID coronary CTA CTDIvol": ("25", THIRD_PARTY), "EUCLID coronary CTA DLP": ("415", THIRD_PARTY),
    "EUCLID HCC CTDIvol": ("9", THIRD_PARTY), "EUCLID HCC DLP": ("354", THIRD_PARTY),
    "EUCLID colic CTDIvol": ("8", THIRD_PARTY), "EUCLID colic DLP": ("436", THIRD_PARTY),
    "EUCLID appendicitis CTDIvol": ("9", THIRD_PARTY), "EUCLID appendicitis DLP": ("498", THIRD_PARTY),
    # 1.4: PiDRL (RP 185): head by age, chest and abdomen by weight
    "PiDRL head 0-3 mo CTDIvol": ("24", THIRD_PARTY), "PiDRL head 0-3 mo DLP": ("300", THIRD_PARTY),
    "PiDRL head 3-12 mo CTDIvol": ("28", THIRD_PARTY), "PiDRL head 3-12 mo DLP": ("385", THIRD_PARTY),
    "PiDRL head 1-6 y CTDIvol": ("40", THIRD_PARTY), "PiDRL head 1-6 y DLP": ("505", THIRD_PARTY),
    "PiDRL head >= 6 y CTDIvol": ("50", THIRD_PARTY), "PiDRL head >= 6 y DLP": ("650", THIRD_PARTY),
    "PiDRL chest < 5 kg CTDIvol": ("1.4", THIRD_PARTY), "PiDRL chest < 5 kg DLP": ("35", THIRD_PARTY),
    "PiDRL chest 5-15 kg CTDIvol": ("1.8", THIRD_PARTY), "PiDRL chest 5-15 kg DLP": ("50", THIRD_PARTY),
    "PiDRL chest 15-30 kg CTDIvol": ("2.7", THIRD_PARTY), "PiDRL chest 15-30 kg DLP": ("70", THIRD_PARTY),
    "PiDRL chest 30-50 kg CTDIvol": ("3.7", THIRD_PARTY), "PiDRL chest 30-50 kg DLP": ("115", THIRD_PARTY),
    "PiDRL chest 50-80 kg CTDIvol": ("5.4", THIRD_PARTY), "PiDRL chest 50-80 kg DLP": ("200", THIRD_PARTY),
    "PiDRL abdomen < 5 kg DLP": ("45", THIRD_PARTY),
    "PiDRL abdomen 5-15 kg CTDIvol": ("3.5", THIRD_PARTY), "PiDRL abdomen 5-15 kg DLP": ("120", THIRD_PARTY),
    "PiDRL abdomen 15-30 kg CTDIvol": ("5.4", THIRD_PARTY), "PiDRL abdomen 15-30 kg DLP": ("150", THIRD_PARTY),
    "PiDRL abdomen 30-50 kg CTDIvol": ("7.3", THIRD_PARTY), "PiDRL abdomen 30-50 kg DLP": ("210", THIRD_PARTY),
    "PiDRL abdomen 50-80 kg CTDIvol": ("13", THIRD_PARTY), "PiDRL abdomen 50-80 kg DLP": ("480", THIRD_PARTY),
}

#: For each pack: (rule or trend name, key) -> the REFERENCE entry that number is, or PLACEHOLDER.
#: Every dose number of every pack is listed: a number that is not, or differs, fails.
PACK_VALUES: dict[str, dict[tuple[str, str], str]] = {
    "aapm-dose-check.toml": {
        ("Alert value, CTDIvol per series", "ctdivol"): "AAPM alert value (as an AAPM figure)",
        ("Paediatric head, under 2 years", "ctdivol"): "AAPM paediatric head < 2 y",
        ("Paediatric head, 2 to 5 years", "ctdivol"): "AAPM paediatric head 2-5 y",
        ("Paediatric torso, under 10 years, 16 cm phantom", "ctdivol"): "AAPM paediatric torso < 10 y, 16 cm",
        ("Paediatric torso, under 10 years, 32 cm phantom", "ctdivol"): "AAPM paediatric torso < 10 y, 32 cm",
        ("Brain perfusion", "ctdivol"): "AAPM brain perfusion",
        ("Cardiac, retrospectively gated (spiral)", "ctdivol"): "AAPM cardiac retrospective (spiral)",
        ("Cardiac, prospectively gated (sequential)", "ctdivol"): "AAPM cardiac prospective (sequential)",
        ("Adult head", "ctdivol"): "AAPM adult head",
        ("Adult torso", "ctdivol"): "AAPM adult torso",
    },
    "uk-ndrl-2022.toml": {
        ("UK NDRL: Head (acute stroke)", "drl_ctdivol"): "UK head CTDIvol",
        ("UK NDRL: Head (acute stroke)", "drl_dlp_total"): "UK head DLP",
        ("UK NDRL: Paranasal sinuses", "drl_ctdivol"): "UK sinuses CTDIvol",
        ("UK NDRL: Paranasal sinuses", "drl_dlp_total"): "UK sinuses DLP",
        ("UK NDRL: Cervical spine (fracture)", "drl_ctdivol"): "UK c-spine CTDIvol",
        ("UK NDRL: Cervical spine (fracture)", "drl_dlp_total"): "UK c-spine DLP",
        ("UK NDRL: Chest (lung cancer)", "drl_ctdivol"): "UK chest CTDIvol",
        ("UK NDRL: Chest (lung cancer)", "drl_dlp_total"): "UK chest DLP",
        ("UK NDRL: Chest HRCT (ILD, helical)", "drl_ctdivol"): "UK HRCT CTDIvol",
        ("UK NDRL: Chest HRCT (ILD, helical)", "drl_dlp_total"): "UK HRCT DLP",
        ("UK NDRL: CT pulmonary angiogram (CTPA)", "drl_ctdivol"): "UK CTPA CTDIvol",
        ("UK NDRL: CT pulmonary angiogram (CTPA)", "drl_dlp_total"): "UK CTPA DLP",
        ("UK NDRL: Chest and abdomen (lung cancer)", "drl_dlp_total"): "UK chest-abdomen DLP",
        ("UK NDRL: Chest, abdomen and pelvis (cancer)", "drl_dlp_total"): "UK CAP DLP",
        ("UK NDRL: Neck, chest, abdomen and pelvis (cancer)", "drl_dlp_total"): "UK NCAP DLP",
        ("UK NDRL: Abdomen and pelvis (abscess)", "drl_ctdivol"): "UK abdomen-pelvis CTDIvol",
        ("UK NDRL: Abdomen and pelvis (abscess)", "drl_dlp_total"): "UK abdomen-pelvis DLP",
        ("UK NDRL: KUB (stones, colic)", "drl_ctdivol"): "UK KUB CTDIvol",
        ("UK NDRL: KUB (stones, colic)", "drl_dlp_total"): "UK KUB DLP",
        ("UK NDRL: CT urogram", "drl_dlp_total"): "UK urogram DLP",
        ("UK NDRL: Virtual colonoscopy", "drl_dlp_total"): "UK virtual colonoscopy DLP",
    },
    "strlschv-anlage14.toml": {
        ("Anlage 14 I.2a: CT brain, CTDIvol over 120 mGy", "ctdivol"): "StrlSchV I.2a brain",
        ("Anlage 14 I.2a: other CT of the body, CTDIvol over 80 mGy", "ctdivol"): "StrlSchV I.2a body",
        ("Anlage 14 I.1: NNH, CTDIvol", "drl"): "DRW 2022 NNH CTDIvol",
        ("Anlage 14 I.1: NNH, DLP", "drl"): "DRW 2022 NNH DLP",
        ("DRW exceedance (§ 85 (1a) StrlSchG): NNH", "drl_ctdivol"): "DRW 2022 NNH CTDIvol",
        ("DRW exceedance (§ 85 (1a) StrlSchG): NNH", "drl_dlp_total"): "DRW 2022 NNH DLP",
    },
    "euclid.toml": {
        **{
            (f"EUCLID: {name}", key): f"EUCLID {ref} {quantity}"
            for name, ref in (
                ("Head, chronic sinusitis", "sinusitis"), ("Head, stroke", "stroke"),
                ("Neck, cervical spine trauma", "c-spine"), ("Chest, coronary calcium scoring", "calcium"),
                ("Chest, lung cancer", "lung cancer"), ("Chest, pulmonary embolism", "PE"),
                ("Chest, coronary CTA", "coronary CTA"), ("Abdomen, hepatocellular carcinoma", "HCC"),
                ("Abdomen, colic / abdominal pain", "colic"), ("Abdomen, appendicitis", "appendicitis"),
            )
            for key, quantity in (("drl_ctdivol", "CTDIvol"), ("drl_dlp_total", "DLP"))
        },
        **{
            (f"PiDRL: paediatric head, {name}", key): f"PiDRL head {band} {quantity}"
            for name, band in (
                ("under 3 months", "0-3 mo"), ("3 to 12 months", "3-12 mo"), ("1 to 6 years", "1-6 y"),
                ("6 years and over", ">= 6 y"),
            )
            for key, quantity in (("drl_ctdivol", "CTDIvol"), ("drl_dlp_total", "DLP"))
        },
        **{
            (f"PiDRL: paediatric {exam}, {name}", key): f"PiDRL {exam} {band} {quantity}"
            for exam in ("chest", "abdomen")
            for name, band in (
                ("under 5 kg", "< 5 kg"), ("5 to 15 kg", "5-15 kg"), ("15 to 30 kg", "15-30 kg"),
                ("30 to 50 kg", "30-50 kg"), ("50 to 80 kg", "50-80 kg"),
            )
            for key, quantity in (("drl_ctdivol", "CTDIvol"), ("drl_dlp_total", "DLP"))
            if (exam, band, quantity) != ("abdomen", "< 5 kg", "CTDIvol")  # "–" in the reference
        },
    },
    "local-drl.toml": {
        ("Local DRL: head, routine (CT North)", "drl_ctdivol"): PLACEHOLDER,
        ("Local DRL: head, routine (CT North)", "drl_dlp_total"): PLACEHOLDER,
        ("Local DRL: chest-abdomen-pelvis (CT North)", "drl_dlp_total"): PLACEHOLDER,
        ("Local DRL drift: head, routine (CT North)", "drl"): PLACEHOLDER,
    },
}

#: Bands and criteria parameters the reference states, as (table name, key) -> value.
PACK_BANDS: dict[str, dict[tuple[str, str], str]] = {
    "aapm-dose-check.toml": {
        ("Paediatric head, under 2 years", "age_max"): "2",
        ("Paediatric head, 2 to 5 years", "age_min"): "2",
        ("Paediatric head, 2 to 5 years", "age_max"): "6",  # "2-5 y": up to the 6th birthday
        ("Paediatric torso, under 10 years, 16 cm phantom", "age_max"): "10",
        ("Paediatric torso, under 10 years, 32 cm phantom", "age_max"): "10",
    },
    "strlschv-anlage14.toml": {  # I.1: the last 20 exams, mean > 2x DRW, once one exam > 3x DRW
        **{(name, key): value for name in ("Anlage 14 I.1: NNH, CTDIvol", "Anlage 14 I.1: NNH, DLP")
           for key, value in (("exams", "20"), ("above", "2"), ("armed_above", "3"))},
    },
    "euclid.toml": {
        ("PiDRL: paediatric head, under 3 months", "age_max"): "0.25",
        ("PiDRL: paediatric head, 3 to 12 months", "age_min"): "0.25",
        ("PiDRL: paediatric head, 3 to 12 months", "age_max"): "1",
        ("PiDRL: paediatric head, 1 to 6 years", "age_min"): "1",
        ("PiDRL: paediatric head, 1 to 6 years", "age_max"): "6",
        ("PiDRL: paediatric head, 6 years and over", "age_min"): "6",
        **{(f"PiDRL: paediatric {exam}, {name}", key): value
           for exam in ("chest", "abdomen")
           for name, band in (("under 5 kg", (None, "5")), ("5 to 15 kg", ("5", "15")), ("15 to 30 kg", ("15", "30")),
                              ("30 to 50 kg", ("30", "50")), ("50 to 80 kg", ("50", "80")))
           for key, value in zip(("weight_min", "weight_max"), band, strict=True) if value is not None},
    },
}
# fmt: on

BAND_KEYS = ("age_min", "age_max", "weight_min", "weight_max", "exams", "above", "armed_above")


def pack_text(pack: str) -> str:
    return (PACKS / pack).read_text(encoding="utf-8")


def tables(pack: str) -> list[dict[str, object]]:
    """Every [[rule]], [[trend]] and [[cumulative]] of a pack."""
    document = tomllib.loads(pack_text(pack))
    return [table for kind in ("rule", "trend", "cumulative") for table in document.get(kind, [])]


def numbers(pack: str, keys: tuple[str, ...]) -> dict[tuple[str, str], str]:
    """(table name, key) -> the number as written (normalised: 8.0 and 8 are both "8")."""
    return {
        (str(table["name"]), key): format(Decimal(str(table[key])).normalize(), "f")
        for table in tables(pack)
        for key in keys
        if key in table
    }


def value_line(pack: str, name: str, key: str) -> str:
    """The line of ``key = ...`` in the table named ``name`` (comment lines skipped)."""
    table_name: str | None = None
    for line in pack_text(pack).splitlines():
        if re.match(r"\s*\[\[\w+\]\]", line):
            table_name = None
        elif m := re.match(r'\s*name\s*=\s*"(.*)"', line):
            table_name = m.group(1)
        elif table_name == name and re.match(rf"\s*{key}\s*=", line):
            return line
    raise AssertionError(f"{pack}: no line '{key} = ...' in '{name}'")


def header(pack: str) -> str:
    """The comment lines at the top of a pack."""
    lines = pack_text(pack).splitlines()
    return "\n".join(line for line in lines[: next(i for i, x in enumerate(lines) if not x.startswith("#"))])


def test_every_pack_is_listed_here():
    assert sorted(p.name for p in PACKS.glob("*.toml")) == sorted(PACK_FILES)
    assert (PACKS / "README.md").exists()


@pytest.mark.parametrize("pack", PACK_FILES)
def test_each_pack_is_a_valid_rules_file(pack):
    rules = parse_rules(pack_text(pack), source=f"examples/packs/{pack}")
    assert rules.rules


@pytest.mark.parametrize("pack", PACK_FILES)
def test_each_number_in_a_pack_is_the_references_number(pack):
    written = numbers(pack, DOSE_KEYS)
    expected = {
        place: (PLACEHOLDER if ref == PLACEHOLDER else format(Decimal(REFERENCE[ref][0]).normalize(), "f"))
        for place, ref in PACK_VALUES[pack].items()
    }
    assert set(written) == set(expected), "a dose value was added to or removed from the pack: list it here"
    for place, value in written.items():
        if expected[place] != PLACEHOLDER:
            assert value == expected[place], f"{pack}: {place}: {value}, the reference says {expected[place]}"


@pytest.mark.parametrize("pack", PACK_FILES)
def test_the_bands_and_trend_parameters_of_a_pack_are_the_references(pack):
    written = numbers(pack, BAND_KEYS)
    for place, value in PACK_BANDS.get(pack, {}).items():
        assert written.get(place) == format(Decimal(value).normalize(), "f"), f"{pack}: {place}"


def test_two_packs_that_use_one_reference_value_agree():
    uses: dict[str, set[str]] = {}
    for pack, places in PACK_VALUES.items():
        written = numbers(pack, DOSE_KEYS)
        for place, ref in places.items():
            if ref != PLACEHOLDER:
                uses.setdefault(ref, set()).add(written[place])
    assert {ref: values for ref, values in uses.items() if len(values) > 1} == {}


@pytest.mark.parametrize("pack", PACK_FILES)
def test_each_value_the_reference_does_not_vouch_for_says_so_on_its_line(pack):
    for (name, key), ref in PACK_VALUES[pack].items():
        line = value_line(pack, name, key)
        marker = PLACEHOLDER if ref == PLACEHOLDER else REFERENCE[ref][1]
        if marker is not None:
            assert marker in line.partition("#")[2], f"{pack}: '{name}' {key}: no {marker} comment: {line}"
            assert marker in header(pack), f"{pack}: the header does not mention {marker}"


@pytest.mark.parametrize("pack", PACK_FILES)
def test_each_pack_names_its_source_version_and_date_in_its_header(pack):
    top = header(pack)
    assert re.search(r"^# Source:", top, re.M) and re.search(r"^# Version:", top, re.M), pack
    assert re.search(r"https?://|\[[NS]\d+\]", top), f"{pack}: no source key or URL"
    assert re.search(r"\b20\d\d\b", top), f"{pack}: no year"


@pytest.mark.parametrize("pack", PACK_FILES)
def test_no_pack_writes_a_bare_list_of_alternatives(pack):
    for table in tables(pack):
        for key in TEXT_KEYS:
            value = table.get(key)
            assert not (isinstance(value, list) and len(value) > 1), f"{pack}: '{table['name']}' {key}: use {{ any = }}"


def test_the_uk_pack_leaves_out_coronary_cta_and_says_why():
    assert not any("coronary" in str(t["name"]).casefold() for t in tables("uk-ndrl-2022.toml"))
    assert re.search(r"Coronary CT angiography.*\n.*\[unverified\]", header("uk-ndrl-2022.toml"))


def test_the_uk_pack_notifies_above_a_multiple_and_says_how_to_tune_it():
    rules = tables("uk-ndrl-2022.toml")
    assert {t["notify_above"] for t in rules} == {2}
    assert {t["reference"] for t in rules} == {"UK NDRL 2022 (gov.uk, 20 Nov 2024)"}
    assert "ctpoller backfill --since 2026-01-01 --dry-run --stats" in header("uk-ndrl-2022.toml")


def test_the_aapm_alert_rule_is_above_every_stop_rule():
    rules = tables("aapm-dose-check.toml")
    [alert] = [t for t in rules if t.get("severity") == "alert"]
    assert all(alert["priority"] > t.get("priority", 0) for t in rules if t.get("stop"))
    assert not alert.get("stop")


# ------------------------------------------------------------------------------ what the packs do with exams


def rules_of(pack: str) -> RuleSet:
    return parse_rules(pack_text(pack), source=f"examples/packs/{pack}")


def an_exam(
    *series: tuple[str | None, str, str | None, str | None],
    description: str | None = None,
    age: str | None = None,
    weight: str | None = None,
    total_dlp: str | None = None,
) -> Exam:
    """One exam; each series is (protocol, CTDIvol mGy, phantom, acquisition type code)."""
    events = tuple(
        Event(
            key=f"1.2.3.{number}",
            event_pk=number,
            study_pk=1,
            protocol=protocol,
            ctdivol_mgy=Decimal(ctdivol),
            phantom=phantom,  # type: ignore[arg-type]
            acquisition_type_code=code,
        )
        for number, (protocol, ctdivol, phantom, code) in enumerate(series, start=1)
    )
    row = StudyRow(
        pk=1,
        uid="1.2.3",
        description=description,
        total_dlp_mgycm=None if total_dlp is None else Decimal(total_dlp),
        patient_age_decimal=None if age is None else Decimal(age),
        patient_weight_kg=None if weight is None else Decimal(weight),
        events=events,
    )
    return Exam(uid="1.2.3", rows=(row,))


def found(exam: Exam, pack: str) -> set[tuple[str, str, Decimal, str]]:
    return {(e.rule, e.metric, e.limit, e.severity) for e in evaluate(exam, rules_of(pack))}


SPIRAL, SEQUENCED, STATIONARY = "P5-08001", "113804", "113806"


def test_aapm_a_childs_head_series_is_compared_with_the_paediatric_value_only():
    child = an_exam(("Head routine", "90", "head", SPIRAL), age="1.5")
    assert found(child, "aapm-dose-check.toml") == {
        ("Paediatric head, under 2 years", "ctdivol", Decimal(50), "notification")
    }
    adult = an_exam(("Head routine", "90", "head", SPIRAL), age="40")
    assert found(adult, "aapm-dose-check.toml") == {("Adult head", "ctdivol", Decimal(80), "notification")}


def test_aapm_the_alert_value_is_checked_whatever_rule_replaced_the_adult_one():
    child = an_exam(("Head perfusion", "1200", "head", STATIONARY), age="4")
    assert found(child, "aapm-dose-check.toml") == {
        ("Alert value, CTDIvol per series", "ctdivol", Decimal(1000), "alert"),
        ("Brain perfusion", "ctdivol", Decimal(600), "notification"),
    }


def test_aapm_cardiac_values_follow_the_acquisition_type():
    spiral = an_exam(("Cardiac CTA", "120", "body", SPIRAL), age="60")
    assert found(spiral, "aapm-dose-check.toml") == set()  # 120 < 150, and "Adult torso" (50) is replaced
    sequenced = an_exam(("Cardiac CTA", "60", "body", SEQUENCED), age="60")
    assert found(sequenced, "aapm-dose-check.toml") == {
        ("Cardiac, prospectively gated (sequential)", "ctdivol", Decimal(50), "notification")
    }


def test_uk_ndrl_limits_are_the_ndrl_times_the_multiple():
    kub = an_exam(("KUB", "7", "body", SPIRAL), description="CT KUB", age="50", total_dlp="600")
    [exceedance] = evaluate(kub, rules_of("uk-ndrl-2022.toml"))
    assert (exceedance.rule, exceedance.metric, exceedance.limit) == ("UK NDRL: KUB (stones, colic)", "dlp_total", 580)
    assert (exceedance.reference_value, exceedance.multiple) == (Decimal("290"), Decimal(2))
    assert exceedance.reference == "UK NDRL 2022 (gov.uk, 20 Nov 2024)"


def test_uk_ndrl_a_localiser_or_monitoring_scan_is_not_a_sequence_of_the_indication():
    chest = an_exam(("Monitoring", "40", "body", STATIONARY), ("Thorax", "5", "body", SPIRAL), description="CT Chest")
    assert found(chest, "uk-ndrl-2022.toml") == set()


def test_strlschv_a_brain_series_is_an_alert_above_120_mgy_and_another_head_series_above_80():
    brain = an_exam(("Schädel nativ", "100", "head", SEQUENCED), age="70")
    assert found(brain, "strlschv-anlage14.toml") == set()  # the brain rule took it from the 80 mGy rule
    facial = an_exam(("Gesichtsschädel", "100", "head", SPIRAL), age="70")
    assert found(facial, "strlschv-anlage14.toml") == {
        ("Anlage 14 I.2a: other CT of the body, CTDIvol over 80 mGy", "ctdivol", Decimal(80), "alert")
    }
    above = an_exam(("CCT", "130", "head", SEQUENCED), age="70")
    assert found(above, "strlschv-anlage14.toml") == {
        ("Anlage 14 I.2a: CT brain, CTDIvol over 120 mGy", "ctdivol", Decimal(120), "alert")
    }


def test_euclid_a_childs_chest_is_compared_with_its_weight_band_not_with_the_adult_indication():
    child = an_exam(("Thorax", "3", "body", SPIRAL), description="CT Chest", age="8", weight="25", total_dlp="150")
    assert found(child, "euclid.toml") == {
        ("PiDRL: paediatric chest, 15 to 30 kg", "dlp_total", Decimal(140), "notification")
    }
    unknown_weight = an_exam(("Thorax", "3", "body", SPIRAL), description="CT Chest", age="8", total_dlp="150")
    assert found(unknown_weight, "euclid.toml") == set()  # the adult lung-cancer DRL: 150 < 2 x 348


def test_the_packs_can_be_combined_in_one_file_without_a_name_clash():
    names = [rule_identity(str(table["name"])) for pack in PACK_FILES for table in tables(pack)]
    assert len(names) == len(set(names))
