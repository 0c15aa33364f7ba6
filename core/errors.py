"""Errors that carry their HTTP meaning; `core.http.app_error_handler` renders them all.

Each package defines `<Pkg>Error(AppError)` and its conditions in its own `errors.py`.
"""

from __future__ import annotations


class AppError(Exception):
    status_code = 500

    def __init__(self, detail: str, *, status_code: int | None = None, headers: dict[str, str] | None = None):
        super().__init__(detail)
        self.detail = detail
        if status_code is not None:
            self.status_code = status_code
        self.headers = headers

    @property
    def code(self) -> str:
        return type(self).__name__


class BadRequest(AppError):
    status_code = 400


class ValidationFailed(BadRequest):
    """Input that breaks a rule; `errors` maps field names to messages for forms."""

    def __init__(self, detail: str, errors: dict[str, str] | None = None):
        super().__init__(detail)
        self.errors = errors or {}


class Unauthorized(AppError):
    status_code = 401


class Forbidden(AppError):
    status_code = 403


class NotFound(AppError):
    status_code = 404


class Conflict(AppError):
    status_code = 409


class PayloadTooLarge(AppError):
    status_code = 413


class TooManyRequests(AppError):
    status_code = 429


class ServiceUnavailable(AppError):
    status_code = 503


class DatabaseUnavailable(ServiceUnavailable):
    """The database cannot be reached (SQLAlchemy's OperationalError or InterfaceError, or the web process's
    asyncio pool): 503 with Retry-After, so a provider or client tries again."""

    def __init__(self, detail: str = "the database is unavailable; try again"):
        super().__init__(detail, headers={"Retry-After": "5"})

    @property
    def code(self) -> str:
        return "ServiceUnavailable"


class InternalServerError(AppError):
    """A bug: what the web app answers for an exception no handler knows (its details go to the log only)."""

    status_code = 500


class FeatureDisabled(AppError):
    """A provider whose secret is not configured: its endpoints answer 404 or 503."""

    status_code = 503
