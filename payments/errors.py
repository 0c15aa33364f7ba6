"""Errors of payments."""

from core.errors import AppError


class PaymentsError(AppError):
    pass
