"""Errors of payments."""

from __future__ import annotations

from core.errors import AppError, BadRequest, Conflict, FeatureDisabled, NotFound, ServiceUnavailable


class PaymentsError(AppError):
    pass


class ProviderDisabled(FeatureDisabled, PaymentsError):
    """The provider's secret is not configured."""


class ProviderUnavailable(ServiceUnavailable, PaymentsError):
    """The provider could not be reached or asked us to slow down: worth retrying. `answered`: it did answer (an
    error status), so its idempotency layer may keep that answer for the key we sent; else nothing came back."""

    def __init__(self, detail: str, *, answered: bool = False, headers: dict[str, str] | None = None):
        super().__init__(detail, headers=headers)
        self.answered = answered


class ProviderBusy(ProviderUnavailable):
    """The provider is still processing an earlier request with the same idempotency key (a double click reached it
    while the first click's request was running: Stripe's 409 `idempotency_key_in_use`). Nothing was saved under the
    key for this request, so the same key is sent again later and gets the first request's answer: not `answered`,
    and nothing failed. 503 with Retry-After: the donor is asked to try again in a moment."""

    def __init__(self, detail: str):
        super().__init__(detail, headers={"Retry-After": "5"})


class ProviderRefused(BadRequest, PaymentsError):
    """The provider refused the request (its message says why)."""

    answered = True


class GiftNotFound(NotFound, PaymentsError):
    pass


class OrderNotFound(NotFound, PaymentsError):
    pass


class PayoutNotFound(NotFound, PaymentsError):
    pass


class UnknownSku(BadRequest, PaymentsError):
    pass


class OutOfStock(Conflict, PaymentsError):
    pass


class RegularGiftNotFound(NotFound, PaymentsError):
    pass


class RegularGiftEnded(Conflict, PaymentsError):
    """The regular gift was already cancelled or finished: there is nothing left to stop."""


class RegularGiftStillLive(Conflict, PaymentsError):
    """The provider refused to cancel a regular gift it still collects: someone must look at it there."""
