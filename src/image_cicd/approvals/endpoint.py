"""The approval endpoint as two operations returning (HTTP status, HTML page).

GET shows the approval and never decides; only POST decides. Independent of the
HTTP framework: the approval-api function serves it through API Gateway.
"""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime

from image_cicd.approvals import pages
from image_cicd.approvals.decisions import (
    ApprovalLedger,
    InvalidRequest,
    NotifierUnavailable,
    TaskNotifier,
    csrf_token,
    decide,
    parse_decision_form,
)
from image_cicd.ledger.store import (
    AlreadyDecided,
    ApprovalExpired,
    ApprovalNotFound,
    ApprovalSuperseded,
)

HEADERS = {
    "Content-Type": "text/html; charset=utf-8",
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
}

Page = tuple[int, str]


def show(ledger: ApprovalLedger, approval_id: str, now: datetime | None = None) -> Page:
    now = now or datetime.now(UTC)
    try:
        approval = ledger.get_approval(approval_id)
    except ApprovalNotFound:
        return 404, pages.not_found_page()
    if approval.status in ("APPROVED", "REJECTED"):
        return 409, pages.already_decided_page(approval)
    if approval.status == "SUPERSEDED":
        return 410, pages.superseded_page(approval)
    if approval.is_expired(now):
        return 410, pages.expired_page(approval)
    return 200, pages.approval_page(approval, csrf_token(approval))


def _form_text(body: str, base64_encoded: bool) -> str:
    """The form as text; API Gateway sends a body that is not text as base64."""
    if not base64_encoded:
        return body
    try:
        return base64.b64decode(body, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise InvalidRequest("the form is not UTF-8 text") from None


def unavailable() -> Page:
    """What an approver sees while a service behind the page cannot be reached."""
    return 503, pages.unavailable_page()


def submit(
    ledger: ApprovalLedger,
    notifier: TaskNotifier,
    approval_id: str,
    body: str,
    *,
    base64_encoded: bool = False,
    source_ip: str | None,
    user_agent: str | None,
    now: datetime | None = None,
) -> Page:
    now = now or datetime.now(UTC)
    try:
        form = parse_decision_form(_form_text(body, base64_encoded))
        decided = decide(
            ledger,
            notifier,
            approval_id,
            form.decision,
            form.approver,
            form.comment,
            csrf=form.csrf,
            source_ip=source_ip,
            user_agent=user_agent,
            now=now,
        )
    except ApprovalNotFound:
        return 404, pages.not_found_page()
    except AlreadyDecided as exc:
        return 409, pages.already_decided_page(exc.approval)
    except ApprovalExpired as exc:
        return 410, pages.expired_page(exc.approval)
    except ApprovalSuperseded as exc:
        return 410, pages.superseded_page(exc.approval)
    except InvalidRequest as exc:
        return 400, pages.bad_request_page(str(exc))
    except NotifierUnavailable:  # Step Functions unreachable: undone, retry later
        return unavailable()
    return 200, pages.result_page(decided)
