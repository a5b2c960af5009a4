"""The notification email: what it says, what it never says, and that hostile text cannot break it."""

from __future__ import annotations

import email
import email.policy
import os
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from email.message import EmailMessage
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from markupsafe import escape

from ctpoller.core.exam import age_range
from ctpoller.core.model import Message
from ctpoller.mail.render import SUBJECT_MAX, Look, format_decimal, one_line, render_email
from ctpoller.mail.view import format_ratio
from support.factories import message, notification

MAIL_FROM = "ctpoller@hospital.example"


def roundtrip(msg: EmailMessage) -> EmailMessage:
    data = msg.as_bytes(policy=email.policy.SMTP)
    parsed = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def bodies(msg: EmailMessage) -> tuple[str, str]:
    parsed = roundtrip(msg)
    plain = parsed.get_body(("plain",))
    rich = parsed.get_body(("html",))
    assert plain is not None and rich is not None
    return plain.get_content(), rich.get_content()


GOLDEN = Path(__file__).parents[1] / "data" / "golden"
SITE = Look(openrem_url="https://openrem.hospital.example", zone=ZoneInfo("Europe/London"))


def golden_message() -> Message:
    """An update about a real-looking exam: a rise, a new event and a Dose Check with who authorised
    proceeding past it and why."""
    exam = dict(
        requested_procedure="CT Head",
        age="17 y",
        sex="F",
        study_pk=4711,
    )
    rose = notification(
        **exam,
        value=Decimal("80.50000000"),
        previous_value=Decimal("76.00000000"),
        acquisition_type="Spiral Acquisition",
        phantom="head",
        series="Helical 5mm",
        event_number=3,
    )
    new = notification(
        **exam,
        rule="adult body",
        metric="dlp_total",
        event_key="",
        value=Decimal("2002.39"),
        limit=Decimal("2000"),
        unit="mGy·cm",
    )
    dose_check = notification(
        **exam,
        rule="Scanner Dose Check",
        metric="dose_check_ctdivol_notification",
        event_key="1.2.3.4.6",
        value=Decimal("61.2"),
        limit=Decimal("60"),
        acquisition_type="Sequenced Acquisition",
        phantom="body",
        event_number=4,
        reason="Large patient, <b>approved</b> by radiologist",
        authorised_by="Radiographer on duty",
    )
    return message(rose, new, dose_check, created_at=datetime(2026, 7, 2, 9, 0, tzinfo=UTC), thread_root="<first@h>")


def parts(msg: EmailMessage) -> tuple[EmailMessage, str, str]:
    parsed = roundtrip(msg)
    plain, rich = parsed.get_body(("plain",)), parsed.get_body(("html",))
    assert plain is not None and rich is not None
    return parsed, plain.get_content().replace("\r\n", "\n"), rich.get_content().replace("\r\n", "\n")


def alert_message() -> Message:
    """A first email with an alert (a plain limit whose rule names its source) beside a notification."""
    exam = dict(age="6 y", sex="M", study_pk=815, description="CT HEAD PAED", requested_procedure="CT Head child")
    alert = notification(
        **exam,
        rule="Paed head (AAPM)",
        value=Decimal("61.30000000"),
        limit=Decimal("50"),
        severity="alert",
        reference="AAPM Dose Check 2011",
        acquisition_type="Sequenced Acquisition",
        phantom="head",
        series="Head seq 5mm",
        event_number=2,
    )
    dlp = notification(
        **exam,
        rule="Paed head DLP",
        metric="dlp_total",
        event_key="",
        value=Decimal("1042.7"),
        limit=Decimal("1000"),
        unit="mGy·cm",
    )
    return message(alert, dlp)


