"""Settings: environment, .env file, systemd credentials; errors name the variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from ctpoller.errors import ConfigError
from ctpoller.settings import load_settings


@pytest.fixture(autouse=True)
def _elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no stray .env
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)


def test_defaults_are_sane(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    settings = load_settings()
    assert settings.settle_seconds == 120
    assert settings.smtp_security == "starttls" and settings.smtp_port_or_default == 587
    # never the working directory: runs started from different places share one store
    assert settings.state_url == f"sqlite:///{tmp_path / 'xdg' / 'ctpoller' / 'ctpoller-state.sqlite3'}"
    assert not (tmp_path / "xdg").exists()  # loading settings creates nothing; the first run does


def test_state_defaults_to_the_systemd_state_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "state"))
    assert load_settings().state_url == f"sqlite:///{tmp_path / 'state' / 'ctpoller-state.sqlite3'}"


def test_environment_beats_the_env_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / ".env").write_text("CTPOLLER_SETTLE_SECONDS=30\nCTPOLLER_MAIL_TO=a@x.example, b@x.example\n")
    assert load_settings().settle_seconds == 30
    assert load_settings().recipients == ("a@x.example", "b@x.example")
    monkeypatch.setenv("CTPOLLER_SETTLE_SECONDS", "45")
    assert load_settings().settle_seconds == 45


def test_secrets_come_from_systemd_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "CTPOLLER_SMTP_PASSWORD").write_text("from-a-credential")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    settings = load_settings()
    assert settings.smtp_password is not None
    assert settings.smtp_password.get_secret_value() == "from-a-credential"
    assert "from-a-credential" not in repr(settings)


@pytest.mark.parametrize(
    ("variable", "value", "words"),
    [
        ("CTPOLLER_SETTLE_SECONDS", "soon", "CTPOLLER_SETTLE_SECONDS"),
        ("CTPOLLER_SMTP_SECURITY", "tls", "CTPOLLER_SMTP_SECURITY"),
        ("CTPOLLER_SMTP_PORT", "70000", "CTPOLLER_SMTP_PORT"),
        ("CTPOLLER_MAIL_TO", "physics", "CTPOLLER_MAIL_TO"),
        ("CTPOLLER_MAIL_FROM", "a@b, c@d", "CTPOLLER_MAIL_FROM"),
        ("CTPOLLER_GIVE_UP_SECONDS", "100", "CTPOLLER_GIVE_UP_SECONDS"),
        ("CTPOLLER_OPENREM_URL", "openrem.hospital.example", "CTPOLLER_OPENREM_URL: must be OpenREM's web address"),
        ("CTPOLLER_OPENREM_URL", "ftp://openrem.hospital.example", "CTPOLLER_OPENREM_URL"),
        ("CTPOLLER_OPENREM_URL", "https://admin:pw@openrem.example", "must not hold a user name or password"),
        ("CTPOLLER_TIMEZONE", "Europe/Atlantis", "CTPOLLER_TIMEZONE: 'Europe/Atlantis' is not an IANA time zone"),
    ],
)
def test_a_bad_value_is_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, words: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    message = str(caught.value)
    assert words in message and "\n" not in message


def test_a_secret_in_a_bad_value_is_not_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CTPOLLER_SMTP_TIMEOUT", "hunter2-secret")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert "hunter2-secret" not in str(caught.value)


def test_an_address_the_rules_file_refuses_is_refused_in_the_settings_too(monkeypatch: pytest.MonkeyPatch) -> None:
    from ctpoller.errors import ConfigError

    monkeypatch.setenv("CTPOLLER_MAIL_TO", "physics@hospital.example, a@b@c")
    with pytest.raises(ConfigError, match="CTPOLLER_MAIL_TO"):
        load_settings()


def test_the_openrem_address_and_the_time_zone_are_taken_as_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CTPOLLER_OPENREM_URL", "https://openrem.hospital.example/dose/")
    monkeypatch.setenv("CTPOLLER_TIMEZONE", "Europe/London")
    settings = load_settings()
    assert (settings.openrem_url, settings.timezone) == ("https://openrem.hospital.example/dose", "Europe/London")
