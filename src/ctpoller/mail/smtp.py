"""Delivers messages to an SMTP server (smtplib), over one connection reused between sends.

Every failure leaves as a ``NotifyError`` whose message is one line, names ``host:port`` and never
holds the password. ``permanent`` follows what trying again could change:

- connecting, TLS, greeting, EHLO and login failures are temporary: they concern the server or the
  settings, not the message, so it stays queued and is tried again next run;
- a refused sender (MAIL FROM) is temporary too: it is a settings problem (CTPOLLER_MAIL_FROM);
- a reply to RCPT or DATA is temporary for 4xx and permanent for 5xx;
- a message with no recipients, or with some recipients refused while the others accepted it,
  is permanent.
"""

from __future__ import annotations

import contextlib
import ipaddress
import smtplib
import socket
import ssl
from typing import Any, Literal

from ctpoller.core.model import Message
from ctpoller.errors import NotifyError
from ctpoller.mail.notice import render
from ctpoller.mail.render import PLAIN, Look, one_line

Security = Literal["starttls", "ssl", "none"]
SECURITY_MODES: tuple[Security, ...] = ("starttls", "ssl", "none")

_REPLY_MAX = 300
_LOGIN_HINT = "check CTPOLLER_SMTP_USERNAME and CTPOLLER_SMTP_PASSWORD"


class _ClosingConnect(smtplib.SMTP):
    """``smtplib.SMTP`` that closes its socket when connecting fails half way (no leaked socket)."""

    def connect(self, host: str = "localhost", port: int = 0, source_address: Any = None) -> tuple[int, bytes]:
        try:
            return super().connect(host, port, source_address)
        except BaseException:
            self.close()
            raise


class _SSLClient(_ClosingConnect, smtplib.SMTP_SSL):
    """``smtplib.SMTP_SSL`` with the same tidy failure."""


def is_loopback(host: str) -> bool:
    """Whether ``host`` is this machine by name or address (no DNS lookup)."""
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _reply_text(code: int, text: bytes | str) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    line = one_line(text)
    if len(line) > _REPLY_MAX:
        line = line[: _REPLY_MAX - 1] + "…"
    return f"{code} {line}".strip()


def _is_5xx(code: int) -> bool:
    return 500 <= code <= 599


