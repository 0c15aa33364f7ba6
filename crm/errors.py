"""Errors of crm."""

from __future__ import annotations

from core.errors import AppError, BadRequest, Conflict, NotFound, ValidationFailed


class CrmError(AppError):
    pass


class SupporterNotFound(NotFound, CrmError):
    pass


class DeclarationNotFound(NotFound, CrmError):
    pass


class InvalidDonorDetails(ValidationFailed, CrmError):
    pass


class CannotMergeIntoItself(BadRequest, CrmError):
    pass


class DeclarationAlreadyCancelled(Conflict, CrmError):
    pass


class CannotMergeErased(Conflict, CrmError):
    pass


class ReviewItemNotFound(NotFound, CrmError):
    pass


class BadCursor(BadRequest, CrmError):
    pass


class SubscriptionNotFound(BadRequest, CrmError):
    """A confirmation or unsubscribe link that is not one of ours (tampered with, or mistyped)."""


class SubscriptionLinkExpired(BadRequest, CrmError):
    pass


class SupporterErased(Conflict, CrmError):
    """Nothing more is recorded on an erased record: it must hold no personal data."""
