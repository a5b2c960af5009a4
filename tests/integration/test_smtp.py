"""SmtpNotifier against a real SMTP server (aiosmtpd on 127.0.0.1): delivery, refusals, TLS, login."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from ctpoller.errors import NotifyError
from ctpoller.mail.smtp import SmtpNotifier
from support.factories import RECIPIENTS, message
from support.ports import free_port
from support.smtp import Certificates, Recorder, Server, parse

pytestmark = pytest.mark.smtp

MAIL_FROM = "ctpoller@hospital.example"
PASSWORD = "s3cret-Pa55"


@pytest.fixture
def connect() -> Iterator[Callable[..., SmtpNotifier]]:
    """Build an SmtpNotifier for 127.0.0.1 (plain, no login unless told); closed after the test."""
    notifiers: list[SmtpNotifier] = []

    def build(port: int, **options: Any) -> SmtpNotifier:
        settings: dict[str, Any] = {
            "security": "none",
            "username": None,
            "password": None,
            "timeout": 5.0,
            "mail_from": MAIL_FROM,
        }
        settings.update(options)
        host = settings.pop("host", "127.0.0.1")
        notifier = SmtpNotifier(host, port, **settings)
        notifiers.append(notifier)
        return notifier

    yield build
    for notifier in notifiers:
        notifier.close()


def test_message_is_delivered_with_its_message_id_recipients_and_both_parts(
    serve: Callable[..., Server], connect: Callable[..., SmtpNotifier]
) -> None:
    server = serve()

    connect(server.port).send(message())

    [delivered] = server.handler.delivered
    assert delivered.mail_from == MAIL_FROM
    assert delivered.rcpt_tos == list(RECIPIENTS)
    parsed = parse(delivered.content)
    assert parsed["Message-ID"] == "<ctpoller.7.abc123@hospital.example>"
    plain, html = parsed.get_body(("plain",)), parsed.get_body(("html",))
    assert plain is not None and "Accession number: ACC0042" in plain.get_content()
    assert html is not None and "ACC0042" in html.get_content()


def test_later_sends_reuse_the_open_connection(
    serve: Callable[..., Server], connect: Callable[..., SmtpNotifier]
) -> None:
    server = serve()
    notifier = connect(server.port)

    notifier.send(message())
    notifier.send(message(message_id="<ctpoller.8@hospital.example>"))

    first, second = server.handler.delivered
    assert first.peer == second.peer


def test_connection_closed_by_the_server_while_idle_is_reopened(
    serve: Callable[..., Server], connect: Callable[..., SmtpNotifier]
) -> None:
    server = serve(timeout=0.3)
    notifier = connect(server.port)

    notifier.send(message())
    time.sleep(0.8)
    notifier.send(message(message_id="<ctpoller.8@hospital.example>"))

    first, second = server.handler.delivered
    assert first.peer != second.peer


def test_after_an_error_the_next_send_uses_a_new_connection(
    serve: Callable[..., Server], connect: Callable[..., SmtpNotifier]
) -> None:
    server = serve(Recorder(data_replies=["451 4.3.0 try again later"]))
    notifier = connect(server.port)

    with pytest.raises(NotifyError):
        notifier.send(message())
    notifier.send(message())

    failed_peer, delivered_peer = server.handler.data_peers
    assert failed_peer != delivered_peer
    assert len(server.handler.delivered) == 1


@pytest.mark.parametrize(
    ("reply", "permanent"),
    [
        ("421 4.3.2 service shutting down", False),
        ("451 4.3.0 local error, try later", False),
        ("452 4.3.1 insufficient system storage", False),
        ("550 5.7.1 message refused", True),
        ("554 5.6.0 transaction failed", True),
    ],
)
def test_reply_to_data_decides_whether_the_failure_is_permanent(
    reply: str, permanent: bool, serve: Callable[..., Server], connect: Callable[..., SmtpNotifier]
) -> None:
    server = serve(Recorder(data_replies=[reply]))

    with pytest.raises(NotifyError) as caught:
        connect(server.port).send(message())

    assert caught.value.permanent is permanent
    assert f"127.0.0.1:{server.port}" in str(caught.value)
    assert reply in str(caught.value)
    assert "\n" not in str(caught.value)
    assert server.handler.delivered == []


def test_refused_sender_is_a_temporary_settings_problem(
    serve: Callable[..., Server], connect: Callable[..., SmtpNotifier]
) -> None:
    server = serve(Recorder(mail_reply="553 5.7.1 sender not allowed"))

    with pytest.raises(NotifyError, match="CTPOLLER_MAIL_FROM") as caught:
        connect(server.port).send(message())

    assert caught.value.permanent is False
    assert MAIL_FROM in str(caught.value)
    assert server.handler.data_peers == []


def test_every_recipient_refused_with_5xx_is_permanent(
    serve: Callable[..., Server], connect: Callable[..., SmtpNotifier]
) -> None:
    refusals = {address: "550 5.1.1 no such user" for address in RECIPIENTS}
    server = serve(Recorder(rcpt_replies=refusals))

    with pytest.raises(NotifyError, match="refused every recipient") as caught:
        connect(server.port).send(message())

    assert caught.value.permanent is True
    assert server.handler.data_peers == []


def test_recipients_refused_with_any_4xx_stay_temporary(
    serve: Callable[..., Server], connect: Callable[..., SmtpNotifier]
) -> None:
    refusals = {RECIPIENTS[0]: "450 4.2.1 mailbox busy", RECIPIENTS[1]: "550 5.1.1 no such user"}
    server = serve(Recorder(rcpt_replies=refusals))

    with pytest.raises(NotifyError) as caught:
        connect(server.port).send(message())

    assert caught.value.permanent is False


def test_partly_refused_message_reaches_the_others_and_names_who_was_refused(
    serve: Callable[..., Server], connect: Callable[..., SmtpNotifier]
) -> None:
    server = serve(Recorder(rcpt_replies={RECIPIENTS[1]: "550 5.1.1 no such user"}))

    with pytest.raises(NotifyError) as caught:
        connect(server.port).send(message())

    assert caught.value.permanent is True
    assert "qa@hospital.example (550 5.1.1 no such user)" in str(caught.value)
    [delivered] = server.handler.delivered
    assert delivered.rcpt_tos == [RECIPIENTS[0]]


def test_closed_port_is_a_temporary_error(connect: Callable[..., SmtpNotifier]) -> None:
    port = free_port()

    with pytest.raises(NotifyError, match="connection refused") as caught:
        connect(port).send(message())

    assert caught.value.permanent is False
    assert f"127.0.0.1:{port}" in str(caught.value)


def test_message_without_recipients_is_permanent_and_connects_to_nothing(
    connect: Callable[..., SmtpNotifier],
) -> None:
    with pytest.raises(NotifyError, match="no recipients: set CTPOLLER_MAIL_TO") as caught:
        connect(free_port()).send(message(recipients=()))

    assert caught.value.permanent is True


def test_starttls_not_offered_sends_nothing_and_no_credentials(
    serve: Callable[..., Server], connect: Callable[..., SmtpNotifier]
) -> None:
    handler = Recorder()
    server = serve(handler, authenticator=handler.authenticate, auth_require_tls=False)
    notifier = connect(server.port, security="starttls", username="ctpoller", password=PASSWORD)

    with pytest.raises(NotifyError, match="does not offer STARTTLS") as caught:
        notifier.send(message())

    assert caught.value.permanent is False
    assert handler.logins == []
    assert handler.data_peers == []


def test_starttls_certificate_for_another_host_is_refused_before_anything_is_sent(
    certificates: Certificates, serve: Callable[..., Server], connect: Callable[..., SmtpNotifier]
) -> None:
    handler = Recorder()
    server = serve(handler, tls_context=certificates.server_context(wrong_host=True), require_starttls=True)
    notifier = connect(
        server.port,
        security="starttls",
        username="ctpoller",
        password=PASSWORD,
        ssl_context=certificates.client_context(),
    )

    with pytest.raises(NotifyError, match=f"certificate of 127.0.0.1:{server.port} not trusted") as caught:
        notifier.send(message())

    assert caught.value.permanent is False
    assert "CTPOLLER_SMTP_HOST" in str(caught.value)
    assert handler.logins == []
    assert handler.data_peers == []


def test_certificate_from_an_unknown_authority_is_not_trusted_by_default(
    certificates: Certificates, serve: Callable[..., Server], connect: Callable[..., SmtpNotifier]
) -> None:
    server = serve(tls_context=certificates.server_context(), require_starttls=True)

    with pytest.raises(NotifyError, match="not trusted") as caught:
        connect(server.port, security="starttls").send(message())

    assert caught.value.permanent is False
    assert server.handler.data_peers == []


def test_starttls_with_a_trusted_certificate_logs_in_and_delivers(
    certificates: Certificates, serve: Callable[..., Server], connect: Callable[..., SmtpNotifier]
) -> None:
    handler = Recorder()
    server = serve(
        handler,
        tls_context=certificates.server_context(),
        require_starttls=True,
        authenticator=handler.authenticate,
    )
    notifier = connect(
        server.port,
        security="starttls",
        username="ctpoller",
        password=PASSWORD,
        ssl_context=certificates.client_context(),
    )

    notifier.send(message())

    assert [(login, password) for _, login, password in handler.logins] == [(b"ctpoller", PASSWORD.encode())]
    assert len(handler.delivered) == 1


def test_implicit_tls_delivers(
    certificates: Certificates, serve: Callable[..., Server], connect: Callable[..., SmtpNotifier]
) -> None:
    server = serve(ssl_context=certificates.server_context())

    connect(server.port, security="ssl", ssl_context=certificates.client_context()).send(message())

    assert len(server.handler.delivered) == 1


def test_plain_tls_mismatch_is_a_temporary_error_naming_the_settings(
    serve: Callable[..., Server], connect: Callable[..., SmtpNotifier]
) -> None:
    server = serve()

    with pytest.raises(NotifyError, match="CTPOLLER_SMTP_SECURITY") as caught:
        connect(server.port, security="ssl", timeout=2.0).send(message())

    assert caught.value.permanent is False


def test_login_over_a_plain_connection_is_allowed_to_loopback(
    serve: Callable[..., Server], connect: Callable[..., SmtpNotifier]
) -> None:
    handler = Recorder()
    server = serve(handler, authenticator=handler.authenticate, auth_require_tls=False)

    connect(server.port, username="ctpoller", password=PASSWORD).send(message())

    assert len(handler.logins) == 1
    assert len(handler.delivered) == 1


def test_login_over_a_plain_connection_to_another_host_is_refused_before_connecting(
    connect: Callable[..., SmtpNotifier],
) -> None:
    notifier = connect(25, host="192.0.2.10", username="ctpoller", password=PASSWORD, timeout=0.5)

    with pytest.raises(NotifyError, match="refusing to send the SMTP password") as caught:
        notifier.send(message())

    assert caught.value.permanent is False
    assert "192.0.2.10:25" in str(caught.value)


def test_rejected_login_keeps_the_message_queued_and_never_shows_the_password(
    serve: Callable[..., Server], connect: Callable[..., SmtpNotifier]
) -> None:
    handler = Recorder(accept_login=False)
    server = serve(handler, authenticator=handler.authenticate, auth_require_tls=False)

    with pytest.raises(NotifyError) as caught:
        connect(server.port, username="ctpoller", password=PASSWORD).send(message())

    text = str(caught.value)
    assert caught.value.permanent is False
    assert "535" in text
    assert "CTPOLLER_SMTP_USERNAME" in text and "CTPOLLER_SMTP_PASSWORD" in text
    assert PASSWORD not in text
    assert handler.delivered == []


def test_close_is_quiet_when_the_server_is_already_gone(
    serve: Callable[..., Server], connect: Callable[..., SmtpNotifier]
) -> None:
    server = serve()
    notifier = connect(server.port)
    notifier.send(message())
    server.stop()

    notifier.close()
    notifier.close()

    assert len(server.handler.delivered) == 1
