"""`giving demo --dir`: the demo deletes what an earlier run of it left, and nothing it did not make (helper J)."""

from __future__ import annotations

import io
from pathlib import Path

from rich.console import Console

from giving.demo.run import DATABASE_NAME, Options, fresh_directory, run


def test_the_demo_refuses_a_directory_holding_a_database_and_receipts_it_did_not_make(tmp_path: Path) -> None:
    """`giving demo --dir var`, run where the charity's own Giving keeps its data (`[database] url` defaults to
    ./var/giving.sqlite3 and `[receipts] storage_dir` to ./var/receipts), deleted that database and every receipt
    PDF, then ran the demo on top. It now refuses such a directory, says why, and touches nothing."""
    var = tmp_path / "var"
    (var / "receipts" / "gift_receipt").mkdir(parents=True)
    (var / "receipts" / "gift_receipt" / "GR-000001.pdf").write_bytes(b"%PDF- a donor's receipt")
    (var / DATABASE_NAME).write_bytes(b"SQLite format 3\x00 the charity's donors")
    (var / f"{DATABASE_NAME}-wal").write_bytes(b"the last gifts")
    output = io.StringIO()

    status = run(Options(directory=var), Console(file=output, width=200))

    assert status == 1
    said = output.getvalue()
    assert "did not make" in said and "--dir" in said, said
    assert (var / DATABASE_NAME).read_bytes() == b"SQLite format 3\x00 the charity's donors"
    assert (var / f"{DATABASE_NAME}-wal").read_bytes() == b"the last gifts"
    assert (var / "receipts" / "gift_receipt" / "GR-000001.pdf").read_bytes() == b"%PDF- a donor's receipt"


def test_a_directory_the_demo_made_is_started_again_from_nothing(tmp_path: Path) -> None:
    """The second run in a row (and a new, empty directory) still work: the first run marks its directory."""
    directory = tmp_path / "var" / "demo"
    fresh_directory(Options(directory=directory))
    (directory / "receipts").mkdir()
    (directory / "receipts" / "GR-000001.pdf").write_text("old")
    (directory / DATABASE_NAME).write_text("old")

    url = fresh_directory(Options(directory=directory))

    assert url == f"sqlite:///{directory.as_posix()}/{DATABASE_NAME}"
    assert not (directory / DATABASE_NAME).exists() and not (directory / "receipts").exists()
