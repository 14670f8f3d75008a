"""The command line: every subcommand has useful help, errors are one line."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from facegate.cli import cli


def _all_commands() -> list[list[str]]:
    import click

    found: list[list[str]] = []

    def walk(command: click.Command, path: list[str]) -> None:
        found.append(path)
        if isinstance(command, click.Group):
            for name, sub in command.commands.items():
                walk(sub, [*path, name])

    walk(cli, [])
    return found


@pytest.mark.parametrize("path", _all_commands(), ids=lambda p: " ".join(p) or "facegate")
def test_help_of_every_command(path: list[str]) -> None:
    result = CliRunner().invoke(cli, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage: " in result.output
    # The first help line says what the command is for.
    description = result.output.split("\n\n")[1].strip()
    assert len(description) > 15


def test_stack_commands_are_listed() -> None:
    result = CliRunner().invoke(cli, ["stack", "--help"])
    for name in ("up", "down", "status", "logs"):
        assert f"  {name} " in result.output
