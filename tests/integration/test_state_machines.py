"""The promotion and rollback state machines, run by moto's ASL interpreter with the
real Lambda handlers (each in its own process) against the real registry.

Every path of DESIGN §2: each test asserts what every repository holds afterwards
and what the ledger recorded.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
from support.stacks import arn_of, local_stack, push, stage

from image_cicd.approvals.decisions import approval_link
from image_cicd.aws.operations import approve, pending_approval, start_promotion, start_rollback
from image_cicd.aws.operations import wait_finished as finished
from image_cicd.aws.stack import DeployedStack
from image_cicd.console.history import view
from image_cicd.local.fault_proxy import FaultProxy
from image_cicd.local.stack import LocalStack
from image_cicd.registry.synthetic import SyntheticImage, build_image, push_image

REPOS = [f"repo-{n}" for n in range(1, 18)]
FAILING_TESTS = "repo-5"  # its built-in checks require a label the images lack


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, flavour: str) -> Iterator[LocalStack]:
    parameters = {
        "Repositories": ",".join(REPOS),
        "TestConfig": json.dumps(
            {FAILING_TESTS: {"labels": ["org.example.tested"]}, "repo-1": {"non_root": True}}
        ),
    }
    with local_stack(tmp_path_factory.mktemp("stack"), parameters, flavour) as running:
        yield running


def run_to_approval(t: DeployedStack, name: str, image: SyntheticImage) -> str:
    arn = start_promotion(t, f"ecr-dev/{name}", image.digest)
    execution = arn.rsplit(":", 1)[-1]
    assert pending_approval(t, execution, wait_seconds=120) is not None, "no TEST approval"
    return execution


def decide(t: DeployedStack, execution: str, decision: str, who: str = "ana@example.com") -> None:
    _, result = approve(t, execution, decision, who, comment=f"{decision} by test")  # type: ignore[arg-type]
    assert result.status == 200, result.page


def promote_fully(t: DeployedStack, name: str, image: SyntheticImage) -> str:
    execution = run_to_approval(t, name, image)
    decide(t, execution, "APPROVED")
    assert pending_approval(t, execution, wait_seconds=120) is not None, "no PROD approval"
    decide(t, execution, "APPROVED")
    assert finished(t, arn_of(t, execution))["status"] == "SUCCEEDED"
    return execution


def test_happy_path_promotes_the_pinned_digest_with_versions(t: DeployedStack) -> None:
    image = push(t, "repo-1")
    execution = promote_fully(t, "repo-1", image)

    assert stage(t, "ecr-test/repo-1") == ({"v0.1": image.digest}, image.digest)
    assert stage(t, "ecr-prod/repo-1") == ({"v0.1": image.digest}, image.digest)
    assert t.registry.get_manifest("ecr-prod/repo-1", "v0.1").data == image.manifest.data
    promotion = t.ledger.get_promotion(execution)
    assert (promotion.outcome, promotion.test_version, promotion.prod_version) == (
        "SUCCEEDED",
        "v0.1",
        "v0.1",
    )
    assert [(a.stage, a.decision, a.approver) for a in promotion.approvals] == [
        ("TEST", "APPROVED", "ana@example.com"),
        ("PROD", "APPROVED", "ana@example.com"),
    ]
    assert promotion.tests is not None
    assert promotion.tests.passed
    assert any(c.name == "non-root user" and c.passed for c in promotion.tests.checks)
    [release] = t.ledger.releases("ecr-prod/repo-1")
    assert (release.version, release.digest, release.kind) == ("v0.1", image.digest, "PROMOTION")
    states = view(t.client("stepfunctions"), arn_of(t, execution)).states
    assert states["Wait for PROD approval"].status == "succeeded"
    assert states["Promoted"].status == "succeeded"


def test_copies_mount_or_say_why_they_streamed(
    stack: LocalStack, t: DeployedStack, flavour: str
) -> None:
    image = push(t, "repo-11")
    execution = promote_fully(t, "repo-11", image)

    assert t.registry.get_manifest("ecr-prod/repo-11", "v0.1").data == image.manifest.data
    logs = "".join(p.read_text() for p in Path(stack.state_dir, "aws").rglob("*.log"))
    streamed = [json.loads(line) for line in logs.splitlines() if "streamed instead of" in line]
    if flavour == "plain":
        assert streamed == []
        return
    assert {entry["blobs"] for entry in streamed} == {3}  # config and two layers, each stage
    assert len(streamed) >= 2
    assert all("BLOB_MOUNTING --value ENABLED" in entry["reason"] for entry in streamed)
    assert t.ledger.get_promotion(execution).outcome == "SUCCEEDED"


def test_test_rejected_leaves_every_repository_as_it_was(t: DeployedStack) -> None:
    image = push(t, "repo-2")
    execution = run_to_approval(t, "repo-2", image)

    decide(t, execution, "REJECTED", who="bo")

    desc = finished(t, arn_of(t, execution))
    assert (desc["status"], desc.get("error")) == ("FAILED", "ApprovalRejected")
    assert stage(t, "ecr-test/repo-2") == ({}, None)
    assert stage(t, "ecr-prod/repo-2") == ({}, None)
    assert t.registry.list_tags("ecr-dev/repo-2") == ["candidate"]
    promotion = t.ledger.get_promotion(execution)
    assert promotion.outcome == "REJECTED"
    assert [(a.stage, a.decision, a.approver) for a in promotion.approvals] == [
        ("TEST", "REJECTED", "bo")
    ]


def test_prod_rejected_leaves_prod_untouched(t: DeployedStack) -> None:
    image = push(t, "repo-3")
    execution = run_to_approval(t, "repo-3", image)
    decide(t, execution, "APPROVED")
    assert pending_approval(t, execution, wait_seconds=120) is not None

    decide(t, execution, "REJECTED")

    assert finished(t, arn_of(t, execution))["error"] == "ApprovalRejected"
    assert stage(t, "ecr-test/repo-3") == ({"v0.1": image.digest}, image.digest)
    assert stage(t, "ecr-prod/repo-3") == ({}, None)
    assert t.ledger.get_promotion(execution).outcome == "REJECTED"


def _set_env(t: DeployedStack, function: str, **values: str) -> Callable[[], None]:
    """Change a function's configuration through the Lambda API; returns the undo."""
    lam = t.client("lambda")
    name = f"image-cicd-{function}"
    before = lam.get_function_configuration(FunctionName=name)["Environment"]["Variables"]
    lam.update_function_configuration(
        FunctionName=name, Environment={"Variables": {**before, **values}}
    )
    return lambda: lam.update_function_configuration(
        FunctionName=name, Environment={"Variables": before}
    )