def drl_message() -> Message:
    """A first email with limits from a national reference level: twice it, and the level itself."""
    exam = dict(age="54 y", sex="F", study_pk=2207, description="CT CHEST ABDO PELVIS", requested_procedure="CT CAP")
    twice = notification(
        **exam,
        rule="CAP over 2 × NDRL",
        value=Decimal("28.40000000"),
        limit=Decimal("26.0"),
        reference="UK NDRL 2022",
        reference_value=Decimal("13"),
        multiple=Decimal("2.0"),
        protocol="Chest-Abdo-Pelvis",
        acquisition_type="Spiral Acquisition",
        phantom="body",
        series="CAP 2mm",
        event_number=2,
    )
    level = notification(
        **exam,
        rule="CAP exam DLP over NDRL",
        metric="dlp_total",
        event_key="",
        value=Decimal("1187.5"),
        limit=Decimal("940"),
        unit="mGy·cm",
        protocol="Chest-Abdo-Pelvis",
        reference="UK NDRL 2022",
        reference_value=Decimal("940"),
        multiple=Decimal("1"),
    )
    return message(twice, level)


def trend_message() -> Message:
    """A first email about a scanner trend: the exam that took the mean of the last 20 over 2 × the DRW."""
    trend = notification(
        age="45 y",
        sex="F",
        study_pk=9120,
        rule="Head CT group criterion (StrlSchV Anlage 14 I.1)",
        metric="trend_ctdivol",
        event_key="",
        protocol=None,
        value=Decimal("141.8"),
        limit=Decimal("130"),
        severity="alert",
        reference="BfS DRW 2022",
        reference_value=Decimal("65"),
        multiple=Decimal("2"),
        detail="mean of the last 20 exams on Main CT: 141.8 mGy (2.18 × 65 mGy BfS DRW 2022); "
        "armed by the exam of 2026-03-02 14:05 at 210 mGy (3.23 ×)",
    )
    return message(trend)


GOLDEN_MESSAGES = {
    "update": golden_message,
    "first": lambda: message(notification(age="11 mo", sex="M", study_pk=12)),
    "alert": alert_message,
    "drl": drl_message,
    "trend": trend_message,
}


@pytest.mark.parametrize("name", list(GOLDEN_MESSAGES))
def test_the_email_reads_back_exactly_as_the_golden_text_and_html(name: str) -> None:
    sent = GOLDEN_MESSAGES[name]()
    parsed, text, rich = parts(render_email(sent, mail_from=MAIL_FROM, look=SITE))

    if os.environ.get("UPDATE_GOLDEN"):  # regenerate after a deliberate change, then review the diff
        (GOLDEN / f"exceedance-{name}.txt").write_text(f"Subject: {parsed['Subject']}\n\n{text}", encoding="utf-8")
        (GOLDEN / f"exceedance-{name}.html").write_text(rich, encoding="utf-8")
    assert f"Subject: {parsed['Subject']}\n\n{text}" == (GOLDEN / f"exceedance-{name}.txt").read_text(encoding="utf-8")
    assert rich == (GOLDEN / f"exceedance-{name}.html").read_text(encoding="utf-8")


def test_subject_names_the_highest_ratio_the_exam_the_scanner_and_the_date() -> None:
    msg = render_email(
        message(notification(), notification(metric="dlp", unit="mGy·cm", value=Decimal("900"), limit=Decimal("500"))),
        mail_from=MAIL_FROM,
    )

    assert msg["Subject"] == (
        "CT dose up to 1.80× limit (2 exceedances): CT HEAD WITHOUT CONTRAST at Main CT (CTAWP00001), 2026-03-02"
    )


def test_subject_falls_back_to_station_name_then_placeholders() -> None:
    with_station = render_email(message(notification(display_name=None)), mail_from=MAIL_FROM)
    bare = render_email(
        message(notification(display_name=None, station_name=None, description=None, study_date=None)),
        mail_from=MAIL_FROM,
    )

    assert " at CTAWP00001, " in with_station["Subject"]
    assert bare["Subject"] == "CT dose 1.52× limit: no description at unknown station, unknown date"


@pytest.mark.parametrize(
    ("value", "limit", "shown"),
    [
        ("76", "50", "1.52×"),
        ("2002.39", "2000", "1.001×"),  # two decimals would say 1.00×: one more
        ("2000.001", "2000", "1.0001×"),  # four decimals, the last rounded up
        ("2000.00000001", "2000", "1.0001×"),
        ("2010", "2000", "1.005×"),  # 1.005 rounds half-even to 1.00 at two decimals: one more
        ("2000", "2000", "1.00×"),  # not over the limit: no extra digits
        ("150", "100", "1.50×"),
        ("5", "0", "∞×"),
    ],
)
def test_a_ratio_over_the_limit_never_shows_as_the_limit(value: str, limit: str, shown: str) -> None:
    assert format_ratio(Decimal(value), Decimal(limit)) == shown


