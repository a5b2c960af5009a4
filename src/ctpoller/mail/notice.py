"""The email of a notice (the heartbeat, the digest): plain text, written when it was recorded. Pure.

``render`` is what the notifiers call for every message: an exam's email (``render.render_email``)
or a notice's.
"""

from __future__ import annotations

from email.message import EmailMessage
from email.utils import format_datetime

from ctpoller.core.model import Message
from ctpoller.mail.render import PLAIN, WIRE, Look, header_text, render_email


def render_notice(message: Message, *, mail_from: str) -> EmailMessage:
    """The email for a notice: its stored subject and text, its Message-ID and the time it was recorded."""
    assert message.notice is not None
    msg = EmailMessage(policy=WIRE)
    msg["Subject"] = header_text(message.notice.subject)
    msg["From"] = header_text(mail_from, 998)
    if message.recipients:
        msg["To"] = ", ".join(header_text(address, 998) for address in message.recipients)
    msg["Date"] = format_datetime(message.created_at)
    msg["Message-ID"] = header_text(message.message_id, 998)
    msg["Auto-Submitted"] = "auto-generated"
    msg["X-Ctpoller-Kind"] = message.notice.kind
    msg.set_content(message.notice.body, cte="quoted-printable")
    return msg


def render(message: Message, *, mail_from: str, look: Look = PLAIN) -> EmailMessage:
    """The email of any message in the outbox."""
    if message.notice is not None:
        return render_notice(message, mail_from=mail_from)
    return render_email(message, mail_from=mail_from, look=look)
