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