@settings(max_examples=300, deadline=None)
@given(
    limit=st.decimals(min_value=Decimal("0.001"), max_value=Decimal(100_000), places=4),
    over=st.decimals(min_value=Decimal("0.0001"), max_value=Decimal(10), places=4),
)
def test_any_value_over_its_limit_shows_a_ratio_above_one(limit: Decimal, over: Decimal) -> None:
    assert Decimal(format_ratio(limit + over, limit).rstrip("×")) > 1


def test_an_update_says_what_is_new_and_what_rose_and_threads_under_the_first_email() -> None:
    parsed, text, rich = parts(render_email(golden_message(), mail_from=MAIL_FROM))

    assert parsed["Subject"].startswith("Update: CT dose up to 1.61× limit (3 exceedances): ")
    assert parsed["In-Reply-To"] == "<first@h>"
    assert parsed["References"] == "<first@h>"
    assert "Rose: CTDIvol (event) of event 3 (series Helical 5mm) from 76 to 80.5 mGy" in text
    assert "New: the whole exam over its limit: DLP (exam total) 2002.39 mGy·cm" in text
    assert "a dose rose" not in text
    assert "Rose: CTDIvol (event) of event 3 (series Helical 5mm) from 76 to 80.5 mGy" in rich


def test_a_new_exceedance_of_an_exam_emailed_before_is_an_update_that_says_new_not_rose() -> None:
    later = message(notification(event_key="1.2.3.9", event_number=7), thread_root="<first@h>")
    parsed, text, _ = parts(render_email(later, mail_from=MAIL_FROM))

    assert parsed["Subject"].startswith("Update: ")
    assert "New: event 7 over its limit: CTDIvol (event) 76 mGy" in text
    assert "rose" not in text.lower().replace("a later rise", "")


def test_first_email_does_not_claim_to_be_an_update_nor_to_reply_to_anything() -> None:
    parsed, text, _ = parts(render_email(message(), mail_from=MAIL_FROM))

    assert "update" not in parsed["Subject"].lower()
    assert parsed["In-Reply-To"] is None and parsed["References"] is None
    assert "rose from" not in text


def test_the_link_goes_to_the_exam_in_openrem_only_when_the_address_is_set() -> None:
    with_link = parts(render_email(message(notification(study_pk=42)), mail_from=MAIL_FROM, look=SITE))
    without = parts(render_email(message(notification(study_pk=42)), mail_from=MAIL_FROM))

    assert "https://openrem.hospital.example/openrem/ct/42/" in with_link[1]
    assert '<a href="https://openrem.hospital.example/openrem/ct/42/">' in with_link[2]
    assert "/openrem/ct/" not in without[1] and "/openrem/ct/" not in without[2]


def test_ctpollers_own_time_is_in_the_site_zone_and_the_study_time_is_the_scanners_own() -> None:
    summer = datetime(2026, 7, 2, 9, 0, tzinfo=UTC)
    parsed, text, _ = parts(render_email(message(created_at=summer), mail_from=MAIL_FROM, look=SITE))

    assert "Found by ctpoller at 2026-07-02 10:00 BST." in text
    assert "2026-03-02 08:15:30 (scanner's local time)" in text  # as OpenREM stores it, not converted
    assert parsed["Date"] == "Thu, 02 Jul 2026 10:00:00 +0100"


def test_headers_carry_sender_recipients_date_and_the_exact_message_id() -> None:
    created = datetime(2026, 3, 2, 10, 30, tzinfo=timezone(timedelta(hours=1)))
    parsed = roundtrip(render_email(message(created_at=created), mail_from=MAIL_FROM))

    assert parsed["From"] == MAIL_FROM
    assert parsed["To"] == "physicist@hospital.example, qa@hospital.example"
    assert parsed["Date"] == "Mon, 02 Mar 2026 10:30:00 +0100"
    assert parsed["Message-ID"] == "<ctpoller.7.abc123@hospital.example>"
    assert parsed["Auto-Submitted"] == "auto-generated"