def test_approval_expired(t: DeployedStack) -> None:
    undo = _set_env(t, "ResolveRepoFunction", APPROVAL_TIMEOUT_SECONDS="2")
    try:
        image = push(t, "repo-4")
        execution = run_to_approval(t, "repo-4", image)
        approval = pending_approval(t, execution)
    finally:
        undo()

    desc = finished(t, arn_of(t, execution), timeout=120)

    assert desc["status"] == "FAILED"
    assert desc["error"] == "ApprovalExpired"
    assert stage(t, "ecr-test/repo-4") == ({}, None)
    assert t.ledger.get_promotion(execution).outcome == "EXPIRED"
    assert approval is not None
    link = approval_link(t.output("ApprovalBaseUrl"), approval.approval_id)
    page = requests.get(link, timeout=30)
    assert page.status_code == 410


def test_tests_fail_after_the_copy_to_test(t: DeployedStack) -> None:
    image = push(t, FAILING_TESTS)
    execution = run_to_approval(t, FAILING_TESTS, image)

    decide(t, execution, "APPROVED")

    desc = finished(t, arn_of(t, execution), timeout=120)
    assert (desc["status"], desc["error"]) == ("FAILED", "TestsFailed")
    assert stage(t, f"ecr-test/{FAILING_TESTS}") == ({"v0.1": image.digest}, image.digest)
    assert stage(t, f"ecr-prod/{FAILING_TESTS}") == ({}, None)
    promotion = t.ledger.get_promotion(execution)
    assert promotion.outcome == "FAILED"
    assert promotion.tests is not None
    assert not promotion.tests.passed
    assert "org.example.tested" in promotion.tests.summary


