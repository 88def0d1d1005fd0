"""Built-in image checks, the scan gate and the repository's test machine (fakes only)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any, cast

import boto3
import pytest
from botocore.exceptions import ClientError
from support.aws import moto_aws
from support.fakes import FakeRegistry

from image_cicd.aws.ecr import EcrScanFindings
from image_cicd.ledger.records import CheckResult
from image_cicd.promotion.checks import (
    MAX_POLL_SECONDS,
    builtin_checks,
    poll_tests,
    start_tests,
)
from image_cicd.promotion.errors import ScanInProgress
from image_cicd.promotion.payloads import ImageFacts, Plan, StageCopy, TestRun
from image_cicd.promotion.settings import RepositoryTests, ScanPolicy
from image_cicd.registry.client import RegistryClient
from image_cicd.registry.media import OCI_INDEX, Manifest
from image_cicd.registry.synthetic import PlatformImage, SyntheticImage, build_image

REPO = "ecr-test/repo-1"
MACHINE = "arn:aws:states:us-east-1:123456789012:stateMachine:repo-1-tests"
T0 = 1_767_000_000.0


# -------------------------------------------------------------------- fakes


class FakeScans:
    def __init__(self, counts: dict[str, int] | None = None, *, running: bool = False) -> None:
        self.counts = counts
        self.running = running
        self.asked: list[tuple[str, str]] = []

    def severity_counts(self, repository: str, digest: str) -> dict[str, int] | None:
        self.asked.append((repository, digest))
        if self.running:
            raise ScanInProgress(f"the scan of {repository}@{digest[:19]} is still running")
        return self.counts


class FakeMachines:
    """A test state machine whose executions report the statuses given, in order."""

    def __init__(self, *statuses: tuple[str, str]) -> None:
        self.statuses = list(statuses)
        self.started: list[tuple[str, str, dict[str, Any]]] = []
        self.looked_at: list[str] = []
        self.stopped: list[str] = []

    def stop(self, execution_arn: str, cause: str) -> None:
        self.stopped.append(execution_arn)

    def start(self, state_machine_arn: str, name: str, payload: dict[str, Any]) -> str:
        self.started.append((state_machine_arn, name, payload))
        return f"arn:aws:states:us-east-1:123456789012:execution:repo-1-tests:{name}"

    def status(self, execution_arn: str) -> tuple[str, str]:
        self.looked_at.append(execution_arn)
        return self.statuses.pop(0)


def image(**options: Any) -> SyntheticImage:
    options.setdefault("layer_size", 2000)
    options.setdefault("seed", 7)
    return build_image(**options)


def registry_for(*images: SyntheticImage) -> RegistryClient:
    return cast(RegistryClient, FakeRegistry(REPO, *images))


def check(results: list[CheckResult], name: str) -> CheckResult:
    found = [r for r in results if r.name == name]
    assert len(found) == 1, f"no single check {name!r} in {[r.name for r in results]}"
    return found[0]


def run_checks(
    img: SyntheticImage, config: RepositoryTests, scans: FakeScans | None = None
) -> list[CheckResult]:
    return builtin_checks(registry_for(img), REPO, img.digest, config, scans or FakeScans())


def index_of(*entries: tuple[PlatformImage, str]) -> SyntheticImage:
    """An index of these platform images, each under the platform given as
    `os/architecture[/variant]` (as buildah and buildx write `linux/arm64/v8`)."""
    manifests = [
        {
            "mediaType": p.manifest.media_type,
            "digest": p.manifest.digest,
            "size": len(p.manifest.data),
            "platform": dict(zip(("os", "architecture", "variant"), name.split("/"), strict=False)),
        }
        for p, name in entries
    ]
    platforms = tuple(p for p, _ in entries)
    index = Manifest.from_bytes(
        json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}).encode()
    )
    return SyntheticImage(index, platforms)


def plan_and_copy(img: SyntheticImage) -> tuple[Plan, StageCopy]:
    plan = Plan(
        execution="exec-1",
        name="repo-1",
        digest=img.digest,
        source="ecr-dev/repo-1",
        test=REPO,
        prod="ecr-prod/repo-1",
        image=ImageFacts(media_type=img.manifest.media_type, size=img.size),
        approval_timeout_seconds=3600,
    )
    copy = StageCopy(
        repository=REPO, digest=img.digest, version="v0.3", new_version=True, latest_moved=True
    )
    return plan, copy


# ----------------------------------------------------------- built-in checks


def test_given_no_configured_check_then_only_the_content_check_runs() -> None:
    img = image(layers=3)

    results = run_checks(img, RepositoryTests())

    size = sum(b.size for b in img.platforms[0].blobs)
    assert results == [
        CheckResult(
            name="content",
            passed=True,
            detail=f"1 manifest(s) and 4 blob(s) ({size:,} bytes) read from the registry "
            "and hashed: every one matches its digest",
        )
    ]


def test_given_an_index_then_the_content_check_counts_every_manifest() -> None:
    img = image(platforms=("linux/amd64", "linux/arm64"), layers=1)

    results = run_checks(img, RepositoryTests())

    assert results[0].detail.startswith("3 manifest(s) and 4 blob(s) (")


def test_given_blobs_that_do_not_match_their_digests_then_the_content_check_fails_alone() -> None:
    img = image(layers=5, labels={"a": "b"})
    fake = FakeRegistry(REPO, img)
    layers = [layer.digest for layer in img.platforms[0].layers]
    for digest in layers:
        fake.blobs[digest] = fake.blobs[digest][:-1] + b"?"
    config = RepositoryTests(labels=["a"], non_root=True)

    results = builtin_checks(cast(RegistryClient, fake), REPO, img.digest, config, FakeScans())

    [content] = results
    assert not content.passed
    assert content.detail.startswith(f"5 of 6 blob(s) do not match their digest in {REPO}: ")
    assert [d for d in layers if d in content.detail] == layers[:3]
    assert content.detail.endswith("; and 2 more")


def test_given_a_blob_the_registry_does_not_have_then_the_content_check_names_it() -> None:
    img = image(layers=2)
    fake = FakeRegistry(REPO, img)
    missing = img.platforms[0].layers[0].digest
    del fake.blobs[missing]

    [content] = builtin_checks(
        cast(RegistryClient, fake), REPO, img.digest, RepositoryTests(), FakeScans()
    )

    assert not content.passed
    assert f"blob {missing}: not in {REPO}" in content.detail


def test_given_all_required_platforms_then_the_platform_check_passes() -> None:
    img = image(platforms=("linux/amd64", "linux/arm64"), layers=1)

    result = check(
        run_checks(img, RepositoryTests(platforms=["linux/arm64", "linux/amd64"])), "platforms"
    )

    assert result == CheckResult(
        name="platforms", passed=True, detail="has linux/amd64, linux/arm64"
    )


def test_given_a_missing_platform_then_the_platform_check_fails_and_names_it() -> None:
    img = image(platforms=("linux/amd64",), layers=1)

    result = check(
        run_checks(img, RepositoryTests(platforms=["linux/amd64", "linux/arm64", "windows/amd64"])),
        "platforms",
    )

    assert not result.passed
    assert result.detail == "has linux/amd64; missing linux/arm64, windows/amd64"


def test_given_a_single_platform_image_then_its_platform_comes_from_the_config() -> None:
    img = image(platforms=("linux/arm64",), layers=1)

    result = check(run_checks(img, RepositoryTests(platforms=["linux/arm64"])), "platforms")

    assert result.passed
    assert result.detail == "has linux/arm64"


@pytest.mark.parametrize(
    ("required", "has"),
    [
        ("linux/arm64", "linux/arm64/v8"),
        ("linux/arm64/v8", "linux/arm64"),
        ("linux/aarch64", "linux/arm64/v8"),
        ("linux/arm", "linux/arm/v7"),
        ("linux/arm/v7", "linux/arm"),
        ("linux/arm/7", "linux/armhf"),
        ("linux/amd64", "linux/amd64/v1"),
        ("linux/x86_64", "linux/amd64"),
        ("Linux/AMD64", "linux/amd64"),
    ],
)
def test_platforms_match_as_containerd_normalises_them_both_ways(required: str, has: str) -> None:
    """containerd's platforms.Normalize: arm64 = arm64/v8, arm = arm/v7, amd64 = amd64/v1."""
    other = image(platforms=("linux/s390x",), layers=1).platforms[0]
    img = index_of((image(layers=1).platforms[0], has), (other, "linux/s390x"))

    result = check(
        run_checks(img, RepositoryTests(platforms=[required, "linux/s390x"])), "platforms"
    )

    assert result == CheckResult(name="platforms", passed=True, detail=f"has {has}, linux/s390x")