def test_study_identifiers_stay_out_of_the_headers_but_are_in_the_body() -> None:
    msg = render_email(message(), mail_from=MAIL_FROM)
    headers = "\n".join(f"{name}: {value}" for name, value in msg.items())
    text, rich = bodies(msg)

    assert "1.2.826.0.1.3680043.8.498.1" not in headers
    assert "ACC0042" not in headers
    assert "Study Instance UID: 1.2.826.0.1.3680043.8.498.1" in text
    assert "1.2.826.0.1.3680043.8.498.1" in rich


def test_both_bodies_list_every_field_of_every_notification() -> None:
    first = notification()
    second = notification(
        rule="adult body",
        metric="dlp_total",
        event_key="",
        value=Decimal("1210.4"),
        limit=Decimal("1000"),
        unit="mGy·cm",
        protocol="Chest/Abdomen",
    )
    text, rich = bodies(render_email(message(first, second), mail_from=MAIL_FROM))

    expected = [
        "adult head",
        "CTDIvol (event)",
        "76 mGy",
        "50 mGy",
        "1.52×",
        "Head routine 5mm",
        "adult body",
        "DLP (exam total)",
        "1210.4 mGy·cm",
        "1000 mGy·cm",
        "1.21×",
        "Chest/Abdomen",
        "CTAWP00001",
        "Main CT",
        "2026-03-02",
        "08:15:30",
        "CT HEAD WITHOUT CONTRAST",
        "ACC0042",
        "1.2.826.0.1.3680043.8.498.1",
    ]
    for fragment in expected:
        assert fragment in text, fragment
        assert escape(fragment) in rich, fragment
    assert text.count("\n1. ") == 1 and text.count("\n2. ") == 1


def test_missing_values_are_shown_as_not_recorded_not_as_none() -> None:
    text, rich = bodies(render_email(message(notification(protocol=None, accession_number=None)), mail_from=MAIL_FROM))

    assert "protocol —;" in text
    assert "Accession number: —" in text
    assert "None" not in text
    assert "None" not in rich


@pytest.mark.parametrize(
    ("value", "places", "shown"),
    [
        (Decimal("0E-8"), 3, "0"),
        (Decimal("-0E-8"), 3, "0"),
        (Decimal("176.12000000"), 3, "176.12"),
        (Decimal("1E+2"), 3, "100"),
        (Decimal("1.23456"), 3, "1.235"),
        (Decimal("1.23456"), 2, "1.23"),
        (Decimal("1.23456"), None, "1.23456"),
        (Decimal("0.0004"), 3, "0"),
        (Decimal("1E+40"), 3, "1" + "0" * 40),
        (Decimal("Infinity"), 3, "∞"),
        (None, 3, "—"),
    ],
)
def test_format_decimal_is_plain_fixed_point(value: Decimal | None, places: int | None, shown: str) -> None:
    assert format_decimal(value, places) == shown


def test_doses_stored_with_eight_decimals_show_without_exponent_or_zero_noise() -> None:
    noisy = notification(value=Decimal("176.12000000"), limit=Decimal("1E+2"), previous_value=Decimal("0E-8"))
    text, _ = bodies(render_email(message(noisy), mail_from=MAIL_FROM))

    assert "from 0 to 176.12 mGy" in text
    assert "176.12 mGy, limit 100 mGy" in text
    assert "E-8" not in text and "E+2" not in text and "176.1200" not in text


def test_value_that_rounds_to_the_limit_is_shown_with_all_its_digits() -> None:
    text, _ = bodies(render_email(message(notification(value=Decimal("50.0001"))), mail_from=MAIL_FROM))

    assert "50.0001 mGy, limit 50 mGy" in text


def test_zero_limit_shows_an_infinite_ratio_instead_of_failing() -> None:
    text, _ = bodies(render_email(message(notification(limit=Decimal("0"))), mail_from=MAIL_FROM))

    assert "∞×" in text


