"""Build the notification email for one message. Pure: no clock, no I/O.

Text and HTML parts come from the templates in ``mail/templates/`` (Jinja2, autoescaping on for HTML,
so no text from OpenREM can become markup); what they show is built in ``mail.view``. The email never
carries a patient's name, ID or birth date (the model does not hold them). Text from OpenREM is kept out
of headers except, shortened and cleaned, in the subject.

An update (an exam emailed about before) carries ``In-Reply-To`` and ``References`` with the first
email's Message-ID, so mail readers thread it under that email.
"""

from __future__ import annotations

import email.policy
from dataclasses import dataclass
from datetime import tzinfo
from email.message import EmailMessage
from email.utils import format_datetime
from functools import cache

import jinja2

from ctpoller.core.model import Message
from ctpoller.mail.view import MISSING, alert_prefix, format_decimal, format_ratio, one_line, shown, station, view

__all__ = [
    "MISSING",
    "PLAIN",
    "SUBJECT_MAX",
    "WIRE",
    "Look",
    "format_decimal",
    "header_text",
    "one_line",
    "render_email",
]

#: How messages go on the wire and into .eml files: SMTP line endings, and headers folded only past
#: RFC 5322's 998 characters. Folding at 78 puts the space between two encoded words, where mail
#: readers drop it ("äöü ß" arrives as "äöüß").
WIRE = email.policy.SMTP.clone(max_line_length=998)

#: Longest subject, in characters, before it is shortened with "…".
SUBJECT_MAX = 200
_SUBJECT_PART_MAX = 80
#: What the subject calls a value of many exams (else "CT dose").
SUBJECT_WHAT = {
    "trend_ctdivol": "CT dose trend",
    "trend_dlp_total": "CT dose trend",
    "cumulative_dlp_total": "Cumulative CT dose",
    "cumulative_exams": "Number of CT exams",
}


@dataclass(frozen=True)
class Look:
    """How a site wants its emails: OpenREM's web address for links to exams (``CTPOLLER_OPENREM_URL``),
    and the time zone of ctpoller's own timestamps (``CTPOLLER_TIMEZONE``; ``None``: the host's)."""

    openrem_url: str | None = None
    zone: tzinfo | None = None


#: No links, the host's time zone.
PLAIN = Look()


@cache
def _templates() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("ctpoller.mail", "templates"),
        autoescape=jinja2.select_autoescape(["html"]),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )


def header_text(text: str | None, limit: int = SUBJECT_MAX) -> str:
    """``text`` made safe for a header: one line, at most ``limit`` characters."""
    line = one_line(text)
    return line if len(line) <= limit else line[: limit - 1].rstrip() + "…"


def subject(message: Message) -> str:
    """``[ALERT: ][Update: ]CT dose <ratio> limit: <description> at <station>, <date>``.

    The ratio is the highest of the message's; with more than one exceedance "up to <ratio>" and the count.
    "ALERT: " when any of them is an alert (a rule with ``severity = "alert"``). A message of one trend
    or cumulative value names it instead of "CT dose" (``SUBJECT_WHAT``): "CT dose trend 1.09× limit".
    """
    notes = message.notifications
    if not notes:
        return "CT dose over limit"
    first = notes[0]
    top = max(notes, key=lambda n: n.ratio)
    count = len(notes)
    ratio = format_ratio(top.value, top.limit)
    what = SUBJECT_WHAT.get(top.metric, "CT dose")
    dose = f"{what} {ratio} limit" if count == 1 else f"CT dose up to {ratio} limit ({count} exceedances)"
    day = first.study_date.isoformat() if first.study_date else "unknown date"
    text = "{alert}{update}{dose}: {description} at {station}, {day}".format(
        alert=alert_prefix(message),
        update="Update: " if message.is_update else "",
        dose=dose,
        description=header_text(shown(first.description) if first.description else "no description", _SUBJECT_PART_MAX),
        station=header_text(station(first), _SUBJECT_PART_MAX),
        day=day,
    )
    return header_text(text)


def render_text(message: Message, look: Look = PLAIN) -> str:
    """The plain-text body."""
    return _templates().get_template("exceedance.txt").render(v=view(message, **vars(look)))


def render_html(message: Message, look: Look = PLAIN) -> str:
    """The HTML body: the same content as the text, every value escaped, readable on a phone."""
    return _templates().get_template("exceedance.html").render(v=view(message, **vars(look)))


def render_email(message: Message, *, mail_from: str, look: Look = PLAIN) -> EmailMessage:
    """The email for ``message``: plain text with an HTML alternative, ready for ``send_message``."""
    msg = EmailMessage(policy=WIRE)
    msg["Subject"] = subject(message)
    msg["From"] = header_text(mail_from, 998)
    if message.recipients:
        msg["To"] = ", ".join(header_text(address, 998) for address in message.recipients)
    msg["Date"] = format_datetime(message.created_at.astimezone(look.zone) if look.zone else message.created_at)
    msg["Message-ID"] = header_text(message.message_id, 998)
    if message.thread_root and message.thread_root != message.message_id:
        root = header_text(message.thread_root, 998)
        msg["In-Reply-To"] = root
        msg["References"] = root
    msg["Auto-Submitted"] = "auto-generated"
    if alert_prefix(message):
        msg["Importance"] = "high"  # mail readers flag it (Outlook, Thunderbird)
    msg.set_content(render_text(message, look), cte="quoted-printable")
    msg.add_alternative(render_html(message, look), subtype="html", cte="quoted-printable")
    return msg
