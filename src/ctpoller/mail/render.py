"""Build the notification email for one message. Pure: no clock, no I/O.

The email names the exam by its study description, station, date, accession number and Study Instance
UID; it never carries a patient's name, ID or birth date (the model does not hold them). Every text
that came from OpenREM is untrusted: it is made one line before use, escaped in HTML and kept out of
headers except, shortened and cleaned, in the subject.
"""

from __future__ import annotations

import contextlib
import email.policy
import html
import unicodedata
from collections.abc import Iterable
from datetime import date, time
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from email.message import EmailMessage
from email.utils import format_datetime

from ctpoller.core.model import Message, Notification

#: How messages go on the wire and into .eml files: SMTP line endings, and headers folded only past
#: RFC 5322's 998 characters. Folding at 78 puts the space between two encoded words, where mail
#: readers drop it ("äöü ß" arrives as "äöüß").
WIRE = email.policy.SMTP.clone(max_line_length=998)

#: Shown for a value OpenREM did not record.
MISSING = "—"
#: Longest subject, in characters, before it is shortened with "…".
SUBJECT_MAX = 200
_SUBJECT_PART_MAX = 80

# Unicode categories dropped from one-line text (controls and lone surrogates would break the message
# or the layout), and those turned into a space (line and paragraph separators would break the line).
_DROPPED = {"Cc", "Cs"}
_SPACES = {"Zl", "Zp"}


def format_decimal(value: Decimal | None, places: int | None = 3) -> str:
    """``value`` in plain fixed-point notation with at most ``places`` decimals, no trailing zeros.

    ``Decimal("176.12000000")`` → ``"176.12"``, ``Decimal("0E-8")`` → ``"0"``, ``Decimal("1E+2")`` →
    ``"100"``. ``places=None`` keeps every significant digit. Never converts to float.
    """
    if value is None:
        return MISSING
    if value.is_nan():
        return "not a number"
    if value.is_infinite():
        return "-∞" if value.is_signed() else "∞"
    if places is not None:
        with contextlib.suppress(InvalidOperation):  # too many digits to quantize: show it whole
            value = value.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_EVEN)
    text = format(value.normalize(), "f")
    return "0" if text in ("-0", "0") else text


def format_ratio(value: Decimal) -> str:
    """A ratio to the limit, as people read it: ``"1.52×"``."""
    return f"{format_decimal(value, 2)}×"


def one_line(text: str | None) -> str:
    """``text`` as one clean line: control characters dropped, every run of whitespace one space."""
    if text is None:
        return ""
    kept = []
    for char in text:
        category = unicodedata.category(char)
        if category in _SPACES or char in "\t\n\r\x0b\x0c\x85":
            kept.append(" ")
        elif category not in _DROPPED:
            kept.append(char)
    return " ".join("".join(kept).split())


def header_text(text: str | None, limit: int = SUBJECT_MAX) -> str:
    """``text`` made safe for a header: one line, at most ``limit`` characters."""
    line = one_line(text)
    return line if len(line) <= limit else line[: limit - 1].rstrip() + "…"


def _shown(text: str | None) -> str:
    line = one_line(text)
    return line or MISSING


def _date(value: date | None) -> str:
    return value.isoformat() if value is not None else MISSING


def _time(value: time | None) -> str:
    return value.isoformat(timespec="seconds") if value is not None else MISSING


def _first(values: Iterable[str | None]) -> str | None:
    return next((value for value in values if value and one_line(value)), None)


def subject(message: Message) -> str:
    """``[(update) ]CT dose over limit: <description> at <station>, <date> (<n> exceedances)``."""
    notes = message.notifications
    description = _first(n.description for n in notes) or "no description"
    station = _first(n.display_name for n in notes) or _first(n.station_name for n in notes)
    dates = [n.study_date for n in notes if n.study_date is not None]
    count = len(notes)
    text = "{update}CT dose over limit: {description} at {station}, {date} ({count} {noun})".format(
        update="(update) " if message.is_update else "",
        description=header_text(description, _SUBJECT_PART_MAX),
        station=header_text(station or "unknown station", _SUBJECT_PART_MAX),
        date=dates[0].isoformat() if dates else "unknown date",
        count=count,
        noun="exceedance" if count == 1 else "exceedances",
    )
    return header_text(text)


