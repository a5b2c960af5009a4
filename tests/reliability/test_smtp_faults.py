"""The real ctpoller process against an SMTP server that refuses, drops, or cannot be trusted.

Temporary refusals (4xx, a dropped connection) keep the message queued: the run exits 75 and a later
run delivers it exactly once. Permanent refusals (5xx) are recorded as failed, shown in the archive,
reported once with exit 1 and never retried. TLS that cannot be trusted sends nothing, not even the
login, and keeps the message queued; the run exits 1 because the mail settings need a person.
"""

from __future__ import annotations

import pytest

from ctpoller.demo.exams import GE_VCT, SIEMENS_FLASH_QA
from support.process import EXIT_PERMANENT, EXIT_TEMPORARY, PHYSICS, base_env, ctpoller
from support.smtp import Recorder, message_ids, parse
from support.workbooks import year_workbook

from .harness import COLUMN, archive_rows, initialise_state, state_view

pytestmark = [pytest.mark.reliability, pytest.mark.postgres, pytest.mark.smtp]

PASSWORD = "Pa55-w0rd-never-in-clear"


def started(tmp_path, openrem_db, port, **extra: str) -> dict[str, str]:
    env = {**base_env(tmp_path, source_url=openrem_db, smtp_port=port), **extra}
    initialise_state(env["CTPOLLER_STATE_URL"])  # as the first run does against the empty OpenREM
    return env


@pytest.mark.parametrize(
    ("where", "reply"),
    [
        ("data", "421 4.3.2 service shutting down"),
        ("data", "451 4.3.0 local error in processing"),
        ("rcpt", "452 4.5.3 too many recipients"),
        ("mail", "421 4.7.0 try again later"),
    ],
)
def test_temporary_refusal_keeps_the_message_queued_and_a_later_run_delivers_it_once(
    where, reply, openrem_db, openrem, serve, tmp_path
):
    handler = Recorder()
    if where == "data":
        handler.data_replies.append(reply)
    elif where == "rcpt":
        handler.rcpt_replies[PHYSICS] = reply
    else:
        handler.mail_reply = reply
    server = serve(handler)
    env = started(tmp_path, openrem_db, server.port)
    openrem.import_study(GE_VCT)

    refused = ctpoller("run", env=env, cwd=tmp_path)
    refused.assert_completed_with_problems(EXIT_TEMPORARY, reply.split()[0])
    view = state_view(env["CTPOLLER_STATE_URL"])
    assert view.integrity == "ok" and len(view.unsent_ids) == 1 and handler.delivered == []
    assert {row[COLUMN["status"]] for row in archive_rows(year_workbook(tmp_path / "archive.xlsx"))} == {"pending"}

    handler.rcpt_replies.clear()
    handler.mail_reply = None
    ctpoller("run", env=env, cwd=tmp_path).assert_ok()
    assert message_ids(handler.delivered) == view.unsent_ids
    assert state_view(env["CTPOLLER_STATE_URL"]).outbox == {"sent": 1}  # nothing left to send again
    assert {row[COLUMN["status"]] for row in archive_rows(year_workbook(tmp_path / "archive.xlsx"))} == {"sent"}


@pytest.mark.parametrize(
    ("where", "reply"),
    [
        ("data", "554 5.6.0 transaction failed"),
        ("rcpt", "550 5.1.1 no such user"),
    ],
)
def test_permanent_refusal_is_reported_once_kept_as_failed_and_never_retried(
    where, reply, openrem_db, openrem, serve, tmp_path
):
    handler = Recorder()
    if where == "data":
        handler.data_replies.append(reply)
    else:
        handler.rcpt_replies[PHYSICS] = reply
    server = serve(handler)
    env = started(tmp_path, openrem_db, server.port)
    openrem.import_study(GE_VCT)

    refused = ctpoller("run", env=env, cwd=tmp_path)
    refused.assert_completed_with_problems(EXIT_PERMANENT, reply.split()[0])
    attempts = len(handler.data_peers)
    rows = archive_rows(year_workbook(tmp_path / "archive.xlsx"))
    assert {row[COLUMN["status"]] for row in rows} == {"failed"}
    assert all(reply.split()[0] in row[COLUMN["error"]] for row in rows)

    handler.rcpt_replies.clear()
    openrem.import_study(SIEMENS_FLASH_QA)  # a later exam is not held back by the failed one
    ctpoller("run", env=env, cwd=tmp_path).assert_ok()
    ctpoller("run", env=env, cwd=tmp_path).assert_ok()
    assert len(handler.data_peers) == attempts + 1, "the refused message was tried again"
    [delivered] = handler.delivered
    assert SIEMENS_FLASH_QA.uid in parse(delivered.content).get_body(("plain",)).get_content()
    view = state_view(env["CTPOLLER_STATE_URL"])
    assert view.outbox == {"failed": 1, "sent": 1} and view.integrity == "ok"
    statuses = [row[COLUMN["status"]] for row in archive_rows(year_workbook(tmp_path / "archive.xlsx"))]
    assert sorted(statuses) == ["failed", "failed", "sent", "sent"]  # Flash QA: CTDIvol 65.47, DLP 1590