@pytest.mark.parametrize(
    ("required", "has"),
    [
        ("linux/arm/v6", "linux/arm/v7"),
        ("linux/arm64/v9", "linux/arm64/v8"),
        ("linux/arm64", "linux/arm"),
    ],
)
def test_platforms_that_differ_after_normalising_do_not_match(required: str, has: str) -> None:
    img = index_of((image(layers=1).platforms[0], has))

    result = check(run_checks(img, RepositoryTests(platforms=[required])), "platforms")

    assert result == CheckResult(
        name="platforms", passed=False, detail=f"has {has}; missing {required}"
    )


def test_the_size_limit_applies_to_each_platform_not_to_their_sum() -> None:
    img = image(platforms=("linux/amd64", "linux/arm64"), layers=1, layer_size=300_000)
    each = [len(p.manifest.data) + sum(b.size for b in p.blobs) for p in img.platforms]

    result = check(run_checks(img, RepositoryTests(max_size_mb=0.5)), "size")

    assert img.size > 500_000 > max(each)
    assert result == CheckResult(
        name="size",
        passed=True,
        detail=f"linux/amd64 {each[0] / 1e6:.1f} MB, linux/arm64 {each[1] / 1e6:.1f} MB "
        "(limit 0.5 MB per platform)",
    )


