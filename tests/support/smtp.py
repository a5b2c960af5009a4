"""A real SMTP server for tests (aiosmtpd on 127.0.0.1) that records what reached it and refuses or
misbehaves as told, what it received, throwaway TLS certificates (openssl CLI), and their fixtures."""

from __future__ import annotations

import asyncio
import email
import email.policy
import ssl
import subprocess
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session

from .ports import free_port

SERVER_NAME = "smtp.test.invalid"


@dataclass
class Delivered:
    """One message the server accepted."""

    peer: Any
    mail_from: str | None
    rcpt_tos: list[str]
    content: bytes


@dataclass
class Recorder:
    """aiosmtpd handler: answers as told, fails the ways real servers and networks do, and records
    what reached it.

    ``mail_reply`` answers every MAIL FROM; ``rcpt_replies`` map an address to the reply to its RCPT;
    logins succeed when ``accept_login``. DATA, in this order: ``drop_data`` closes the connection
    instead of answering the next N (the content reached the server, the reply never reaches the client;
    the server keeps nothing); ``hang`` sits that many seconds without answering, then refuses;
    ``refuse_data`` answers every DATA while it is set; ``data_replies`` are used, one per DATA;
    ``before_accept`` is called with the content right before the 250. ``data_arrived`` is set when
    the first DATA arrives. ``port`` is where ``start_server`` made it listen.
    """

    data_replies: list[str] = field(default_factory=list)
    mail_reply: str | None = None
    rcpt_replies: dict[str, str] = field(default_factory=dict)
    accept_login: bool = True
    refuse_data: str | None = None
    drop_data: int = 0
    hang: float = 0.0
    before_accept: Callable[[bytes], None] | None = None
    port: int | None = None
    delivered: list[Delivered] = field(default_factory=list)
    data_peers: list[Any] = field(default_factory=list)
    logins: list[tuple[str, bytes, bytes]] = field(default_factory=list)
    dropped: list[bytes] = field(default_factory=list)
    data_arrived: threading.Event = field(default_factory=threading.Event)

    @property
    def messages(self) -> list[EmailMessage]:
        """Every message accepted so far, parsed."""
        return [parse(d.content) for d in self.delivered]

    async def handle_MAIL(
        self, server: Any, session: Session, envelope: Envelope, address: str, mail_options: list[str]
    ) -> str:
        if self.mail_reply is not None:
            return self.mail_reply
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(
        self, server: Any, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        reply = self.rcpt_replies.get(address)
        if reply is not None:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Session, envelope: Envelope) -> str:
        content = envelope.content if isinstance(envelope.content, bytes) else b""
        self.data_arrived.set()
        if self.drop_data:
            self.drop_data -= 1
            self.dropped.append(content)
            server.transport.abort()
            return "421 4.4.2 connection dropped"  # never reaches the client: the transport is gone
        if self.hang:
            await asyncio.sleep(self.hang)
            return "451 4.3.0 too late"
        if self.refuse_data is not None:
            self.data_peers.append(session.peer)
            return self.refuse_data
        if self.data_replies:
            self.data_peers.append(session.peer)
            return self.data_replies.pop(0)
        if self.before_accept is not None:
            self.before_accept(content)
        self.data_peers.append(session.peer)
        self.delivered.append(Delivered(session.peer, envelope.mail_from, list(envelope.rcpt_tos), content))
        return "250 2.0.0 Message accepted for delivery"

    def authenticate(
        self, server: Any, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        if isinstance(auth_data, LoginPassword):
            self.logins.append((mechanism, auth_data.login, auth_data.password))
        return AuthResult(success=self.accept_login, handled=False)


@dataclass
class Server:
    handler: Recorder
    port: int
    controller: Controller
    running: bool = True

    def stop(self) -> None:
        """Stop the server; stopping it again does nothing."""
        if self.running:
            self.running = False
            self.controller.stop()


def start_server(handler: Recorder | None = None, **smtp_options: Any) -> Server:
    """Start aiosmtpd on 127.0.0.1 (a plain ``Recorder`` unless told); the caller must ``server.stop()``."""
    handler = handler if handler is not None else Recorder()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port, server_hostname=SERVER_NAME, **smtp_options)
    controller.start()
    handler.port = port
    return Server(handler, port, controller)


