"""The promotion and rollback steps, one function per state machine task.

Each takes typed inputs and the services it needs (registry, ledger, locker, ...)
and returns a typed result. Nothing here knows about Lambda events or reads the
environment: the handlers in `functions/` do that and call in here.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from image_cicd.approvals.decisions import (
    TaskNotifier,
    TaskTokenInvalid,
    approval_link,
    ascii_line,
    format_message,
    new_approval_request,
)
from image_cicd.ledger.records import (
    ApprovalRequest,
    ImageRef,
    Outcome,
    Promotion,
    Release,
    ReleaseKind,
    TestResults,
)
from image_cicd.ledger.store import (
    ApprovalNotFound,
    Ledger,
    PromotionFinished,
    PromotionNotFound,
    Waiter,
)
from image_cicd.promotion.errors import BadInput, ImageNotFound, PromotionSuperseded, cause_text
from image_cicd.promotion.locks import Locker
from image_cicd.promotion.payloads import (
    ImageFacts,
    Plan,
    PromotionRequest,
    StageCopy,
    already_promoted,
)
from image_cicd.promotion.settings import Settings
from image_cicd.promotion.versions import (
    LatestMoved,
    Rollback,
    VersionScheme,
    apply_rollback,
    plan_rollback,
    promote,
    read_stage,
)
from image_cicd.registry.client import RegistryClient
from image_cicd.registry.copy import Image, read_image
from image_cicd.registry.errors import ManifestUnknown, NameUnknown
from image_cicd.stages import Destination

Publish = Callable[[str, str, str], None]
"""publish(topic_arn, subject, message)."""


@dataclass(frozen=True)
class Services:
    """What the steps work with; built once per process by `image_cicd.aws.wiring`.

    The registry client is made on first use (`connect`): on ECR that asks for an
    authorization token, which the functions that never touch images (approval-api,
    notify) neither need nor are allowed to.
    """

    settings: Settings
    connect: Callable[[], RegistryClient]
    ledger: Ledger
    locker: Locker
    publish: Publish

    @functools.cached_property
    def registry(self) -> RegistryClient:
        return self.connect()

    @property
    def scheme(self) -> VersionScheme:
        return VersionScheme(self.settings.version_format)


def _now() -> datetime:
    return datetime.now(UTC)


def _read(registry: RegistryClient, repository: str, digest: str, when: str) -> Image:
    try:
        return read_image(registry, repository, digest)
    except (ManifestUnknown, NameUnknown) as exc:
        raise ImageNotFound(f"{repository}@{digest} does not exist ({when})") from exc


def _current(services: Services, repository: str) -> ImageRef | None:
    state = read_stage(services.registry, repository, services.scheme)
    return ImageRef(digest=state.latest, version=state.current) if state.latest else None


def resolve(
    services: Services, raw_input: Any, execution: str, started_at: datetime | None = None
) -> Plan:
    """Input -> plan; the digest is pinned here and is the only thing ever copied."""
    request = PromotionRequest.parse(raw_input)
    settings = services.settings
    stage, name = settings.split(request.repository)
    if stage != "DEV":
        raise BadInput(
            f"{request.repository} is a {stage} repository: promotions start from "
            f"{settings.stage_repository(name, 'DEV')}"
        )
    image = _read(services.registry, request.repository, request.digest, "when resolving")
    test, prod = settings.stage_repository(name, "TEST"), settings.stage_repository(name, "PROD")
    test_now, prod_now = _current(services, test), _current(services, prod)
    in_flight = (
        test_now is not None
        and test_now.digest == request.digest
        and any(
            p.digest == request.digest and p.outcome == "RUNNING" and p.execution != execution
            for p in services.ledger.promotions_for(name)
        )
    )
    held = already_promoted(request.digest, test_now, prod_now, in_flight=in_flight)
    plan = Plan(
        execution=execution,
        name=name,
        digest=request.digest,
        source=request.repository,
        test=test,
        prod=prod,
        image=ImageFacts(
            media_type=image.root.media_type, platforms=image.root.platforms, size=image.size
        ),
        test_now=test_now,
        prod_now=prod_now,
        approval_timeout_seconds=settings.approval_timeout_seconds,
        already_promoted=held,
    )
    services.ledger.start_promotion(execution, name, request.digest, started_at or _now())
    if held is not None:  # ends quietly: no approval request, no notification
        runs = prod_now if held == "PROD" else test_now
        version = runs.version if runs is not None and runs.version else "untagged"
        services.ledger.finish_promotion(
            execution,
            "ALREADY_PROMOTED",
            f"{held} already runs {request.digest} as {version}",
            now=_now(),
        )
    return plan


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
    now = now or _now()
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


def _release_history(
    ledger: Ledger, repository: str, execution: str
) -> tuple[Release | None, bool]:
    """A PROD repository's newest release, and whether ``execution`` recorded one of the
    recent ones (a retried step finds its own move recorded and records it only once)."""
    recent = ledger.releases(repository, limit=20)
    newest = recent[0] if recent else None
    return newest, any(r.execution == execution for r in recent)


def _record_release(
    ledger: Ledger, repository: str, version: str, digest: str, execution: str, kind: ReleaseKind
) -> None:
    """Record that ``execution`` moved ``repository``'s `latest` to ``version`` now."""
    ledger.record_release(
        Release(
            repository=repository,
            version=version,
            digest=digest,
            at=_now(),
            execution=execution,
            kind=kind,
        )
    )


