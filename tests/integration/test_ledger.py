"""The ledger on moto's DynamoDB, and deciding approvals through it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from support.aws import REGION, moto_aws
from support.ledger_table import create_ledger_table

from image_cicd.approvals.decisions import (
    InvalidRequest,
    TaskTokenInvalid,
    csrf_token,
    decide,
    new_approval_request,
)
from image_cicd.aws.stepfunctions import StepFunctionsNotifier
from image_cicd.ledger.records import (
    ApprovalRecord,
    ApprovalRequest,
    CheckResult,
    ImageRef,
    Release,
    TestResults,
)
from image_cicd.ledger.store import (
    AlreadyDecided,
    ApprovalExpired,
    ApprovalNotFound,
    Ledger,
    PromotionNotFound,
)
from image_cicd.stages import Destination

TABLE = "ledger"
T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
DIGEST = "sha256:" + "ab" * 32
TOKEN = "AQCEAAAAKgAAAAMAAAAAAAAAAf-secret-task-token"


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    with moto_aws(monkeypatch, config={"stepfunctions": {"execute_state_machine": True}}):
        yield


@pytest.fixture
def dynamodb(aws: None) -> Any:
    client = boto3.client("dynamodb", region_name=REGION)
    create_ledger_table(client, TABLE)
    return client


@pytest.fixture
def ledger(dynamodb: Any) -> Ledger:
    return Ledger(TABLE, dynamodb)


def make_approval(
    stage: Destination = "PROD",
    *,
    execution: str = "exec-1",
    created: datetime = T0,
    timeout: timedelta = timedelta(hours=24),
) -> ApprovalRequest:
    return new_approval_request(
        execution=execution,
        stage=stage,
        repository="ecr-test/repo-1" if stage == "PROD" else "ecr-dev/repo-1",
        target_repository=f"ecr-{stage.lower()}/repo-1",
        digest=DIGEST,
        task_token=TOKEN,
        timeout=timeout,
        now=created,
        version="v0.4",
        current=ImageRef(version="v0.3", digest="sha256:" + "cd" * 32),
        tests=TestResults(
            passed=True,
            summary="all checks passed",
            checks=[CheckResult(name="manifest", passed=True, detail="2 platforms")],
            duration_seconds=12.25,
        ),
    )


# ---------------------------------------------------------------- approvals


def test_approval_round_trip_keeps_token_out_of_repr(dynamodb: Any, ledger: Ledger) -> None:
    approval = make_approval()
    ledger.put_approval_request(approval)

    stored = ledger.get_approval(approval.approval_id)

    assert stored == approval
    assert stored.task_token.get_secret_value() == TOKEN
    assert stored.tests is not None
    assert stored.tests.duration_seconds == 12.25
    assert TOKEN not in repr(stored)
    assert TOKEN not in str(stored)
    assert TOKEN not in json.dumps(stored.model_dump(mode="json"))
    item = dynamodb.get_item(
        TableName=TABLE,
        Key={"pk": {"S": f"APPROVAL#{approval.approval_id}"}, "sk": {"S": "APPROVAL"}},
    )["Item"]
    assert item["gsi1pk"] == {"S": "APPROVALS"}
    assert item["gsi1sk"]["S"].startswith("PENDING#2026-03-01T09:00:00")
    assert int(item["expires_at"]["N"]) > (T0 + timedelta(hours=24)).timestamp()


def test_unknown_or_malformed_approval_is_not_found(ledger: Ledger) -> None:
    with pytest.raises(ApprovalNotFound):
        ledger.get_approval("A" * 43)
    with pytest.raises(ApprovalNotFound):
        ledger.get_approval("../../etc/passwd")
    with pytest.raises(ApprovalNotFound):
        ledger.decide("B" * 43, "APPROVED", "ann", None, None, None, T0)


def test_approval_is_decided_once(ledger: Ledger) -> None:
    approval = make_approval()
    ledger.put_approval_request(approval)
    at = T0 + timedelta(hours=1)

    decided = ledger.decide(
        approval.approval_id, "APPROVED", "ann@example.com", "ship it", "10.0.0.1", "curl", at
    )

    assert decided.status == "APPROVED"
    assert (decided.decided_by, decided.decided_at, decided.comment) == (
        "ann@example.com",
        at,
        "ship it",
    )
    assert (decided.source_ip, decided.user_agent) == ("10.0.0.1", "curl")
    with pytest.raises(AlreadyDecided) as again:
        ledger.decide(approval.approval_id, "REJECTED", "bob", None, None, None, at)
    assert again.value.decided_by == "ann@example.com"
    assert again.value.decided_at == at
    assert again.value.status == "APPROVED"
    assert "ann@example.com" in str(again.value)
    assert ledger.get_approval(approval.approval_id).status == "APPROVED"


def test_expired_approval_cannot_be_decided(ledger: Ledger) -> None:
    approval = make_approval(timeout=timedelta(minutes=30))
    ledger.put_approval_request(approval)

    with pytest.raises(ApprovalExpired):
        ledger.decide(
            approval.approval_id, "APPROVED", "ann", None, None, None, T0 + timedelta(minutes=30)
        )
    assert ledger.get_approval(approval.approval_id).status == "PENDING"

    expired = ledger.mark_expired(approval.approval_id)
    assert expired.status == "EXPIRED"
    with pytest.raises(ApprovalExpired):
        ledger.decide(approval.approval_id, "APPROVED", "ann", None, None, None, T0)


def test_list_approvals_by_status_newest_first(ledger: Ledger) -> None:
    older = make_approval("TEST", created=T0)
    newer = make_approval("PROD", created=T0 + timedelta(minutes=5))
    decided = make_approval("TEST", execution="exec-2", created=T0 + timedelta(minutes=1))
    for approval in (older, newer, decided):
        ledger.put_approval_request(approval)
    ledger.decide(decided.approval_id, "REJECTED", "bob", "no", None, None, T0)

    pending = ledger.list_approvals("PENDING")
    everything = ledger.list_approvals()

    assert [a.approval_id for a in pending] == [newer.approval_id, older.approval_id]
    assert [a.approval_id for a in ledger.list_approvals("REJECTED")] == [decided.approval_id]
    assert [a.approval_id for a in everything] == [
        newer.approval_id,
        decided.approval_id,
        older.approval_id,
    ]


# --------------------------------------------------------------- promotions


def test_promotion_lifecycle(ledger: Ledger) -> None:
    started = ledger.start_promotion("exec-1", "repo-1", DIGEST, T0)
    again = ledger.start_promotion("exec-1", "repo-1", DIGEST, T0 + timedelta(seconds=3))
    assert again == started  # a retried start changes nothing

    ledger.update_promotion("exec-1", test_version="v0.4")
    record = ApprovalRecord(
        approval_id="x" * 43,
        stage="TEST",
        decision="APPROVED",
        approver="ann",
        comment=None,
        decided_at=T0 + timedelta(minutes=2),
    )
    ledger.update_promotion("exec-1", approval=record)
    tests = TestResults(passed=True, summary="ok", duration_seconds=0.1)
    ledger.update_promotion("exec-1", tests=tests, prod_version="v0.2")
    finished = ledger.finish_promotion(
        "exec-1", "SUCCEEDED", "promoted", now=T0 + timedelta(hours=1)
    )

    assert finished == ledger.get_promotion("exec-1")
    assert finished.outcome == "SUCCEEDED"
    assert finished.reason == "promoted"
    assert (finished.test_version, finished.prod_version) == ("v0.4", "v0.2")
    assert finished.approvals == [record]
    assert finished.tests == tests
    assert finished.finished_at == T0 + timedelta(hours=1)


def test_updating_unknown_promotion_fails(ledger: Ledger) -> None:
    with pytest.raises(PromotionNotFound):
        ledger.update_promotion("nope", test_version="v0.1")
    with pytest.raises(PromotionNotFound):
        ledger.finish_promotion("nope", "FAILED", "boom", now=T0)
    with pytest.raises(PromotionNotFound):
        ledger.get_promotion("nope")


def test_promotions_for_repository_newest_first(ledger: Ledger) -> None:
    ledger.start_promotion("exec-a", "repo-1", DIGEST, T0)
    ledger.start_promotion("exec-b", "repo-2", DIGEST, T0 + timedelta(minutes=1))
    ledger.start_promotion("exec-c", "repo-1", DIGEST, T0 + timedelta(minutes=2))

    assert [p.execution for p in ledger.promotions_for("repo-1")] == ["exec-c", "exec-a"]
    assert [p.execution for p in ledger.promotions_for("repo-1", limit=1)] == ["exec-c"]
    assert [p.execution for p in ledger.promotions_for("repo-2")] == ["exec-b"]
    assert ledger.promotions_for("repo-3") == []


# ----------------------------------------------------------------- releases


def test_releases_per_prod_repository_newest_first(ledger: Ledger) -> None:
    first = Release(
        repository="ecr-prod/repo-1", version="v0.1", digest=DIGEST, at=T0, execution="exec-a"
    )
    second = Release(
        repository="ecr-prod/repo-1",
        version="v0.2",
        digest="sha256:" + "ef" * 32,
        at=T0 + timedelta(days=1),
        execution="exec-b",
    )
    rollback = Release(
        repository="ecr-prod/repo-1",
        version="v0.1",
        digest=DIGEST,
        at=T0 + timedelta(days=2),
        execution="rollback-1",
        kind="ROLLBACK",
    )
    other = Release(repository="ecr-prod/repo-2", version="v0.1", digest=DIGEST, at=T0)
    for release in (first, second, rollback, other):
        ledger.record_release(release)

    assert ledger.releases("ecr-prod/repo-1") == [rollback, second, first]
    assert ledger.releases("ecr-prod/repo-1", limit=1) == [rollback]
    assert ledger.releases("ecr-prod/repo-2") == [other]


# ------------------------------------------------------------------- decide


class RecordingNotifier:
    """Records the calls ``decide`` makes; optionally fails them."""

    def __init__(self, fail_with: Exception | None = None) -> None:
        self.calls: list[tuple[str, ...] | tuple[str, str, dict[str, Any]]] = []
        self.fail_with = fail_with

    def send_success(self, token: str, output: dict[str, Any]) -> None:
        self.calls.append(("success", token, output))
        if self.fail_with:
            raise self.fail_with

    def send_failure(self, token: str, error: str, cause: str) -> None:
        self.calls.append(("failure", token, error, cause))
        if self.fail_with:
            raise self.fail_with


def pending(ledger: Ledger, stage: Destination = "PROD", **options: Any) -> ApprovalRequest:
    ledger.start_promotion("exec-1", "repo-1", DIGEST, T0)
    approval = make_approval(stage, **options)
    ledger.put_approval_request(approval)
    return approval


def run_decide(
    ledger: Ledger,
    notifier: Any,
    approval: ApprovalRequest,
    decision: Any = "APPROVED",
    *,
    approver: str = "ann@example.com",
    comment: str | None = "looks good",
    csrf: str | None = None,
    now: datetime = T0 + timedelta(hours=1),
) -> ApprovalRequest:
    return decide(
        ledger,
        notifier,
        approval.approval_id,
        decision,
        approver,
        comment,
        csrf=csrf if csrf is not None else csrf_token(approval),
        source_ip="192.0.2.7",
        user_agent="Mozilla/5.0",
        now=now,
    )


def test_approve_resumes_the_workflow_and_is_audited(ledger: Ledger) -> None:
    approval = pending(ledger)
    notifier = RecordingNotifier()

    decided = run_decide(ledger, notifier, approval)

    assert decided.status == "APPROVED"
    assert notifier.calls == [
        (
            "success",
            TOKEN,
            {
                "approval_id": approval.approval_id,
                "stage": "PROD",
                "decision": "APPROVED",
                "approver": "ann@example.com",
                "comment": "looks good",
                "decided_at": "2026-03-01T10:00:00.000000Z",
            },
        )
    ]
    [record] = ledger.get_promotion("exec-1").approvals
    assert (record.decision, record.approver, record.stage) == (
        "APPROVED",
        "ann@example.com",
        "PROD",
    )


def test_reject_fails_the_task_with_reason(ledger: Ledger) -> None:
    approval = pending(ledger)
    notifier = RecordingNotifier()

    run_decide(ledger, notifier, approval, "REJECTED", approver="bob", comment="CVE in base")

    assert notifier.calls == [
        ("failure", TOKEN, "ApprovalRejected", "PROD rejected by bob: CVE in base")
    ]
    assert ledger.get_approval(approval.approval_id).status == "REJECTED"


def test_second_decision_changes_nothing(ledger: Ledger) -> None:
    approval = pending(ledger)
    notifier = RecordingNotifier()
    run_decide(ledger, notifier, approval)

    with pytest.raises(AlreadyDecided) as again:
        run_decide(ledger, notifier, approval, "REJECTED", approver="mallory")

    assert again.value.decided_by == "ann@example.com"
    assert len(notifier.calls) == 1
    assert len(ledger.get_promotion("exec-1").approvals) == 1


def test_wrong_csrf_token_decides_nothing(ledger: Ledger) -> None:
    approval = pending(ledger)
    other = make_approval(execution="exec-2")
    notifier = RecordingNotifier()

    with pytest.raises(InvalidRequest):
        run_decide(ledger, notifier, approval, csrf=csrf_token(other))

    assert notifier.calls == []
    assert ledger.get_approval(approval.approval_id).status == "PENDING"


def test_decision_after_expiry_records_expired(ledger: Ledger) -> None:
    approval = pending(ledger, timeout=timedelta(minutes=10))
    notifier = RecordingNotifier()

    with pytest.raises(ApprovalExpired):
        run_decide(ledger, notifier, approval, now=T0 + timedelta(minutes=11))

    assert notifier.calls == []
    assert ledger.get_approval(approval.approval_id).status == "EXPIRED"


def test_token_no_longer_valid_records_expired(ledger: Ledger) -> None:
    approval = pending(ledger)
    notifier = RecordingNotifier(fail_with=TaskTokenInvalid("TaskTimedOut"))

    with pytest.raises(ApprovalExpired):
        run_decide(ledger, notifier, approval)

    stored = ledger.get_approval(approval.approval_id)
    assert stored.status == "EXPIRED"
    assert stored.decided_by == "ann@example.com"  # who tried, kept for the audit
    assert [r.decision for r in ledger.get_promotion("exec-1").approvals] == ["EXPIRED"]


def test_undeliverable_decision_is_undone(ledger: Ledger) -> None:
    approval = pending(ledger)
    notifier = RecordingNotifier(fail_with=RuntimeError("Step Functions unreachable"))

    with pytest.raises(RuntimeError):
        run_decide(ledger, notifier, approval)

    stored = ledger.get_approval(approval.approval_id)
    assert (stored.status, stored.decided_by, stored.comment) == ("PENDING", None, None)
    # The approver can try again.
    assert run_decide(ledger, RecordingNotifier(), approval).status == "APPROVED"


def test_step_functions_rejecting_the_token_records_expired(ledger: Ledger) -> None:
    approval = pending(ledger)
    notifier = StepFunctionsNotifier(boto3.client("stepfunctions", region_name=REGION))

    with pytest.raises(ApprovalExpired):
        run_decide(ledger, notifier, approval)

    assert ledger.get_approval(approval.approval_id).status == "EXPIRED"
