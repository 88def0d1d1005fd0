"""The ledger's typed errors."""

from __future__ import annotations

from image_cicd.ledger.records import ApprovalRequest, iso


class LedgerError(Exception):
    """Base of the ledger's typed errors."""


class ApprovalNotFound(LedgerError):
    def __init__(self, approval_id: str) -> None:
        self.approval_id = approval_id
        super().__init__(f"no approval request {approval_id[:64]!r}")


class AlreadyDecided(LedgerError):
    """The approval was decided before; carries who decided, how and when."""

    def __init__(self, approval: ApprovalRequest) -> None:
        self.approval = approval
        self.status = approval.status
        self.decided_by = approval.decided_by
        self.decided_at = approval.decided_at
        when = iso(approval.decided_at) if approval.decided_at else "an unknown time"
        super().__init__(
            f"approval {approval.approval_id} was already {approval.status.lower()} "
            f"by {approval.decided_by or 'unknown'} at {when}"
        )


class ApprovalExpired(LedgerError):
    def __init__(self, approval: ApprovalRequest) -> None:
        self.approval = approval
        super().__init__(f"approval {approval.approval_id} expired at {iso(approval.expires_at)}")


class ApprovalSuperseded(LedgerError):
    """A newer image of the repository took this approval's place."""

    def __init__(self, approval: ApprovalRequest) -> None:
        self.approval = approval
        super().__init__(
            f"approval {approval.approval_id} was superseded by {approval.superseded_by} "
            f"({approval.superseded_by_digest})"
        )


class PromotionNotFound(LedgerError):
    def __init__(self, execution: str) -> None:
        self.execution = execution
        super().__init__(f"no promotion for execution {execution!r}")


class PromotionFinished(LedgerError):
    """The promotion has an outcome already (another writer recorded it first)."""

    def __init__(self, execution: str) -> None:
        self.execution = execution
        super().__init__(f"promotion {execution!r} has finished already")
