"""The .eml outbox: one file per Message-ID, written atomically."""

from __future__ import annotations

import email
import email.policy
from pathlib import Path

import pytest

from ctpoller.core.model import Message
from ctpoller.errors import NotifyError
from ctpoller.mail.eml import EmlDirectoryNotifier, eml_name
from support import factories

MAIL_FROM = "ctpoller@hospital.example"


def message(message_id: str = "<ctpoller.7.abc@hospital.example>", **changes: object) -> Message:
    """The shared message (support.factories), to one physicist."""
    return factories.message(message_id=message_id, **{"recipients": ("physicist@hospital.example",), **changes})


def test_send_writes_the_rendered_email_as_an_eml_file(tmp_path: Path) -> None:
    outbox = EmlDirectoryNotifier(tmp_path, mail_from=MAIL_FROM)

    outbox.send(message())

    files = list(tmp_path.iterdir())
    assert [f.suffix for f in files] == [".eml"]
    parsed = email.message_from_bytes(files[0].read_bytes(), policy=email.policy.default)
    assert parsed["Message-ID"] == "<ctpoller.7.abc@hospital.example>"
    assert parsed["To"] == "physicist@hospital.example"
    assert parsed["From"] == MAIL_FROM
    # CPython may fold a long subject onto the next line, which the parser reads back with a leading space.
    assert parsed["Subject"].strip().startswith("CT dose 1.52× limit: CT HEAD")


def test_sending_the_same_message_id_again_replaces_its_file(tmp_path: Path) -> None:
    outbox = EmlDirectoryNotifier(tmp_path, mail_from=MAIL_FROM)

    outbox.send(message())
    outbox.send(message(recipients=("other@hospital.example",)))

    files = list(tmp_path.iterdir())
    assert len(files) == 1
    assert b"other@hospital.example" in files[0].read_bytes()


def test_different_message_ids_get_different_files_even_when_they_look_alike(tmp_path: Path) -> None:
    outbox = EmlDirectoryNotifier(tmp_path, mail_from=MAIL_FROM)

    for message_id in ("<a/b@x>", "<a_b@x>", "<a:b@x>"):
        outbox.send(message(message_id))

    assert len(list(tmp_path.glob("*.eml"))) == 3


def test_file_name_is_stable_and_cannot_leave_the_directory(tmp_path: Path) -> None:
    hostile = "<../../etc/passwd\x00\n@evil>"
    name = eml_name(hostile)

    assert name == eml_name(hostile)
    assert "/" not in name and "\x00" not in name and "\n" not in name
    assert not name.startswith(".")
    assert name.endswith(".eml")
    assert len(name) < 120
    EmlDirectoryNotifier(tmp_path, mail_from=MAIL_FROM).send(message(hostile))
    assert [p.name for p in tmp_path.iterdir()] == [name]


def test_missing_directory_is_created(tmp_path: Path) -> None:
    directory = tmp_path / "spool" / "outbox"

    EmlDirectoryNotifier(directory, mail_from=MAIL_FROM).send(message())

    assert len(list(directory.glob("*.eml"))) == 1


def test_directory_that_is_a_file_raises_a_temporary_notify_error(tmp_path: Path) -> None:
    not_a_directory = tmp_path / "outbox"
    not_a_directory.write_text("I am a file")

    with pytest.raises(NotifyError) as caught:
        EmlDirectoryNotifier(not_a_directory, mail_from=MAIL_FROM).send(message())

    assert caught.value.permanent is False
    assert str(not_a_directory) in str(caught.value)
    assert "CTPOLLER_OUTBOX_DIR" in str(caught.value)
    assert not_a_directory.read_text() == "I am a file"


def test_no_temporary_file_is_left_behind_after_a_failed_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(source: object, target: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("ctpoller.files.os.replace", refuse)
    with pytest.raises(NotifyError, match="Permission denied"):
        EmlDirectoryNotifier(tmp_path, mail_from=MAIL_FROM).send(message())

    assert list(tmp_path.iterdir()) == []


def test_close_does_nothing_and_never_raises(tmp_path: Path) -> None:
    outbox = EmlDirectoryNotifier(tmp_path / "never created", mail_from=MAIL_FROM)

    outbox.close()
    outbox.close()

    assert outbox.name == "outbox"
    assert not (tmp_path / "never created").exists()


def test_a_failed_alert_says_so_in_the_status_line() -> None:
    from ctpoller.jobs.deliver import failed_line

    alert = factories.message(factories.notification(severity="alert"), last_error="550 no such user", attempts=3)
    plain = factories.message(last_error="550 no such user", attempts=3)

    assert failed_line(alert) == "id 7 (an ALERT, study date 2026-03-02, 3 attempts): 550 no such user"
    assert failed_line(plain) == "id 7 (study date 2026-03-02, 3 attempts): 550 no such user"


def test_the_digest_marks_an_open_alert() -> None:
    from datetime import UTC

    from ctpoller.jobs.digest import _line

    alert = factories.archive_row(notification={"severity": "alert"})

    assert ", Main CT, [ALERT] adult head: CTDIvol (event) 76.12 > 50 mGy, " in _line(alert, UTC)
    assert ", Main CT, adult head: " in _line(factories.archive_row(), UTC)
