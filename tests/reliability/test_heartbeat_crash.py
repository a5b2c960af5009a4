"""The heartbeat's notice across a crash, with the real ``ctpoller`` process and a real SMTP server:
killed after the silence was recorded and before the server accepted its email, the next run
delivers it once, and no run announces it again."""

from __future__ import annotations

import time

import pytest

from support.process import base_env, ctpoller

pytestmark = [pytest.mark.reliability, pytest.mark.postgres, pytest.mark.smtp]

ADMIN = "pacs-admin@hospital.example"


def test_a_run_killed_between_recording_the_silence_and_sending_it_delivers_it_once_later(
    openrem_db, mail, processes, tmp_path
):
    env = base_env(tmp_path, source_url=openrem_db, smtp_port=mail.port)
    env.update(
        CTPOLLER_ADMIN_MAIL_TO=ADMIN,
        CTPOLLER_SILENCE_AFTER="1s",
        CTPOLLER_METRICS_FILE=str(tmp_path / "ctpoller.prom"),
    )
    ctpoller("run", env=env, cwd=tmp_path).assert_ok()  # the first run: counting begins
    time.sleep(1.5)
    mail.handler.hang = 30
    running = processes.start("run", env=env, cwd=tmp_path)
    assert mail.handler.data_arrived.wait(30), "the silence was never sent"
    processes.kill(running)
    assert mail.handler.delivered == []

    mail.handler.hang = 0
    ctpoller("run", env=env, cwd=tmp_path).assert_ok()
    ctpoller("run", env=env, cwd=tmp_path).assert_ok()
    assert [m["X-Ctpoller-Kind"] for m in mail.handler.messages] == ["silence"], "delivered exactly once"
    assert mail.handler.messages[0]["Subject"].startswith("ctpoller: OpenREM has sent no CT study for")
    assert [d.rcpt_tos for d in mail.handler.delivered] == [[ADMIN]]
    metrics = (tmp_path / "ctpoller.prom").read_text()
    assert "ctpoller_silence_alarm 1" in metrics and "ctpoller_source_silence_seconds " in metrics
    status = ctpoller("status", env=env, cwd=tmp_path).assert_ok().stdout
    assert "heartbeat: no new CT study since counting began" in status and "silence alarm after 1 s" in status
    assert "ALARM: OpenREM's silence was announced" in status