def test_image_deleted_before_the_copy(t: DeployedStack) -> None:
    image = push(t, "repo-6")
    execution = run_to_approval(t, "repo-6", image)
    t.registry.delete_manifest("ecr-dev/repo-6", image.digest)

    decide(t, execution, "APPROVED")

    desc = finished(t, arn_of(t, execution), timeout=120)
    assert (desc["status"], desc["error"]) == ("FAILED", "ImageNotFound")
    assert stage(t, "ecr-test/repo-6") == ({}, None)
    assert stage(t, "ecr-prod/repo-6") == ({}, None)
    promotion = t.ledger.get_promotion(execution)
    assert promotion.outcome == "FAILED"
    assert promotion.reason is not None
    assert "ImageNotFound" in promotion.reason


def test_registry_briefly_unavailable_is_retried(
    t: DeployedStack, stack: LocalStack, fault_proxy: Callable[..., FaultProxy]
) -> None:
    assert stack.registry is not None
    proxy = fault_proxy(stack.registry.url)
    image = push(t, "repo-7")
    execution = run_to_approval(t, "repo-7", image)
    undo = _set_env(t, "RetagAndCopyManifestFunction", REGISTRY_URL=proxy.url)
    try:
        proxy.down("503")
        decide(t, execution, "APPROVED")
        sfn = t.client("stepfunctions")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            errors = [
                e["taskFailedEventDetails"].get("error")
                for e in sfn.get_execution_history(executionArn=arn_of(t, execution))["events"]
                if e["type"] == "TaskFailed"
            ]
            if "RegistryUnavailable" in errors:
                break
            time.sleep(0.3)
        assert "RegistryUnavailable" in errors
        proxy.up()
        assert pending_approval(t, execution, wait_seconds=120) is not None, "not retried"
    finally:
        proxy.up()
        undo()

    assert proxy.injected_503 > 0
    assert stage(t, "ecr-test/repo-7") == ({"v0.1": image.digest}, image.digest)
    decide(t, execution, "REJECTED")
    assert finished(t, arn_of(t, execution))["status"] == "FAILED"


def test_a_digest_prod_already_runs_ends_as_already_promoted_without_asking(
    stack: LocalStack, t: DeployedStack
) -> None:
    image = push(t, "repo-8")
    first = promote_fully(t, "repo-8", image)
    asked = len(t.ledger.list_approvals())

    again = start_promotion(t, "ecr-dev/repo-8", image.digest).rsplit(":", 1)[-1]

    desc = finished(t, arn_of(t, again))
    assert desc["status"] == "SUCCEEDED"
    states = view(t.client("stepfunctions"), arn_of(t, again)).states
    assert states["Already promoted"].status == "succeeded"
    assert states["Wait for TEST approval"].status == "not reached"
    assert len(t.ledger.list_approvals()) == asked  # no approval request
    promotion = t.ledger.get_promotion(again)
    assert promotion.outcome == "ALREADY_PROMOTED"
    assert promotion.reason == f"PROD already runs {image.digest} as v0.1"
    assert not [m for m in stack.inbox.messages() if again in json.dumps(m)]  # quiet
    assert stage(t, "ecr-test/repo-8") == ({"v0.1": image.digest}, image.digest)
    assert stage(t, "ecr-prod/repo-8") == ({"v0.1": image.digest}, image.digest)
    assert t.ledger.get_promotion(first).prod_version == "v0.1"
    assert len(t.ledger.releases("ecr-prod/repo-8")) == 1  # latest did not move again


def test_a_digest_rejected_for_prod_can_be_promoted_again(
    stack: LocalStack, t: DeployedStack
) -> None:
    # Given an image that reached TEST (its latest there) and was rejected for PROD
    image = push(t, "repo-14")
    first = run_to_approval(t, "repo-14", image)
    decide(t, first, "APPROVED")
    assert pending_approval(t, first, wait_seconds=120) is not None, "no PROD approval"
    decide(t, first, "REJECTED")
    assert finished(t, arn_of(t, first))["status"] == "FAILED"
    assert stage(t, "ecr-test/repo-14")[1] == image.digest

    # When the same digest is promoted again
    again = run_to_approval(t, "repo-14", image)

    # Then it asks again (TEST runs it, but no promotion of it is under way), and
    # promoting it keeps TEST's version and gives PROD its first
    decide(t, again, "APPROVED")
    assert pending_approval(t, again, wait_seconds=120) is not None, "no PROD approval"
    decide(t, again, "APPROVED")
    assert finished(t, arn_of(t, again))["status"] == "SUCCEEDED"
    assert stage(t, "ecr-test/repo-14") == ({"v0.1": image.digest}, image.digest)
    assert stage(t, "ecr-prod/repo-14") == ({"v0.1": image.digest}, image.digest)