def test_line_breaks_in_data_cannot_inject_headers() -> None:
    hostile = notification(description="CT HEAD\r\nBcc: attacker@evil.example\r\n\r\nfake body")
    msg = render_email(message(hostile), mail_from=MAIL_FROM)
    parsed = roundtrip(msg)

    assert parsed["Bcc"] is None
    assert "\r" not in msg["Subject"] and "\n" not in msg["Subject"]
    assert "CT HEAD Bcc: attacker@evil.example fake body" in msg["Subject"]


def test_very_long_description_keeps_the_subject_short() -> None:
    msg = render_email(message(notification(description="x" * 5000, display_name="y" * 5000)), mail_from=MAIL_FROM)

    assert len(msg["Subject"]) <= SUBJECT_MAX
    assert msg["Subject"].startswith("CT dose 1.52× limit: xxx")


def test_html_escapes_markup_from_the_data() -> None:
    msg = render_email(message(notification(protocol="<script>alert('x')</script> & co")), mail_from=MAIL_FROM)
    text, rich = bodies(msg)

    assert "<script>" not in rich
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; co" in rich
    assert "<script>alert('x')</script> & co" in text


def test_ten_thousand_character_protocol_and_exotic_unicode_survive_serialising() -> None:
    protocol = "Kopf ‮RTL‬ 頭部 😀 " + "p" * 10_000
    description = "Schädel\x00\x07\x1b[31m ت"
    msg = render_email(message(notification(protocol=protocol, description=description)), mail_from=MAIL_FROM)
    text, rich = bodies(msg)

    assert protocol in text
    assert escape(protocol) in rich
    assert "Schädel[31m ت" in text
    assert "\x1b" not in text and "\x00" not in text


def test_message_without_recipients_has_no_to_header() -> None:
    parsed = roundtrip(render_email(message(recipients=()), mail_from=MAIL_FROM))

    assert parsed["To"] is None


@settings(max_examples=150, deadline=None)
@given(description=st.text(), protocol=st.text(), rule=st.text(min_size=1), station=st.text())
def test_any_text_serialises_and_comes_back_in_both_bodies(
    description: str, protocol: str, rule: str, station: str
) -> None:
    risky = notification(description=description, protocol=protocol, rule=rule, display_name=station)
    msg = render_email(message(risky), mail_from=MAIL_FROM)
    text, rich = bodies(msg)
    parsed = roundtrip(msg)

    assert sorted(parsed.keys()) == sorted(msg.keys())  # nothing injected, nothing lost

    for value in (description, protocol, rule, station):
        clean = one_line(value)
        assert clean in text
        assert escape(clean) in rich
    subject = msg["Subject"]
    assert len(subject) <= SUBJECT_MAX
    assert not any(ord(char) < 32 or ord(char) == 127 for char in subject)


def test_each_exceedance_is_one_line_naming_its_rule_metric_and_event() -> None:
    event_level = notification(event_number=2, series="Helical")
    exam_level = replace(event_level, metric="dlp_total", event_key="")
    _, text, _ = parts(render_email(message(event_level, exam_level), mail_from=MAIL_FROM))

    assert "1. adult head: CTDIvol (event) 76 mGy, limit 50 mGy, 1.52× (new)" in text
    assert "   event 2 (series Helical); protocol Head routine 5mm;" in text
    assert "2. adult head: DLP (exam total) 76 mGy, limit 50 mGy, 1.52× (new)\n   whole exam;" in text


def test_a_dose_check_exceedance_shows_who_authorised_proceeding_and_the_reason_escaped_in_html() -> None:
    _, text, rich = parts(render_email(golden_message(), mail_from=MAIL_FROM))

    assert "Proceeding authorised by Radiographer on duty: Large patient, <b>approved</b> by radiologist" in text
    assert "Proceeding authorised by Radiographer on duty: Large patient, &lt;b&gt;approved&lt;/b&gt; by" in rich


