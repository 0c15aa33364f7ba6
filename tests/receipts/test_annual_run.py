"""`giving receipts annual`: one render job per statement, resumable, nothing numbered or sent twice."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from core.clock import uk_today
from core.runtime import Runtime
from core.settings import get_settings
from crm.models import StatementPreference
from giving.commands import receipts as command
from receipts.documents import tax_year_of
from receipts.models import DeliveryStatus, DocumentKind
from tests.fixtures.smtp import Mailbox
from tests.receipts import factories
from tests.receipts.helpers import deliveries, documents
from tests.receipts.pdf import pdf_text

ANNUAL = StatementPreference.ANNUAL


def _supporters(runtime: Runtime) -> dict[str, object]:
    people: dict[str, object] = {}
    for i in range(4):
        sid = factories.supporter(runtime, email=f"yearly{i}@example.org", preference=ANNUAL)
        factories.gift(runtime, sid, amount=1000 * (i + 1), received_on=dt.date(2025, 6, 1 + i))
        people[f"yearly{i}"] = sid
    by_post = factories.supporter(runtime, email=None, first_name="Grace", preference=ANNUAL)
    factories.gift(runtime, by_post, amount=700, received_on=dt.date(2026, 1, 2))
    people["by_post"] = by_post
    per_gift = factories.supporter(runtime, email="pergift@example.org")
    factories.gift(runtime, per_gift, amount=300, received_on=dt.date(2025, 8, 8))
    people["per_gift"] = per_gift
    other_year = factories.supporter(runtime, email="lastyear@example.org", preference=ANNUAL)
    factories.gift(runtime, other_year, amount=300, received_on=dt.date(2025, 4, 5))
    people["other_year"] = other_year
    return people


class Stop(Exception):
    pass


@pytest.mark.slow
def test_stopped_run_resumes_without_numbering_or_sending_twice(runtime: Runtime, mailbox: Mailbox) -> None:
    people = _supporters(runtime)

    # First run: stopped after the first statement was numbered and its job recorded (its render never ran).
    calls = []

    def stop_after_first(n: int) -> None:
        calls.append(n)
        raise Stop

    with pytest.raises(Stop):
        command.number_statements(runtime, "2025-26", everyone=False, batch=1, advance=stop_after_first)
    assert [d.reference for d in documents(runtime)] == ["AS-000001"]

    # Second run: at most two new statements, waits for them and the one left over.
    outcome = command.run_annual(runtime, "2025-26", limit=2, timeout=60)
    assert (outcome.numbered_now, outcome.statements, outcome.issued, outcome.finished) == (2, 3, 3, True)

    # Third run: the rest.
    outcome = command.run_annual(runtime, "2025-26", timeout=60)
    assert outcome.numbered_now == 2 and outcome.finished
    assert (outcome.statements, outcome.emailed, outcome.for_post, outcome.failed) == (5, 4, 1, 0)

    # Fourth run: nothing to do, nothing sent.
    outcome = command.run_annual(runtime, "2025-26", timeout=60)
    assert outcome.numbered_now == 0

    statements = documents(runtime, DocumentKind.ANNUAL_STATEMENT)
    assert sorted(d.number for d in statements) == [1, 2, 3, 4, 5]
    assert {d.supporter_id for d in statements} == {people[f"yearly{i}"] for i in range(4)} | {people["by_post"]}
    assert sorted(str(m["To"]) for m in mailbox.messages) == [f"yearly{i}@example.org" for i in range(4)]
    assert sorted(d.status for d in deliveries(runtime)) == [DeliveryStatus.PENDING] + [DeliveryStatus.SENT] * 4

    # --everyone adds the supporter who gets a receipt per gift.
    outcome = command.run_annual(runtime, "2025-26", everyone=True, timeout=60)
    assert outcome.numbered_now == 1 and outcome.statements == 6
    [extra] = mailbox.to("pergift@example.org")
    text = pdf_text(next(iter(extra.iter_attachments())).get_content())
    assert "AS-000006" in text and "£3.00" in text


@pytest.mark.slow
def test_the_command_line(runtime: Runtime, mailbox: Mailbox, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from giving.cli import app

    people = _supporters(runtime)
    settings = runtime.settings
    monkeypatch.setenv("GIVING_DATABASE__URL", settings.database.url)
    monkeypatch.setenv("GIVING_RECEIPTS__STORAGE_DIR", settings.receipts.storage_dir)
    monkeypatch.setenv("GIVING_EMAIL__SMTP_PORT", str(settings.email.smtp_port))
    monkeypatch.setenv("GIVING_ENV", "test")
    monkeypatch.chdir(tmp_path)
    get_settings.cache_clear()
    try:
        runner = CliRunner()
        bad = runner.invoke(app, ["receipts", "annual", "--tax-year", "2025-27"])
        assert bad.exit_code == 1 and "not a tax year" in bad.output
        running = tax_year_of(uk_today())
        unfinished = runner.invoke(app, ["receipts", "annual", "--tax-year", running])
        assert unfinished.exit_code == 1 and "issued once, after it ends" in unfinished.output

        result = runner.invoke(app, ["receipts", "annual", "--tax-year", "2025-26", "--json"])
        assert result.exit_code == 0, result.output
        outcome = json.loads(result.stdout.strip().splitlines()[-1])
        assert outcome["statements"] == 5 and outcome["emailed"] == 4 and outcome["for_post"] == 1

        posted = runner.invoke(app, ["receipts", "postal-batch"])
        assert posted.exit_code == 0, posted.output
        path = Path(posted.stdout.strip().splitlines()[-1])
        assert "Grace" in pdf_text(path.read_bytes())
        assert runner.invoke(app, ["receipts", "postal-batch"]).exit_code == 3

        listed = runner.invoke(app, ["receipts", "list", "--kind", "annual_statement"])
        assert listed.exit_code == 0 and len(listed.stdout.strip().splitlines()) == 5
        assert all(line.startswith("AS-0000") and line.endswith(".pdf") for line in listed.stdout.strip().splitlines())
    finally:
        get_settings.cache_clear()
    assert len(mailbox.messages) == 4 and people