def test_given_one_platform_over_the_size_limit_then_the_size_check_names_it() -> None:
    small = image(layers=1, layer_size=100_000).platforms[0]
    large = image(platforms=("linux/arm64",), layers=2, layer_size=300_000).platforms[0]
    img = index_of((small, "linux/amd64"), (large, "linux/arm64/v8"))

    result = check(run_checks(img, RepositoryTests(max_size_mb=0.5)), "size")

    assert result == CheckResult(
        name="size",
        passed=False,
        detail="linux/amd64 0.1 MB, linux/arm64/v8 0.6 MB (limit 0.5 MB per platform); "
        "over the limit: linux/arm64/v8",
    )


def test_given_an_image_over_the_size_limit_then_the_size_check_fails() -> None:
    img = image(layers=2, layer_size=300_000)

    result = check(run_checks(img, RepositoryTests(max_size_mb=0.5)), "size")

    assert img.size > 500_000
    assert result == CheckResult(
        name="size",
        passed=False,
        detail="linux/amd64 0.6 MB (limit 0.5 MB per platform); over the limit: linux/amd64",
    )


def test_given_an_image_within_the_size_limit_then_the_size_check_passes() -> None:
    img = image(layers=2, layer_size=300_000)

    result = check(run_checks(img, RepositoryTests(max_size_mb=1)), "size")

    assert result == CheckResult(
        name="size", passed=True, detail="linux/amd64 0.6 MB (limit 1 MB per platform)"
    )


def test_given_required_labels_then_each_is_a_check_of_its_own() -> None:
    source = "org.opencontainers.image.source"
    img = image(platforms=("linux/amd64", "linux/arm64"), layers=1, labels={source: "https://x"})

    results = run_checks(img, RepositoryTests(labels=[source, "team"]))

    assert check(results, f"label {source}") == CheckResult(
        name=f"label {source}", passed=True, detail="present"
    )
    missing = check(results, "label team")
    assert not missing.passed
    assert missing.detail == "missing on linux/amd64, linux/arm64"


