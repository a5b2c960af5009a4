"""The tests' shared parts, one module a noun; tests/conftest.py registers their fixtures.

- ``pg``: a PostgreSQL server for the session, throwaway databases, a primary with a hot standby;
- ``smtp``: a real SMTP server (aiosmtpd on 127.0.0.1) that records and refuses as told, TLS certificates;
- ``process``: the real ``ctpoller`` command, run to the end or in the background;
- ``cycle``: one poll cycle in this process, on a virtual clock;
- ``factories``: notifications, messages and archive rows with sensible defaults;
- ``ports``: a free TCP port.

``tests/`` is on ``sys.path`` (pytest puts the directory of the root conftest.py there), so test modules
import these as ``from support import pg`` or ``from support.smtp import Recorder``.
"""
