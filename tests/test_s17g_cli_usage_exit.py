"""Usage errors (an option that is none, a value not offered, a command that is none, a missing argument) exited 2,
click's convention, where contract.md gives every command 0, 1 or 3: they exit 1 with the usage message on stderr;
`--help` still exits 0, and a bad date stays exit 1 with its message."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

GIVING = str(Path(sys.executable).parent / "giving")


def giving(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("GIVING_")}
    return subprocess.run(
        [GIVING, *args],
        check=False,
        cwd=cwd,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["serve", "--bogus"], "--bogus"),
        (["serve", "--port", "0"], "--port"),
        (["nosuch"], "nosuch"),
        (["receipts", "list", "--kind", "nope"], "--kind"),
        (["tokens", "create"], "EMAIL"),
        (["giftaid", "claim", "--out", "out"], "--through"),
    ],
    ids=[
        "unknown-option",
        "port-out-of-range",
        "unknown-command",
        "value-not-offered",
        "missing-argument",
        "missing-option",
    ],
)
def test_a_usage_error_exits_1_with_the_usage_message(args: list[str], named: str, tmp_path: Path) -> None:
    result = giving(args, tmp_path)
    assert result.returncode == 1, (result.returncode, result.stderr[-800:])
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    assert "Usage: giving" in result.stderr and named.lower() in result.stderr.lower(), result.stderr[-800:]


@pytest.mark.parametrize("args", [["--help"], ["serve", "--help"], ["giftaid", "claim", "--help"]])
def test_help_still_exits_0(args: list[str], tmp_path: Path) -> None:
    result = giving(args, tmp_path)
    assert result.returncode == 0, result.stderr[-800:]
    assert "Usage: giving" in result.stdout


def test_a_bad_date_exits_1_with_its_message(tmp_path: Path) -> None:
    result = giving(["payments", "overdue", "--today", "2025-13-01"], tmp_path)
    assert result.returncode == 1
    assert result.stderr.startswith("error: --today must be a date YYYY-MM-DD"), result.stderr[-800:]


def test_in_process_too_a_usage_error_is_exit_1() -> None:
    """The same through click's test runner (the tests' way in to `giving.cli.app`)."""
    from giving.cli import app

    assert CliRunner().invoke(app, ["receipts", "list", "--kind", "nope"]).exit_code == 1
    assert CliRunner().invoke(app, ["--help"]).exit_code == 0
