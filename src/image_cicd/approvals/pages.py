"""HTML pages of the approval endpoint: complete documents, no external assets (the
shared stylesheet is inlined), rendered from web/templates/approvals/ with escaping
on for every value.

Suggested HTTP statuses: approval and result pages 200, already decided 409, expired
or superseded 410, not found 404, bad request 400, unavailable 503. Send them with
``Cache-Control: no-store`` and ``Referrer-Policy: no-referrer``.
"""

from __future__ import annotations

from typing import Any

from image_cicd.approvals.decisions import (
    FIELD_APPROVER,
    FIELD_COMMENT,
    FIELD_CSRF,
    FIELD_DECISION,
    MAX_APPROVER,
    MAX_COMMENT,
    describe_current,
    describe_tests,
    describe_version,
    next_step,
)
from image_cicd.ledger.records import ApprovalRequest
from image_cicd.web import render

__all__ = [
    "already_decided_page",
    "approval_page",
    "bad_request_page",
    "expired_page",
    "not_found_page",
    "result_page",
    "superseded_page",
    "unavailable_page",
]

_FIELDS = {
    "decision": FIELD_DECISION,
    "csrf": FIELD_CSRF,
    "approver": FIELD_APPROVER,
    "comment": FIELD_COMMENT,
    "max_approver": MAX_APPROVER,
    "max_comment": MAX_COMMENT,
}


def _page(template: str, title: str, approval: ApprovalRequest | None, **extra: Any) -> str:
    said: dict[str, Any] = {}
    if approval is not None:
        head = describe_tests(approval.tests)[0].split(" ", 1) if approval.tests else [""]
        said = {
            "version": describe_version(approval),
            "current": describe_current(approval),
            "next_step": next_step(approval),
            "tests_head": head[0],
            "tests_rest": head[1] if len(head) > 1 else "",
        }
    return render(f"approvals/{template}", title=title, approval=approval, **said, **extra)


def approval_page(approval: ApprovalRequest, csrf: str, *, notice: str | None = None) -> str:
    """The page behind the link: the facts and the Approve / Reject forms (POST)."""
    return _page(
        "approval.html",
        f"Promote to {approval.stage}?",
        approval,
        csrf=csrf,
        notice=notice,
        fields=_FIELDS,
    )


def result_page(approval: ApprovalRequest) -> str:
    """After a decision was recorded and handed to the workflow."""
    decided = "approved" if approval.status == "APPROVED" else "rejected"
    return _page("result.html", f"{approval.stage} {decided}", approval)


def already_decided_page(approval: ApprovalRequest) -> str:
    """A second click: shows who decided, how and when (HTTP 409)."""
    return _page("already_decided.html", "Already decided", approval)


def expired_page(approval: ApprovalRequest | None = None) -> str:
    """The approval timed out; the workflow has stopped (HTTP 410)."""
    return _page("expired.html", "This approval has expired", approval)


def superseded_page(approval: ApprovalRequest) -> str:
    """A newer image of the repository took this request's place (HTTP 410)."""
    return _page("superseded.html", "Superseded by a newer image", approval)


def _message(title: str, *paragraphs: str) -> str:
    return _page("message.html", title, None, paragraphs=paragraphs)


def not_found_page() -> str:
    """Unknown or malformed approval id (HTTP 404)."""
    return _message(
        "Approval not found",
        "There is no approval request at this address. Check that the link was copied "
        "completely; old requests are removed after some time.",
    )


def bad_request_page(message: str) -> str:
    """A malformed or tampered request (HTTP 400)."""
    return _message(
        "Request not accepted",
        message,
        "Nothing was changed. Go back, reload the approval page and try again.",
    )


def unavailable_page(message: str = "The workflow could not be reached.") -> str:
    """The decision could not be delivered; nothing was recorded (HTTP 503)."""
    return _message(
        "Please try again", message, "Your decision was not recorded. Try again in a moment."
    )
