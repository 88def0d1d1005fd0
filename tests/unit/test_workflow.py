"""Workflow steps: the outcome message, finish, and request_approval (in-process moto)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest
from support.fakes import DIGEST, Outbox, make_plan

from image_cicd.ledger.records import CheckResult, TestResults
from image_cicd.ledger.store import Ledger, PromotionNotFound
from image_cicd.promotion.locks import Locker
from image_cicd.promotion.settings import Settings
from image_cicd.promotion.steps import (
    Services,
    execution_ended,
    finish,
    outcome_message,
    request_approval,
)
from image_cicd.registry.client import RegistryClient
from image_cicd.registry.media import OCI_MANIFEST, Descriptor

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
TOKEN = "AQCEAAAAKgAAAAMAAAAAAAAAAf-secret-task-token-0123456789"
APPROVALS = "arn:aws:sns:us-east-1:123456789012:approvals"
NOTIFICATIONS = "arn:aws:sns:us-east-1:123456789012:notifications"
BASE_URL = "https://abc.execute-api.us-east-1.amazonaws.com/"


def d(n: int) -> str:
    return f"sha256:{n:064x}"


# -------------------------------------------------------------------- fakes


class StageRegistry:
    """What read_stage uses: list_tags and head_manifest, from {repo: {tag: digest}}."""

    def __init__(self, tags: dict[str, dict[str, str]]) -> None:
        self.tags = tags

    def list_tags(self, repository: str) -> list[str]:
        return list(self.tags.get(repository, {}))

    def head_manifest(self, repository: str, reference: str) -> Descriptor | None:
        digest = self.tags.get(repository, {}).get(reference)
        return Descriptor(OCI_MANIFEST, digest, 100) if digest else None


class NoTasks:
    """No other promotion waits in these tests: no task is ever resumed or failed."""

    def send_success(self, token: str, output: dict[str, Any]) -> None:
        raise AssertionError("no task to resume")

    def send_failure(self, token: str, error: str, cause: str) -> None:
        raise AssertionError("no task to fail")


NO_TASKS = NoTasks()


def services(
    ledger: Ledger, outbox: Outbox, tags: dict[str, dict[str, str]] | None = None
) -> Services:
    return Services(
        settings=Settings(
            repositories=("repo-1",),
            approval_base_url=BASE_URL,
            approvals_topic_arn=APPROVALS,
            notifications_topic_arn=NOTIFICATIONS,
        ),
        connect=lambda: cast(RegistryClient, StageRegistry(tags or {})),
        ledger=ledger,
        locker=cast(Locker, None),
        publish=outbox,
    )


PLAN = make_plan().model_dump(mode="json")
TEST_COPY = {"copy": {"repository": "ecr-test/repo-1", "version": "v0.3", "digest": DIGEST}}
PROD_PROMOTION = {"promotion": {"repository": "ecr-prod/repo-1", "version": "v0.15"}}
ROLLBACK = {
    "repository": "ecr-prod/repo-1",
    "from": "v0.15",
    "to": "v0.14",
    "digest": d(14),
    "message": "Rollback from v0.15 to v0.14",
}


# ----------------------------------------------------------- outcome_message


def test_a_promotion_that_succeeded_lists_image_test_and_prod_versions() -> None:
    details = {"plan": PLAN, "test": TEST_COPY, "prod": PROD_PROMOTION}

    subject, message = outcome_message("PROMOTION", "exec-1", "SUCCEEDED", details, None)

    assert subject == "image-cicd: promotion succeeded (repo-1)"
    assert message.splitlines() == [
        "Promotion exec-1: SUCCEEDED",
        f"Image: ecr-dev/repo-1@{DIGEST}",
        "TEST: ecr-test/repo-1:v0.3",
        "PROD: ecr-prod/repo-1:v0.15",
    ]


@pytest.mark.parametrize(
    ("outcome", "error", "cause"),
    [
        ("REJECTED", "ApprovalRejected", "PROD rejected by alice: not on a Friday"),
        ("EXPIRED", "ApprovalExpired", "No TEST approval decision within the approval timeout"),
        ("FAILED", "TestsFailed", "Tests finished with status FAILED"),
        ("FAILED", "TagImmutable", "ecr-prod/repo-1 has IMMUTABLE tags without latest"),
    ],
)
def test_a_promotion_that_did_not_succeed_gives_the_reason(
    outcome: str, error: str, cause: str
) -> None:
    failure = {"error": error, "cause": cause, "outcome": outcome}

    subject, message = outcome_message(
        "PROMOTION", "exec-1", outcome, {"plan": PLAN, "failure": failure}, failure
    )

    assert subject == f"image-cicd: promotion {outcome.lower()} (repo-1)"
    assert message.splitlines()[0] == f"Promotion exec-1: {outcome}"
    assert message.splitlines()[-1] == f"Reason: {error}: {cause}"


def test_a_failure_after_the_copy_to_test_says_what_test_runs() -> None:
    failure = {"error": "TestsFailed", "cause": "x", "outcome": "FAILED"}

    _, message = outcome_message(
        "PROMOTION", "exec-1", "FAILED", {"plan": PLAN, "test": TEST_COPY}, failure
    )

    assert "TEST: ecr-test/repo-1:v0.3" in message
    assert "PROD:" not in message


@pytest.mark.parametrize("cause", [None, ""])
def test_a_failure_without_a_cause_says_no_detail(cause: str | None) -> None:
    failure = {"error": "States.TaskFailed", "cause": cause}

    _, message = outcome_message("PROMOTION", "exec-1", "FAILED", {"plan": PLAN}, failure)

    assert message.splitlines()[-1] == "Reason: States.TaskFailed: no detail"


def test_a_rollback_says_from_and_to_which_version() -> None:
    subject, message = outcome_message(
        "ROLLBACK", "rb-1", "SUCCEEDED", {"rollback": ROLLBACK}, None
    )

    assert subject == "image-cicd: rollback succeeded (ecr-prod/repo-1)"
    assert message.splitlines() == ["Rollback rb-1: SUCCEEDED", "Rollback from v0.15 to v0.14"]


def test_a_failed_rollback_names_the_repository_it_was_for() -> None:
    # Given the rollback state machine's failure state: its input, caught and failure.
    failure = {"error": "NothingToRollBack", "cause": "at v0.1: no older version"}
    details = {"input": {"repository": "ecr-prod/repo-1"}, "caught": {}, "failure": failure}

    subject, message = outcome_message("ROLLBACK", "rb-1", "FAILED", details, failure)

    assert "Reason: NothingToRollBack: at v0.1: no older version" in message
    assert "ecr-prod/repo-1" in subject


def test_a_promotion_that_failed_to_resolve_names_the_repository_asked_for() -> None:
    # Given the promotion state machine's failure state when Resolve failed: no plan.
    failure = {"error": "RepositoryNotConfigured", "cause": "'ecr-dev/nope' is not ..."}
    details = {"input": {"repository": "ecr-dev/nope", "digest": DIGEST}, "failure": failure}

    subject, message = outcome_message("PROMOTION", "exec-1", "FAILED", details, failure)

    assert message.splitlines()[-1] == f"Reason: {failure['error']}: {failure['cause']}"
    assert "ecr-dev/nope" in subject


def test_the_subject_fits_the_sns_limit() -> None:
    plan = {**PLAN, "name": "n" * 200}

    subject, _ = outcome_message("PROMOTION", "exec-1", "SUCCEEDED", {"plan": plan}, None)

    assert len(subject) == 100
    assert subject.startswith("image-cicd: promotion succeeded (nnn")


# -------------------------------------------------------------------- finish


def test_given_a_promotion_when_it_succeeds_then_the_ledger_and_the_topic_hear_of_it(
    ledger: Ledger,
) -> None:
    outbox = Outbox()
    ledger.start_promotion("exec-1", "repo-1", DIGEST, T0)
    details = {"plan": PLAN, "test": TEST_COPY, "prod": PROD_PROMOTION}

    sent = finish(services(ledger, outbox), "PROMOTION", "exec-1", "SUCCEEDED", details)

    promotion = ledger.get_promotion("exec-1")
    assert promotion.outcome == "SUCCEEDED"
    assert promotion.reason is None
    assert promotion.finished_at is not None
    assert outbox.sent == [(NOTIFICATIONS, sent["subject"], sent["message"])]
    assert sent["subject"] == "image-cicd: promotion succeeded (repo-1)"
    assert sent["duration_seconds"] == (promotion.finished_at - T0).total_seconds()


def test_given_a_rejected_promotion_when_finished_then_the_reason_is_recorded_and_sent(
    ledger: Ledger,
) -> None:
    outbox = Outbox()
    ledger.start_promotion("exec-1", "repo-1", DIGEST, T0)
    failure = {
        "error": "ApprovalRejected",
        "cause": "PROD rejected by alice: not today",
        "outcome": "REJECTED",
        "stage": "PROD",
    }

    finish(
        services(ledger, outbox),
        "PROMOTION",
        "exec-1",
        "REJECTED",
        {"plan": PLAN, "failure": failure},
        failure,
    )

    promotion = ledger.get_promotion("exec-1")
    assert promotion.outcome == "REJECTED"
    assert promotion.reason == "ApprovalRejected: PROD rejected by alice: not today"
    [(topic, subject, message)] = outbox.sent
    assert topic == NOTIFICATIONS
    assert subject == "image-cicd: promotion rejected (repo-1)"
    assert "Reason: ApprovalRejected: PROD rejected by alice: not today" in message


def test_given_no_plan_when_finished_then_only_the_notification_is_sent(ledger: Ledger) -> None:
    outbox = Outbox()
    failure = {"error": "BadInput", "cause": "the input must be a JSON object"}

    finish(services(ledger, outbox), "PROMOTION", "exec-9", "FAILED", {}, failure)

    assert len(outbox.sent) == 1
    assert "Reason: BadInput: the input must be a JSON object" in outbox.sent[0][2]
    with pytest.raises(PromotionNotFound):
        ledger.get_promotion("exec-9")


def test_a_rollback_is_notified_and_not_recorded_as_a_promotion(ledger: Ledger) -> None:
    outbox = Outbox()

    sent = finish(services(ledger, outbox), "ROLLBACK", "rb-1", "SUCCEEDED", {"rollback": ROLLBACK})

    assert outbox.sent == [(NOTIFICATIONS, sent["subject"], sent["message"])]
    assert "Rollback from v0.15 to v0.14" in sent["message"]
    with pytest.raises(PromotionNotFound):
        ledger.get_promotion("rb-1")


# ----------------------------------------------------------- request_approval


def test_given_a_test_approval_when_requested_then_the_link_has_the_id_and_never_the_token(
    ledger: Ledger,
) -> None:
    outbox = Outbox()
    tags = {"ecr-test/repo-1": {"v0.1": d(1), "v0.2": d(2), "latest": d(2), "dev": d(5)}}

    request = request_approval(
        services(ledger, outbox, tags), make_plan(), "TEST", TOKEN, notifier=NO_TASKS, now=T0
    )

    approval_id = request["approval_id"]
    assert request["link"] == f"{BASE_URL}approvals/{approval_id}"
    assert TOKEN not in request["link"]
    assert request["expires_at"] == (T0 + timedelta(hours=1)).isoformat()
    [(topic, subject, body)] = outbox.sent
    assert topic == APPROVALS
    assert request["link"] in body
    assert TOKEN not in subject + body
    assert subject == "Approval needed: ecr-dev/repo-1 -> TEST as v0.3 (estimate)"
    assert "TEST runs now:  v0.2" in body


def test_the_approval_request_keeps_the_token_in_the_ledger_only(ledger: Ledger) -> None:
    outbox = Outbox()
    tags = {"ecr-test/repo-1": {"v0.1": d(1), "latest": d(1)}}

    request = request_approval(
        services(ledger, outbox, tags), make_plan(), "TEST", TOKEN, notifier=NO_TASKS, now=T0
    )

    stored = ledger.get_approval(request["approval_id"])
    assert stored.task_token.get_secret_value() == TOKEN
    assert stored.status == "PENDING"
    assert (stored.execution, stored.stage) == ("exec-1", "TEST")
    assert (stored.repository, stored.target_repository) == ("ecr-dev/repo-1", "ecr-test/repo-1")
    assert stored.digest == DIGEST
    assert stored.version == "v0.2"
    assert stored.current is not None
    assert (stored.current.version, stored.current.digest) == ("v0.1", d(1))
    assert stored.expires_at == T0 + timedelta(hours=1)


def test_given_a_digest_already_versioned_in_the_target_then_the_request_shows_that_version(
    ledger: Ledger,
) -> None:
    outbox = Outbox()
    tags = {"ecr-test/repo-1": {"v0.1": DIGEST, "v0.2": d(2), "latest": d(2)}}

    request = request_approval(
        services(ledger, outbox, tags), make_plan(), "TEST", TOKEN, notifier=NO_TASKS, now=T0
    )

    assert ledger.get_approval(request["approval_id"]).version == "v0.1"


def test_given_an_empty_target_then_the_request_is_for_the_first_version(ledger: Ledger) -> None:
    outbox = Outbox()

    request = request_approval(
        services(ledger, outbox), make_plan(), "TEST", TOKEN, notifier=NO_TASKS, now=T0
    )

    stored = ledger.get_approval(request["approval_id"])
    assert stored.version == "v0.1"
    assert stored.current is None
    assert "nothing yet (first release)" in outbox.sent[0][2]


def test_given_a_prod_approval_then_it_goes_from_test_to_prod_with_the_test_results(
    ledger: Ledger,
) -> None:
    outbox = Outbox()
    tags = {
        "ecr-test/repo-1": {"v0.3": DIGEST, "latest": DIGEST},
        "ecr-prod/repo-1": {"v0.14": d(14), "v0.15": d(15), "latest": d(15)},
    }
    tests = TestResults(
        passed=True,
        summary="2 check(s) passed",
        checks=[CheckResult(name="content", passed=True), CheckResult(name="size", passed=True)],
    )

    request = request_approval(
        services(ledger, outbox, tags),
        make_plan(),
        "PROD",
        TOKEN,
        notifier=NO_TASKS,
        tests=tests,
        now=T0,
    )

    stored = ledger.get_approval(request["approval_id"])
    assert (stored.stage, stored.repository, stored.target_repository) == (
        "PROD",
        "ecr-test/repo-1",
        "ecr-prod/repo-1",
    )
    assert stored.version == "v0.16"
    assert stored.tests == tests
    [(_, subject, body)] = outbox.sent
    assert subject == "Approval needed: ecr-test/repo-1 -> PROD as v0.16 (estimate)"
    assert "PROD runs now:  v0.15" in body
    assert "PASSED (2 of 2 checks passed)" in body
    assert request["link"] in body
    assert TOKEN not in body


def test_concurrent_promotions_are_told_an_estimate_and_a_kept_version_for_certain(
    ledger: Ledger,
) -> None:
    # Six promotions of new digests ask for TEST at once: each is told v0.1, which
    # only the first to be copied gets, so it is worded as an estimate.
    outbox = Outbox()
    tags = {"ecr-test/repo-1": {"v0.1": d(1), "latest": d(1)}}
    svc = services(ledger, outbox, tags)
    plans = [make_plan(execution=f"exec-{n}", digest=d(10 + n)) for n in range(6)]

    requests = [request_approval(svc, p, "TEST", TOKEN, notifier=NO_TASKS, now=T0) for p in plans]

    for request, (_, subject, body) in zip(requests, outbox.sent, strict=True):
        stored = ledger.get_approval(request["approval_id"])
        assert (stored.version, stored.version_assigned) == ("v0.2", False)
        assert subject.endswith("-> TEST as v0.2 (estimate)")
        assert "Version:         next version (estimate): v0.2 - assigned when" in body
    # A digest TEST has as v0.1 already keeps that version: that one is certain.
    kept = request_approval(
        svc, make_plan(execution="exec-k", digest=d(1)), "TEST", TOKEN, notifier=NO_TASKS, now=T0
    )
    stored = ledger.get_approval(kept["approval_id"])
    assert (stored.version, stored.version_assigned) == ("v0.1", True)
    assert outbox.sent[-1][1].endswith("-> TEST as v0.1")


def test_every_request_gets_its_own_approval_id(ledger: Ledger) -> None:
    outbox = Outbox()
    svc = services(ledger, outbox)

    first = request_approval(svc, make_plan(), "TEST", TOKEN, notifier=NO_TASKS, now=T0)
    second = request_approval(svc, make_plan(), "TEST", TOKEN, notifier=NO_TASKS, now=T0)

    assert first["approval_id"] != second["approval_id"]
    assert len(outbox.sent) == 2


def test_given_an_expired_promotion_when_finished_then_its_waiting_approval_is_expired(
    ledger: Ledger,
) -> None:
    from image_cicd.approvals.decisions import new_approval_request

    def waiting(execution: str) -> str:
        approval = new_approval_request(
            execution=execution,
            stage="TEST",
            repository="ecr-dev/repo-1",
            target_repository="ecr-test/repo-1",
            digest=DIGEST,
            task_token="tok",
            timeout=timedelta(hours=1),
            now=T0,
        )
        ledger.put_approval_request(approval)
        return approval.approval_id

    ledger.start_promotion("exec-1", "repo-1", DIGEST, T0)
    mine, other = waiting("exec-1"), waiting("exec-2")
    failure = {"error": "ApprovalExpired", "cause": "no decision", "outcome": "EXPIRED"}

    finish(services(ledger, Outbox()), "PROMOTION", "exec-1", "EXPIRED", {"plan": PLAN}, failure)

    assert ledger.get_approval(mine).status == "EXPIRED"
    assert ledger.get_approval(other).status == "PENDING"


# ------------------------------------------------------ an end without Notify


def test_given_a_stopped_promotion_when_its_end_arrives_then_it_is_aborted_and_its_approval_expired(
    ledger: Ledger,
) -> None:
    outbox = Outbox()
    ledger.start_promotion("exec-1", "repo-1", DIGEST, T0)
    request_approval(
        services(ledger, outbox, {}), make_plan(), "TEST", TOKEN, now=T0, notifier=NO_TASKS
    )

    sent = execution_ended(
        services(ledger, outbox), "exec-1", "ABORTED", "Operator.Stop", "stopped by hand"
    )

    promotion = ledger.get_promotion("exec-1")
    assert (promotion.outcome, promotion.reason) == ("ABORTED", "Operator.Stop: stopped by hand")
    assert [a.status for a in ledger.list_approvals() if a.execution == "exec-1"] == ["EXPIRED"]
    assert sent is not None
    assert sent["subject"] == "image-cicd: promotion aborted (repo-1)"
    assert f"Image: ecr-dev/repo-1@{DIGEST}" in sent["message"]
    assert outbox.sent[-1] == (NOTIFICATIONS, sent["subject"], sent["message"])


def test_given_a_timed_out_promotion_without_an_error_then_the_reason_names_the_timeout(
    ledger: Ledger,
) -> None:
    ledger.start_promotion("exec-1", "repo-1", DIGEST, T0)

    execution_ended(services(ledger, Outbox()), "exec-1", "TIMED_OUT", None, None)

    promotion = ledger.get_promotion("exec-1")
    assert (promotion.outcome, promotion.reason) == ("TIMED_OUT", "ExecutionTimedOut: ")


def test_given_a_promotion_the_workflow_finished_then_its_end_changes_nothing(
    ledger: Ledger,
) -> None:
    outbox = Outbox()
    ledger.start_promotion("exec-1", "repo-1", DIGEST, T0)
    failure = {"error": "ApprovalRejected", "cause": "TEST rejected by cy"}
    finish(services(ledger, outbox), "PROMOTION", "exec-1", "REJECTED", {"plan": PLAN}, failure)

    sent = execution_ended(services(ledger, outbox), "exec-1", "FAILED", "ApprovalRejected", "x")

    assert sent is None
    assert ledger.get_promotion("exec-1").outcome == "REJECTED"
    assert len(outbox.sent) == 1  # the workflow's own notification only


@pytest.mark.parametrize(
    ("error", "outcome"),
    [
        ("ApprovalRejected", "REJECTED"),
        ("ApprovalExpired", "EXPIRED"),
        ("PromotionSuperseded", "SUPERSEDED"),
        ("TestsFailed", "FAILED"),
    ],
)
def test_given_a_failure_the_notify_step_could_not_record_then_its_error_names_the_outcome(
    ledger: Ledger, error: str, outcome: str
) -> None:
    # Given a promotion whose failure path ran but whose Notify failed (record RUNNING)
    ledger.start_promotion("exec-1", "repo-1", DIGEST, T0)

    execution_ended(services(ledger, Outbox()), "exec-1", "FAILED", error, "why")

    assert ledger.get_promotion("exec-1").outcome == outcome


def test_given_notify_finishes_the_record_while_the_end_is_handled_then_notify_wins(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a stop that reads the record while it is RUNNING, and a Notify already
    # under way that records REJECTED before the stop writes
    outbox = Outbox()
    ledger.start_promotion("exec-1", "repo-1", DIGEST, T0)
    running = ledger.get_promotion("exec-1")
    failure = {"error": "ApprovalRejected", "cause": "TEST rejected by cy"}
    finish(services(ledger, outbox), "PROMOTION", "exec-1", "REJECTED", {"plan": PLAN}, failure)
    monkeypatch.setattr(ledger, "get_promotion", lambda execution: running)

    # When the end of the execution is handled
    sent = execution_ended(services(ledger, outbox), "exec-1", "ABORTED", "Operator.Stop", "x")

    # Then the outcome Notify recorded stays, and nothing more is told
    monkeypatch.undo()
    assert sent is None
    assert ledger.get_promotion("exec-1").outcome == "REJECTED"
    assert len(outbox.sent) == 1


def test_given_an_unrecorded_execution_then_a_stop_is_told_and_a_failure_is_not(
    ledger: Ledger,
) -> None:
    outbox = Outbox()

    failed = execution_ended(services(ledger, outbox), "exec-9", "FAILED", "BadInput", "no")
    stopped = execution_ended(services(ledger, outbox), "exec-9", "ABORTED", None, None)

    assert failed is None  # its failure path notified already
    assert stopped is not None
    assert [subject for _, subject, _ in outbox.sent] == ["image-cicd: promotion aborted"]
    with pytest.raises(PromotionNotFound):
        ledger.get_promotion("exec-9")
