"""`giving demo` and the money in the bank (found in review): the contract has the demo print where it put what it
produced, the reconciliation report included, but the report existed only as lines on the screen, and the journal
that finance takes to the accounts was never made. Now both are files under ./var/demo/reconciliation, printed with
their paths, and the journal is checked to balance; a second run replaces them."""

from __future__ import annotations

import csv
import json
import re
from collections import defaultdict
from decimal import Decimal
from pathlib import Path

import pytest

from giving.demo.run import MARKER, Options, fresh_directory
from tests.test_demo import run_demo

PRINTED_REPORT = re.compile(r"(\S+/reconciliation/\S+\.(?:csv|json))\b")


def test_a_run_removes_the_reconciliation_files_an_earlier_run_made(tmp_path: Path) -> None:
    directory = tmp_path / "var" / "demo"
    (directory / "reconciliation").mkdir(parents=True)
    (directory / "reconciliation" / "journal.csv").write_text("old")
    (directory / "notes.txt").write_text("mine")
    (directory / MARKER).write_text("")  # the earlier run made the directory

    fresh_directory(Options(directory=directory))

    assert sorted(p.name for p in directory.iterdir()) == [MARKER, "notes.txt"]


@pytest.mark.slow
def test_the_demo_writes_its_reconciliation_report_and_a_balanced_journal_and_runs_again(tmp_path: Path) -> None:
    for attempt in (1, 2):
        result = run_demo(tmp_path)
        assert result.returncode == 0, f"run {attempt}: " + result.stdout[-4000:] + result.stderr[-4000:]
        printed = {Path(match).name: tmp_path / match for match in PRINTED_REPORT.findall(result.stdout)}
        assert sorted(printed) == ["journal.csv", "payouts.json"], result.stdout[-3000:]
        assert sorted(p.name for p in (tmp_path / "var" / "demo" / "reconciliation").iterdir()) == sorted(printed)

        payouts = json.loads(printed["payouts.json"].read_text())["items"]
        assert len(payouts) == 6 and all(p["status"] == "reconciled" and p["lines"] for p in payouts)

        with printed["journal.csv"].open(newline="") as handle:
            rows = list(csv.DictReader(handle))
        totals: dict[str, Decimal] = defaultdict(Decimal)
        for row in rows:
            totals[row["entry"]] += Decimal(row["debit"] or 0) - Decimal(row["credit"] or 0)
        assert totals and not any(totals.values()), "every entry balances"
        bank = sum(Decimal(row["debit"] or 0) for row in rows if row["account"].startswith("Bank: "))
        assert bank * 100 == sum(p["amount"]["amount"] for p in payouts), "the bank side is every payout"
        assert not any(row["account"].startswith("Suspense") for row in rows), "everything matched"
        assert "the journal balances" in result.stdout
        # The way to look around afterwards names where the PDFs are (not the default storage dir).
        assert "GIVING_RECEIPTS__STORAGE_DIR=var/demo/receipts" in result.stdout
