"""Email delivery against a real SMTP server (aiosmtpd on loopback, which, like many relays, does not offer
SMTPUTF8): addresses the donate form accepts reach the server; an address the server says does not exist fails at
once, while refusals about us (relay denied) and temporary ones are retried."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from core.runtime import Runtime
from core.settings import Settings
from crm.validation import normalise_email
from receipts import service, tasks
from receipts.delivery import MailError
from receipts.models import DeliveryStatus
from tests.fixtures.smtp import Mailbox, free_port
from tests.receipts import factories
from tests.receipts.conftest import receipts_settings
from tests.receipts.helpers import deliveries, history


class Relay(Mailbox):
    """Refuses each recipient in `refused` with the reply given."""

    def __init__(self) -> None:
        super().__init__()
        self.refused: dict[str, str] = {}

    async def handle_RCPT(
        self, server: object, session: object, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        if address in self.refused:
            return self.refused[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"


@pytest.fixture
def relay() -> Iterator[tuple[Relay, int]]:
    """A relay that does not offer SMTPUTF8 (aiosmtpd's Controller offers it unless told not to)."""
    mailbox = Relay()
    port = free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port, enable_SMTPUTF8=False)
    controller.start()
    try:
        yield mailbox, port
    finally:
        controller.stop()


@pytest.fixture
def mailbox(relay: tuple[Relay, int]) -> Relay:
    return relay[0]


@pytest.fixture
def settings(database_url: str, tmp_path: Path, relay: tuple[Relay, int]) -> Settings:
    return receipts_settings(database_url, tmp_path, relay[1])


def test_a_receipt_to_an_address_at_an_international_domain_is_sent(runtime: Runtime, mailbox: Mailbox) -> None:
    """The donate form keeps "ada@bücher.org" as given (crm's `normalise_email`). Its domain has an ASCII form
    (xn--bcher-kva.org), so the receipt goes to it at once: it is not refused for want of SMTPUTF8 and retried for
    two hours before the supporter's history says it could not be emailed."""
    address = normalise_email("Ada@Bücher.org")
    assert address == "ada@bücher.org"
    supporter = factories.supporter(runtime, email=address)
    gift = factories.gift(runtime, supporter, donor_details=factories.donor(email=address))
    tasks.issue_for_gift(gift_id=str(gift))  # no worker: the send job waits in the queue
    [delivery] = deliveries(runtime)
    assert delivery.to_email == address

    with runtime.unit_of_work() as uow:
        status = service.send_delivery(uow, runtime.settings, delivery.id, attempt=1, final=False)

    assert status == DeliveryStatus.SENT
    [message] = mailbox.messages
    assert str(message["To"]) == "ada@xn--bcher-kva.org"
    [sent] = deliveries(runtime)
    assert sent.status == DeliveryStatus.SENT and sent.to_email == address
    [item] = history(runtime, supporter)
    assert item.summary == "Receipt GR-000001 emailed to ada@bücher.org"


def _planned(runtime: Runtime, address: str) -> tuple[Any, Any]:
    supporter = factories.supporter(runtime, email=address)
    gift = factories.gift(runtime, supporter, donor_details=factories.donor(email=address))
    tasks.issue_for_gift(gift_id=str(gift))  # no worker: the send job waits in the queue
    [delivery] = deliveries(runtime)
    return supporter, delivery


def test_an_address_the_server_says_does_not_exist_fails_at_once_on_the_history(
    runtime: Runtime, mailbox: Relay
) -> None:
    """The recipient's server answers RCPT with "550 5.1.1 user unknown": the same message to the same address gets
    the same answer, so the first attempt marks the delivery failed and says why on the supporter's history (staff
    can send a copy to another address), rather than trying eleven more times over two hours."""
    supporter, delivery = _planned(runtime, "ada@example.org")
    mailbox.refused["ada@example.org"] = "550 5.1.1 <ada@example.org>: Recipient address rejected: User unknown"

    with runtime.unit_of_work() as uow:
        status = service.send_delivery(uow, runtime.settings, delivery.id, attempt=1, final=False)

    assert status == DeliveryStatus.FAILED
    [failed] = deliveries(runtime)
    assert failed.status == DeliveryStatus.FAILED and failed.attempts == 1 and "5.1.1" in failed.last_error
    [item] = history(runtime, supporter)
    assert item.summary.startswith("Receipt GR-000001 could not be emailed to ada@example.org:"), item.summary
    assert "User unknown" in item.summary and mailbox.messages == []


@pytest.mark.parametrize(
    "reply",
    ["554 5.7.1 <ada@example.org>: Relay access denied", "550 Requested action not taken", "450 4.2.0 Mailbox busy"],
)
def test_refusals_about_us_or_for_now_are_retried(runtime: Runtime, mailbox: Relay, reply: str) -> None:
    """Relay denied (our relay's configuration, put right meanwhile), a 5xx that does not say the address is wrong,
    a temporary refusal: the job is retried, the delivery stays pending, nothing on the history yet."""
    supporter, delivery = _planned(runtime, "ada@example.org")
    mailbox.refused["ada@example.org"] = reply

    with pytest.raises(MailError), runtime.unit_of_work() as uow:
        service.send_delivery(uow, runtime.settings, delivery.id, attempt=1, final=False)

    [pending] = deliveries(runtime)
    assert pending.status == DeliveryStatus.PENDING and history(runtime, supporter) == []
