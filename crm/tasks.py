"""Jobs of crm (dramatiq actors through core.jobs)."""

from __future__ import annotations

import uuid

import core.auth  # noqa: F401  (registers core's staff-access job, core.send_password_reset, with the worker)
from core import signing
from core.db import UnitOfWork
from core.jobs import actor
from core.mailer import Email, send_email
from core.runtime import get_runtime
from crm import service
from crm.models import PendingSubscription, Supporter


@actor("crm.send_subscription_confirmation", queue="email", time_limit_ms=60_000, max_retries=6)
def send_subscription_confirmation(uow: UnitOfWork, pending_id: str) -> None:
    """The double opt-in email: the confirmation link is the first URL of the text part; the unsubscribe link
    is in the text and in the List-Unsubscribe header. An SMTP failure raises, so the job is retried. Not sent (and
    recorded on the pending subscription) once no longer wanted (`service.confirmation_not_wanted`)."""
    pending = uow.session.get(PendingSubscription, uuid.UUID(pending_id))
    if pending is None or pending.confirmed_at is not None or pending.skipped_at is not None:
        return
    supporter = uow.session.get(Supporter, pending.supporter_id)
    if supporter is None or supporter.email is None:
        return
    # Still wanted? Asked now, not when the job was sent: a retry may run days later, after an unsubscribe.
    reason = service.confirmation_not_wanted(uow.session, pending)
    if reason is not None:
        service.skip_confirmation(uow, pending, reason)
        return
    settings = get_runtime().settings
    secret = signing.signing_secret(uow.session, settings.web.secret_key.get_secret_value())
    base = settings.web.base_url
    confirm = service.subscription_confirm_url(base, secret, pending.id)
    unsubscribe = service.unsubscribe_url(base, secret, supporter.id)
    charity = settings.charity.name
    # The words kept with the pending consent (those its page showed): the link grants exactly these.
    words = service.subscription_words(uow.session, pending) or service.email_updates_wording(charity)
    greeting = f"Dear {supporter.first_name}," if supporter.first_name else "Hello,"
    text = (
        f"Please confirm that you would like email updates from {charity}:\n\n"
        f"{confirm}\n\n"
        f"By following the link you tell us:\n\n{words}\n\n"
        f"{greeting}\n\n"
        "Someone (we hope you) asked for our updates at this address. Nothing happens unless you follow the link "
        "above within three days. If it was not you, ignore this email.\n\n"
        f"{charity}, registered charity {settings.charity.registration_number}, {settings.charity.address}\n"
        f"Stop emails from us: {unsubscribe}\n"
    )
    send_email(
        Email(
            to=supporter.email,
            subject=f"Please confirm your email updates from {charity}",
            text=text,
            headers={"List-Unsubscribe": f"<{unsubscribe}>", "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"},
            kind="subscribe",
        ),
        settings.email,
    )
