"""Bad configuration never crashes the real process: exit 2 and ONE line naming what to fix (the
variable, or the rules file and key), never a traceback; valid configuration gets past this point."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ctpoller.core.rules import parse_rules
from ctpoller.errors import ConfigError
from support.ports import free_port
from support.process import EXIT_CONFIG, EXIT_TEMPORARY, RULES, ctpoller

pytestmark = pytest.mark.reliability

EXAMPLE = (Path(__file__).resolve().parents[2] / "examples" / "rules.toml").read_text(encoding="utf-8")


def settings_for(tmp_path: Path) -> dict[str, str]:
    """Complete, valid settings whose databases and mail server are closed ports (nothing answers)."""
    rules = tmp_path / "rules.toml"
    if not rules.exists():
        rules.write_text(RULES, encoding="utf-8")
    return {
        "CTPOLLER_SOURCE_URL": f"postgresql://ctpoller@127.0.0.1:{free_port()}/openrem",
        "CTPOLLER_STATE_URL": f"sqlite:///{tmp_path / 'state.sqlite3'}",
        "CTPOLLER_RULES_FILE": str(rules),
        "CTPOLLER_SMTP_HOST": "127.0.0.1",
        "CTPOLLER_SMTP_PORT": str(free_port()),
        "CTPOLLER_SMTP_SECURITY": "none",
        "CTPOLLER_MAIL_FROM": "ctpoller@hospital.example",
    }


def test_valid_settings_with_nothing_answering_are_a_temporary_failure(tmp_path):
    """The control for every test here: the same settings, unchanged, get past configuration."""
    ctpoller("run", env=settings_for(tmp_path), cwd=tmp_path, timeout=30).assert_failed(
        EXIT_TEMPORARY, "CTPOLLER_SOURCE_URL"
    )


# -- the rules file ---------------------------------------------------------------------------------

FRAGMENTS = [
    "[[rule]]", 'name = "Head"', 'name = "Head"', "ctdivol = 60", 'ctdivol = "sixty"', "ctdivol = -1", "dlp = nan",
    "dlp_total = inf", "protocol = []", "protocol = [[]]", 'protocol = "re:("', 'protocol = ["ped head"]',
    "unknown = 1", "[defaults]", 'recipients = ["a"]', 'recipients = "x@y.z"', 'recipients = ["p@h.example"]',
    "[dose_check]", 'notify = "yes"', "notify = true", "age_min = 18", "age_max = 10", 'phantom = "leg"',
    'name = ""', "name = 42", "rule = 1", "= =", "[rule]", '"\\ud800"', "[[rule]]\n[[rule]]", "name = '''",
]  # fmt: skip

rules_texts = st.one_of(
    st.text(max_size=120),
    st.integers(0, len(EXAMPLE)).map(lambda n: EXAMPLE[:n]),
    st.lists(st.sampled_from(FRAGMENTS), max_size=10).map("\n".join),
    st.binary(max_size=60),
)


def expected_outcome(content: str | bytes) -> int:
    try:
        text = content.decode("utf-8") if isinstance(content, bytes) else content
        parse_rules(text, source="oracle")
    except (ConfigError, UnicodeDecodeError):
        return EXIT_CONFIG
    return EXIT_TEMPORARY  # valid rules: the run goes on and finds OpenREM unreachable


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rules_texts)
def test_any_rules_file_content_ends_in_exit_2_naming_the_file_or_gets_past_the_rules(tmp_path, content):
    rules = tmp_path / "rules.toml"
    if isinstance(content, bytes):
        rules.write_bytes(content)
    else:
        rules.write_text(content, encoding="utf-8")
    expected = expected_outcome(content)

    result = ctpoller("run", env=settings_for(tmp_path), cwd=tmp_path, timeout=30)

    if expected == EXIT_CONFIG:
        result.assert_failed(EXIT_CONFIG, str(rules))
        assert len(result.lines) == 1, "nothing but the one line"
    else:
        result.assert_failed(EXIT_TEMPORARY, "CTPOLLER_SOURCE_URL")


@pytest.mark.parametrize(
    ("content", "needles"),
    [
        ("", ["nothing to check"]),
        ('[[rule]]\nname = "Head"\nctdivol = "sixty"\n', ["'Head'", "ctdivol"]),
        ('[[rule]]\nname = "Head"\nctdivol = 60\nprotocl = "head"\n', ["'Head'", "protocl", "protocol"]),
        ('[[rule]]\nname = "Head"\nctdivol = 60\nage_min = 18\nage_max = 10\n', ["age_max"]),
        ('[defaults]\nrecipients = "physics@example.org"\n[[rule]]\nname = "x"\nctdivol = 1\n', ["recipients"]),
        ('[[rule]]\nname = "Head"\nctdivol = 60\n[[rule]]\nname = "head"\ndlp = 1\n', ["name", "already used"]),
        ('[[rule]]\nname = "Head"\nprotocol = "re:(unclosed"\nctdivol = 60\n', ["protocol", "regular expression"]),
        (EXAMPLE[: len(EXAMPLE) // 2] + "\n[[rule]\n", ["not valid TOML"]),
    ],
    ids=["empty", "wrong-type", "unknown-key", "ages", "recipients-not-a-list", "duplicate-name", "bad-regex", "cut"],
)
def test_a_rules_file_mistake_exits_2_naming_the_file_and_the_key(content, needles, tmp_path):
    rules = tmp_path / "rules.toml"
    rules.write_text(content, encoding="utf-8")

    line = ctpoller("run", env=settings_for(tmp_path), cwd=tmp_path).assert_failed(EXIT_CONFIG, str(rules))

    for needle in needles:
        assert needle in line


@pytest.mark.parametrize("kind", ["directory", "not-utf8", "missing"])
def test_an_unreadable_rules_file_exits_2_naming_it(kind, tmp_path):
    path = tmp_path / "rules-path"
    if kind == "directory":
        path.mkdir()
    elif kind == "not-utf8":
        path.write_bytes(b'[[rule]]\nname = "K\xf6pf"\nctdivol = 60\n')
    env = {**settings_for(tmp_path), "CTPOLLER_RULES_FILE": str(path)}

    ctpoller("run", env=env, cwd=tmp_path).assert_failed(EXIT_CONFIG, str(path))


def test_a_rules_path_that_is_not_a_regular_file_exits_2_instead_of_hanging(tmp_path):
    fifo = tmp_path / "rules.fifo"
    os.mkfifo(fifo)
    env = {**settings_for(tmp_path), "CTPOLLER_RULES_FILE": str(fifo)}

    try:
        result = ctpoller("run", env=env, cwd=tmp_path, timeout=4)
    except subprocess.TimeoutExpired:
        pytest.fail("ctpoller hung opening the rules FIFO")
    result.assert_failed(EXIT_CONFIG, str(fifo))


# -- settings ---------------------------------------------------------------------------------------

BAD_SETTINGS = [
    ("CTPOLLER_SOURCE_URL", "notaurl"),
    ("CTPOLLER_SOURCE_URL", "mysql://ctpoller@db/openrem"),
    ("CTPOLLER_STATE_URL", "notaurl"),
    ("CTPOLLER_STATE_URL", "mysql://ctpoller@db/state"),
    ("CTPOLLER_STATE_URL", "sqlite:////nonexistent-directory/state.sqlite3"),
    ("CTPOLLER_SOURCE_URL", "postgresql://ctpoller@db:notaport/openrem"),
    ("CTPOLLER_SOURCE_URL", "postgresql://ctpoller@[::1/openrem"),
    ("CTPOLLER_STATE_URL", "postgresql://ctpoller@db:notaport/state"),
    ("CTPOLLER_SETTLE_SECONDS", "soon"),
    ("CTPOLLER_SETTLE_SECONDS", "-1"),
    ("CTPOLLER_GIVE_UP_SECONDS", "61"),  # not more than the default settle time of 120
    ("CTPOLLER_BATCH_SIZE", "0"),
    ("CTPOLLER_STATEMENT_TIMEOUT_SECONDS", "1.5"),
    ("CTPOLLER_SMTP_PORT", "smtp"),
    ("CTPOLLER_SMTP_PORT", "70000"),
    ("CTPOLLER_SMTP_SECURITY", "tls"),
    ("CTPOLLER_SMTP_TIMEOUT", "-1"),
    ("CTPOLLER_MAIL_FROM", "not an address"),
    ("CTPOLLER_MAIL_TO", "physics@hospital.example, nobody"),
]


@pytest.mark.parametrize(("variable", "value"), BAD_SETTINGS, ids=[f"{v}={x}" for v, x in BAD_SETTINGS])
def test_a_bad_setting_exits_2_with_one_line_naming_the_variable(variable, value, tmp_path):
    env = {**settings_for(tmp_path), variable: value}

    result = ctpoller("run", env=env, cwd=tmp_path, timeout=30)

    result.assert_failed(EXIT_CONFIG, variable)
    assert len(result.lines) == 1


BAD_URLS = [
    ("CTPOLLER_SOURCE_URL", "postgresql://ctpoller@127.0.0.1:99999/openrem"),
    ("CTPOLLER_STATE_URL", "postgresql://ctpoller@127.0.0.1:99999/state"),
    ("CTPOLLER_STATE_URL", "sqlite:///{tmp_path}"),  # a directory, not a file
]


@pytest.mark.parametrize(("variable", "value"), BAD_URLS, ids=[f"{v}={x}" for v, x in BAD_URLS])
def test_a_database_url_that_can_never_work_exits_2_naming_the_variable(variable, value, tmp_path):
    env = {**settings_for(tmp_path), variable: value.format(tmp_path=tmp_path)}

    result = ctpoller("run", env=env, cwd=tmp_path, timeout=30)

    result.assert_failed(EXIT_CONFIG, variable)


def test_settings_file_that_is_not_utf8_exits_2_naming_it(tmp_path):
    env_file = tmp_path / "ctpoller.env"
    env_file.write_bytes(b"CTPOLLER_MAIL_TO=K\xf6pf@hospital.example\n")
    env = settings_for(tmp_path)

    result = ctpoller("run", "--env-file", str(env_file), env=env, cwd=tmp_path, timeout=30)

    result.assert_failed(EXIT_CONFIG, str(env_file))
