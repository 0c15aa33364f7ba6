"""Staff users, tokens and supporters for crm and auth tests (created through the real services)."""

from __future__ import annotations

import datetime as dt
import uuid

from core import auth
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
