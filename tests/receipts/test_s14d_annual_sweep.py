"""`giving receipts annual` with no broker is its own worker, and sweeps while it waits for its statements: a statement
job whose message is lost during the run is sent again by that sweep, and the statement is issued once."""

from __future__ import annotations

import datetime as dt
import threading
import uuid
from typing import Any

import dramatiq
import pytest
from dramatiq.middleware import Middleware, SkipMessage
from sqlmodel import select

from core.models import Job, JobStatus
from core.runtime import Runtime
from crm.models import StatementPreference
from giving.commands import receipts as command
from receipts.models import DeliveryStatus, DocumentKind
from tests.fixtures.smtp import Mailbox
from tests.receipts import factories
from tests.receipts.helpers import deliveries, documents

RENDER = "receipts.render_document"


class LoseTheFirstRender(Middleware):
    """The broker loses the first statement job's message (taken, never run: a worker's queue lost with it), and the
    loss is 3 minutes old by the time anyone looks: its row's times are moved back by as much (the database's clock
    cannot be moved). Counts the statement messages delivered."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.delivered = 0
        self.lost = threading.Event()
        self._lock = threading.Lock()

    def before_process_message(self, broker: dramatiq.Broker, message: Any) -> None:
        if message.actor_name != RENDER:
            return
        with self._lock:
            self.delivered += 1
            first = not self.lost.is_set()
            self.lost.set()
        if first:
            with self.runtime.unit_of_work() as uow:
                job = uow.session.get(Job, uuid.UUID(message.kwargs["job_id"]))
                assert job is not None and job.last_sent_at is not None
                job.available_at -= dt.timedelta(minutes=3)
                job.last_sent_at -= dt.timedelta(minutes=3)
            raise SkipMessage


@pytest.mark.slow
def test_the_annual_runs_sweep_sends_again_a_statement_job_whose_message_was_lost(
    runtime: Runtime, mailbox: Mailbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    supporter = factories.supporter(runtime, email="yearly@example.org", preference=StatementPreference.ANNUAL)
    factories.gift(runtime, supporter, amount=1500, received_on=dt.date(2025, 6, 1))
    broker = LoseTheFirstRender(runtime)
    runtime.broker.add_middleware(broker)
    monkeypatch.setattr(command, "SWEEP_SECONDS", 0.5)  # the run sweeps every minute: not worth waiting for here

    outcome = command.run_annual(runtime, "2025-26", timeout=30)

    assert broker.lost.is_set()
    assert outcome.finished, "the statement whose message was lost was never issued"
    assert (outcome.statements, outcome.emailed, outcome.failed) == (1, 1, 0)
    assert broker.delivered == 2  # the lost message, and the sweep's copy
    [statement] = documents(runtime, DocumentKind.ANNUAL_STATEMENT)
    assert [d.status for d in deliveries(runtime, statement.id)] == [DeliveryStatus.SENT]
    assert len(mailbox.to("yearly@example.org")) == 1
    with runtime.read_session() as session:
        [job] = session.exec(select(Job).where(Job.actor_name == RENDER)).all()
    assert (job.status, job.attempts) == (JobStatus.DONE, 1)  # one run: the copy's (the lost message never ran)
