"""Errors of crm."""

from core.errors import AppError


class CrmError(AppError):
    pass