@pytest.mark.parametrize(
    ("reason", "authorised_by", "shown"),
    [
        ("Large patient", None, "Operator's reason for proceeding: Large patient"),
        (
            None,
            "A <b>Radiographer</b>\nLuuk",
            "Proceeding authorised by A <b>Radiographer</b> Luuk: no reason recorded",
        ),
        (None, None, None),
    ],
)
def test_a_dose_check_exceedance_shows_what_is_recorded_of_proceeding(
    reason: str | None, authorised_by: str | None, shown: str | None
) -> None:
    sent = notification(
        metric="dose_check_dlp_alert", rule="Scanner Dose Check", reason=reason, authorised_by=authorised_by
    )
    _, text, rich = parts(render_email(message(sent), mail_from=MAIL_FROM))

    if shown is None:
        assert "authorised" not in text and "reason for proceeding" not in text
    else:
        assert f"   {shown}\n" in text
        assert str(escape(shown)) in rich


@pytest.mark.parametrize(
    ("decimal", "string", "shown"),
    [
        (None, "017Y", "17 y"),
        (Decimal("17.5"), None, "17 y"),
        (Decimal("17.97"), None, "17–18 y"),
        (None, "011M", "11 mo"),
        (None, "001Y", "12–23 mo"),
        (Decimal("1.05"), None, "12–13 mo"),
        (None, "002Y", "2 y"),
        (None, "010D", "0 mo"),
    ],
)
def test_an_age_is_shown_in_years_or_months_under_two_and_as_a_range_when_uncertain(
    decimal: Decimal | None, string: str | None, shown: str
) -> None:
    age = age_range(decimal, string)
    assert age is not None and age.shown() == shown


def test_the_subject_and_summary_begin_with_alert_when_any_notification_is_an_alert() -> None:
    plain = parts(render_email(message(notification(), notification(event_key="1.2.3.4.6")), mail_from=MAIL_FROM))
    one = message(notification(), notification(event_key="1.2.3.4.6", severity="alert"))
    alerted = parts(render_email(one, mail_from=MAIL_FROM))
    later = parts(render_email(replace(one, thread_root="<first@h>"), mail_from=MAIL_FROM))

    assert "ALERT" not in plain[0]["Subject"] + plain[1] + plain[2] and plain[0]["Importance"] is None
    assert alerted[0]["Subject"].startswith("ALERT: CT dose up to 1.52× limit (2 exceedances): ")
    assert alerted[0]["Importance"] == "high"
    assert alerted[1].startswith("ALERT: A CT exam has 2 doses over their limits.\n1 of them is an alert, marked ALERT")
    assert "<title>ALERT: CT dose over limit: " in alerted[2]
    assert later[0]["Subject"].startswith("ALERT: Update: CT dose ")
    assert later[1].startswith("ALERT: Update on a CT exam emailed about before:\n")


def test_only_the_alert_lines_are_marked() -> None:
    _, text, rich = parts(render_email(alert_message(), mail_from=MAIL_FROM))

    assert "\n1. [ALERT] Paed head (AAPM): CTDIvol (event) 61.3 mGy, limit 50 mGy (AAPM Dose Check 2011)" in text
    assert "\n2. Paed head DLP: DLP (exam total) 1042.7 mGy·cm, limit 1000 mGy·cm, 1.04× (new)\n" in text
    assert text.count("[ALERT]") == 1 and rich.count('<strong style="color:#a00000">ALERT</strong>') == 1


def test_every_notification_an_alert_needs_no_count_of_alerts() -> None:
    _, text, _ = parts(render_email(trend_message(), mail_from=MAIL_FROM))

    assert "of them" not in text


