"""A postal batch of up to 500 documents takes tens of seconds to render. On SQLite (the embedded default) a write
transaction holds the database's one write lock, so rendering inside it made every other write (a webhook, a donate
form) wait and then fail with "database is locked". The batch is read, rendered with no transaction open, then
recorded in a short unit of work that checks nothing it printed changed meanwhile (made again if something did):
other writes go on while it renders, and a supporter erased meanwhile is not printed."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import select

from core import jobs
from core.runtime import InlineWorker, Runtime
from crm.models import Supporter
from receipts import service, tasks
from receipts.models import DeliveryStatus, PostalBatch
from tests.fixtures.smtp import Mailbox
from tests.receipts import factories
from tests.receipts.helpers import deliveries
from tests.receipts.pdf import pdf_text

NAMES = ["Pagewright", "Inkwell", "Quillson"]


def _for_the_post(runtime: Runtime) -> list[uuid.UUID]:
    """Three supporters without email, each with a receipt waiting for the post."""
    supporters = []
    for name in NAMES:
        supporter = factories.supporter(runtime, email=None, first_name="Bob", last_name=name)
        gift = factories.gift(
            runtime, supporter, donor_details=factories.donor(first_name="Bob", last_name=name, email=None)
        )
        tasks.issue_for_gift(gift_id=str(gift))  # no worker running: the documents are numbered, rendered, planned
        supporters.append(supporter)
    return supporters


@pytest.fixture
def during_render(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[Callable[[], None]], list[bool]]]:
    """Run `action` in another thread while weasyprint lays out the batch's first page (the render is real), and
    wait up to 3 s for it: whether it finished then is recorded."""
    from weasyprint import HTML

    real = HTML.render
    pending: list[Callable[[], None]] = []
    finished: list[bool] = []

    def render(self: Any, *args: Any, **kwargs: Any) -> Any:
        if pending:
            action = pending.pop()
            errors: list[BaseException] = []

            def run() -> None:
                try:
                    action()
                except BaseException as exc:  # reported as not finished
                    errors.append(exc)

            thread = threading.Thread(target=run)
            thread.start()
            thread.join(timeout=3)
            finished.append(not thread.is_alive() and not errors)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(HTML, "render", render)

    def arm(action: Callable[[], None]) -> list[bool]:
        pending.append(action)
        return finished

    yield arm


def _job(name: str, **kwargs: str) -> None:
    """The job run as a worker runs it for its message."""
    jobs._dramatiq_actors[name](**kwargs)


def _another_write(runtime: Runtime) -> Callable[[], None]:
    def write() -> None:
        with runtime.unit_of_work() as uow:  # a donate form's new supporter, say
            uow.session.add(Supporter(email=f"{uuid.uuid4().hex[:8]}@example.org", first_name="Eve"))

    return write


def test_other_writes_go_on_while_a_postal_batch_renders(
    runtime: Runtime, worker: InlineWorker, mailbox: Mailbox, during_render: Any
) -> None:
    worker.stop()
    _for_the_post(runtime)
    finished = during_render(_another_write(runtime))
    _job("receipts.build_postal_batch")
    assert finished == [True]
    with runtime.read_session() as session:
        [batch] = session.exec(select(PostalBatch)).all()
        assert batch.documents == 3
        assert session.exec(select(Supporter).where(Supporter.first_name == "Eve")).one()
    assert {d.status for d in deliveries(runtime)} == {DeliveryStatus.POSTED}


def test_a_supporter_erased_while_the_batch_renders_is_not_printed(
    runtime: Runtime, worker: InlineWorker, mailbox: Mailbox, during_render: Any
) -> None:
    from giving.privacy import erase_supporter

    worker.stop()
    supporters = _for_the_post(runtime)

    def erase() -> None:
        with runtime.unit_of_work() as uow:
            erase_supporter(uow, runtime.settings, supporters[1])

    finished = during_render(erase)
    _job("receipts.build_postal_batch")
    assert finished == [True]
    with runtime.read_session() as session:
        [batch] = session.exec(select(PostalBatch)).all()
    assert batch.documents == 2
    printed = pdf_text(Path(service.postal_batch_path(runtime.settings, batch)).read_bytes())
    assert "Pagewright" in printed and "Quillson" in printed and "Inkwell" not in printed, printed
    statuses = {d.supporter_id: d.status for d in deliveries(runtime)}
    assert statuses == {
        supporters[0]: DeliveryStatus.POSTED,
        supporters[1]: DeliveryStatus.WITHDRAWN,
        supporters[2]: DeliveryStatus.POSTED,
    }


def test_a_batch_made_again_after_an_erasure_renders_with_no_transaction_open(
    runtime: Runtime, worker: InlineWorker, mailbox: Mailbox, during_render: Any
) -> None:
    from giving.privacy import erase_supporter

    worker.stop()
    supporters = _for_the_post(runtime)
    _job("receipts.build_postal_batch")
    with runtime.read_session() as session:
        [batch] = session.exec(select(PostalBatch)).all()
    with runtime.unit_of_work() as uow:
        erase_supporter(uow, runtime.settings, supporters[0])
    finished = during_render(_another_write(runtime))
    _job(service.REBUILD_POSTAL_BATCH, batch_id=str(batch.id))
    assert finished == [True]
    with runtime.read_session() as session:
        rebuilt = session.get(PostalBatch, batch.id)
        assert rebuilt is not None and rebuilt.documents == 2
    printed = pdf_text(Path(service.postal_batch_path(runtime.settings, rebuilt)).read_bytes())
    assert "Pagewright" not in printed and "Inkwell" in printed and "Quillson" in printed, printed