def test_an_empty_label_value_counts_as_missing() -> None:
    labelled = image(layers=1, labels={"team": "a"}).platforms[0]
    empty = image(platforms=("linux/arm64",), layers=1, labels={"team": ""}).platforms[0]
    unlabelled = image(platforms=("linux/arm",), layers=1).platforms[0]
    img = index_of((labelled, "linux/amd64"), (empty, "linux/arm64"), (unlabelled, "linux/arm/v7"))

    result = check(run_checks(img, RepositoryTests(labels=["team"])), "label team")

    assert result == CheckResult(
        name="label team",
        passed=False,
        detail="missing on linux/arm/v7; empty on linux/arm64",
    )


def test_given_one_platform_running_as_root_then_the_non_root_check_names_it() -> None:
    user = image(layers=1, user="1000").platforms[0]
    root = image(platforms=("linux/arm64",), layers=1, user="root").platforms[0]
    unset = image(platforms=("linux/arm",), layers=1, user="").platforms[0]
    img = index_of((user, "linux/amd64"), (root, "linux/arm64/v8"), (unset, "linux/arm/v7"))

    result = check(run_checks(img, RepositoryTests(non_root=True)), "non-root user")

    assert result == CheckResult(
        name="non-root user",
        passed=False,
        detail="runs as root on linux/arm64/v8; as (unset) on linux/arm/v7",
    )


def test_given_platforms_with_different_users_then_the_non_root_check_names_each() -> None:
    first = image(layers=1, user="1000").platforms[0]
    second = image(platforms=("linux/arm64",), layers=1, user="app").platforms[0]
    img = index_of((first, "linux/amd64"), (second, "linux/arm64"))

    result = check(run_checks(img, RepositoryTests(non_root=True)), "non-root user")

    assert result == CheckResult(
        name="non-root user", passed=True, detail="user 1000 on linux/amd64; app on linux/arm64"
    )


@pytest.mark.parametrize("user", ["", "root", "0", "0:0", "root:root"])
def test_given_an_image_running_as_root_then_the_non_root_check_fails(user: str) -> None:
    img = image(layers=1, user=user)

    result = check(run_checks(img, RepositoryTests(non_root=True)), "non-root user")

    assert not result.passed
    assert result.detail == f"runs as {user or '(unset)'} on linux/amd64"


def test_given_an_image_with_a_user_then_the_non_root_check_passes() -> None:
    img = image(layers=1, user="1000:1000")

    result = check(run_checks(img, RepositoryTests(non_root=True)), "non-root user")

    assert result == CheckResult(
        name="non-root user", passed=True, detail="user 1000:1000 on linux/amd64"
    )


def test_non_root_is_not_checked_unless_asked() -> None:
    img = image(layers=1, user="root")

    assert [r.name for r in run_checks(img, RepositoryTests())] == ["content"]


# ----------------------------------------------------------------- the scan


def test_given_findings_over_the_threshold_then_the_scan_check_fails_and_says_which() -> None:
    img = image(layers=1)
    scans = FakeScans({"CRITICAL": 1, "HIGH": 5, "LOW": 9})
    config = RepositoryTests(scan=ScanPolicy(max={"CRITICAL": 0, "HIGH": 2, "MEDIUM": 0}))

    result = check(run_checks(img, config, scans), "scan findings")

    assert scans.asked == [(REPO, img.digest)]
    assert not result.passed
    assert result.detail == (
        "findings: CRITICAL 1, HIGH 5, LOW 9; over the limit: CRITICAL 1 > 0; HIGH 5 > 2"
    )


def test_given_findings_within_the_threshold_then_the_scan_check_passes() -> None:
    img = image(layers=1)
    config = RepositoryTests(scan=ScanPolicy(max={"CRITICAL": 0, "HIGH": 2}))

    result = check(run_checks(img, config, FakeScans({"HIGH": 2, "MEDIUM": 40})), "scan findings")

    assert result == CheckResult(
        name="scan findings", passed=True, detail="findings: HIGH 2, MEDIUM 40"
    )


def test_given_no_findings_at_all_then_the_scan_check_passes() -> None:
    img = image(layers=1)

    result = check(
        run_checks(img, RepositoryTests(scan=ScanPolicy()), FakeScans({})), "scan findings"
    )

    assert result == CheckResult(name="scan findings", passed=True, detail="findings: none")


