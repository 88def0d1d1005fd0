"""Approval logic, independent of any HTTP framework or Lambda event shape.

The link sent to approvers carries only an unguessable approval id. The Step
Functions task token stays in the ledger: it is never logged, never put in a URL
or a message. A GET shows a page; only a POST with the page's CSRF token decides.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import secrets
import unicodedata
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, Literal, Protocol
from urllib.parse import parse_qs, quote

from pydantic import SecretStr

from image_cicd.ledger.records import (
    ApprovalRecord,
    ApprovalRequest,
    ApprovalStatus,
    Decision,
    ImageRef,
    Promotion,
    TestResults,
    iso,
)
from image_cicd.ledger.store import ApprovalExpired, PromotionNotFound
from image_cicd.stages import Destination

__all__ = [
    "FIELD_APPROVER",
    "FIELD_COMMENT",
    "FIELD_CSRF",
    "FIELD_DECISION",
    "ApprovalLedger",
    "DecisionForm",
    "InvalidRequest",
    "TaskNotifier",
    "TaskTokenInvalid",
    "approval_link",
    "check_csrf",
    "csrf_token",
    "decide",
    "format_message",
    "new_approval_id",
    "new_approval_request",
    "next_step",
    "parse_decision_form",
]

#: Names of the fields the approval page posts (application/x-www-form-urlencoded).
FIELD_DECISION = "decision"
FIELD_APPROVER = "approver"
FIELD_COMMENT = "comment"
FIELD_CSRF = "csrf"

MAX_APPROVER = 200
MAX_COMMENT = 2000
SUBJECT_MAX = 100  # SNS limit


class InvalidRequest(ValueError):
    """A malformed or tampered decision request (HTTP 400)."""


class TaskTokenInvalid(Exception):
    """Step Functions no longer accepts the task token (timed out or unknown)."""


class ApprovalRejected(Exception):
    """An approver rejected the image: the error the waiting task fails with (its name is
    what the state machine catches; the endpoint reports it, nothing raises it)."""


# ------------------------------------------------------------------- identities


def new_approval_id() -> str:
    """An unguessable approval id (256 random bits, URL-safe)."""
    return secrets.token_urlsafe(32)


def new_approval_request(
    *,
    execution: str,
    stage: Destination,
    repository: str,
    target_repository: str,
    digest: str,
    task_token: str,
    timeout: timedelta,
    now: datetime,
    version: str | None = None,
    version_assigned: bool = False,
    current: ImageRef | None = None,
    tests: TestResults | None = None,
) -> ApprovalRequest:
    """A PENDING approval request with a fresh id and CSRF secret."""
    return ApprovalRequest(
        approval_id=new_approval_id(),
        execution=execution,
        stage=stage,
        repository=repository,
        target_repository=target_repository,
        digest=digest,
        version=version,
        version_assigned=version_assigned,
        current=current,
        tests=tests,
        created_at=now,
        expires_at=now + timeout,
        task_token=SecretStr(task_token),
        csrf_secret=SecretStr(secrets.token_urlsafe(32)),
    )


def csrf_token(approval: ApprovalRequest) -> str:
    """HMAC-SHA256 of the approval id keyed with the approval's own secret."""
    mac = hmac.new(
        approval.csrf_secret.get_secret_value().encode(),
        approval.approval_id.encode(),
        hashlib.sha256,
    ).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def check_csrf(approval: ApprovalRequest, token: str | None) -> bool:
    if not token:
        return False
    return hmac.compare_digest(csrf_token(approval).encode(), token.encode())


def approval_link(base_url: str, approval_id: str) -> str:
    """``<base>/approvals/<id>`` (the base URL may or may not end with a slash)."""
    return f"{base_url.rstrip('/')}/approvals/{quote(approval_id, safe='')}"


# --------------------------------------------------------------------- messages


def describe_current(approval: ApprovalRequest) -> str:
    """What the target stage runs now, in words."""
    if approval.current is None:
        return "nothing yet (first release)"
    version = approval.current.version or "untagged"
    return f"{version} ({approval.current.digest})"


def version_label(approval: ApprovalRequest) -> str:
    """The version in a few characters: `v0.4`, `v0.4 (estimate)` or empty."""
    if approval.version is None:
        return ""
    return approval.version + ("" if approval.version_assigned else " (estimate)")


