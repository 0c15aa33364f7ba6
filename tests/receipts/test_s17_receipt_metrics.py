"""`receipts_issued`, `receipts_sent` and `receipts_failed` (declared in core.metrics and exported by `/metrics`) are
counted: a receipt numbered counts once when its unit of work commits (issuing it again counts nothing), an email
the server accepted counts as sent, and each refused try counts as failed (retried or not)."""

from __future__ import annotations

import pytest

from core import metrics
from core.runtime import Runtime
from receipts import service, tasks
from receipts.delivery import MailError
from tests.receipts import factories
from tests.receipts.helpers import deliveries
from tests.receipts.test_s17f_email_delivery import Relay, mailbox, relay, settings  # noqa: F401


def test_receipts_issued_sent_and_failed_are_counted(runtime: Runtime, mailbox: Relay) -> None:  # noqa: F811
    issued, sent, failed = (
        metrics.value(name, kind="gift_receipt") for name in ("receipts_issued", "receipts_sent", "receipts_failed")
    )
    supporter = factories.supporter(runtime, email="ada@example.org")
    gift = factories.gift(runtime, supporter, donor_details=factories.donor(email="ada@example.org"))
    tasks.issue_for_gift(gift_id=str(gift))
    tasks.issue_for_gift(gift_id=str(gift))  # the job again: the document exists, nothing numbered
    assert metrics.value("receipts_issued", kind="gift_receipt") == issued + 1

    [delivery] = deliveries(runtime)
    mailbox.refused["ada@example.org"] = "450 4.2.0 Mailbox busy"
    with pytest.raises(MailError), runtime.unit_of_work() as uow:
        service.send_delivery(uow, runtime.settings, delivery.id, attempt=1, final=False)
    assert metrics.value("receipts_failed", kind="gift_receipt") == failed + 1
    assert metrics.value("receipts_sent", kind="gift_receipt") == sent

    del mailbox.refused["ada@example.org"]
    with runtime.unit_of_work() as uow:
        service.send_delivery(uow, runtime.settings, delivery.id, attempt=2, final=False)
    assert metrics.value("receipts_sent", kind="gift_receipt") == sent + 1
