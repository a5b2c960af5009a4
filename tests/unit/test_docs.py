"""The README, .env.example and --help stay true to the code."""

from __future__ import annotations

import argparse
from pathlib import Path

from ctpoller import cli
from ctpoller.settings import Settings, env_name

ROOT = Path(__file__).parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")
ENV_EXAMPLE = (ROOT / ".env.example").read_text(encoding="utf-8")


def test_every_setting_is_documented_in_the_readme_and_env_example() -> None:
    for field in Settings.model_fields:
        assert f"`{env_name(field)}`" in README, env_name(field)
        assert env_name(field) in ENV_EXAMPLE, env_name(field)


def test_every_command_and_exit_code_is_in_the_readme() -> None:
    parser = cli.build_parser()
    [commands] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    for name in commands.choices:
        assert f"`ctpoller {name}" in README, name
    for code in (cli.EXIT_OK, cli.EXIT_PERMANENT, cli.EXIT_CONFIG, cli.EXIT_LOCKED, cli.EXIT_TEMPORARY):
        assert f"| {code} |" in README
        assert f"  {code} " in cli.EXIT_CODES_HELP


def test_quick_start_is_exactly_two_commands() -> None:
    block = README.split("## Quick start", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    lines = [line for line in block.strip().splitlines() if line.strip()]
    assert len(lines) == 2
    assert "ctpoller demo" in lines[0] and "pytest" in lines[1]
