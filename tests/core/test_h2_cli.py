"""The `giving` command's errors: one line on stderr, `error: ...`, exit 1; nothing on stdout."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

GIVING = str(Path(sys.executable).parent / "giving")


def _giving(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("GIVING_")}
    environ.update(env)
    return subprocess.run(
        [GIVING, *args], check=False, cwd=cwd, env=environ, capture_output=True, text=True, timeout=120
    )


def test_db_upgrade_of_an_unreachable_database_says_so_in_one_line(tmp_path: Path) -> None:
    """As every other command does (`command_runtime`): the driver's first line, not SQLAlchemy's whole report with
    its hint and "Background on this error" link spread over three lines."""
    result = _giving(["db", "upgrade"], tmp_path, GIVING_DATABASE__URL="postgresql://giving:pw@127.0.0.1:1/giving")
    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: could not upgrade 127.0.0.1:1/giving: ")
    assert "Connection refused" in lines[0] and "pw" not in lines[0]


def test_a_bad_setting_is_one_line_naming_the_key(tmp_path: Path) -> None:
    result = _giving(["db", "upgrade"], tmp_path, GIVING_WEB__BASE_URL="giving.example.org")
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "error: bad settings: web.base_url: Value error, must be an http(s) URL such as https://host[:port][/path]"
    ]
