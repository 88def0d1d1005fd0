"""The ledger: approvals, promotions, releases and rollback plans in one DynamoDB table.

Item layout (pk / sk; docs/contracts.md "Ledger table" lists every attribute):

- approval request: ``APPROVAL#<id>`` / ``APPROVAL``,
  gsi1 ``APPROVALS`` / ``<status>#<created>``; a SUPERSEDED one also has
  ``superseded_by`` (the newer execution) and ``superseded_by_digest``
- promotion: ``PROMOTION#<execution>`` / ``PROMOTION``, gsi1 ``REPO#<name>`` / ``<started>``
- release (PROD): ``RELEASE#<prod repository>`` / ``<at>#<version>``
- requests waiting at a stage: ``WAITING#<stage>#<source repository>`` / ``WAITING``,
  one attribute ``waiter#<approval id>`` per request
- rollback plan: ``ROLLBACK#<execution>`` / ``PLAN``, written once per execution
- (the repository locks, ``LOCK#<repository>`` / ``LOCK``, are written by
  ``promotion.locks``)

Times are fixed-width ISO-8601 UTC strings; ``expires_at`` is the table's TTL
attribute (epoch seconds). Approval requests get a TTL some time after their
expiry (``approval_expires_at`` + ``approval_retention``) so a late click still finds
them; promotions, releases and rollback plans are the audit trail and never expire.
tests/integration/test_ledger_layout.py checks this layout against docs/contracts.md.
"""

from __future__ import annotations

from image_cicd.ledger.approvals import ApprovalRequests
from image_cicd.ledger.errors import (
    AlreadyDecided,
    ApprovalExpired,
    ApprovalNotFound,
    ApprovalSuperseded,
    LedgerError,
    PromotionFinished,
    PromotionNotFound,
)
from image_cicd.ledger.promotions import Promotions
from image_cicd.ledger.releases import Releases
from image_cicd.ledger.waiting import Waiter, WaitingLists

__all__ = [
    "AlreadyDecided",
    "ApprovalExpired",
    "ApprovalNotFound",
    "ApprovalSuperseded",
    "Ledger",
    "LedgerError",
    "PromotionFinished",
    "PromotionNotFound",
    "Waiter",
]


class Ledger(ApprovalRequests, WaitingLists, Promotions, Releases):
    """Data access for the ledger table; every method is one or two DynamoDB calls."""
