"""Notify and Execution ended: a promotion's or rollback's outcome recorded and told."""

from __future__ import annotations

from typing import Any, Literal

from image_cicd.approvals.decisions import ascii_line
from image_cicd.ledger.records import Outcome, Promotion
from image_cicd.ledger.store import PromotionFinished, PromotionNotFound
from image_cicd.promotion.errors import cause_text
from image_cicd.promotion.steps.services import Services, utc_now


def finish(
    services: Services,
    workflow: Literal["PROMOTION", "ROLLBACK"],
    execution: str,
    outcome: Outcome,
    details: dict[str, Any],
    failure: dict[str, Any] | None = None,
    *,
    if_running: bool = False,
) -> dict[str, Any]:
    """Record the outcome of a promotion and send the notification with the reason.

    Returns the message sent and, for a recorded promotion, how long it took. With
    `if_running`, PromotionFinished (nothing sent) when another writer recorded an
    outcome first.
    """
    subject, message = outcome_message(workflow, execution, outcome, details, failure)
    sent: dict[str, Any] = {"subject": subject, "message": message}
    if workflow == "PROMOTION" and "plan" in details:
        reason = (
            None
            if failure is None
            else f"{failure.get('error')}: {cause_text(failure.get('cause'))}"
        )
        done = services.ledger.finish_promotion(
            execution, outcome, reason, now=utc_now(), if_running=if_running
        )
        if outcome != "SUCCEEDED":  # an approval it still waited for will never count
            for approval in services.ledger.list_approvals("PENDING"):
                if approval.execution == execution:
                    services.ledger.mark_expired(approval.approval_id)
        if done.finished_at is not None:
            sent["duration_seconds"] = (done.finished_at - done.started_at).total_seconds()
    services.publish(services.settings.notifications_topic_arn, subject, message)
    return sent


def execution_ended(
    services: Services,
    execution: str,
    status: Literal["ABORTED", "TIMED_OUT", "FAILED"],
    error: str | None,
    cause: str | None,
) -> dict[str, Any] | None:
    """A promotion execution ended without its Notify step: record it and tell.

    Step Functions runs no Catch when an execution is stopped or times out (and a
    failure of the notify step itself ends it too), so its ledger record would stay
    RUNNING and its approval pending. Only a record still RUNNING is finished here;
    one the workflow finished itself is left as it is. An execution stopped before it
    was recorded (nothing to finish) is still notified unless it merely failed (the
    workflow's failure path told already). Returns the message sent, or None.
    """
    try:
        promotion: Promotion | None = services.ledger.get_promotion(execution)
    except PromotionNotFound:
        promotion = None
    if promotion is None and status == "FAILED":
        return None
    if promotion is not None and promotion.outcome != "RUNNING":
        return None
    # A failure whose path ran but whose Notify failed (the machine alerted directly)
    # says by its error what it was.
    outcome: Outcome = _FAILED_AS.get(error or "", "FAILED") if status == "FAILED" else status
    failure = {"error": error or f"Execution{status.title().replace('_', '')}", "cause": cause}
    details: dict[str, Any] = {}
    if promotion is not None:
        details["plan"] = {
            "name": promotion.repository,
            "source": services.settings.stage_repository(promotion.repository, "DEV"),
            "digest": promotion.digest,
        }
    try:  # a Notify still running when the execution was stopped may record first
        return finish(services, "PROMOTION", execution, outcome, details, failure, if_running=True)
    except PromotionFinished:
        return None


_FAILED_AS: dict[str, Outcome] = {
    "ApprovalRejected": "REJECTED",
    "ApprovalExpired": "EXPIRED",
    "PromotionSuperseded": "SUPERSEDED",
}


def outcome_message(
    workflow: str,
    execution: str,
    outcome: str,
    details: dict[str, Any],
    failure: dict[str, Any] | None,
) -> tuple[str, str]:
    plan = details.get("plan") or {}
    lines = [f"{workflow.title()} {execution}: {outcome}"]
    if plan:
        lines.append(f"Image: {plan.get('source')}@{plan.get('digest')}")
    test = (details.get("test") or {}).get("copy") or {}
    prod = (details.get("prod") or {}).get("promotion") or {}
    if test:
        lines.append(f"TEST: {test.get('repository')}:{test.get('version')}")
    if prod:
        lines.append(f"PROD: {prod.get('repository')}:{prod.get('version')}")
    back = details.get("rollback") or {}
    if back:
        lines.append(str(back.get("message", "")))
    if failure:
        cause = cause_text(failure.get("cause")) or "no detail"
        lines.append(f"Reason: {failure.get('error')}: {cause}")
    subject = f"image-cicd: {workflow.lower()} {outcome.lower()}"
    given = details.get("input")  # the machine's input, any JSON ("Receive input")
    given = given if isinstance(given, dict) else {}
    asked = given.get("repository") or given.get("RepositoryName")
    name = plan.get("name") or (back.get("repository") if back else None) or asked
    if name:
        subject += f" ({name})"
    return ascii_line(subject)[:100], "\n".join(lines)
