"""Errors of receipts."""

from core.errors import AppError


class ReceiptsError(AppError):
    pass


class DocumentNotFound(ReceiptsError):
    status_code = 404


class DocumentNotIssued(ReceiptsError):
    """The document is numbered but its PDF is not stored yet (it will be, by its job)."""

    status_code = 409


class DocumentErased(ReceiptsError):
    """Its supporter was erased: its words and file are gone for good (its number stays in the ledger)."""

    status_code = 410


class NothingToResend(ReceiptsError):
    status_code = 409


class InvalidTaxYear(ReceiptsError):
    status_code = 400


class TaxYearNotOver(ReceiptsError):
    """A statement is issued once per supporter and tax year, so one for a year not yet over would stand as the
    year's and the full one could never follow."""

    status_code = 409
