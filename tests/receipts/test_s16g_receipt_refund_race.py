"""A refund recorded while its gift's receipt is being numbered (found in review).

The receipt job reads the gift (no refund yet), then numbers the receipt; the refund commits in between and its
correction job runs before the receipt's numbering commits, so it finds no receipt to correct and issues nothing.
The receipt then goes out without the refund, and nothing ever corrects it: the donor is told the whole gift stands,
with Gift Aid on money returned. PostgreSQL only: on SQLite the receipt's transaction (BEGIN IMMEDIATE) holds the
write lock from its first statement, so the refund cannot commit inside that window.
"""

from __future__ import annotations

import datetime as dt
import threading
import time

import pytest

from core.runtime import InlineWorker, Runtime
from payments.models import Gift, Refund, RefundStatus
from receipts import service, tasks
from receipts.models import DocumentKind
from tests.fixtures.smtp import Mailbox
from tests.receipts import factories
from tests.receipts.helpers import documents, run_job, stored_pdf
from tests.receipts.pdf import pdf_text


@pytest.fixture
def database_url(postgres_url: str) -> str:
    return postgres_url


def test_a_refund_committed_while_the_receipt_is_numbered_still_gets_its_correction(
    runtime: Runtime, worker: InlineWorker, mailbox: Mailbox
) -> None:
    supporter = factories.supporter(runtime)
    factories.declaration(runtime, supporter)
    gift = factories.gift(runtime, supporter, amount=5000)

    # The receipt job's numbering transaction: it has read the gift (no refund) and numbered the receipt ...
    with runtime.unit_of_work() as uow:
        receipt = service.allocate_gift_receipt(uow, runtime.settings, gift)
        assert receipt is not None
        # ... when the refund commits, and its correction job runs: no receipt is committed yet.
        refund = factories.refund(
            runtime, supporter_id=supporter, gift_id=gift, amount=2000, refunded_on=dt.date(2025, 12, 1)
        )
        run_job(runtime, worker, "receipts.issue_correction", refund_id=refund)
        assert documents(runtime) == []
    # The receipt job renders and records its receipt (as issued by the numbering that did not see the refund).
    tasks.finish_document(runtime, receipt.id)
    worker.join()
    [issued] = documents(runtime, DocumentKind.GIFT_RECEIPT)
    assert issued.content["refunds_shown"] == [] and issued.content["gift_aid"]["claim_amount"] == 1250

    [correction] = documents(runtime, DocumentKind.CORRECTION)
    assert (correction.refund_id, correction.corrects_id) == (refund, issued.id)
    text = pdf_text(stored_pdf(runtime, correction))
    for expected in ("Corrected amount £30.00", "we will now claim £7.50 Gift Aid on the corrected amount"):
        assert expected in text, (expected, text)


def test_a_refund_committed_while_the_sale_receipt_is_numbered_still_gets_its_correction(
    runtime: Runtime, worker: InlineWorker, mailbox: Mailbox
) -> None:
    supporter = factories.supporter(runtime)
    order, _ = factories.order(runtime, supporter, lines=[("Solidarity tee", "M", 2, 1500)])

    with runtime.unit_of_work() as uow:
        receipt = service.allocate_sale_receipt(uow, runtime.settings, order)
        assert receipt is not None
        refund = factories.refund(runtime, supporter_id=supporter, order_id=order, amount=1500)
        run_job(runtime, worker, "receipts.issue_correction", refund_id=refund)
        assert documents(runtime) == []
    tasks.finish_document(runtime, receipt.id)
    worker.join()
    [issued] = documents(runtime, DocumentKind.SALE_RECEIPT)
    [correction] = documents(runtime, DocumentKind.CORRECTION)
    assert (correction.refund_id, correction.corrects_id) == (refund, issued.id)
    assert "Corrected amount £15.00" in pdf_text(stored_pdf(runtime, correction))


def _waiting_on_a_lock(runtime: Runtime) -> bool:
    with runtime.engine.connect() as connection:
        return bool(connection.exec_driver_sql("SELECT count(*) FROM pg_locks WHERE NOT granted").scalar())


def test_two_correction_jobs_of_one_refund_changed_twice_end_on_what_stands(
    runtime: Runtime, worker: InlineWorker, mailbox: Mailbox
) -> None:
    """A refund's correction says £20.00 came off the gift. The refund is re-allocated (£10.00 now), then fails
    (nothing), and payments asks for a correction after each change; two workers run the two jobs at once. The first
    numbers a further correction for £10.00; the second, which already sees the refund failed, must not stop at the
    first's document (same subject, "…:2"): the last correction must say the gift is whole again. Before, the second
    read the corrections before waiting for the number, missed the first's, found its own subject taken and returned
    that: the donor's last word was £10.00 returned, which never happened."""
    supporter = factories.supporter(runtime)
    factories.declaration(runtime, supporter)
    gift = factories.gift(runtime, supporter, amount=5000)
    run_job(runtime, worker, "receipts.issue_for_gift", gift_id=gift)
    refund = factories.refund(runtime, supporter_id=supporter, gift_id=gift, amount=2000, gift_amount=2000)
    run_job(runtime, worker, "receipts.issue_correction", refund_id=refund)
    [first] = documents(runtime, DocumentKind.CORRECTION)

    def change(**values: object) -> None:
        with runtime.unit_of_work() as uow:
            row = uow.session.get(Refund, refund)
            gift_row = uow.session.get(Gift, gift)
            assert row is not None and gift_row is not None
            for name, value in values.items():
                setattr(row, name, value)
            gift_row.returned_amount = row.gift_amount if row.status == RefundStatus.SUCCEEDED else 0
            uow.session.add_all([row, gift_row])

    change(gift_amount=1000, order_amount=1000)
    errors: list[BaseException] = []
    with runtime.unit_of_work() as uow:
        [second] = service.allocate_corrections(uow, runtime.settings, refund)
        change(status=RefundStatus.FAILED)

        def other_job() -> None:
            try:
                with runtime.unit_of_work() as other:
                    service.allocate_corrections(other, runtime.settings, refund)
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=other_job)
        thread.start()
        deadline = time.monotonic() + 10
        while not _waiting_on_a_lock(runtime) and time.monotonic() < deadline:
            time.sleep(0.05)
    thread.join(timeout=30)
    assert errors == [] and not thread.is_alive()

    chain = documents(runtime, DocumentKind.CORRECTION)
    assert [d.id for d in chain[:2]] == [first.id, second.id]
    assert second.content["refunded_amount"] == 1000
    assert len(chain) == 3, [d.content for d in chain]
    last = chain[-1].content
    assert (last["refund_failed"], last["refunded_amount"], last["corrected_amount"]) == (True, 0, 5000)
    assert last["replaces_reference"] == second.reference