def copy_to_stage(
    services: Services, plan: Plan, stage: Destination, *, workers: int = 4
) -> StageCopy:
    """DEV@digest -> TEST, or TEST@digest -> PROD: exact bytes, a version, `latest`."""
    source, target = (plan.source, plan.test) if stage == "TEST" else (plan.test, plan.prod)
    _read(services.registry, source, plan.digest, f"before the copy to {stage}")
    result = promote(
        services.registry,
        source,
        plan.digest,
        services.registry,
        target,
        locker=services.locker,
        scheme=services.scheme,
        workers=workers,
    )
    copied = StageCopy(
        repository=target,
        digest=result.digest,
        version=result.version,
        new_version=result.new_version,
        latest_moved=result.latest_moved,
        previous_version=result.previous_version,
        blobs_present=result.copy.blobs_present,
        blobs_mounted=result.copy.blobs_mounted,
        blobs_copied=result.copy.blobs_copied,
        bytes_moved=result.copy.bytes_moved,
        mounts_refused=result.copy.mounts_refused,
        mount_refused_reason=result.copy.mount_refused_reason,
        seconds=result.copy.seconds,
    )
    if stage == "TEST":
        services.ledger.update_promotion(plan.execution, test_version=result.version)
    else:
        # A retry of this step after an attempt that died once `latest` had moved finds
        # it moved already (latest_moved is False) with no release saying so: the
        # newest release is of another digest. That move was this execution's.
        services.ledger.update_promotion(plan.execution, prod_version=result.version)
        newest, recorded = _release_history(services.ledger, target, plan.execution)
        unrecorded = result.previous_digest == plan.digest and (
            newest is None or newest.digest != plan.digest
        )
        if (result.latest_moved or unrecorded) and not recorded:
            _record_release(
                services.ledger, target, result.version, result.digest, plan.execution, "PROMOTION"
            )
    return copied


def rollback_prod(
    services: Services,
    repository: str,
    to: str | None,
    execution: str,
    *,
    expected: str | None = None,
) -> Rollback:
    """Move PROD's `latest` one version back (or to `to`) and record the release.

    `expected` is where the caller saw `latest` (the input's `from`): if PROD is no
    longer there, LatestMoved and nothing changes. Planning, moving and recording
    happen under the repository's lease, so rollbacks started together go one after
    the other and each release record is one move. The plan (from which version to
    which) is fixed in the ledger on the first attempt, so a retried attempt applies
    the same move instead of going one version further back.
    """
    stage, _name = services.settings.split(repository)
    if stage != "PROD":
        raise BadInput(f"{repository} is a {stage} repository: only PROD is rolled back")
    ledger = services.ledger
    with services.locker.hold(repository) as lease:
        plan = ledger.rollback_plan(execution)
        if plan is None:
            plan = ledger.save_rollback_plan(
                execution,
                plan_rollback(
                    services.registry, repository, to=to, expected=expected, scheme=services.scheme
                ),
            )
        result = apply_rollback(services.registry, plan, lease)
        newest, recorded = _release_history(ledger, repository, execution)
        if recorded:
            return result
        # `latest` was at the target already, and this execution recorded no move: its
        # earlier attempt moved it and died before recording, unless the newest
        # release is that move by another execution (which also planned from there).
        if not result.moved and newest is not None and newest.digest == plan.to_digest:
            raise LatestMoved(
                f"{repository}:latest was moved to {plan.to_version} by {newest.execution}; "
                "nothing was changed"
            )
        lease.check()
        _record_release(ledger, repository, result.to_version, result.digest, execution, "ROLLBACK")
    return result


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
            execution, outcome, reason, now=_now(), if_running=if_running
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
