"""Errors of giftaid."""

from core.errors import AppError


class GiftAidError(AppError):
    pass