def test_a_newer_image_supersedes_the_older_promotion_waiting_for_its_test_approval(
    stack: LocalStack, t: DeployedStack
) -> None:
    a, b = push(t, "repo-12"), push(t, "repo-12")
    older = run_to_approval(t, "repo-12", a)
    waiting = pending_approval(t, older)
    assert waiting is not None

    newer = run_to_approval(t, "repo-12", b)

    desc = finished(t, arn_of(t, older))
    assert (desc["status"], desc.get("error")) == ("FAILED", "PromotionSuperseded")
    states = view(t.client("stepfunctions"), arn_of(t, older)).states
    assert states["TEST approval superseded"].status == "succeeded"
    promotion = t.ledger.get_promotion(older)
    assert promotion.outcome == "SUPERSEDED"
    assert promotion.reason is not None
    assert newer in promotion.reason
    approval = t.ledger.get_approval(waiting.approval_id)
    assert (approval.status, approval.superseded_by) == ("SUPERSEDED", newer)
    assert approval.superseded_by_digest == b.digest
    page = requests.get(
        approval_link(t.output("ApprovalBaseUrl"), approval.approval_id), timeout=30
    )
    assert page.status_code == 410
    assert newer in page.text
    assert b.digest in page.text
    [note] = [m for m in stack.inbox.messages() if f"Promotion {older}: SUPERSEDED" in m["message"]]
    assert newer in note["message"]
    assert stage(t, "ecr-test/repo-12") == ({}, None)  # nothing copied by the older one
    assert pending_approval(t, newer) is not None  # the newer one waits for its own decision
    decide(t, newer, "REJECTED")
    assert finished(t, arn_of(t, newer))["error"] == "ApprovalRejected"


def test_a_promotion_past_its_approval_is_never_interrupted_and_prod_waits_supersede(
    t: DeployedStack,
) -> None:
    a, b = push(t, "repo-13"), push(t, "repo-13")
    older = run_to_approval(t, "repo-13", a)
    decide(t, older, "APPROVED")  # copying to TEST, testing, then waiting for PROD
    newer = run_to_approval(t, "repo-13", b)  # a TEST request: not the same approval
    at_prod = pending_approval(t, older, wait_seconds=120)
    assert at_prod is not None
    assert at_prod.stage == "PROD"
    assert stage(t, "ecr-test/repo-13") == ({"v0.1": a.digest}, a.digest)

    decide(t, newer, "APPROVED")  # the newer one copies, tests, then asks for PROD

    desc = finished(t, arn_of(t, older))
    assert (desc["status"], desc.get("error")) == ("FAILED", "PromotionSuperseded")
    assert t.ledger.get_promotion(older).outcome == "SUPERSEDED"
    assert t.ledger.get_approval(at_prod.approval_id).superseded_by == newer
    waiting = pending_approval(t, newer, wait_seconds=120)
    assert waiting is not None
    assert waiting.stage == "PROD"
    assert stage(t, "ecr-prod/repo-13") == ({}, None)  # the older one never reached PROD
    decide(t, newer, "APPROVED")
    assert finished(t, arn_of(t, newer))["status"] == "SUCCEEDED"
    assert stage(t, "ecr-prod/repo-13") == ({"v0.1": b.digest}, b.digest)
    assert stage(t, "ecr-test/repo-13")[1] == b.digest