def test_a_temporary_refusal_of_one_message_does_not_hold_back_the_next(openrem_db, openrem, mail, tmp_path):
    """Oldest first, but a 4xx that concerns one message (its only recipient is busy) is not a server outage."""
    (tmp_path / "rules.toml").write_text(
        '[[rule]]\nname = "Facial"\nstudy = "facial"\ndlp_total = 1000\nrecipients = ["facial@hospital.example"]\n'
        '[[rule]]\nname = "QA"\nstudy = "physicstesting"\nctdivol = 50\nrecipients = ["physics@hospital.example"]\n',
        encoding="utf-8",
    )
    env = started(tmp_path, openrem_db, mail.port)
    openrem.import_study(GE_VCT)  # the older message: to facial@ only
    openrem.import_study(SIEMENS_FLASH_QA)  # the newer one: to physics@ only
    mail.handler.rcpt_replies["facial@hospital.example"] = "450 4.2.1 mailbox busy"

    busy = ctpoller("run", env=env, cwd=tmp_path)

    busy.assert_completed_with_problems(EXIT_TEMPORARY, "450")
    assert [d.rcpt_tos for d in mail.handler.delivered] == [["physics@hospital.example"]]
    mail.handler.rcpt_replies.clear()
    ctpoller("run", env=env, cwd=tmp_path).assert_ok()
    assert [d.rcpt_tos for d in mail.handler.delivered] == [["physics@hospital.example"], ["facial@hospital.example"]]
    assert state_view(env["CTPOLLER_STATE_URL"]).outbox == {"sent": 2}


def test_connection_dropped_before_the_reply_to_data_is_retried_and_delivered_once(openrem_db, openrem, mail, tmp_path):
    env = started(tmp_path, openrem_db, mail.port)
    openrem.import_study(GE_VCT)
    mail.handler.drop_data = 1

    dropped = ctpoller("run", env=env, cwd=tmp_path)
    dropped.assert_completed_with_problems(EXIT_TEMPORARY, "closed the connection")
    assert len(mail.handler.dropped) == 1 and mail.handler.delivered == []

    ctpoller("run", env=env, cwd=tmp_path).assert_ok()
    [lost] = mail.handler.dropped
    assert message_ids(mail.handler.delivered) == [str(parse(lost)["Message-ID"]).strip()]
    assert state_view(env["CTPOLLER_STATE_URL"]).outbox == {"sent": 1}


def test_server_without_starttls_gets_neither_the_login_nor_the_message(openrem_db, openrem, serve, tmp_path):
    handler = Recorder()
    server = serve(handler, authenticator=handler.authenticate, auth_require_tls=False)  # AUTH offered in clear
    env = started(tmp_path, openrem_db, server.port)
    openrem.import_study(GE_VCT)
    secure = {
        **env,
        "CTPOLLER_SMTP_SECURITY": "starttls",
        "CTPOLLER_SMTP_USERNAME": "ctpoller",
        "CTPOLLER_SMTP_PASSWORD": PASSWORD,
    }

    refused = ctpoller("run", env=secure, cwd=tmp_path)
    refused.assert_completed_with_problems(EXIT_PERMANENT, "does not offer STARTTLS")  # the settings need a person
    assert handler.logins == [] and handler.data_peers == [] and handler.delivered == []
    assert PASSWORD not in refused.stderr + refused.stdout
    assert len(state_view(env["CTPOLLER_STATE_URL"]).unsent_ids) == 1


@pytest.mark.parametrize("security", ["starttls", "ssl"])
def test_certificate_for_another_host_is_refused_before_the_login_and_the_message(
    security, certificates, openrem_db, openrem, serve, tmp_path
):
    handler = Recorder()
    tls = certificates.server_context(wrong_host=True)
    # aiosmtpd offers AUTH over implicit TLS only when told that the connection needs no STARTTLS
    options = {"tls_context": tls, "require_starttls": True} if security == "starttls" else {"ssl_context": tls}
    server = serve(handler, authenticator=handler.authenticate, auth_require_tls=security == "starttls", **options)
    env = started(tmp_path, openrem_db, server.port)
    openrem.import_study(GE_VCT)
    secure = {
        **env,
        "CTPOLLER_SMTP_SECURITY": security,
        "CTPOLLER_SMTP_USERNAME": "ctpoller",
        "CTPOLLER_SMTP_PASSWORD": PASSWORD,
        "SSL_CERT_FILE": str(certificates.ca),  # the test CA is trusted: only the host name is wrong
    }

    refused = ctpoller("run", env=secure, cwd=tmp_path)
    refused.assert_completed_with_problems(EXIT_PERMANENT, "not trusted")  # the settings need a person
    assert handler.logins == [] and handler.data_peers == [] and handler.delivered == []
    assert PASSWORD not in refused.stderr + refused.stdout
    assert len(state_view(env["CTPOLLER_STATE_URL"]).unsent_ids) == 1


@pytest.mark.parametrize("security", ["starttls", "ssl"])
def test_trusted_certificate_for_the_right_host_logs_in_and_delivers(
    security, certificates, openrem_db, openrem, serve, tmp_path
):
    """The control for the refusals above: the same set-up with the right certificate works."""
    handler = Recorder()
    tls = certificates.server_context()
    # aiosmtpd offers AUTH over implicit TLS only when told that the connection needs no STARTTLS
    options = {"tls_context": tls, "require_starttls": True} if security == "starttls" else {"ssl_context": tls}
    server = serve(handler, authenticator=handler.authenticate, auth_require_tls=security == "starttls", **options)
    env = started(tmp_path, openrem_db, server.port)
    openrem.import_study(GE_VCT)
    secure = {
        **env,
        "CTPOLLER_SMTP_SECURITY": security,
        "CTPOLLER_SMTP_USERNAME": "ctpoller",
        "CTPOLLER_SMTP_PASSWORD": PASSWORD,
        "SSL_CERT_FILE": str(certificates.ca),
    }

    ctpoller("run", env=secure, cwd=tmp_path).assert_ok()
    assert [(login, password) for _, login, password in handler.logins] == [(b"ctpoller", PASSWORD.encode())]
    assert len(handler.delivered) == 1
