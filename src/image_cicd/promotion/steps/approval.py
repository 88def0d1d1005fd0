"""Wait for approval: the approval request, and the superseding of older promotions'
requests still waiting at the same stage."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from image_cicd.approvals.decisions import (
    TaskNotifier,
    TaskTokenInvalid,
    approval_link,
    format_message,
    new_approval_request,
)
from image_cicd.ledger.records import ApprovalRequest, ImageRef, TestResults
from image_cicd.ledger.store import ApprovalNotFound, Ledger, PromotionNotFound, Waiter
from image_cicd.promotion.errors import PromotionSuperseded
from image_cicd.promotion.payloads import Plan
from image_cicd.promotion.steps.services import Services, utc_now
from image_cicd.promotion.versions import read_stage
from image_cicd.stages import Destination


def request_approval(
    services: Services,
    plan: Plan,
    stage: Destination,
    task_token: str,
    *,
    notifier: TaskNotifier,
    tests: TestResults | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Record an approval request (with the task token) and publish its link.

    Unless the settings keep every promotion, the request supersedes the requests
    of older promotions of the same repository still waiting at this stage (their
    tasks fail with PromotionSuperseded); if a newer promotion already waits here,
    this one is the older and raises PromotionSuperseded without asking anyone.

    Older and newer by when the promotions started (the push order). Near-
    simultaneous requests are settled the same way by both: each stores its request,
    then enters it in the stage's waiting list and reads the list in one consistent
    write (`Ledger.add_waiter`), so whichever enters second sees the first and applies
    the rule; exactly one of them goes on waiting.
    """
    now = now or utc_now()
    ledger = services.ledger
    source, target = (plan.source, plan.test) if stage == "TEST" else (plan.test, plan.prod)
    # When this promotion started; None: superseding is off, or the ledger does not date it
    mine = (
        _started_at(ledger, plan.execution)
        if services.settings.supersede_waiting_promotions
        else None
    )
    if mine is not None:  # a newer one waiting already: store nothing, ask no one
        _older_waiting(services, plan, stage, ledger.waiters(source, stage), mine, now)
    state = read_stage(services.registry, target, services.scheme)
    # The digest's version there is certain; else the next one is only an estimate:
    # versions are assigned at the copy, under the lock (versions.promote).
    assigned = state.version_of(plan.digest)
    version = assigned or services.scheme.next_after(list(state.versions))
    approval = new_approval_request(
        execution=plan.execution,
        stage=stage,
        repository=source,
        target_repository=target,
        digest=plan.digest,
        task_token=task_token,
        timeout=timedelta(seconds=plan.approval_timeout_seconds),
        now=now,
        version=version,
        version_assigned=assigned is not None,
        current=ImageRef(digest=state.latest, version=state.current) if state.latest else None,
        tests=tests,
    )
    ledger.put_approval_request(approval)
    older: list[ApprovalRequest] = []
    if mine is not None:
        entered = ledger.add_waiter(approval)
        try:
            older = _older_waiting(services, plan, stage, entered, mine, now)
        except _NewerWaiting as newer:
            ledger.supersede(
                approval.approval_id,
                by_execution=newer.approval.execution,
                by_digest=newer.approval.digest,
                now=now,
            )
            raise
    link = approval_link(services.settings.approval_base_url, approval.approval_id)
    subject, body = format_message(approval, link)
    services.publish(services.settings.approvals_topic_arn, subject, body)
    ended = {w.execution: _supersede(services, notifier, w, approval, now) for w in older}
    return {
        "approval_id": approval.approval_id,
        "link": link,
        "expires_at": approval.expires_at.isoformat(),
        "superseded": [execution for execution, done in ended.items() if done],
        "not_superseded": [execution for execution, done in ended.items() if not done],
    }


def _started_at(ledger: Ledger, execution: str) -> datetime | None:
    try:
        return ledger.get_promotion(execution).started_at
    except PromotionNotFound:
        return None


class _NewerWaiting(PromotionSuperseded):
    """A newer promotion of the repository waits for this approval already."""

    def __init__(self, stage: Destination, source: str, approval: ApprovalRequest) -> None:
        self.approval = approval
        super().__init__(
            f"{stage} approval superseded by {approval.execution} ({approval.digest}), a newer "
            f"image of {source} already waiting for it"
        )


