"""Errors of webhooks."""

from core.errors import AppError


class WebhooksError(AppError):
    pass