def test_two_promotions_of_one_repository_at_once(t: DeployedStack) -> None:
    # With superseding off both wait for each approval, and both are approved at
    # once: the per-repository lock lets one copy at a time, `latest` never goes back.
    undo = _set_env(t, "WaitForApprovalFunction", SUPERSEDE_WAITING_PROMOTIONS="false")
    try:
        a, b = push(t, "repo-9"), push(t, "repo-9")
        first, second = run_to_approval(t, "repo-9", a), run_to_approval(t, "repo-9", b)

        decide(t, first, "APPROVED")
        decide(t, second, "APPROVED")
        for execution in (first, second):
            assert pending_approval(t, execution, wait_seconds=120) is not None
        for execution in (first, second):
            decide(t, execution, "APPROVED")
        for execution in (first, second):
            assert finished(t, arn_of(t, execution))["status"] == "SUCCEEDED"
    finally:
        undo()

    versions, latest = stage(t, "ecr-prod/repo-9")
    assert sorted(versions) == ["v0.1", "v0.2"]
    assert set(versions.values()) == {a.digest, b.digest}
    assert latest == versions["v0.2"]
    recorded = {t.ledger.get_promotion(e).prod_version for e in (first, second)}
    assert recorded == {"v0.1", "v0.2"}


def test_rollback_to_previous_named_and_nothing_left(t: DeployedStack) -> None:
    images = [push(t, "repo-10") for _ in range(3)]
    for image in images:
        promote_fully(t, "repo-10", image)
    prod = "ecr-prod/repo-10"
    sfn_done: Callable[[str], dict[str, Any]] = lambda arn: finished(t, arn)  # noqa: E731

    back = sfn_done(start_rollback(t, prod))
    assert back["status"] == "SUCCEEDED"
    assert json.loads(back["output"])["rollback"]["message"] == "Rollback from v0.3 to v0.2"
    assert stage(t, prod)[1] == images[1].digest

    named = sfn_done(start_rollback(t, prod, to="v0.1"))
    assert json.loads(named["output"])["rollback"]["message"] == "Rollback from v0.2 to v0.1"
    assert stage(t, prod)[1] == images[0].digest

    nothing = sfn_done(start_rollback(t, prod))
    assert (nothing["status"], nothing["error"]) == ("FAILED", "NothingToRollBack")
    versions, latest = stage(t, prod)
    assert latest == images[0].digest
    assert len(versions) == 3
    kinds = [(r.kind, r.version) for r in t.ledger.releases(prod)]
    assert kinds[:2] == [("ROLLBACK", "v0.1"), ("ROLLBACK", "v0.2")]


def test_rollback_of_a_repository_that_is_not_prod_is_refused(t: DeployedStack) -> None:
    desc = finished(t, start_rollback(t, "ecr-test/repo-1"))
    assert (desc["status"], desc["error"]) == ("FAILED", "BadInput")


def prod_versions(t: DeployedStack, name: str, count: int) -> list[SyntheticImage]:
    """PROD of `name` with versions v0.1..v0.<count>, latest at the newest."""
    images = [build_image(layers=1, layer_size=20_000 + n) for n in range(count)]
    for n, image in enumerate(images, 1):
        tags = [f"v0.{n}", "latest"] if n == count else [f"v0.{n}"]
        push_image(t.registry, f"ecr-prod/{name}", image, tags=tags)
    return images


def start_raw(t: DeployedStack, payload: dict[str, Any], name: str | None = None) -> str:
    """A direct start-execution of the rollback machine, as the AWS CLI would do it."""
    named = {"name": name} if name else {}
    started = t.client("stepfunctions").start_execution(
        stateMachineArn=t.rollback_arn, input=json.dumps(payload), **named
    )
    return str(started["executionArn"])


def test_rollbacks_from_the_same_version_move_prod_once(t: DeployedStack) -> None:
    # Given PROD at v0.3, and three rollbacks started together, each from v0.3
    images = prod_versions(t, "repo-15", 3)
    prod = "ecr-prod/repo-15"
    with ThreadPoolExecutor(3) as pool:
        arns = list(pool.map(lambda _: start_raw(t, {"repository": prod, "from": "v0.3"}), "abc"))
    ended = [finished(t, arn) for arn in arns]

    # Then one moved PROD to v0.2 and the others found it no longer at v0.3
    assert sorted(d["status"] for d in ended) == ["FAILED", "FAILED", "SUCCEEDED"]
    failed = [d for d in ended if d["status"] == "FAILED"]
    assert {d["error"] for d in failed} == {"LatestMoved"}
    assert all("v0.2" in d["cause"] and "v0.3" in d["cause"] for d in failed)
    assert stage(t, prod)[1] == images[1].digest
    assert [(r.kind, r.version) for r in t.ledger.releases(prod)] == [("ROLLBACK", "v0.2")]

    # And one sent later from v0.3 (a second click) changes nothing either
    late = finished(t, start_raw(t, {"repository": prod, "from": "v0.3"}))
    assert (late["status"], late["error"]) == ("FAILED", "LatestMoved")
    assert stage(t, prod)[1] == images[1].digest
    assert len(t.ledger.releases(prod)) == 1