@pytest.mark.parametrize(("policy", "passed"), [("pass", True), ("fail", False)])
def test_given_no_scan_then_the_unavailable_policy_decides(policy: str, passed: bool) -> None:
    img = image(layers=1)
    config = RepositoryTests(scan=ScanPolicy.model_validate({"unavailable": policy}))

    result = check(run_checks(img, config, FakeScans(None)), "scan findings")

    assert result.passed is passed
    assert result.detail == f"no scan available for this image; policy: {policy}"


def test_given_a_scan_in_progress_then_scan_in_progress_is_raised_for_a_retry() -> None:
    img = image(layers=1)

    with pytest.raises(ScanInProgress, match="still running"):
        run_checks(img, RepositoryTests(scan=ScanPolicy()), FakeScans(running=True))


def test_the_scan_is_not_asked_for_unless_configured() -> None:
    img = image(layers=1)
    scans = FakeScans(running=True)

    run_checks(img, RepositoryTests(non_root=True), scans)

    assert scans.asked == []


# ---------------------------------------------------------------- ECR scans


class FakeEcr:
    """describe_image_scan_findings answering with a given response or error code."""

    exceptions = SimpleNamespace(ClientError=ClientError)

    def __init__(self, response: dict[str, Any] | None = None, error: str | None = None) -> None:
        self.response = response or {}
        self.error = error

    def describe_image_scan_findings(self, **kwargs: Any) -> dict[str, Any]:
        if self.error:
            raise ClientError({"Error": {"Code": self.error, "Message": "x"}}, "Describe")
        return self.response


