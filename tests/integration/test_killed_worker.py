"""A Lambda worker killed in the middle of a copy, on the real local stack.

The copy function reaches the registry through a proxy that holds its request to move
the stage's `latest` (so the version tag is written, `latest` is not; or `latest` is
moved and the function does not learn it) and names the sandbox process that sent
it; the test kills that process with SIGKILL, as Lambda kills a runtime that runs out
of memory. The execution must go on after a retry, the stage must end with one
version for the digest and `latest` on it (and PROD with one release record), and
the dead holder's lock must not keep the next holder waiting longer than a short
lease.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support.holding_proxy import HoldingProxy

from image_cicd.aws.operations import approve, pending_approval, start_promotion
from image_cicd.aws.operations import wait_finished as finished
from image_cicd.aws.stack import DeployedStack
from image_cicd.aws.wiring import LEASE_SECONDS  # how long a dead holder keeps its lock
from image_cicd.local.stack import LocalStack
from image_cicd.promotion.versions import VersionScheme, read_stage
from image_cicd.registry.synthetic import build_image, push_image

NAME = "repo-1"
TEST_REPO = f"ecr-test/{NAME}"
COPY_FUNCTION = "image-cicd-RetagAndCopyManifestFunction"
PROMOTE_FUNCTION = "image-cicd-PromoteToProdFunction"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    with LocalStack(
        tmp_path_factory.mktemp("stack"), parameters={"Repositories": f"{NAME},repo-2"}
    ) as s:
        yield s


@pytest.fixture
def proxy(stack: LocalStack) -> Iterator[HoldingProxy]:
    assert stack.registry is not None
    with HoldingProxy(stack.registry.url) as running:
        yield running


def _route_through(t: DeployedStack, function: str, url: str) -> Callable[[], None]:
    lam = t.client("lambda")
    before = lam.get_function_configuration(FunctionName=function)["Environment"]
    lam.update_function_configuration(
        FunctionName=function,
        Environment={"Variables": {**before["Variables"], "REGISTRY_URL": url}},
    )
    return lambda: lam.update_function_configuration(FunctionName=function, Environment=before)


def _lock(t: DeployedStack, repository: str) -> dict[str, Any] | None:
    item = t.client("dynamodb").get_item(
        TableName=t.output("LedgerTableName"),
        Key={"pk": {"S": f"LOCK#{repository}"}, "sk": {"S": "LOCK"}},
        ConsistentRead=True,
    )
    found: dict[str, Any] | None = item.get("Item")
    return found


def _lease_until(t: DeployedStack, repository: str) -> float:
    item = _lock(t, repository)
    assert item is not None, f"nobody holds the lock on {repository}"
    return float(item["lease_until"]["N"])


def _failed_tasks(t: DeployedStack, arn: str) -> list[str]:
    history = t.client("stepfunctions").get_execution_history(executionArn=arn)["events"]
    return [e["taskFailedEventDetails"]["error"] for e in history if e["type"] == "TaskFailed"]


def test_a_worker_killed_after_writing_the_version_tag_is_retried_and_finishes_it(
    t: DeployedStack, proxy: HoldingProxy
) -> None:
    image = build_image(layers=2, layer_size=30_000)
    push_image(t.registry, f"ecr-dev/{NAME}", image, tags=["candidate"])
    arn = start_promotion(t, f"ecr-dev/{NAME}", image.digest)
    execution = arn.rsplit(":", 1)[-1]
    assert pending_approval(t, execution, wait_seconds=120) is not None, "no TEST approval"

    held = proxy.hold("PUT", f"/v2/{TEST_REPO}/manifests/latest")
    undo = _route_through(t, COPY_FUNCTION, proxy.url)
    try:
        _, answer = approve(t, execution, "APPROVED", "ana@example.com", comment="go")
        assert answer.status == 200, answer.page
        held.wait(timeout=120)

        # The copy has tagged the digest and waits to move `latest`, holding the lock,
        before = read_stage(t.registry, TEST_REPO, VersionScheme())
        assert (before.versions, before.latest) == ({"v0.1": image.digest}, None)
        # which its heartbeat keeps while it lives.
        first = _lease_until(t, TEST_REPO)
        deadline = time.monotonic() + 3 * LEASE_SECONDS
        while _lease_until(t, TEST_REPO) == first and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _lease_until(t, TEST_REPO) > first, "the working holder's lease was not renewed"

        sandbox = held.sender(proxy.port)
        assert COPY_FUNCTION in Path(f"/proc/{sandbox}/cmdline").read_bytes().decode()
        os.kill(sandbox, signal.SIGKILL)
        killed_at = time.time()
        proxy.release_all()

        # The dead holder's lock is free within one short lease, not after minutes.
        lock = _lock(t, TEST_REPO)
        assert lock is None or float(lock["lease_until"]["N"]) <= killed_at + LEASE_SECONDS

        assert pending_approval(t, execution, wait_seconds=180) is not None, "not retried"
    finally:
        proxy.release_all()
        undo()

    # Retried once for the dead runtime, never kept waiting for the dead holder's lock.
    assert _failed_tasks(t, arn) == ["Runtime.ExitError"]
    after = read_stage(t.registry, TEST_REPO, VersionScheme())
    assert (after.versions, after.latest) == ({"v0.1": image.digest}, image.digest)
    promotion = t.ledger.get_promotion(execution)
    assert promotion.test_version == "v0.1"

    _, answer = approve(t, execution, "REJECTED", "ana@example.com", comment="enough")
    assert answer.status == 200, answer.page
    assert finished(t, arn)["status"] == "FAILED"
    assert _lock(t, TEST_REPO) is None


def test_a_worker_killed_after_moving_prods_latest_is_retried_and_records_the_release(
    t: DeployedStack, proxy: HoldingProxy
) -> None:
    name, prod = "repo-2", "ecr-prod/repo-2"
    image = build_image(layers=2, layer_size=30_000)
    push_image(t.registry, f"ecr-dev/{name}", image, tags=["candidate"])
    arn = start_promotion(t, f"ecr-dev/{name}", image.digest)
    execution = arn.rsplit(":", 1)[-1]
    assert pending_approval(t, execution, wait_seconds=120) is not None, "no TEST approval"
    _, answer = approve(t, execution, "APPROVED", "ana@example.com", comment="test it")
    assert answer.status == 200, answer.page
    assert pending_approval(t, execution, wait_seconds=120) is not None, "no PROD approval"

    held = proxy.hold("PUT", f"/v2/{prod}/manifests/latest", forward=True)
    undo = _route_through(t, PROMOTE_FUNCTION, proxy.url)
    try:
        _, answer = approve(t, execution, "APPROVED", "ana@example.com", comment="ship it")
        assert answer.status == 200, answer.page
        held.wait(timeout=120)
        # PROD runs the image; the function has not heard so, nor recorded the release.
        before = read_stage(t.registry, prod, VersionScheme())
        assert (before.versions, before.latest) == ({"v0.1": image.digest}, image.digest)
        os.kill(held.sender(proxy.port), signal.SIGKILL)
        proxy.release_all()
        desc = finished(t, arn, timeout=180)
    finally:
        proxy.release_all()
        undo()

    assert desc["status"] == "SUCCEEDED", desc.get("cause")
    assert _failed_tasks(t, arn) == ["Runtime.ExitError"]
    after = read_stage(t.registry, prod, VersionScheme())
    assert (after.versions, after.latest) == ({"v0.1": image.digest}, image.digest)
    releases = t.ledger.releases(prod)
    assert [(r.kind, r.version, r.digest, r.execution) for r in releases] == [
        ("PROMOTION", "v0.1", image.digest, execution)
    ]
    assert t.ledger.get_promotion(execution).prod_version == "v0.1"
    assert _lock(t, prod) is None
