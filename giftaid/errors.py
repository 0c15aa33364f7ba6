"""Errors of giftaid."""

from core.errors import AppError, BadRequest, Conflict, NotFound


class GiftAidError(AppError):
    pass


class ClaimNotFound(NotFound):
    pass


class GiftNotFound(NotFound):
    pass


class DeclarationNotFound(NotFound):
    pass


class InvalidTransition(Conflict):
    """A claim cannot move to that status from where it is."""


class ClaimRejected(Conflict):
    """HMRC rejected the claim: its gifts are released and its adjustments carried on; its files are not written
    again (what was sent is kept with its messages)."""


class ClaimConflict(Conflict):
    """Another claim took some of the same gifts at the same moment."""


class NothingLeftToSend(Conflict):
    """Every gift of a claim built in time is one HMRC would now refuse (past the four-year limit): there is no claim
    left to write or send."""


class ClaimsBusy(Conflict):
    """The claims' lock was not free within a bounded wait (a claim being built held it): nothing was done; try
    again later. Only a poll by the sweep bounds its wait (`service.poll_claim(..., lock_wait=...)`)."""


class InvalidClaimRequest(BadRequest):
    pass


class ExportFailed(GiftAidError):
    """A file we wrote failed HMRC's checks: nothing is handed out."""


class SubmissionFailed(GiftAidError):
    status_code = 502