def describe_version(approval: ApprovalRequest) -> str:
    """The version the image will get in the target, in words: certain only when the
    digest has it there already (see ApprovalRequest)."""
    if approval.version is None:
        return "the next version"
    if approval.version_assigned:
        return f"{approval.version} (it has this version in {approval.target_repository} already)"
    return (
        f"next version (estimate): {approval.version} - assigned when the image is copied "
        f"to {approval.target_repository}; a promotion copied there first takes it"
    )


def describe_tests(tests: TestResults | None) -> list[str]:
    if tests is None:
        return ["not run"]
    passed = sum(1 for check in tests.checks if check.passed)
    head = "PASSED" if tests.passed else "FAILED"
    if tests.checks:
        head += f" ({passed} of {len(tests.checks)} checks passed)"
    if tests.summary:
        head += f": {tests.summary}"
    lines = [head]
    for check in tests.checks:
        mark = "ok  " if check.passed else "FAIL"
        lines.append(f"  [{mark}] {check.name}" + (f": {check.detail}" if check.detail else ""))
    return lines


def next_step(approval: ApprovalRequest) -> str:
    """What the workflow does after this approval."""
    if approval.stage == "TEST":
        return f"copying the image to {approval.target_repository} and running the tests"
    return f"promoting the image to {approval.target_repository}"


def ascii_line(text: str) -> str:
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return " ".join("".join(ch if ch.isprintable() else " " for ch in folded).split())


def format_message(approval: ApprovalRequest, link: str) -> tuple[str, str]:
    """Subject (ASCII, at most 100 characters, as SNS requires) and plain-text body."""
    version = version_label(approval) or "a new version"
    subject = ascii_line(f"Approval needed: {approval.repository} -> {approval.stage} as {version}")
    if len(subject) > SUBJECT_MAX:
        subject = subject[: SUBJECT_MAX - 3] + "..."
    lines = [
        f"An image is waiting for your approval to go to {approval.stage}.",
        "",
        f"Repository:      {approval.repository}",
        f"Digest:          {approval.digest}",
        f"Stage:           {approval.stage} ({approval.target_repository})",
        f"Version:         {describe_version(approval)}",
        f"{approval.stage} runs now:  {describe_current(approval)}",
    ]
    if approval.stage == "PROD" or approval.tests is not None:
        tests = describe_tests(approval.tests)
        lines.append(f"Tests:           {tests[0]}")
        lines.extend(tests[1:])
    lines += [
        "",
        "Review and approve or reject:",
        link,
        "",
        f"This request expires at {approval.expires_at:%Y-%m-%d %H:%M} UTC; "
        "after that the promotion stops and nothing more is copied.",
        f"Workflow execution: {approval.execution}",
    ]
    return subject, "\n".join(lines) + "\n"


# ------------------------------------------------------------------------ forms


class DecisionForm:
    """A parsed and validated decision POST."""

    def __init__(self, decision: Decision, approver: str, comment: str | None, csrf: str) -> None:
        self.decision: Decision = decision
        self.approver = approver
        self.comment = comment
        self.csrf = csrf

    def __repr__(self) -> str:
        return f"DecisionForm(decision={self.decision!r}, approver={self.approver!r})"


def _clean(text: str, limit: int, what: str, *, multiline: bool = False) -> str:
    allowed = {"\n", "\t"} if multiline else set()
    text = text.replace("\r\n", "\n").strip()
    if any(not ch.isprintable() and ch not in allowed for ch in text):
        raise InvalidRequest(f"{what} contains control characters")
    if len(text) > limit:
        raise InvalidRequest(f"{what} is longer than {limit} characters")
    return text


def parse_decision_form(body: str | Mapping[str, str | list[str]]) -> DecisionForm:
    """Parse an urlencoded form body (or already-parsed fields) into a DecisionForm."""
    raw: Mapping[str, Any] = (
        parse_qs(body, keep_blank_values=True) if isinstance(body, str) else body
    )

    def field(name: str) -> str:
        value = raw.get(name, "")
        if isinstance(value, list):
            if len(value) > 1:
                raise InvalidRequest(f"field {name!r} given more than once")
            value = value[0] if value else ""
        return str(value)

    decision = field(FIELD_DECISION).strip().upper()
    if decision == "APPROVE":
        decision = "APPROVED"
    elif decision == "REJECT":
        decision = "REJECTED"
    if decision not in ("APPROVED", "REJECTED"):
        raise InvalidRequest("decision must be Approve or Reject")
    approver = _clean(field(FIELD_APPROVER), MAX_APPROVER, "name or e-mail")
    if not approver:
        raise InvalidRequest("please give your name or e-mail")
    comment = _clean(field(FIELD_COMMENT), MAX_COMMENT, "comment", multiline=True) or None
    csrf = field(FIELD_CSRF).strip()
    if not csrf:
        raise InvalidRequest("the form is missing its security token; reload the page")
    return DecisionForm(
        "APPROVED" if decision == "APPROVED" else "REJECTED", approver, comment, csrf
    )


