"""Properties that must hold for every input, checked with hypothesis on the pure parts of ctpoller:
limits are monotonic, word matching is plain case-insensitive substring matching, no archive cell ever
becomes a formula, and any Unicode survives the email and the workbook."""

from __future__ import annotations

import email
import email.policy
import tempfile
import unicodedata
from datetime import UTC, date, datetime, time
from decimal import Decimal
from pathlib import Path

import markupsafe
import openpyxl
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from ctpoller.archive import xlsx
from ctpoller.archive.columns import columns, row_cells
from ctpoller.archive.xlsx import cell_text
from ctpoller.core.exam import Event, Exam, StudyRow
from ctpoller.core.model import ArchiveRow, Message, Notification
from ctpoller.core.rules import evaluate, parse_rules
from ctpoller.mail.eml import EmlDirectoryNotifier
from ctpoller.mail.render import MISSING, one_line, subject
from support import factories

pytestmark = pytest.mark.reliability

COLUMNS = columns("UTC")


def write_archive(rows: list[ArchiveRow], path: Path) -> int:
    cells = (row_cells(row, "nkey", {}, None, UTC, "UTC") for row in rows)
    return xlsx.write_archive(COLUMNS, cells, path)


PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FILES = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# -- generated exams ----------------------------------------------------------------------------------

WORDS = ("head", "HEAD", "ped", "Thorax", "abdomen", "Ø", "straße", "STRASSE", "perfusion", "ß", "İ", "ǰ")

doses = st.one_of(
    st.none(),
    st.sampled_from([Decimal("NaN"), Decimal("Infinity"), Decimal("-Infinity"), Decimal("-5"), Decimal(0)]),
    st.decimals(min_value=-10, max_value=5000, places=2, allow_nan=False, allow_infinity=False),
)


@st.composite
def exams(draw: st.DrawFn) -> Exam:
    rows = []
    for pk in range(1, draw(st.integers(1, 3)) + 1):
        events = tuple(
            Event(
                key=draw(st.sampled_from(["1.2.3.1", "1.2.3.2", "1.2.3.3", f"no-uid:{pk}.{n}"])),
                event_pk=pk * 100 + n,
                study_pk=pk,
                protocol=draw(st.none() | st.sampled_from([" ".join(WORDS[:3]), "Thorax routine", "perfusion head"])),
                phantom=draw(st.sampled_from([None, "head", "body"])),
                ctdivol_mgy=draw(doses),
                dlp_mgycm=draw(doses),
            )
            for n in range(draw(st.integers(0, 5)))
        )
        rows.append(
            StudyRow(
                pk=pk,
                uid="1.2.3",
                description=draw(st.none() | st.sampled_from(["CT HEAD PED", "Thorax", ""])),
                total_dlp_mgycm=draw(doses),
                patient_age_decimal=draw(st.none() | st.decimals(0, 100, places=1)),
                events=events,
            )
        )
    return Exam(uid="1.2.3", rows=tuple(rows))


limits = st.decimals(min_value=Decimal("0.01"), max_value=6000, places=2)
criteria = st.sampled_from(
    ["", 'protocol = "head"', 'not_protocol = "perfusion"', 'phantom = "body"', 'study = "ped"', "age_max = 18"]
)


def one_rule(metric: str, limit: Decimal, criterion: str) -> str:
    return f'[[rule]]\nname = "r"\n{criterion}\n{metric} = {limit}\n'


def found(exam: Exam, text: str) -> dict[tuple[str, str, str], Decimal]:
    return {(x.rule, x.metric, x.event_key): x.value for x in evaluate(exam, parse_rules(text, source="generated"))}


@PROPERTY
@given(exams(), st.sampled_from(["ctdivol", "dlp", "dlp_total"]), limits, limits, criteria)
def test_raising_a_limit_removes_exactly_the_exceedances_at_or_under_the_new_limit(
    exam, metric, first, second, criterion
):
    low, high = sorted((first, second))
    at_low = found(exam, one_rule(metric, low, criterion))
    at_high = found(exam, one_rule(metric, high, criterion))

    assert set(at_high) <= set(at_low), "raising a limit added an exceedance"
    assert at_high == {key: value for key, value in at_low.items() if value > high}
    assert all(value > low and value.is_finite() for value in at_low.values())


# -- word matching ----------------------------------------------------------------------------------


def toml_string(text: str) -> str:
    escaped = []
    for char in text:
        if char in '"\\':
            escaped.append("\\" + char)
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            escaped.append(f"\\u{ord(char):04x}")
        else:
            escaped.append(char)
    return '"' + "".join(escaped) + '"'