class SmtpNotifier:
    """Sends each message with smtplib; see the module docstring for how failures are classed.

    ``security``: ``"starttls"`` (the server must offer STARTTLS, else nothing is sent), ``"ssl"``
    (TLS from the first byte) or ``"none"`` (plain; a login is then allowed only to a loopback host).
    Certificates and the host name are verified with ``ssl_context`` (default: the system's trust store).
    """

    name = "smtp"

    def __init__(
        self,
        host: str,
        port: int,
        *,
        security: Security,
        username: str | None,
        password: str | None,
        timeout: float,
        mail_from: str,
        look: Look = PLAIN,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if security not in SECURITY_MODES:
            raise ValueError(f"security must be one of {', '.join(SECURITY_MODES)}, not {security!r}")
        self.host = host
        self.port = port
        self.security: Security = security
        self.username = username
        self._password = password
        self.timeout = timeout
        self.mail_from = mail_from
        self.look = look
        self._ssl_context = ssl_context if ssl_context is not None else ssl.create_default_context()
        self._smtp: smtplib.SMTP | None = None

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"

    def __repr__(self) -> str:
        return f"SmtpNotifier({self.where}, security={self.security!r}, username={self.username!r})"

    def send(self, message: Message) -> None:
        """Send ``message``; return once the server accepted it for every recipient.

        Raises ``NotifyError`` otherwise. When the server accepted the message for some recipients and
        refused others, the message WAS delivered to those others: the error (``permanent=True``) names
        the refused addresses so the caller can record it, and sending again would duplicate it.
        """
        if not message.recipients:
            raise NotifyError("no recipients: set CTPOLLER_MAIL_TO or recipients in the rules file", permanent=True)
        email_message = render(message, mail_from=self.mail_from, look=self.look)
        smtp = self._connection()
        try:
            refused = smtp.send_message(email_message, from_addr=self.mail_from, to_addrs=list(message.recipients))
        except smtplib.SMTPRecipientsRefused as error:
            self._drop()
            codes = [code for code, _ in error.recipients.values()]
            raise NotifyError(
                f"SMTP server {self.where} refused every recipient: {self._refusals(error.recipients)}",
                permanent=bool(codes) and all(_is_5xx(code) for code in codes),
                scope="message",
            ) from error
        except smtplib.SMTPSenderRefused as error:
            self._drop()
            raise NotifyError(
                f"SMTP server {self.where} refused the sender {one_line(error.sender)} "
                f"({self._scrub(_reply_text(error.smtp_code, error.smtp_error))}): check CTPOLLER_MAIL_FROM",
                permanent=False,
                scope="settings" if _is_5xx(error.smtp_code) else "server",
            ) from error
        except smtplib.SMTPResponseException as error:
            self._drop()
            raise NotifyError(
                f"SMTP server {self.where} refused the message "
                f"({self._scrub(_reply_text(error.smtp_code, error.smtp_error))})",
                permanent=_is_5xx(error.smtp_code),
                scope="message",
            ) from error
        except smtplib.SMTPNotSupportedError as error:
            self._drop()
            raise NotifyError(
                f"SMTP server {self.where} cannot take this message: {one_line(str(error))}",
                permanent=True,
            ) from error
        except (smtplib.SMTPException, OSError, ValueError) as error:
            self._drop()
            raise self._transport_error(error, "sending the message") from error
        if refused:
            self._drop()
            raise NotifyError(
                f"SMTP server {self.where} delivered the message to the other recipients but refused "
                f"{self._refusals(refused)}",
                permanent=True,
            )

    def close(self) -> None:
        """Say QUIT and close the connection, if any. Never raises."""
        smtp, self._smtp = self._smtp, None
        if smtp is None:
            return
        try:
            with contextlib.suppress(Exception):  # closing quietly is the contract
                smtp.quit()
        finally:
            with contextlib.suppress(Exception):
                smtp.close()

    def check(self) -> str:
        """Connect, greet, start TLS and log in as a send would, then quit; send nothing."""
        try:
            self._connection()
        finally:
            self.close()
        login = f", logged in as {self.username}" if self.username else ""
        return f"SMTP server {self.where} answers ({self.security}{login})"

    def __enter__(self) -> SmtpNotifier:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- connection ---------------------------------------------------------------------------------

    def _connection(self) -> smtplib.SMTP:
        """The open connection, after a NOOP proves it alive; else a new one."""
        if self._smtp is not None:
            try:
                code, _ = self._smtp.noop()
            except (smtplib.SMTPException, OSError):
                code = 0
            if code == 250:
                return self._smtp
            self._drop()
        self._smtp = self._connect()
        return self._smtp

    def _connect(self) -> smtplib.SMTP:
        if self.username and self.security == "none" and not is_loopback(self.host):
            raise NotifyError(  # checked before connecting: nothing goes over the wire
                f"refusing to send the SMTP password to {self.where} over an unencrypted connection: "
                "set CTPOLLER_SMTP_SECURITY to starttls or ssl; nothing was sent",
                permanent=False,
                scope="settings",
            )
        smtp: smtplib.SMTP | None = None
        step = "connecting"
        try:
            if self.security == "ssl":
                smtp = _SSLClient(self.host, self.port, timeout=self.timeout, context=self._ssl_context)
            else:
                smtp = _ClosingConnect(self.host, self.port, timeout=self.timeout)
            step = "greeting the server (EHLO)"
            smtp.ehlo_or_helo_if_needed()
            if self.security == "starttls":
                if not smtp.has_extn("starttls"):
                    raise NotifyError(
                        f"SMTP server {self.where} does not offer STARTTLS, so nothing was sent "
                        "(credentials are never sent in clear): check CTPOLLER_SMTP_HOST, "
                        "CTPOLLER_SMTP_PORT and CTPOLLER_SMTP_SECURITY",
                        permanent=False,
                        scope="settings",
                    )
                step = "starting TLS (STARTTLS)"
                code, reply = smtp.starttls(context=self._ssl_context)
                if code != 220:  # pragma: no cover - smtplib raises for any other reply
                    raise smtplib.SMTPResponseException(code, reply)
                step = "greeting the server after STARTTLS (EHLO)"
                smtp.ehlo_or_helo_if_needed()
            if self.username:
                step = "logging in"
                smtp.login(self.username, self._password or "")
        except NotifyError:
            if smtp is not None:
                smtp.close()
            raise
        except (smtplib.SMTPException, OSError, ValueError) as error:
            if smtp is not None:
                smtp.close()
            raise self._transport_error(error, step) from error
        return smtp

    def _drop(self) -> None:
        smtp, self._smtp = self._smtp, None
        if smtp is not None:
            with contextlib.suppress(Exception):  # the connection is being thrown away
                smtp.close()

    # -- messages -----------------------------------------------------------------------------------

    def _scrub(self, text: str) -> str:
        if self._password:
            text = text.replace(self._password, "***")
        return text

    def _refusals(self, refused: dict[str, tuple[int, bytes]]) -> str:
        return "; ".join(
            f"{one_line(address)} ({self._scrub(_reply_text(code, reply))})"
            for address, (code, reply) in refused.items()
        )

    def _transport_error(self, error: BaseException, step: str) -> NotifyError:
        """A temporary ``NotifyError`` for a failure that is not a reply to MAIL, RCPT or DATA."""
        where = self.where
        if isinstance(error, smtplib.SMTPAuthenticationError):
            text = f"SMTP server {where} refused the login ({_reply_text(error.smtp_code, error.smtp_error)})"
            return NotifyError(self._scrub(f"{text}: {_LOGIN_HINT}"), permanent=False, scope="settings")
        if isinstance(error, smtplib.SMTPNotSupportedError) and step == "logging in":
            text = f"SMTP server {where} does not offer a login (AUTH) but CTPOLLER_SMTP_USERNAME is set"
            return NotifyError(f"{text}: unset it or {_LOGIN_HINT}", permanent=False, scope="settings")
        if isinstance(error, smtplib.SMTPResponseException):
            reply = self._scrub(_reply_text(error.smtp_code, error.smtp_error))
            text = f"SMTP server {where} answered {reply} while {step}"
        elif isinstance(error, ssl.SSLCertVerificationError):
            reason = one_line(error.verify_message or str(error))
            text = f"certificate of {where} not trusted: {reason}: check CTPOLLER_SMTP_HOST"
            return NotifyError(text, permanent=False, scope="settings")
        elif isinstance(error, ssl.SSLError):
            reason = one_line(error.reason or str(error))
            text = f"TLS with {where} failed ({reason}): check CTPOLLER_SMTP_PORT and CTPOLLER_SMTP_SECURITY"
        elif isinstance(error, ConnectionRefusedError):
            text = f"cannot connect to SMTP server {where} (connection refused): check CTPOLLER_SMTP_HOST"
        elif isinstance(error, TimeoutError) or isinstance(error.__context__, TimeoutError):
            # smtplib turns a read that timed out into SMTPServerDisconnected ("Connection
            # unexpectedly closed: timed out"): the server never answered, it did not hang up.
            text = (
                f"SMTP server {where} timed out: no answer within {self.timeout:g} s while {step} "
                "(check CTPOLLER_SMTP_HOST and CTPOLLER_SMTP_PORT, or raise CTPOLLER_SMTP_TIMEOUT)"
            )
        elif isinstance(error, smtplib.SMTPServerDisconnected):
            text = f"SMTP server {where} closed the connection while {step}"
        elif isinstance(error, socket.gaierror):
            reason = one_line(str(error))
            text = f"cannot resolve SMTP server host {self.host!r} ({reason}): check CTPOLLER_SMTP_HOST"
        else:
            reason = self._scrub(one_line(str(error)) or error.__class__.__name__)
            text = f"SMTP with {where} failed while {step} ({reason})"
        return NotifyError(text, permanent=False)