def _value(notification: Notification) -> tuple[str, str]:
    """The value and limit as shown; with more digits when rounding would make them look equal."""
    value = format_decimal(notification.value)
    limit = format_decimal(notification.limit)
    if value == limit:
        value = format_decimal(notification.value, None)
        limit = format_decimal(notification.limit, None)
    return value, limit


def fields(notification: Notification) -> list[tuple[str, str]]:
    """Every line shown for one notification, as (label, text), in the order shown."""
    n = notification
    unit = one_line(n.unit)
    value, limit = _value(n)
    shown_value = f"{value} {unit}".strip()
    if n.previous_value is not None:
        shown_value = f"rose from {format_decimal(n.previous_value)} to {shown_value} (previously notified)"
    return [
        ("Rule", _shown(n.rule)),
        ("Metric", _shown(n.metric_label)),
        ("Value", shown_value),
        ("Limit", f"{limit} {unit}".strip()),
        ("Ratio to limit", format_ratio(n.ratio)),
        ("Protocol", _shown(n.protocol)),
        ("Station name", _shown(n.station_name)),
        ("Display name", _shown(n.display_name)),
        ("Study date", _date(n.study_date)),
        ("Study time", _time(n.study_time)),
        ("Study description", _shown(n.description)),
        ("Accession number", _shown(n.accession_number)),
        ("Study Instance UID", _shown(n.study_uid)),
        ("Irradiation event", _shown(n.event_key) if n.event_key else "(whole exam)"),
    ]


def _heading(n: Notification) -> str:
    return f"{_shown(n.rule)}: {_shown(n.metric_label)}"


def _intro(message: Message) -> str:
    count = len(message.notifications)
    noun = "a dose over its limit" if count == 1 else f"{count} doses over their limits"
    if message.is_update:
        return f"Update: a CT exam notified before now has {noun}; a dose rose since the last email about it."
    return f"A CT exam has {noun}."


_FOOTER = "Sent automatically by ctpoller. Each exceedance is emailed once; a later rise comes as an update."


def render_text(message: Message) -> str:
    """The plain-text body."""
    lines = [_intro(message), ""]
    for number, notification in enumerate(message.notifications, 1):
        lines.append(f"{number}. {_heading(notification)}")
        lines.extend(f"   {label}: {text}" for label, text in fields(notification))
        lines.append("")
    lines.append(_FOOTER)
    return "\n".join(lines) + "\n"


def render_html(message: Message) -> str:
    """The HTML body: the same content as the text, every value escaped."""
    esc = html.escape
    parts = [
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8"></head><body>',
        f"<p>{esc(_intro(message))}</p>",
    ]
    for number, notification in enumerate(message.notifications, 1):
        parts.append(f"<h3>{number}. {esc(_heading(notification))}</h3>")
        parts.append('<table cellpadding="3" style="border-collapse:collapse">')
        parts.extend(
            f'<tr><th align="left" valign="top">{esc(label)}</th><td>{esc(text)}</td></tr>'
            for label, text in fields(notification)
        )
        parts.append("</table>")
    parts.append(f"<p><small>{esc(_FOOTER)}</small></p></body></html>")
    return "\n".join(parts) + "\n"


def render_email(message: Message, *, mail_from: str) -> EmailMessage:
    """The email for ``message``: plain text with an HTML alternative, ready for ``send_message``."""
    msg = EmailMessage(policy=WIRE)
    msg["Subject"] = subject(message)
    msg["From"] = header_text(mail_from, 998)
    if message.recipients:
        msg["To"] = ", ".join(header_text(address, 998) for address in message.recipients)
    msg["Date"] = format_datetime(message.created_at)
    msg["Message-ID"] = header_text(message.message_id, 998)
    msg["Auto-Submitted"] = "auto-generated"
    msg.set_content(render_text(message), cte="quoted-printable")
    msg.add_alternative(render_html(message), subtype="html", cte="quoted-printable")
    return msg