def reference_match(words: list[str], value: str | None) -> bool:
    """The documented rule in its simplest form: every word is a case-insensitive substring."""
    return bool(value) and all(word.casefold() in value.casefold() for word in words)


def normalisation_neutral(text: str) -> bool:
    """Text for which Unicode normalisation changes nothing, before or after case folding."""
    return all(unicodedata.normalize("NFC", t) == t for t in (text, text.casefold()))


def protocol_matches(value: str | None, criterion: str) -> bool:
    rules = parse_rules(f'[[rule]]\nname = "r"\nprotocol = {criterion}\nctdivol = 1\n', source="generated")
    event = Event(key="1.2.3.1", event_pk=1, study_pk=1, protocol=value, ctdivol_mgy=Decimal(100))
    return bool(evaluate(Exam(uid="1.2.3", rows=(StudyRow(pk=1, uid="1.2.3", events=(event,)),)), rules))


word = st.text(st.characters(exclude_categories=("Cs", "Z", "Cc")), min_size=1, max_size=6).filter(
    lambda w: w.strip() == w and bool(w.split())
)
value_text = st.one_of(
    st.none(),
    st.text(max_size=40),
    st.lists(st.sampled_from([*WORDS, " ", "-", "_"]), max_size=8).map("".join),
)


@PROPERTY
@given(st.lists(st.one_of(word, st.sampled_from(WORDS)), min_size=1, max_size=4), value_text)
@example(["straße"], "STRASSE")
@example(["ped", "head"], "HEAD PED ROUTINE")
@example(["HEAD"], "")
def test_word_matching_agrees_with_plain_case_insensitive_substrings(words, value):
    assume(all(normalisation_neutral(w) for w in words) and normalisation_neutral(value or ""))
    expected = reference_match(words, value)

    as_list = "[[" + ", ".join(toml_string(w) for w in words) + "]]"
    assert protocol_matches(value, as_list) == expected
    if not any(w.split() != [w] for w in words) and not words[0].startswith("re:"):
        assert protocol_matches(value, toml_string(" ".join(words))) == expected


@PROPERTY
@given(st.lists(st.sampled_from(["é", "Å", "ñ", "ǰ", "ễ", "ḱ", "Head"]), min_size=1, max_size=3), st.text(max_size=10))
def test_word_matching_does_not_depend_on_how_the_text_is_normalised(words, filler):
    value = filler + "".join(reversed(words)) + filler
    composed = protocol_matches(unicodedata.normalize("NFC", value), "[[" + ", ".join(map(toml_string, words)) + "]]")
    decomposed = protocol_matches(unicodedata.normalize("NFD", value), "[[" + ", ".join(map(toml_string, words)) + "]]")
    assert composed == decomposed == True  # noqa: E712 - the words are all in the value


# -- the archive --------------------------------------------------------------------------------------

formula_like = st.sampled_from(
    ['=HYPERLINK("http://x","y")', "+cmd|' /C calc'!A0", "@SUM(A1)", "-2+3", "\t=1", "\r=1", "=", "'=x"]
)
any_text = st.one_of(st.none(), st.text(max_size=60), formula_like, formula_like.map(lambda f: f + "\x00\x0b\r\n"))
numbers = st.one_of(doses, st.decimals(allow_nan=True, allow_infinity=True).filter(lambda d: not d.is_snan()))


@st.composite
def archive_rows(draw: st.DrawFn) -> ArchiveRow:
    notification = Notification(
        study_uid=draw(any_text) or "1.2.3",
        rule=draw(any_text) or "rule",
        metric=draw(st.sampled_from(["ctdivol", "dlp", "dlp_total", "=cmd"])),
        event_key=draw(any_text) or "",
        value=draw(numbers) or Decimal(1),
        limit=draw(st.decimals(min_value=Decimal("0.01"), max_value=10**6, places=2)),
        unit=draw(st.sampled_from(["mGy", "mGy·cm", "=1"])),
        previous_value=draw(numbers),
        protocol=draw(any_text),
        station_name=draw(any_text),
        display_name=draw(any_text),
        study_date=draw(st.none() | st.dates(min_value=date(1900, 1, 1))),
        study_time=draw(st.none() | st.times()),
        description=draw(any_text),
        accession_number=draw(any_text),
    )
    return ArchiveRow(
        notification=notification,
        created_at=datetime(2026, 3, 2, 9, 0, tzinfo=UTC),
        status=draw(st.sampled_from(["pending", "sent", "failed", "not_sent"])),
        message_id=draw(any_text) or "<m@x>",
        error=draw(any_text),
    )


