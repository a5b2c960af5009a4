"""The notification email: what it says, what it never says, and that hostile text cannot break it."""

from __future__ import annotations

import email
import email.policy
import html
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from email.message import EmailMessage

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ctpoller.mail.render import SUBJECT_MAX, format_decimal, one_line, render_email
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


def test_subject_names_description_display_name_date_and_count() -> None:
    msg = render_email(message(notification(), notification(metric="dlp", unit="mGy·cm")), mail_from=MAIL_FROM)

    assert msg["Subject"] == ("CT dose over limit: CT HEAD WITHOUT CONTRAST at Main CT, 2026-03-02 (2 exceedances)")


def test_subject_falls_back_to_station_name_then_placeholders() -> None:
    with_station = render_email(message(notification(display_name=None)), mail_from=MAIL_FROM)
    bare = render_email(
        message(notification(display_name=None, station_name=None, description=None, study_date=None)),
        mail_from=MAIL_FROM,
    )

    assert " at CTAWP00001, " in with_station["Subject"]
    assert bare["Subject"] == ("CT dose over limit: no description at unknown station, unknown date (1 exceedance)")


def test_update_is_marked_in_subject_and_says_how_the_dose_rose() -> None:
    risen = notification(value=Decimal("80.50000000"), previous_value=Decimal("76.00000000"))
    msg = render_email(message(risen), mail_from=MAIL_FROM)
    text, rich = bodies(msg)

    assert msg["Subject"].startswith("(update) CT dose over limit: ")
    assert "rose from 76 to 80.5 mGy (previously notified)" in text
    assert "rose from 76 to 80.5 mGy (previously notified)" in rich


def test_first_notification_does_not_claim_to_be_an_update() -> None:
    msg = render_email(message(), mail_from=MAIL_FROM)
    text, _ = bodies(msg)

    assert "update" not in msg["Subject"].lower()
    assert "previously notified" not in text


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
        assert html.escape(fragment) in rich, fragment
    assert text.count("Rule: ") == 2


def test_missing_values_are_shown_as_not_recorded_not_as_none() -> None:
    text, rich = bodies(render_email(message(notification(protocol=None, accession_number=None)), mail_from=MAIL_FROM))

    assert "Protocol: —" in text
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

    assert "rose from 0 to 176.12 mGy" in text
    assert "Limit: 100 mGy" in text
    assert "E-8" not in text and "E+2" not in text and "176.1200" not in text


def test_value_that_rounds_to_the_limit_is_shown_with_all_its_digits() -> None:
    text, _ = bodies(render_email(message(notification(value=Decimal("50.0001"))), mail_from=MAIL_FROM))

    assert "Value: 50.0001 mGy" in text


def test_zero_limit_shows_an_infinite_ratio_instead_of_failing() -> None:
    text, _ = bodies(render_email(message(notification(limit=Decimal("0"))), mail_from=MAIL_FROM))

    assert "Ratio to limit: ∞×" in text


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
    assert msg["Subject"].startswith("CT dose over limit: xxx")


def test_html_escapes_markup_from_the_data() -> None:
    msg = render_email(message(notification(protocol="<script>alert('x')</script> & co")), mail_from=MAIL_FROM)
    text, rich = bodies(msg)

    assert "<script>" not in rich
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; co" in rich
    assert "<script>alert('x')</script> & co" in text


def test_ten_thousand_character_protocol_and_exotic_unicode_survive_serialising() -> None:
    protocol = "Kopf ‮RTL‬ 頭部 😀 " + "p" * 10_000
    description = "Schädel\x00\x07\x1b[31m ت"
    msg = render_email(message(notification(protocol=protocol, description=description)), mail_from=MAIL_FROM)
    text, rich = bodies(msg)

    assert protocol in text
    assert html.escape(protocol) in rich
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
        assert html.escape(clean) in rich
    subject = msg["Subject"]
    assert len(subject) <= SUBJECT_MAX
    assert not any(ord(char) < 32 or ord(char) == 127 for char in subject)


def test_each_exceedance_is_headed_by_its_rule_and_names_its_event() -> None:

    base = message()
    event_level = base.notifications[0]
    exam_level = replace(event_level, metric="dlp_total", event_key="")
    text = render_email(replace(base, notifications=(event_level, exam_level)), mail_from="a@b.example")
    body = text.get_body(("plain",)).get_content()
    assert f"1. {event_level.rule}: {event_level.metric_label}" in body
    assert f"Irradiation event: {event_level.event_key}" in body
    assert "Irradiation event: (whole exam)" in body