@pytest.mark.parametrize(
    ("changes", "limit"),
    [
        ({}, "limit 50 mGy,"),
        ({"reference": "AAPM Dose Check 2011"}, "limit 50 mGy (AAPM Dose Check 2011),"),
        (
            {
                "limit": Decimal("94.0"),
                "reference": "UK NDRL 2022",
                "reference_value": Decimal("47"),
                "multiple": Decimal("2.0"),
            },
            "limit 94 mGy = 2 × 47 mGy (UK NDRL 2022),",
        ),
        (
            {"limit": Decimal("70.5"), "reference_value": Decimal("47.0"), "multiple": Decimal("1.5")},
            "limit 70.5 mGy = 1.5 × 47 mGy (reference level),",
        ),
        (
            {
                "limit": Decimal("47"),
                "reference": "UK NDRL 2022",
                "reference_value": Decimal("47"),
                "multiple": Decimal(1),
            },
            "limit 47 mGy (UK NDRL 2022),",
        ),
        ({"limit": Decimal("47"), "reference_value": Decimal("47")}, "limit 47 mGy (reference level),"),
    ],
)
def test_the_limit_says_where_it_comes_from(changes: dict[str, object], limit: str) -> None:
    _, text, rich = parts(render_email(message(notification(**changes)), mail_from=MAIL_FROM))

    assert f"CTDIvol (event) 76 mGy, {limit} " in text
    if "reference" in changes:
        assert str(changes["reference"]) in rich


def test_a_reference_and_a_detail_from_the_rules_file_are_one_escaped_line() -> None:
    hostile = notification(
        metric="cumulative_exams",
        event_key="",
        unit="",
        value=Decimal(6),
        limit=Decimal(5),
        reference="Local <b>policy</b>\n2026",
        detail="this patient's 6th CT exam\r\nwithin 365 days <script>",
    )
    _, text, rich = parts(render_email(message(hostile), mail_from=MAIL_FROM))

    assert (
        "limit 5 (Local <b>policy</b> 2026), 1.20× (new)\n   this patient's 6th CT exam within 365 days <script>\n"
        in text
    )
    assert "<b>policy" not in rich and "<script>" not in rich and "Local &lt;b&gt;policy&lt;/b&gt; 2026" in rich


def test_a_trend_or_cumulative_line_shows_its_detail_instead_of_an_event() -> None:
    _, text, rich = parts(render_email(trend_message(), mail_from=MAIL_FROM))

    assert "whole exam" not in text and "protocol" not in text and "phantom" not in rich
    assert "\n   mean of the last 20 exams on Main CT: 141.8 mGy (2.18 × 65 mGy BfS DRW 2022); armed by " in text
    assert text.startswith(
        "ALERT: This exam took the mean CTDIvol of a scanner's last exams of one type over its limit."
    )


def test_an_update_about_a_trend_does_not_call_it_the_whole_exam() -> None:
    [trend] = trend_message().notifications
    cumulative = notification(
        rule="Patient DLP 12 months",
        metric="cumulative_dlp_total",
        event_key="",
        value=Decimal("3240"),
        previous_value=Decimal("3050"),
        limit=Decimal("3000"),
        unit="mGy·cm",
        detail="this patient's 6th CT exam within 365 days (total DLP 3,240 mGy·cm)",
    )
    _, text, _ = parts(render_email(message(trend, cumulative, thread_root="<first@h>"), mail_from=MAIL_FROM))

    assert "New: mean CTDIvol of a scanner's last exams of one type over its limit: 141.8 mGy (rule Head CT" in text
    assert "Rose: one patient's total DLP within a period from 3050 to 3240 mGy·cm (rule Patient DLP 12 months" in text
    assert "whole exam" not in text


def test_the_lines_of_a_long_list_stay_aligned_under_their_numbers() -> None:
    many = [notification(event_key=f"1.2.3.{i}", event_number=i) for i in range(1, 12)]
    _, text, _ = parts(render_email(message(*many), mail_from=MAIL_FROM))

    assert "\n9. adult head: " in text and "\n   event 9; protocol" in text
    assert "\n10. adult head: " in text and "\n    event 10; protocol" in text


@pytest.mark.parametrize(
    ("metric", "what"),
    [
        ("trend_dlp_total", "CT dose trend"),
        ("cumulative_dlp_total", "Cumulative CT dose"),
        ("cumulative_exams", "Number of CT exams"),
    ],
)
def test_the_subject_of_one_trend_or_cumulative_value_says_what_it_is(metric: str, what: str) -> None:
    one = notification(metric=metric, event_key="", detail="one line")

    assert render_email(message(one), mail_from=MAIL_FROM)["Subject"].startswith(f"{what} 1.52× limit: CT HEAD")
    assert render_email(message(one, notification()), mail_from=MAIL_FROM)["Subject"].startswith("CT dose up to")
