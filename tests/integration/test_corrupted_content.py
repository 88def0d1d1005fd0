"""A layer corrupted in the registry's storage never reaches PROD: the promotion state
machine, run by moto's ASL interpreter with the real Lambda handlers against the real
registry, stops before PROD.

Within one registry the copy to TEST mounts (no byte moves), so the bad bytes reach TEST
and the content check of Run tests is what stops them. Behind an ECR-flavoured front
(mounts refused, as with BLOB_MOUNTING off) the copy streams the blob and its digest
check stops it at Copy to TEST already.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from support.registry_storage import corrupt_blob
from support.stacks import local_stack

from image_cicd.aws.operations import approve, pending_approval, start_promotion
from image_cicd.aws.operations import wait_finished as finished
from image_cicd.aws.stack import DeployedStack
from image_cicd.console.history import view
from image_cicd.local.stack import LocalStack, deployed_stack
from image_cicd.promotion.versions import VersionScheme, read_stage
from image_cicd.registry.synthetic import build_image, push_image

REPO = "repo-1"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, flavour: str) -> Iterator[LocalStack]:
    parameters = {"Repositories": REPO, "TestConfig": json.dumps({})}
    with local_stack(tmp_path_factory.mktemp("stack"), parameters, flavour) as running:
        yield running


def test_a_layer_corrupted_before_the_test_approval_never_reaches_prod(
    stack: LocalStack, flavour: str
) -> None:
    assert stack.registry is not None
    t: DeployedStack = deployed_stack(stack.info)
    image = build_image(layers=3, layer_size=200_000, seed=11)
    push_image(t.registry, f"ecr-dev/{REPO}", image, tags=["candidate"])
    arn = start_promotion(t, f"ecr-dev/{REPO}", image.digest)
    execution = arn.rsplit(":", 1)[-1]
    assert pending_approval(t, execution, wait_seconds=120) is not None, "no TEST approval"
    bad = image.platforms[0].layers[1].digest
    corrupt_blob(stack.registry, bad)

    _, result = approve(t, execution, "APPROVED", "ana@example.com", comment="ok")
    assert result.status == 200, result.page

    desc = finished(t, arn, timeout=120)
    states = view(t.client("stepfunctions"), arn).states
    scheme = VersionScheme()
    assert read_stage(t.registry, f"ecr-prod/{REPO}", scheme).versions == {}
    assert states["Wait for PROD approval"].status == "not reached"
    promotion = t.ledger.get_promotion(execution)
    assert promotion.outcome == "FAILED"
    if flavour == "plain":  # mounted into TEST; the content check finds it
        assert (desc["status"], desc["error"]) == ("FAILED", "TestsFailed")
        assert states["Run tests"].status == "succeeded"
        assert promotion.tests is not None
        [content] = promotion.tests.checks
        assert (content.name, content.passed) == ("content", False)
        assert bad in content.detail
        assert bad in promotion.tests.summary
    else:  # streamed into TEST; the copy's own digest check refuses it
        assert (desc["status"], desc["error"]) == ("FAILED", "DigestMismatch")
        assert states["Copy to TEST"].status == "caught"
        assert bad in desc["cause"]
        assert read_stage(t.registry, f"ecr-test/{REPO}", scheme).versions == {}
