"""Fixtures of the reliability tests: background processes, SMTP servers that misbehave on purpose,
an OpenREM-shaped PostgreSQL written the way OpenREM writes it, throwaway TLS certificates."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import sqlalchemy as sa
from aiosmtpd.smtp import Envelope, Session

from ctpoller.demo.openrem import OpenremImporter
from integration.smtp_server import Certificates, Delivered, Recorder, Server, make_certificates, start_server

from .harness import Processes


@dataclass
class Faulty(Recorder):
    """An SMTP handler that can fail DATA the ways real servers and networks do.

    ``drop_data``: close the connection instead of answering the next N DATA commands (the content
    reached the server, the reply never reaches the client; the server keeps nothing).
    ``hang``: seconds to sit on DATA without answering (``data_arrived`` is set first).
    ``before_accept``: called with the content right before the 250 is returned.
    """

    drop_data: int = 0
    dropped: list[bytes] = field(default_factory=list)
    hang: float = 0.0
    before_accept: Callable[[bytes], None] | None = None
    data_arrived: threading.Event = field(default_factory=threading.Event)

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
        if self.data_replies:
            self.data_peers.append(session.peer)
            return self.data_replies.pop(0)
        if self.before_accept is not None:
            self.before_accept(content)
        self.data_peers.append(session.peer)
        self.delivered.append(Delivered(session.peer, envelope.mail_from, list(envelope.rcpt_tos), content))
        return "250 2.0.0 Message accepted for delivery"


@pytest.fixture
def processes() -> Iterator[Processes]:
    """Background ctpoller processes; any still running at the end of the test is killed."""
    tracked = Processes()
    try:
        yield tracked
    finally:
        tracked.cleanup()


@pytest.fixture
def serve() -> Iterator[Callable[..., Server]]:
    """``serve(handler, **aiosmtpd options)`` starts an SMTP server on 127.0.0.1; stopped after the test."""
    started: list[Server] = []

    def start(handler: Recorder | None = None, **options: Any) -> Server:
        server = start_server(handler if handler is not None else Faulty(), **options)
        started.append(server)
        return server

    try:
        yield start
    finally:
        for server in started:
            server.stop()


@pytest.fixture
def mail(serve: Callable[..., Server]) -> Server:
    """A plain SMTP server whose handler is a ``Faulty`` (behaving well until told otherwise)."""
    return serve(Faulty())


@pytest.fixture
def openrem(openrem_db: str) -> Iterator[OpenremImporter]:
    engine = sa.create_engine(openrem_db)
    try:
        yield OpenremImporter(engine)
    finally:
        engine.dispose()


@pytest.fixture(scope="session")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("reliability-certificates"))