# -------------------------------------------------------------------- notifier


class NotifierUnavailable(Exception):
    """The workflow engine could not be reached (throttled, down): nothing was
    delivered; the same decision can be tried again."""


class TaskNotifier(Protocol):
    """Ends a waiting task; raises TaskTokenInvalid when the task no longer waits and
    NotifierUnavailable when the engine cannot be reached."""

    def send_success(self, token: str, output: dict[str, Any]) -> None: ...
    def send_failure(self, token: str, error: str, cause: str) -> None: ...


# ---------------------------------------------------------------------- decide


class ApprovalLedger(Protocol):
    """The part of ``image_cicd.ledger.store.Ledger`` that ``decide`` uses."""

    def get_approval(self, approval_id: str) -> ApprovalRequest: ...

    def decide(
        self,
        approval_id: str,
        decision: Decision,
        approver: str,
        comment: str | None,
        source_ip: str | None,
        user_agent: str | None,
        now: datetime,
    ) -> ApprovalRequest: ...

    def mark_expired(
        self, approval_id: str, *, expected: ApprovalStatus = "PENDING"
    ) -> ApprovalRequest: ...

    def reopen(
        self, approval_id: str, *, expected: Decision | Literal["SUPERSEDED"]
    ) -> ApprovalRequest: ...

    def update_promotion(
        self, execution: str, *, approval: ApprovalRecord | None = None
    ) -> Promotion: ...


def rejection_cause(approval: ApprovalRequest) -> str:
    cause = f"{approval.stage} rejected by {approval.decided_by}"
    return f"{cause}: {approval.comment}" if approval.comment else cause


def decide(
    ledger: ApprovalLedger,
    notifier: TaskNotifier,
    approval_id: str,
    decision: Decision,
    approver: str,
    comment: str | None,
    *,
    csrf: str,
    source_ip: str | None,
    user_agent: str | None,
    now: datetime,
) -> ApprovalRequest:
    """Decide an approval and resume (or fail) the waiting workflow task.

    Raises ApprovalNotFound, InvalidRequest (bad CSRF token), AlreadyDecided,
    ApprovalExpired (also when Step Functions no longer accepts the task token,
    after recording EXPIRED). If the notification fails otherwise, the decision is
    undone (back to PENDING) and the error propagates: the approver can retry.
    """
    approval = ledger.get_approval(approval_id)
    if not check_csrf(approval, csrf):
        raise InvalidRequest("the form's security token does not match this approval")
    try:
        decided = ledger.decide(
            approval_id, decision, approver, comment, source_ip, user_agent, now
        )
    except ApprovalExpired as error:
        if error.approval.status == "PENDING":
            _audit(ledger, ledger.mark_expired(approval_id))
        raise
    token = decided.task_token.get_secret_value()
    try:
        if decided.status == "APPROVED":
            notifier.send_success(
                token,
                {
                    "approval_id": decided.approval_id,
                    "stage": decided.stage,
                    "decision": decided.status,
                    "approver": decided.decided_by,
                    "comment": decided.comment,
                    "decided_at": iso(decided.decided_at or now),
                },
            )
        else:
            notifier.send_failure(token, ApprovalRejected.__name__, rejection_cause(decided))
    except TaskTokenInvalid:
        expired = ledger.mark_expired(approval_id, expected=decision)
        _audit(ledger, expired)
        raise ApprovalExpired(expired) from None
    except Exception:
        ledger.reopen(approval_id, expected=decision)
        raise
    _audit(ledger, decided)
    return decided


def _audit(ledger: ApprovalLedger, approval: ApprovalRequest) -> None:
    """Append the decision to the promotion's record (if the promotion is recorded)."""
    record = ApprovalRecord(
        approval_id=approval.approval_id,
        stage=approval.stage,
        decision=approval.status,
        approver=approval.decided_by,
        comment=approval.comment,
        decided_at=approval.decided_at,
    )
    with contextlib.suppress(PromotionNotFound):
        ledger.update_promotion(approval.execution, approval=record)
