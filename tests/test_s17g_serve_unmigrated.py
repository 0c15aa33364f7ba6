"""`giving serve` on a database that was never migrated, or whose migrations are behind this release: it logged the
scheduler's "no such table" tracebacks in a loop while serving pages that could only fail. It now refuses to start:
one line saying to run `giving db upgrade`, exit 1 (contract.md: errors exit 1 with a message, no traceback)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory

from core import migrate

GIVING = str(Path(sys.executable).parent / "giving")


def _environ(**env: str) -> dict[str, str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("GIVING_")}
    environ.update(env)
    return environ


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _serve(cwd: Path, **env: str) -> tuple[int, str, str]:
    process = subprocess.Popen(
        [GIVING, "serve", "--port", str(_free_port())],
        cwd=cwd,
        env=_environ(**env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=45)
    except subprocess.TimeoutExpired:
        process.kill()
        stdout, stderr = process.communicate()
        pytest.fail(f"`giving serve` on an unmigrated database was still running after 45 s: {stderr[-1200:]}")
    return process.returncode, stdout, stderr


def test_serve_on_the_default_database_never_migrated_says_to_run_db_upgrade(tmp_path: Path) -> None:
    """A fresh clone: `giving serve` before `giving db upgrade` (the embedded SQLite default under ./var)."""
    code, stdout, stderr = _serve(tmp_path)
    assert code == 1, stderr[-1200:]
    assert stdout == ""
    assert "Traceback" not in stderr, stderr[-1200:]
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "giving db upgrade" in last, stderr[-1200:]
    assert "never migrated" in last


@pytest.mark.parametrize("state", ["never migrated", "behind"])
def test_serve_on_a_database_not_migrated_to_this_release_refuses_to_start(
    own_database_url: str, tmp_path: Path, state: str
) -> None:
    if state == "never migrated":
        migrate.downgrade(own_database_url, "base")
    else:
        # One package's newest migration not applied yet (a new release installed, `db upgrade` forgotten).
        script = ScriptDirectory.from_config(migrate.alembic_config(own_database_url))
        heads = [script.get_revision(name) for name in sorted(script.get_heads())]
        head = next(h for h in heads if h is not None and isinstance(h.down_revision, str))
        migrate.downgrade(own_database_url, str(head.down_revision))
    code, stdout, stderr = _serve(tmp_path, GIVING_DATABASE__URL=own_database_url)
    assert code == 1, stderr[-1200:]
    assert stdout == ""
    assert "Traceback" not in stderr, stderr[-1200:]
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "run `giving db upgrade`" in last, stderr[-1200:]
    assert state in last, last


def test_worker_on_a_database_never_migrated_refuses_to_start(tmp_path: Path, rabbitmq_url: str) -> None:
    """`giving worker` runs the same periodic scheduler: it refuses in the same words before dramatiq starts."""
    url = f"sqlite:///{tmp_path / 'never-migrated.sqlite3'}"
    process = subprocess.Popen(
        [GIVING, "worker", "--processes", "1", "--threads", "1"],
        cwd=tmp_path,
        env=_environ(GIVING_DATABASE__URL=url, GIVING_BROKER__URL=rabbitmq_url),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # dramatiq's worker processes too are stopped if it does start
    )
    try:
        _, stderr = process.communicate(timeout=45)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        _, stderr = process.communicate()
        pytest.fail(f"`giving worker` on an unmigrated database was still running after 45 s: {stderr[-1200:]}")
    assert process.returncode == 1, stderr[-1200:]
    assert "Traceback" not in stderr, stderr[-1200:]
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("error: the database was never migrated: run `giving db upgrade`"), last