def test_rollbacks_started_together_without_from_go_back_one_each(t: DeployedStack) -> None:
    images = prod_versions(t, "repo-16", 3)
    prod = "ecr-prod/repo-16"
    with ThreadPoolExecutor(2) as pool:
        arns = list(pool.map(lambda _: start_raw(t, {"repository": prod}), "ab"))
    ended = [finished(t, arn) for arn in arns]

    assert [d["status"] for d in ended] == ["SUCCEEDED", "SUCCEEDED"]
    moves = sorted(json.loads(d["output"])["rollback"]["message"] for d in ended)
    assert moves == ["Rollback from v0.2 to v0.1", "Rollback from v0.3 to v0.2"]
    assert stage(t, prod)[1] == images[0].digest
    releases = t.ledger.releases(prod)
    assert [(r.kind, r.version) for r in releases] == [("ROLLBACK", "v0.1"), ("ROLLBACK", "v0.2")]
    assert {r.execution for r in releases} == {arn.rsplit(":", 1)[-1] for arn in arns}


def test_a_named_rollback_works_when_latest_was_moved_outside_the_tool(t: DeployedStack) -> None:
    # Given PROD's latest moved by hand to an image that has no version tag
    images = prod_versions(t, "repo-17", 2)
    prod = "ecr-prod/repo-17"
    stray = build_image(layers=1, layer_size=21_000)
    push_image(t.registry, prod, stray, tags=["latest"])

    # Then "the previous version" is refused, saying what is there now
    unnamed = finished(t, start_rollback(t, prod))
    assert (unnamed["status"], unnamed["error"]) == ("FAILED", "LatestUntagged")
    assert stray.digest in unnamed["cause"]
    assert stage(t, prod)[1] == stray.digest
    # and so is a rollback from a version PROD does not run
    moved = finished(t, start_raw(t, {"repository": prod, "to": "v0.1", "from": "v0.2"}))
    assert (moved["status"], moved["error"]) == ("FAILED", "LatestMoved")
    assert stray.digest in moved["cause"]
    assert stage(t, prod)[1] == stray.digest

    # But a named version works, from the digest that is there now too
    named = finished(t, start_raw(t, {"repository": prod, "to": "v0.1", "from": stray.digest}))
    assert named["status"] == "SUCCEEDED", named.get("cause")
    out = json.loads(named["output"])["rollback"]
    assert (out["from"], out["to"]) == (None, "v0.1")
    assert stray.digest in out["message"]
    assert stage(t, prod)[1] == images[0].digest
    assert [(r.kind, r.version) for r in t.ledger.releases(prod)] == [("ROLLBACK", "v0.1")]

    push_image(t.registry, prod, stray, tags=["latest"])
    again = finished(t, start_rollback(t, prod, to="v0.2"))
    assert again["status"] == "SUCCEEDED", again.get("cause")
    assert stage(t, prod)[1] == images[1].digest


def test_unknown_repository_is_a_named_error(t: DeployedStack) -> None:
    desc = finished(t, start_promotion(t, "ecr-dev/nope", "sha256:" + "0" * 64))
    assert (desc["status"], desc["error"]) == ("FAILED", "RepositoryNotConfigured")


def test_no_function_logged_a_task_token(stack: LocalStack, t: DeployedStack) -> None:
    tokens = [a.task_token.get_secret_value() for a in t.ledger.list_approvals()]
    logs = "".join(p.read_text() for p in Path(stack.state_dir, "aws").rglob("*.log"))
    assert tokens
    assert logs
    assert not [tok for tok in tokens if tok in logs]
