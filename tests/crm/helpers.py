"""Staff users, tokens and supporters for crm and auth tests (created through the real services)."""

from __future__ import annotations

import datetime as dt
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from core import auth
from core.db import UnitOfWork
from core.runtime import Runtime
from crm import service
from crm.models import Supporter
from crm.validation import DonorDetails

PASSWORD = "correct horse battery staple"


def staff_token(runtime: Runtime, role: str, *, email: str | None = None) -> dict[str, str]:
    """Authorization headers of a new staff user with `role`."""
    email = email or f"{role}-{uuid.uuid4().hex[:8]}@example.org"
    with runtime.unit_of_work() as uow:
        auth.add_staff_user(uow, email, role, PASSWORD, issuer="Test Charity")
    with runtime.unit_of_work() as uow:
        token = auth.create_api_token(uow, email, lifetime=dt.timedelta(days=1))
    return {"Authorization": f"Bearer {token}"}


def make_supporter(
    runtime: Runtime,
    *,
    email: str | None = "ada@example.org",
    first_name: str = "Ada",
    last_name: str = "Lovelace",
    address_line1: str = "12 Acacia Avenue",
    postcode: str = "CT16 1AA",
    title: str | None = "Ms",
) -> uuid.UUID:
    details = DonorDetails(
        first_name=first_name,
        last_name=last_name,
        email=email,
        title=title,
        address_line1=address_line1,
        town="Dover",
        postcode=postcode,
    ).normalised()
    with runtime.unit_of_work() as uow:
        supporter = service.find_or_create_supporter(uow, details, source="test")
        return supporter.id


def get_supporter(runtime: Runtime, supporter_id: uuid.UUID) -> Supporter:
    with runtime.read_session() as session:
        found = session.get(Supporter, supporter_id)
        assert found is not None
        # Detached with its loaded values (the read session's rollback would expire them).
        session.expunge(found)
        return found


def at_the_same_moment(
    runtime: Runtime, first: Callable[[UnitOfWork], Any], second: Callable[[UnitOfWork], Any]
) -> list[BaseException]:
    """`first(uow)` then `second(uow)` in two threads, the second starting while the first's transaction is still
    open (it sleeps half a second before committing); returns what they raised."""
    started = threading.Event()
    errors: list[BaseException] = []

    def run_first() -> None:
        try:
            with runtime.unit_of_work() as uow:
                first(uow)
                started.set()
                time.sleep(0.5)
        except BaseException as exc:
            errors.append(exc)
        finally:
            started.set()

    def run_second() -> None:
        started.wait(5)
        try:
            with runtime.unit_of_work() as uow:
                second(uow)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run_first), threading.Thread(target=run_second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    return errors
