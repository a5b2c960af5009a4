"""A real SMTP server for tests (aiosmtpd on 127.0.0.1) and throwaway TLS certificates (openssl CLI)."""

from __future__ import annotations

import socket
import ssl
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session

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
    """aiosmtpd handler: answers as told and records what reached it.

    ``mail_reply`` answers every MAIL FROM; ``data_replies`` are used, one per DATA, before answering
    250; ``rcpt_replies`` map an address to the reply to its RCPT; logins succeed when ``accept_login``.
    """

    data_replies: list[str] = field(default_factory=list)
    mail_reply: str | None = None
    rcpt_replies: dict[str, str] = field(default_factory=dict)
    accept_login: bool = True
    delivered: list[Delivered] = field(default_factory=list)
    data_peers: list[Any] = field(default_factory=list)
    logins: list[tuple[str, bytes, bytes]] = field(default_factory=list)

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
        self.data_peers.append(session.peer)
        if self.data_replies:
            return self.data_replies.pop(0)
        content = envelope.content if isinstance(envelope.content, bytes) else b""
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


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (right now)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def start_server(handler: Recorder, **smtp_options: Any) -> Server:
    """Start aiosmtpd on 127.0.0.1; the caller must ``server.stop()``."""
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port, server_hostname=SERVER_NAME, **smtp_options)
    controller.start()
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