@dataclass(frozen=True)
class Certificates:
    """A throwaway CA and two server certificates it signed: for 127.0.0.1 and for another host."""

    ca: Path
    good_cert: Path
    good_key: Path
    wrong_cert: Path
    wrong_key: Path

    def server_context(self, *, wrong_host: bool = False) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        if wrong_host:
            context.load_cert_chain(self.wrong_cert, self.wrong_key)
        else:
            context.load_cert_chain(self.good_cert, self.good_key)
        return context

    def client_context(self) -> ssl.SSLContext:
        """Verifies certificates and host names like the default context, trusting only the test CA."""
        return ssl.create_default_context(cafile=str(self.ca))


def _openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True)


def make_certificates(directory: Path) -> Certificates:
    """Generate the CA and server certificates with the openssl CLI (EC keys: fast)."""
    curve = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    ca, ca_key = directory / "ca.pem", directory / "ca.key"
    _openssl(
        "req", "-x509", *curve, "-keyout", ca_key, "-out", ca, "-days", "2",
        "-subj", "/CN=ctpoller test CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    paths: dict[str, tuple[Path, Path]] = {}
    for serial, (name, names) in enumerate(
        (("good", "IP:127.0.0.1,DNS:localhost"), ("wrong", "DNS:smtp.wrong.example")), start=1
    ):
        cert, key, csr = (directory / f"{name}.{ext}" for ext in ("pem", "key", "csr"))
        extensions = directory / f"{name}.ext"
        extensions.write_text(
            f"subjectAltName={names}\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
            "extendedKeyUsage=serverAuth\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n"
        )
        _openssl("req", *curve, "-keyout", key, "-out", csr, "-subj", f"/CN={name} smtp")
        _openssl(
            "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-set_serial", str(serial),
            "-days", "2", "-out", cert, "-extfile", extensions,
        )  # fmt: skip
        paths[name] = (cert, key)
    return Certificates(ca, *paths["good"], *paths["wrong"])


# -- what was delivered -------------------------------------------------------------------------------


def parse(content: bytes) -> EmailMessage:
    parsed = email.message_from_bytes(content, policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def body(message: EmailMessage) -> str:
    """The plain-text part."""
    part = message.get_body(("plain",))
    assert part is not None
    text = part.get_content()
    assert isinstance(text, str)
    return text


def message_ids(delivered: Iterable[Delivered]) -> list[str]:
    return [str(parse(d.content)["Message-ID"]).strip() for d in delivered]


def study_uids(delivered: Iterable[Delivered]) -> list[str]:
    """The Study Instance UID each delivered email tells about (from its "Study Instance UID:" line)."""
    found = []
    for d in delivered:
        lines = [line.strip() for line in body(parse(d.content)).splitlines()]
        found.append(next(line.split(": ", 1)[1] for line in lines if line.startswith("Study Instance UID:")))
    return found


# -- fixtures (registered by tests/conftest.py) -------------------------------------------------------


@pytest.fixture
def serve() -> Iterator[Callable[..., Server]]:
    """``serve(Recorder(...), **aiosmtpd SMTP options)`` starts an SMTP server; all stopped after the test."""
    started: list[Server] = []

    def start(handler: Recorder | None = None, **options: Any) -> Server:
        server = start_server(handler, **options)
        started.append(server)
        return server

    try:
        yield start
    finally:
        for server in started:
            server.stop()


@pytest.fixture
def mail(serve: Callable[..., Server]) -> Server:
    """A plain SMTP server, behaving well until told otherwise through ``mail.handler``."""
    return serve()


@pytest.fixture
def inbox(mail: Server) -> Recorder:
    """The recorder of a plain SMTP server (``inbox.port``, ``inbox.messages``)."""
    return mail.handler


@pytest.fixture(scope="session")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("certificates"))