@pytest.fixture
def ecr(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    with moto_aws(monkeypatch):
        yield boto3.client("ecr", region_name="us-east-1")


def test_ecr_scan_of_an_image_that_does_not_exist_is_unavailable(ecr: Any) -> None:
    ecr.create_repository(repositoryName=REPO)

    assert EcrScanFindings(ecr).severity_counts(REPO, "sha256:" + "a" * 64) is None


def test_ecr_scan_in_a_repository_that_does_not_exist_is_unavailable(ecr: Any) -> None:
    assert EcrScanFindings(ecr).severity_counts("ecr-test/nope", "sha256:" + "a" * 64) is None


def test_ecr_image_never_scanned_is_unavailable(ecr: Any) -> None:
    ecr.create_repository(repositoryName=REPO)
    img = image(layers=1)
    pushed = ecr.put_image(
        repositoryName=REPO,
        imageManifest=img.manifest.data.decode(),
        imageManifestMediaType=img.manifest.media_type,
    )
    digest = pushed["image"]["imageId"]["imageDigest"]

    assert EcrScanFindings(ecr).severity_counts(REPO, digest) is None


@pytest.mark.parametrize("status", ["IN_PROGRESS", "PENDING"])
def test_ecr_scan_still_running_raises_scan_in_progress(status: str) -> None:
    scans = EcrScanFindings(FakeEcr({"imageScanStatus": {"status": status}}))

    with pytest.raises(ScanInProgress):
        scans.severity_counts(REPO, "sha256:" + "a" * 64)


@pytest.mark.parametrize("status", ["COMPLETE", "ACTIVE"])
def test_ecr_scan_complete_gives_counts_per_severity(status: str) -> None:
    response = {
        "imageScanStatus": {"status": status},
        "imageScanFindings": {"findingSeverityCounts": {"CRITICAL": 2, "LOW": 1}},
    }

    counts = EcrScanFindings(FakeEcr(response)).severity_counts(REPO, "sha256:" + "a" * 64)

    assert counts == {"CRITICAL": 2, "LOW": 1}


@pytest.mark.parametrize("status", ["FAILED", "UNSUPPORTED_IMAGE", "SCAN_ELIGIBILITY_EXPIRED"])
def test_ecr_scan_that_cannot_give_findings_is_unavailable(status: str) -> None:
    scans = EcrScanFindings(FakeEcr({"imageScanStatus": {"status": status}}))

    assert scans.severity_counts(REPO, "sha256:" + "a" * 64) is None


def test_ecr_errors_other_than_not_found_propagate() -> None:
    scans = EcrScanFindings(FakeEcr(error="AccessDeniedException"))

    with pytest.raises(ClientError):
        scans.severity_counts(REPO, "sha256:" + "a" * 64)


# ------------------------------------------------------- start and poll tests


def test_given_no_test_machine_when_started_then_passed_immediately() -> None:
    img = image(layers=1)
    plan, copy = plan_and_copy(img)
    machines = FakeMachines()

    run = start_tests(
        plan,
        copy,
        RepositoryTests(non_root=True),
        registry_for(img),
        FakeScans(),
        machines,
        image_uri="x",
        now=T0,
    )

    assert machines.started == []
    assert run.status == "PASSED"
    assert run.passed
    assert run.summary == "2 check(s) passed"
    assert run.execution_arn is None
    assert run.duration_seconds == 0.0
    assert run.started_at == T0


def test_given_a_failing_built_in_check_when_started_then_the_machine_is_not_started() -> None:
    img = image(layers=1, user="root")
    plan, copy = plan_and_copy(img)
    machines = FakeMachines()
    config = RepositoryTests(non_root=True, state_machine_arn=MACHINE)

    run = start_tests(
        plan, copy, config, registry_for(img), FakeScans(), machines, image_uri="x", now=T0
    )

    assert machines.started == []
    assert run.status == "FAILED"
    assert not run.passed
    assert run.summary == "failed: non-root user (runs as root on linux/amd64)"


def test_given_a_test_machine_when_started_then_it_runs_against_the_test_image() -> None:
    img = image(layers=1)
    plan, copy = plan_and_copy(img)
    machines = FakeMachines()
    config = RepositoryTests(state_machine_arn=MACHINE, poll_seconds=15)
    uri = f"registry.example/{REPO}@{img.digest}"

    run = start_tests(
        plan, copy, config, registry_for(img), FakeScans(), machines, image_uri=uri, now=T0
    )

    assert machines.started == [
        (
            MACHINE,
            "exec-1-tests",
            {
                "repository": REPO,
                "digest": img.digest,
                "version": "v0.3",
                "image": uri,
                "execution": "exec-1",
            },
        )
    ]
    assert run.status == "RUNNING"
    assert not run.passed
    assert run.execution_arn == (
        "arn:aws:states:us-east-1:123456789012:execution:repo-1-tests:exec-1-tests"
    )
    assert run.poll_seconds == 15
    assert run.started_at == T0
    assert [c.name for c in run.checks] == ["content"]


def test_the_test_execution_name_fits_step_functions_80_characters() -> None:
    img = image(layers=1)
    plan, copy = plan_and_copy(img)
    plan = plan.model_copy(update={"execution": "e" * 80})
    machines = FakeMachines()
    config = RepositoryTests(state_machine_arn=MACHINE)

    start_tests(plan, copy, config, registry_for(img), FakeScans(), machines, image_uri="x")

    assert machines.started[0][1] == "e" * 80


def running(checks: list[CheckResult] | None = None) -> TestRun:
    return TestRun(
        passed=False,
        status="RUNNING",
        checks=checks or [CheckResult(name="content", passed=True)],
        execution_arn="arn:aws:states:us-east-1:123456789012:execution:repo-1-tests:e",
        poll_seconds=10,
        started_at=T0,
    )


def test_given_a_running_machine_when_polled_before_the_timeout_then_still_running() -> None:
    run = running()
    machines = FakeMachines(("RUNNING", ""))

    again = poll_tests(run, machines, timeout_seconds=600, now=T0 + 599)

    assert machines.looked_at == [run.execution_arn]
    assert again == run.model_copy(update={"poll_seconds": 15})  # the next wait is longer


def test_the_poll_interval_grows_to_its_bound_and_stays_there() -> None:
    machines = FakeMachines(*[("RUNNING", "")] * 20)
    run, waits = running(), []
    for _ in range(20):
        run = poll_tests(run, machines, timeout_seconds=10**6, now=T0 + 1)
        waits.append(run.poll_seconds)

    assert waits[:4] == [15, 23, 35, 53]
    assert waits == sorted(waits)
    assert waits[-1] == MAX_POLL_SECONDS == 300


def test_given_a_machine_that_succeeded_when_polled_then_passed() -> None:
    machines = FakeMachines(("RUNNING", ""), ("SUCCEEDED", '{"ok": true}'))
    run = poll_tests(running(), machines, timeout_seconds=600, now=T0 + 10)

    done = poll_tests(run, machines, timeout_seconds=600, now=T0 + 20)

    assert done.status == "PASSED"
    assert done.passed
    assert done.checks[-1] == CheckResult(
        name="test state machine", passed=True, detail="succeeded"
    )
    assert done.summary == "2 check(s) passed"
    assert done.duration_seconds == 20
    assert done.started_at == T0


def test_given_a_machine_that_failed_when_polled_then_failed_with_its_error() -> None:
    machines = FakeMachines(("FAILED", "SmokeTestFailed"))

    done = poll_tests(running(), machines, timeout_seconds=600, now=T0 + 30)

    assert done.status == "FAILED"
    assert not done.passed
    assert done.checks[-1] == CheckResult(
        name="test state machine", passed=False, detail="failed: SmokeTestFailed"
    )
    assert done.summary == "failed: test state machine (failed: SmokeTestFailed)"


@pytest.mark.parametrize("status", ["TIMED_OUT", "ABORTED"])
def test_given_a_machine_that_stopped_otherwise_when_polled_then_failed(status: str) -> None:
    done = poll_tests(running(), FakeMachines((status, "")), timeout_seconds=600, now=T0 + 1)

    assert done.status == "FAILED"
    assert done.checks[-1].detail == f"{status.lower()}: "


def test_given_a_machine_still_running_after_the_timeout_when_polled_then_timed_out() -> None:
    machines = FakeMachines(("RUNNING", ""))
    done = poll_tests(running(), machines, timeout_seconds=600, now=T0 + 600)

    assert done.status == "FAILED"
    assert done.checks[-1] == CheckResult(
        name="test state machine",
        passed=False,
        detail="timed_out: still running after 600 s; stopped",
    )
    assert machines.stopped == [running().execution_arn]
    assert done.duration_seconds == 600


def test_a_long_error_from_the_test_machine_is_cut_to_500_characters() -> None:
    done = poll_tests(running(), FakeMachines(("FAILED", "x" * 5000)), timeout_seconds=9, now=T0)

    assert done.checks[-1].detail == "failed: " + "x" * 500


def test_a_finished_run_results_carry_every_check() -> None:
    done = poll_tests(running(), FakeMachines(("SUCCEEDED", "")), timeout_seconds=9, now=T0 + 1)

    results = done.results()

    assert results.passed
    assert [c.name for c in results.checks] == ["content", "test state machine"]
    assert json.loads(results.model_dump_json())["passed"] is True


def test_buildx_attestation_manifests_are_not_checked_as_platforms() -> None:
    """`docker buildx` adds an `unknown/unknown` manifest per platform (provenance):
    no user, no labels. It is not a runnable image, so no check applies to it."""
    runnable = image(platforms=("linux/amd64", "linux/arm64"), layers=1, labels={"team": "a"})
    attestation = image(platforms=("unknown/unknown",), index=False, layers=1, user="")
    entries = [
        {
            "mediaType": p.manifest.media_type,
            "digest": p.manifest.digest,
            "size": len(p.manifest.data),
            "platform": dict(zip(("os", "architecture"), p.platform.split("/"), strict=True)),
        }
        for p in (*runnable.platforms, *attestation.platforms)
    ]
    index = Manifest.from_bytes(
        json.dumps(
            {"schemaVersion": 2, "mediaType": runnable.manifest.media_type, "manifests": entries}
        ).encode()
    )
    img = SyntheticImage(index, (*runnable.platforms, *attestation.platforms))

    results = run_checks(
        img,
        RepositoryTests(platforms=["linux/amd64", "linux/arm64"], labels=["team"], non_root=True),
    )

    assert all(r.passed for r in results), results
    assert check(results, "platforms").detail == "has linux/amd64, linux/arm64"