TEXT_COLUMNS = {"Station": "station_name", "Display name": "display_name", "Accession number": "accession_number",
                "Study description": "description", "Protocol": "protocol", "Rule": "rule"}  # fmt: skip


def written(rows: list[ArchiveRow]) -> list[list[openpyxl.cell.Cell]]:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "archive.xlsx"
        assert write_archive(rows, path) == len(rows)
        workbook = openpyxl.load_workbook(path)
        try:
            return [list(row) for row in workbook.active.iter_rows()]
        finally:
            workbook.close()


@FILES
@given(st.lists(archive_rows(), min_size=1, max_size=4))
def test_no_archive_cell_is_ever_a_formula_and_text_round_trips(rows):
    sheet = written(rows)

    cells = [cell for row in sheet for cell in row]
    assert not [cell.coordinate for cell in cells if cell.data_type == "f"]
    formula_like = [c for c in cells if isinstance(c.value, str) and c.value.startswith(("=", "+", "-", "@"))]
    assert all(c.data_type == "s" and c.quotePrefix for c in formula_like)
    header = [cell.value for cell in sheet[0]]
    assert header == [column.header for column in COLUMNS]
    for archive_row, cells_of_row in zip(rows, sheet[1:], strict=True):
        for title, attribute in TEXT_COLUMNS.items():
            original = getattr(archive_row.notification, attribute)
            shown = cells_of_row[header.index(title)].value
            assert (shown or "") == cell_text(original or ""), f"{title}: {original!r} came back as {shown!r}"


# -- email --------------------------------------------------------------------------------------------

unicode_text = st.text(max_size=80)


def message_with(texts: dict[str, str | None]) -> Message:
    told = factories.notification(
        study_uid="1.2.826.0.1.3680043.10.1234.4",
        rule=texts.get("rule") or "Body CTDIvol",
        event_key="1.2.826.0.1.3680043.10.1234.4.2.23",
        value=Decimal("176.12"),
        limit=Decimal(50),
        protocol=texts.get("protocol"),
        station_name=texts.get("station_name"),
        display_name=texts.get("display_name"),
        study_time=time(8, 15),
        description=texts.get("description"),
        accession_number=texts.get("accession_number"),
    )
    return factories.message(
        told,
        id=1,
        message_id="<a1b2c3@hospital.example>",
        study_uid=told.study_uid,
        recipients=("physics@hospital.example",),
    )


def transported(message: Message) -> email.message.EmailMessage:
    """The message as ctpoller writes it (the .eml outbox: the bytes an SMTP server would get), parsed."""
    with tempfile.TemporaryDirectory() as directory:
        EmlDirectoryNotifier(Path(directory), mail_from="ctpoller@hospital.example").send(message)
        [eml] = Path(directory).glob("*.eml")
        raw = eml.read_bytes()
    assert all(len(line) <= 998 for line in raw.split(b"\r\n")), "a line longer than SMTP allows"
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(parsed, email.message.EmailMessage)
    return parsed


LABELS = {"protocol": "Protocol", "station_name": "Station name", "display_name": "Display name",
          "description": "Study description", "accession_number": "Accession number", "rule": "Rule"}  # fmt: skip


@PROPERTY
@given(st.fixed_dictionaries({key: st.none() | unicode_text for key in LABELS}))
@example({key: 'Kopf ÄÖÜ äöü ß \u202eRTL\u202c =HYPERLINK("x") \x00\x1b\r\nBcc: x@y.z' for key in LABELS})
def test_any_unicode_in_exam_texts_survives_the_email_body(texts):
    parsed = transported(message_with(texts))

    assert parsed["Bcc"] is None and parsed["Message-ID"] == "<a1b2c3@hospital.example>"
    plain = parsed.get_body(("plain",)).get_content()
    rich = parsed.get_body(("html",)).get_content()
    notification = message_with(texts).notifications[0]
    for key in LABELS:
        shown = one_line(getattr(notification, key))
        assert shown in plain, f"{key} {texts[key]!r} is not shown as {shown!r}"
        assert str(markupsafe.escape(shown)) in rich  # the HTML template escapes every value
    for key, label in (("description", "Description"), ("accession_number", "Accession number")):
        shown = one_line(getattr(notification, key)) or MISSING
        assert f"{label}: {shown}" in plain


@PROPERTY
@given(unicode_text, unicode_text)
@example("Kopf ÜBERSICHT ÄÖÜ äöü ß Nachuntersuchung Schädelbasis Felsenbein", "Süd")
def test_the_subject_keeps_every_word_and_space_through_the_mail_transport(description, display_name):
    message = message_with({"description": description, "display_name": display_name})

    received = str(transported(message)["Subject"])

    assert " ".join(received.split()) == subject(message)
