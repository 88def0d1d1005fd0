"""A newer image supersedes an older promotion still waiting for the same approval;
a digest a stage already runs is "already promoted" (in-process moto DynamoDB)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest
from support.fakes import Outbox

from image_cicd.approvals import endpoint
from image_cicd.approvals.decisions import TaskTokenInvalid, csrf_token, decide
from image_cicd.ledger.records import ApprovalRequest, ApprovalStatus, ImageRef
from image_cicd.ledger.store import ApprovalSuperseded, Ledger
from image_cicd.promotion.errors import ConfigurationError, PromotionSuperseded
from image_cicd.promotion.locks import Locker
from image_cicd.promotion.payloads import ImageFacts, Plan, already_promoted
from image_cicd.promotion.settings import Settings
from image_cicd.promotion.steps import Services, finish, request_approval
from image_cicd.registry.client import RegistryClient
from image_cicd.registry.media import OCI_MANIFEST

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
A, B = "sha256:" + "a" * 64, "sha256:" + "b" * 64


class EmptyRegistry:
    def list_tags(self, repository: str) -> list[str]:
        return []


@dataclass
class Tasks:
    """The Step Functions callbacks, recorded (or failing with `error`)."""

    error: Exception | None = None
    failed: list[tuple[str, str, str]] = field(default_factory=list)

    def send_success(self, token: str, output: dict[str, Any]) -> None:
        raise AssertionError("superseding never resumes a task")

    def send_failure(self, token: str, error: str, cause: str) -> None:
        if self.error is not None:
            raise self.error
        self.failed.append((token, error, cause))


def services(ledger: Ledger, outbox: Outbox | None = None, *, supersede: bool = True) -> Services:
    return Services(
        settings=Settings(
            repositories=("repo-1", "repo-2"),
            approval_base_url="https://approvals.example/",
            approvals_topic_arn="approvals",
            notifications_topic_arn="notifications",
            supersede_waiting_promotions=supersede,
        ),
        connect=lambda: cast(RegistryClient, EmptyRegistry()),
        ledger=ledger,
        locker=cast(Locker, None),
        publish=outbox if outbox is not None else Outbox(),
    )


def plan(execution: str, digest: str, name: str = "repo-1") -> Plan:
    return Plan(
        execution=execution,
        name=name,
        digest=digest,
        source=f"ecr-dev/{name}",
        test=f"ecr-test/{name}",
        prod=f"ecr-prod/{name}",
        image=ImageFacts(media_type=OCI_MANIFEST, size=1),
        approval_timeout_seconds=3600,
    )


def waiting(
    svc: Services, tasks: Tasks, execution: str, digest: str, *, minute: int, **options: Any
) -> str:
    """A promotion started at T0 + `minute` that now waits for its TEST approval."""
    stage = options.pop("stage", "TEST")
    name = options.pop("name", "repo-1")
    svc.ledger.start_promotion(execution, name, digest, T0 + timedelta(minutes=minute))
    request = request_approval(
        svc,
        plan(execution, digest, name),
        stage,
        f"token-{execution}",
        notifier=tasks,
        now=T0 + timedelta(minutes=minute),
    )
    return request["approval_id"]


# ------------------------------------------------------------------ superseding


def test_a_newer_image_waiting_for_the_same_approval_supersedes_the_older_one(
    ledger: Ledger,
) -> None:
    svc, tasks = services(ledger), Tasks()
    old = waiting(svc, tasks, "exec-a", A, minute=0)
    new = waiting(svc, tasks, "exec-b", B, minute=5)

    older = ledger.get_approval(old)
    assert older.status == "SUPERSEDED"
    assert (older.superseded_by, older.superseded_by_digest) == ("exec-b", B)
    assert ledger.get_approval(new).status == "PENDING"
    [(token, error, cause)] = tasks.failed
    assert (token, error) == ("token-exec-a", "PromotionSuperseded")
    assert "exec-b" in cause
    assert B in cause
    assert "TEST" in cause


def test_with_superseding_off_every_promotion_keeps_waiting(ledger: Ledger) -> None:
    svc, tasks = services(ledger, supersede=False), Tasks()
    old = waiting(svc, tasks, "exec-a", A, minute=0)
    waiting(svc, tasks, "exec-b", B, minute=5)

    assert ledger.get_approval(old).status == "PENDING"
    assert tasks.failed == []


def test_only_the_same_repository_and_stage_is_superseded(ledger: Ledger) -> None:
    svc, tasks = services(ledger), Tasks()
    prod = waiting(svc, tasks, "exec-a", A, minute=0, stage="PROD")
    other = waiting(svc, tasks, "exec-c", A, minute=1, name="repo-2")
    waiting(svc, tasks, "exec-b", B, minute=5)

    assert ledger.get_approval(prod).status == "PENDING"
    assert ledger.get_approval(other).status == "PENDING"
    assert tasks.failed == []


def test_an_older_image_that_asks_after_a_newer_one_is_itself_superseded(
    ledger: Ledger,
) -> None:
    svc, tasks, outbox = services(ledger), Tasks(), Outbox()
    newer = waiting(svc, tasks, "exec-b", B, minute=5)
    ledger.start_promotion("exec-a", "repo-1", A, T0)

    with pytest.raises(PromotionSuperseded, match="exec-b"):
        request_approval(
            services(ledger, outbox),
            plan("exec-a", A),
            "TEST",
            "token-exec-a",
            notifier=tasks,
            now=T0 + timedelta(minutes=6),  # while exec-b's request is alive
        )

    assert ledger.get_approval(newer).status == "PENDING"
    assert [a.execution for a in ledger.list_approvals()] == ["exec-b"]
    assert outbox.sent == []  # nothing published for the older image


def test_a_decision_that_came_first_wins_and_the_promotion_goes_on(ledger: Ledger) -> None:
    svc, tasks = services(ledger), Tasks()
    old = waiting(svc, tasks, "exec-a", A, minute=0)
    approval = ledger.get_approval(old)
    decide(
        ledger,
        tasks_ok := _Resumed(),
        old,
        "APPROVED",
        "ana",
        None,
        csrf=csrf_token(approval),
        source_ip=None,
        user_agent=None,
        now=T0,
    )
    waiting(svc, tasks, "exec-b", B, minute=5)

    assert ledger.get_approval(old).status == "APPROVED"
    assert tasks.failed == []
    assert len(tasks_ok.resumed) == 1


def test_a_decision_after_superseding_is_refused_and_changes_nothing(ledger: Ledger) -> None:
    svc, tasks = services(ledger), Tasks()
    old = waiting(svc, tasks, "exec-a", A, minute=0)
    waiting(svc, tasks, "exec-b", B, minute=5)
    approval = ledger.get_approval(old)

    resumed = _Resumed()
    with pytest.raises(ApprovalSuperseded):
        decide(
            ledger,
            resumed,
            old,
            "APPROVED",
            "ana",
            None,
            csrf=csrf_token(approval),
            source_ip=None,
            user_agent=None,
            now=T0,
        )
    assert resumed.resumed == []
    assert ledger.get_approval(old).status == "SUPERSEDED"


def test_superseding_twice_has_exactly_one_winner(ledger: Ledger) -> None:
    svc, tasks = services(ledger), Tasks()
    old = waiting(svc, tasks, "exec-a", A, minute=0, stage="PROD")

    first = ledger.supersede(old, by_execution="exec-b", by_digest=B, now=T0)
    second = ledger.supersede(old, by_execution="exec-c", by_digest=B, now=T0)

    assert first is not None
    assert first.superseded_by == "exec-b"
    assert second is None
    assert ledger.get_approval(old).superseded_by == "exec-b"


def test_a_task_that_cannot_be_failed_leaves_the_older_approval_waiting(ledger: Ledger) -> None:
    svc = services(ledger)
    old = waiting(svc, Tasks(), "exec-a", A, minute=0)
    waiting(svc, Tasks(error=RuntimeError("Step Functions unreachable")), "exec-b", B, minute=5)

    assert ledger.get_approval(old).status == "PENDING"


def test_a_task_already_gone_stays_superseded(ledger: Ledger) -> None:
    svc = services(ledger)
    old = waiting(svc, Tasks(), "exec-a", A, minute=0)
    # exec-a was stopped while it waited: the execution-ended hook recorded it, and
    # its token is gone (the hook has not yet expired the approval).
    ledger.finish_promotion("exec-a", "ABORTED", now=T0 + timedelta(minutes=4))
    waiting(svc, Tasks(error=TaskTokenInvalid("TaskTimedOut")), "exec-b", B, minute=5)

    assert ledger.get_approval(old).status == "SUPERSEDED"


@dataclass
class _Resumed:
    resumed: list[str] = field(default_factory=list)

    def send_success(self, token: str, output: dict[str, Any]) -> None:
        self.resumed.append(token)

    def send_failure(self, token: str, error: str, cause: str) -> None:
        raise AssertionError("not rejected")


# ------------------------------------------------------------ the approval page


def test_the_link_of_a_superseded_approval_says_by_which_promotion(ledger: Ledger) -> None:
    svc, tasks = services(ledger), Tasks()
    old = waiting(svc, tasks, "exec-a", A, minute=0)
    waiting(svc, tasks, "exec-b", B, minute=5)

    status, html = endpoint.show(ledger, old, now=T0)

    assert status == 410
    assert "superseded" in html.lower()
    assert "exec-b" in html
    assert B in html
    assert 'name="csrf"' not in html  # no form to decide with

    body = f"decision=approve&approver=ana&csrf={csrf_token(ledger.get_approval(old))}"
    posted, page = endpoint.submit(
        ledger, _Resumed(), old, body, source_ip=None, user_agent=None, now=T0
    )
    assert posted == 410
    assert "exec-b" in page


# --------------------------------------------------------------- the outcome


def test_a_superseded_promotion_is_recorded_and_notified_as_superseded(ledger: Ledger) -> None:
    outbox = Outbox()
    svc = services(ledger, outbox)
    ledger.start_promotion("exec-a", "repo-1", A, T0)
    failure = {
        "error": "PromotionSuperseded",
        "cause": "TEST approval superseded by exec-b (" + B + ")",
        "outcome": "SUPERSEDED",
    }
    details = {"plan": plan("exec-a", A).model_dump(mode="json")}

    finish(svc, "PROMOTION", "exec-a", "SUPERSEDED", details, failure)

    promotion = ledger.get_promotion("exec-a")
    assert promotion.outcome == "SUPERSEDED"
    assert promotion.reason is not None
    assert "exec-b" in promotion.reason
    [(topic, subject, message)] = outbox.sent
    assert topic == "notifications"
    assert "superseded" in subject
    assert "SUPERSEDED" in message
    assert "exec-b" in message


# ------------------------------------------------------------ already promoted


@pytest.mark.parametrize(
    ("test_now", "prod_now", "in_flight", "expected"),
    [
        (None, None, False, None),
        (ImageRef(digest=B, version="v0.2"), ImageRef(digest=B, version="v0.2"), True, None),
        (ImageRef(digest=A, version="v0.1"), ImageRef(digest=A, version="v0.1"), False, "PROD"),
        (ImageRef(digest=B, version="v0.2"), ImageRef(digest=A, version="v0.1"), False, "PROD"),
        (ImageRef(digest=A, version="v0.3"), ImageRef(digest=B, version="v0.2"), True, "TEST"),
        (ImageRef(digest=A), None, True, "TEST"),
        # TEST runs it but nothing promotes it now (rejected or expired for PROD)
        (ImageRef(digest=A, version="v0.3"), ImageRef(digest=B, version="v0.2"), False, None),
        (ImageRef(digest=A), None, False, None),
    ],
)
def test_a_digest_a_stage_runs_now_is_already_promoted(
    test_now: ImageRef | None, prod_now: ImageRef | None, in_flight: bool, expected: str | None
) -> None:
    assert already_promoted(A, test_now, prod_now, in_flight=in_flight) == expected


# ------------------------------------------------------------------- settings


@pytest.mark.parametrize(("raw", "expected"), [("", True), ("true", True), ("false", False)])
def test_superseding_is_on_unless_the_parameter_turns_it_off(raw: str, expected: bool) -> None:
    settings = Settings.from_env({"REPOSITORIES": "repo-1", "SUPERSEDE_WAITING_PROMOTIONS": raw})
    assert settings.supersede_waiting_promotions is expected


def test_a_bad_supersede_setting_is_a_clear_error() -> None:
    with pytest.raises(ConfigurationError, match="SUPERSEDE_WAITING_PROMOTIONS"):
        Settings.from_env({"SUPERSEDE_WAITING_PROMOTIONS": "maybe"})


# ------------------------------------------- a token gone is not proof of superseding


@dataclass
class _LostReply:
    """SendTaskSuccess arrives, but its reply is lost (the caller sees an error)."""

    arrived: list[str] = field(default_factory=list)

    def send_success(self, token: str, output: dict[str, Any]) -> None:
        self.arrived.append(token)
        raise ConnectionError("read timeout on SendTaskSuccess")

    def send_failure(self, token: str, error: str, cause: str) -> None:
        self.arrived.append(token)
        raise ConnectionError("read timeout on SendTaskFailure")


def _decide_losing_the_reply(ledger: Ledger, approval_id: str, decision: str) -> None:
    lost = _LostReply()
    with pytest.raises(ConnectionError):
        decide(
            ledger,
            lost,
            approval_id,
            "APPROVED" if decision == "APPROVED" else "REJECTED",
            "ana",
            None,
            csrf=csrf_token(ledger.get_approval(approval_id)),
            source_ip=None,
            user_agent=None,
            now=T0 + timedelta(minutes=1),
        )
    assert lost.arrived == ["token-exec-a"]
    assert ledger.get_approval(approval_id).status == "PENDING"  # decide reopened it


def test_an_approval_that_arrived_although_its_reply_was_lost_is_not_superseded(
    ledger: Ledger,
) -> None:
    svc = services(ledger)
    old = waiting(svc, Tasks(), "exec-a", A, minute=0)
    _decide_losing_the_reply(ledger, old, "APPROVED")  # exec-a goes on to copy to TEST
    ledger.start_promotion("exec-b", "repo-1", B, T0 + timedelta(minutes=5))

    asked = request_approval(
        svc,
        plan("exec-b", B),
        "TEST",
        "token-exec-b",
        notifier=Tasks(error=TaskTokenInvalid("TaskTimedOut")),  # the token was used
        now=T0 + timedelta(minutes=5),
    )

    older = ledger.get_approval(old)
    assert (older.status, older.superseded_by) == ("PENDING", None)
    assert (asked["superseded"], asked["not_superseded"]) == ([], ["exec-a"])


def test_a_rejection_that_arrived_and_ended_the_promotion_leaves_its_request_expired(
    ledger: Ledger,
) -> None:
    svc = services(ledger)
    old = waiting(svc, Tasks(), "exec-a", A, minute=0)
    _decide_losing_the_reply(ledger, old, "REJECTED")
    ledger.finish_promotion("exec-a", "REJECTED", now=T0 + timedelta(minutes=2))

    waiting(svc, Tasks(error=TaskTokenInvalid("TaskTimedOut")), "exec-b", B, minute=5)

    assert ledger.get_approval(old).status == "EXPIRED"  # as `finish` leaves it


def test_a_promotion_stopped_after_its_test_copy_is_not_superseded_at_test(
    ledger: Ledger,
) -> None:
    svc = services(ledger)
    old = waiting(svc, Tasks(), "exec-a", A, minute=0)
    _decide_losing_the_reply(ledger, old, "APPROVED")
    ledger.update_promotion("exec-a", test_version="v0.1")  # got past its TEST approval
    ledger.finish_promotion("exec-a", "ABORTED", now=T0 + timedelta(minutes=3))

    waiting(svc, Tasks(error=TaskTokenInvalid("TaskTimedOut")), "exec-b", B, minute=5)

    assert ledger.get_approval(old).status == "EXPIRED"


# ------------------------------------------------ requests recorded at the same time


class _MeetingRegistry(EmptyRegistry):
    """Both requests read the target's tags together, after both looked for others and
    before either recorded its own; then `first` records (and returns) before the other."""

    def __init__(self, first: str) -> None:
        self.first = first
        self.met = threading.Barrier(2, timeout=10)
        self.first_done = threading.Event()

    def list_tags(self, repository: str) -> list[str]:
        self.met.wait()
        if threading.current_thread().name != self.first:
            assert self.first_done.wait(timeout=10)
        return []


@pytest.mark.parametrize("first", ["exec-a", "exec-b"])
def test_two_requests_recorded_at_the_same_time_leave_exactly_the_newer_one_waiting(
    ledger: Ledger, first: str
) -> None:
    registry, tasks = _MeetingRegistry(first), Tasks()
    svc = replace(services(ledger), connect=lambda: cast(RegistryClient, registry))
    ledger.start_promotion("exec-a", "repo-1", A, T0)  # the older push
    ledger.start_promotion("exec-b", "repo-1", B, T0 + timedelta(seconds=1))
    raised: dict[str, BaseException] = {}

    def ask(execution: str, digest: str) -> None:
        try:
            request_approval(
                svc,
                plan(execution, digest),
                "TEST",
                f"token-{execution}",
                notifier=tasks,
                now=T0 + timedelta(seconds=2),
            )
        except BaseException as error:
            raised[execution] = error
        finally:
            if execution == first:
                registry.first_done.set()

    threads = [
        threading.Thread(target=ask, args=(e, d), name=e) for e, d in (("exec-a", A), ("exec-b", B))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert set(raised) <= {"exec-a"}
    assert all(isinstance(error, PromotionSuperseded) for error in raised.values())
    statuses = {a.execution: (a.status, a.superseded_by) for a in ledger.list_approvals()}
    assert statuses == {"exec-a": ("SUPERSEDED", "exec-b"), "exec-b": ("PENDING", None)}
    # exec-a's task ends either way: its own request raised, or exec-b failed its token
    assert ("exec-a" in raised) != ([t for t, _, _ in tasks.failed] == ["token-exec-a"])


# ------------------------------------------------- only a live newer request counts


def test_a_newer_request_that_expired_supersedes_nothing(ledger: Ledger) -> None:
    svc, tasks = services(ledger), Tasks()
    newer = waiting(svc, tasks, "exec-b", B, minute=5)
    ledger.start_promotion("exec-a", "repo-1", A, T0)

    asked = request_approval(
        svc, plan("exec-a", A), "TEST", "token-exec-a", notifier=tasks, now=T0 + timedelta(hours=2)
    )

    assert ledger.get_approval(asked["approval_id"]).status == "PENDING"
    assert ledger.get_approval(newer).is_expired(T0 + timedelta(hours=2))


def test_a_newer_request_whose_promotion_ended_supersedes_nothing(ledger: Ledger) -> None:
    svc, tasks = services(ledger), Tasks()
    newer = waiting(svc, tasks, "exec-b", B, minute=5)
    # exec-b failed; its request is still PENDING (finish's index read missed it)
    ledger.finish_promotion("exec-b", "FAILED", "boom", now=T0 + timedelta(minutes=6))
    ledger.start_promotion("exec-a", "repo-1", A, T0)

    asked = request_approval(
        svc,
        plan("exec-a", A),
        "TEST",
        "token-exec-a",
        notifier=tasks,
        now=T0 + timedelta(minutes=7),
    )

    assert ledger.get_approval(asked["approval_id"]).status == "PENDING"
    assert ledger.get_approval(newer).status == "PENDING"
    assert tasks.failed == []


class _StaleIndexLedger(Ledger):
    """The approvals index answers what it held before the last decision (as a GSI can)."""

    stale: list[ApprovalRequest] | None = None  # None: up to date

    def list_approvals(self, status: ApprovalStatus | None = None) -> list[ApprovalRequest]:
        if self.stale is None:
            return super().list_approvals(status)
        return [a for a in self.stale if status is None or a.status == status]


def test_a_newer_request_the_index_still_shows_pending_supersedes_nothing(ledger: Ledger) -> None:
    stale = _StaleIndexLedger(ledger.table_name, ledger.client)
    svc, tasks = services(stale), Tasks()
    newer = waiting(svc, tasks, "exec-b", B, minute=5)
    stale.stale = ledger.list_approvals()
    ledger.decide(newer, "APPROVED", "ana", None, None, None, now=T0 + timedelta(minutes=6))
    ledger.start_promotion("exec-a", "repo-1", A, T0)

    asked = request_approval(
        svc,
        plan("exec-a", A),
        "TEST",
        "token-exec-a",
        notifier=tasks,
        now=T0 + timedelta(minutes=7),
    )

    assert ledger.get_approval(asked["approval_id"]).status == "PENDING"
