"""Errors of receipts."""

from core.errors import AppError


class ReceiptsError(AppError):
    pass
