"""Documents when records change under them (found in review): a reversed gift on a statement, a supporter erased
while their documents wait (the postal batch, the annual run), and the survivor of a merge in the annual run."""

from __future__ import annotations

import datetime as dt
import hashlib

import pytest

from core.runtime import InlineWorker, Runtime
from crm.models import StatementPreference
from giving.commands.receipts import number_statements, run_annual
from payments.models import GiftStatus, Method
from receipts import service
from tests.fixtures.smtp import Mailbox
from tests.receipts import factories
from tests.receipts.helpers import deliveries, documents, run_job, stored_pdf
from tests.receipts.pdf import pdf_text


def test_a_statement_shows_a_reversed_gift_as_returned(
    runtime: Runtime, worker: InlineWorker, mailbox: Mailbox
) -> None:
    """A Direct Debit instalment charged back is reversed (payments leaves `returned_amount` as it was): the
    statement shows all of it returned, and the total donated leaves it out."""
    supporter = factories.supporter(runtime, preference=StatementPreference.ANNUAL)
    factories.gift(runtime, supporter, amount=1000, received_on=dt.date(2025, 6, 1), method=Method.DIRECT_DEBIT)
    factories.gift(
        runtime,
        supporter,
        amount=1000,
        received_on=dt.date(2025, 7, 1),
        method=Method.DIRECT_DEBIT,
        status=GiftStatus.REVERSED,  # charged back; returned_amount stays 0 as in payments
    )
    run_job(runtime, worker, "receipts.issue_annual_statement", supporter_id=supporter, tax_year="2025-26")
    [statement] = documents(runtime)
    content = statement.content
    text = pdf_text(stored_pdf(runtime, statement))
    assert content["gifts"][1]["returned"] == 1000, content["gifts"]
    assert content["total_donated"] == 1000, content["total_donated"]
    assert "Total donated £10.00" in text


def test_the_postal_batch_leaves_out_a_supporter_erased_meanwhile(
    runtime: Runtime, worker: InlineWorker, mailbox: Mailbox
) -> None:
    """One supporter without email erased while their receipt waits for the post: the batch is still built for
    everybody else, without the erased supporter's document (withdrawn, as its delivery)."""
    from giving.privacy import erase_supporter

    alice = factories.supporter(runtime, email=None, first_name="Alice")
    bob = factories.supporter(runtime, email=None, first_name="Bob")
    for person in (alice, bob):
        gift = factories.gift(runtime, person, donor_details=factories.donor(email=None))
        run_job(runtime, worker, "receipts.issue_for_gift", gift_id=gift)
    assert [d.channel for d in deliveries(runtime)] == ["post", "post"]
    with runtime.unit_of_work() as uow:
        erase_supporter(uow, runtime.settings, alice)

    with runtime.unit_of_work() as uow:
        batch = service.build_postal_batch(uow, runtime.settings)
    assert batch is not None and batch.documents == 1
    assert sorted(str(d.status) for d in deliveries(runtime)) == ["posted", "withdrawn"]


def test_an_erasure_takes_the_supporters_pages_out_of_a_postal_batch_already_printed(
    runtime: Runtime, worker: InlineWorker, mailbox: Mailbox
) -> None:
    """The batch PDF printed last week holds every letter of that day, names and addresses included: erasing one
    of those supporters makes it again without their pages (the others' stay, in order); a batch left with nobody
    is deleted."""
    from pathlib import Path

    from giving.privacy import erase_supporter

    people = {
        name: factories.supporter(runtime, email=None, first_name=name, last_name="Pagewright")
        for name in ("Alice", "Bob", "Cara")
    }
    for name, person in people.items():
        details = factories.donor(first_name=name, last_name="Pagewright", email=None)
        gift = factories.gift(runtime, person, donor_details=details)
        run_job(runtime, worker, "receipts.issue_for_gift", gift_id=gift)
    with runtime.unit_of_work() as uow:
        batch = service.build_postal_batch(uow, runtime.settings, limit=2)  # Alice and Bob
        later = service.build_postal_batch(uow, runtime.settings)  # Cara alone
    assert batch is not None and later is not None and (batch.documents, later.documents) == (2, 1)
    path = Path(service.postal_batch_path(runtime.settings, batch))
    before = pdf_text(path.read_bytes())
    assert "Alice" in before and "Bob" in before

    with runtime.unit_of_work() as uow:
        assert erase_supporter(uow, runtime.settings, people["Alice"]).changed["postal_batches"] == 1
        erase_supporter(uow, runtime.settings, people["Cara"])
    worker.join()
    after = pdf_text(path.read_bytes())
    assert "Alice" not in after and "Bob" in after
    with runtime.read_session() as session:
        from receipts.models import PostalBatch

        rebuilt = session.get(PostalBatch, batch.id)
        emptied = session.get(PostalBatch, later.id)
        assert rebuilt is not None and emptied is not None
        assert rebuilt.documents == 1 and rebuilt.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
        assert emptied.documents == 0
    assert not Path(service.postal_batch_path(runtime.settings, later)).exists()


def test_the_annual_run_gives_the_survivor_of_a_merge_its_own_statement(
    runtime: Runtime, worker: InlineWorker, mailbox: Mailbox
) -> None:
    """The old record got its 2025-26 statement; after the merge the survivor (its own gifts, on yearly statements)
    must still get one (docs/receipts.md: 'a later one for the survivor lists both records' gifts')."""
    from giving.merge import merge_supporters

    old = factories.supporter(runtime, email="old@example.org", preference=StatementPreference.ANNUAL)
    survivor = factories.supporter(runtime, email="ada@example.org", preference=StatementPreference.ANNUAL)
    factories.gift(runtime, old, amount=1000, received_on=dt.date(2025, 6, 1))
    factories.gift(runtime, survivor, amount=3000, received_on=dt.date(2025, 9, 1))
    run_job(runtime, worker, "receipts.issue_annual_statement", supporter_id=old, tax_year="2025-26")
    assert len(documents(runtime)) == 1
    with runtime.unit_of_work() as uow:
        merge_supporters(uow, old, survivor, by="test")

    with runtime.read_session() as session:
        candidates = service.statement_candidates(session, "2025-26", everyone=False)
    assert candidates == [survivor]
    assert number_statements(runtime, "2025-26", everyone=False) == 1


class Stop(Exception):
    pass


def test_the_annual_run_finishes_when_a_numbered_statement_was_erased(runtime: Runtime, mailbox: Mailbox) -> None:
    """A run stopped after numbering a statement; the supporter is then erased (they get nothing). Running the
    command again must finish, not wait forever for a document that can no longer be rendered."""
    from giving.privacy import erase_supporter

    erased = factories.supporter(runtime, email="gone@example.org", preference=StatementPreference.ANNUAL)
    factories.gift(runtime, erased, amount=1000, received_on=dt.date(2025, 6, 1))
    other = factories.supporter(runtime, email="ada@example.org", preference=StatementPreference.ANNUAL)
    factories.gift(runtime, other, amount=2000, received_on=dt.date(2025, 6, 2))

    def stop(n: int) -> None:
        raise Stop

    with pytest.raises(Stop):
        number_statements(runtime, "2025-26", everyone=False, batch=2, advance=stop)
    assert len(documents(runtime)) == 2
    with runtime.unit_of_work() as uow:
        erase_supporter(uow, runtime.settings, erased)

    outcome = run_annual(runtime, "2025-26", timeout=20)
    assert outcome.finished, outcome
    assert sorted(str(d.status) for d in documents(runtime)) == ["issued", "withdrawn"]