def _older_waiting(
    services: Services,
    plan: Plan,
    stage: Destination,
    waiters: list[Waiter],
    mine: datetime,
    now: datetime,
) -> list[ApprovalRequest]:
    """The PENDING, unexpired requests of older promotions among `waiters`.

    Raises _NewerWaiting (a PromotionSuperseded) if a newer promotion's request is
    still alive: PENDING and unexpired (read consistently, not from the index), its
    promotion RUNNING. A request that expired, or was decided or superseded and
    whose promotion ended, leaves the list for good.
    """
    ledger = services.ledger
    source = plan.source if stage == "TEST" else plan.test
    older = []
    for waiter in waiters:
        if waiter.execution == plan.execution:
            continue
        try:
            other = ledger.get_approval(waiter.approval_id)
            promotion = ledger.get_promotion(waiter.execution)
        except (ApprovalNotFound, PromotionNotFound):
            continue  # not a request or a promotion this ledger dates: leave it alone
        ended, expired = promotion.outcome != "RUNNING", other.is_expired(now)
        if expired or (ended and other.status != "PENDING"):  # it can never wait again
            ledger.remove_waiter(source, stage, waiter.approval_id)
        if other.status != "PENDING" or expired:
            continue  # decided or superseded (a lost reply may reopen it), or timed out
        if (promotion.started_at, other.execution) < (mine, plan.execution):
            older.append(other)  # even if it ended: its request must not stay PENDING
        elif not ended:
            raise _NewerWaiting(stage, plan.source, other)
    return older


def _supersede(
    services: Services,
    notifier: TaskNotifier,
    waiting: ApprovalRequest,
    newer: ApprovalRequest,
    now: datetime,
) -> bool:
    """Mark `waiting` SUPERSEDED (unless a decision came first) and end its task.

    If Step Functions cannot be told, the request goes back to PENDING: it keeps
    waiting, as with superseding off. If the task token is gone already, the task
    ended: the request stays SUPERSEDED only if it ended without a decision (see
    `_ended_undecided`); otherwise it goes back to what it was, as `finish` leaves
    it. True if `waiting` ends superseded.
    """
    ledger = services.ledger
    superseded = ledger.supersede(
        waiting.approval_id, by_execution=newer.execution, by_digest=newer.digest, now=now
    )
    if superseded is None:
        return False
    cause = (
        f"{waiting.stage} approval superseded by {newer.execution} ({newer.digest}), a newer "
        f"image of {waiting.repository}"
    )
    try:
        notifier.send_failure(
            superseded.task_token.get_secret_value(), PromotionSuperseded.__name__, cause
        )
    except TaskTokenInvalid:
        if _ended_undecided(ledger, waiting):
            return True
        ledger.reopen(waiting.approval_id, expected="SUPERSEDED")
        if ledger.get_promotion(waiting.execution).outcome not in ("RUNNING", "SUCCEEDED"):
            ledger.mark_expired(waiting.approval_id)  # as `finish` does, if it ran meanwhile
        return False
    except Exception:
        ledger.reopen(waiting.approval_id, expected="SUPERSEDED")
        return False
    return True


_UNDECIDED_ENDINGS = frozenset({"EXPIRED", "ABORTED", "TIMED_OUT", "SUPERSEDED"})


def _ended_undecided(ledger: Ledger, waiting: ApprovalRequest) -> bool:
    """Whether a promotion whose approval task token is gone ended without a decision.

    Step Functions answers TaskTimedOut also for a token already used: a decision
    that arrived although its reply was lost (`decide` then reopens the request).
    Only the promotion's record (read consistently) tells: it ended while waiting
    (approval timed out, execution stopped or timed out, superseded) and never got
    past this approval (no copy to TEST after a TEST approval). A promotion still
    RUNNING goes on, or is about to record its ending, which then expires the
    reopened request.
    """
    promotion = ledger.get_promotion(waiting.execution)
    passed = waiting.stage == "TEST" and promotion.test_version is not None
    return promotion.outcome in _UNDECIDED_ENDINGS and not passed
