"""Steps the state machines retry: a retry repeats the same move and records it once."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from moto import mock_aws
from support.ledger_table import create_ledger_table

from image_cicd.ledger.store import Ledger
from image_cicd.local.registry import RegistryServer
from image_cicd.promotion.locks import ThreadLocker
from image_cicd.promotion.payloads import ImageFacts, Plan
from image_cicd.promotion.settings import Settings
from image_cicd.promotion.steps import Services, copy_to_stage, rollback_prod
from image_cicd.promotion.versions import (
    LatestMoved,
    VersionScheme,
    plan_rollback,
    promote,
    read_stage,
)
from image_cicd.registry.client import RegistryClient
from image_cicd.registry.synthetic import build_image, push_image

PROD = "ecr-prod/repo-1"
NOW = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)


@pytest.fixture
def services(registry: RegistryServer) -> Iterator[Services]:
    with mock_aws():
        ddb = boto3.client("dynamodb", region_name="us-east-1")
        create_ledger_table(ddb, "ledger")
        client = RegistryClient(registry.url)
        yield Services(
            settings=Settings(repositories=("repo-1",)),
            connect=lambda: client,
            ledger=Ledger("ledger", ddb),
            locker=ThreadLocker(),
            publish=lambda *_args: None,
        )


def three_versions(services: Services) -> list[Any]:
    images = [build_image(layers=1, layer_size=1000 + n) for n in range(3)]
    for image in images:
        push_image(services.registry, "ecr-dev/repo-1", image)
        promote(
            services.registry,
            "ecr-dev/repo-1",
            image.digest,
            services.registry,
            PROD,
            locker=services.locker,
        )
    return images


def test_a_retried_rollback_attempt_does_not_go_further_back(services: Services) -> None:
    images = three_versions(services)

    first = rollback_prod(services, PROD, None, "rollback-exec-1")
    again = rollback_prod(services, PROD, None, "rollback-exec-1")  # the state machine's retry

    assert (first.from_version, first.to_version) == ("v0.3", "v0.2")
    assert (again.from_version, again.to_version) == ("v0.3", "v0.2")
    assert read_stage(services.registry, PROD, VersionScheme()).latest == images[1].digest
    assert [r.execution for r in services.ledger.releases(PROD)] == ["rollback-exec-1"]

    other = rollback_prod(services, PROD, None, "rollback-exec-2")  # a new rollback does
    assert (other.from_version, other.to_version) == ("v0.2", "v0.1")


def test_a_plan_overtaken_by_another_change_fails_and_changes_nothing(
    services: Services,
) -> None:
    images = three_versions(services)
    rollback_prod(services, PROD, None, "rollback-a")  # v0.3 -> v0.2
    rollback_prod(services, PROD, "v0.3", "rollback-b")  # someone moved latest forward again
    manifest = services.registry.get_manifest(PROD, images[0].digest)
    services.registry.put_manifest(PROD, "latest", manifest)  # and by hand to v0.1

    with pytest.raises(LatestMoved, match="changed since the rollback"):
        rollback_prod(services, PROD, None, "rollback-a")  # a late retry of the first

    assert read_stage(services.registry, PROD, VersionScheme()).latest == images[0].digest


def test_a_retry_that_finds_another_executions_move_records_nothing(
    services: Services,
) -> None:
    # Given rollback A planned v0.3 -> v0.2 and died before moving
    images = three_versions(services)
    services.ledger.save_rollback_plan("rollback-a", plan_rollback(services.registry, PROD))
    # and rollback B, started from v0.3 too, moved it and recorded the release
    rollback_prod(services, PROD, None, "rollback-b", expected="v0.3")

    # When A's retry finds latest where it planned to move it
    with pytest.raises(LatestMoved, match="by rollback-b"):
        rollback_prod(services, PROD, None, "rollback-a")

    # Then there is one release record for the one move
    assert [r.execution for r in services.ledger.releases(PROD)] == ["rollback-b"]
    assert read_stage(services.registry, PROD, VersionScheme()).latest == images[1].digest


def test_a_retry_after_a_move_that_was_not_recorded_records_it(services: Services) -> None:
    # Given rollback A planned v0.3 -> v0.2, moved latest and died before recording
    images = three_versions(services)
    plan = services.ledger.save_rollback_plan("rollback-a", plan_rollback(services.registry, PROD))
    manifest = services.registry.get_manifest(PROD, plan.to_digest)
    services.registry.put_manifest(PROD, "latest", manifest)

    again = rollback_prod(services, PROD, None, "rollback-a")

    assert (again.from_version, again.to_version, again.moved) == ("v0.3", "v0.2", False)
    assert [(r.execution, r.version) for r in services.ledger.releases(PROD)] == [
        ("rollback-a", "v0.2")
    ]
    assert read_stage(services.registry, PROD, VersionScheme()).latest == images[1].digest


def _plan(execution: str, digest: str) -> Plan:
    return Plan(
        execution=execution,
        name="repo-1",
        digest=digest,
        source="ecr-dev/repo-1",
        test="ecr-test/repo-1",
        prod=PROD,
        approval_timeout_seconds=60,
        image=ImageFacts(media_type="application/vnd.oci.image.manifest.v1+json", size=1),
    )


def test_a_promotion_retried_after_its_release_record_failed_records_it_once(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    image = build_image(layers=1, layer_size=500)
    push_image(services.registry, "ecr-test/repo-1", image)
    services.ledger.start_promotion("exec-1", "repo-1", image.digest, NOW)
    record = services.ledger.record_release
    monkeypatch.setattr(services.ledger, "record_release", _fails_once(record))

    with pytest.raises(RuntimeError, match="ledger write lost"):
        copy_to_stage(services, _plan("exec-1", image.digest), "PROD")
    again = copy_to_stage(services, _plan("exec-1", image.digest), "PROD")  # the retry

    assert (again.version, again.latest_moved) == ("v0.1", False)
    assert [(r.execution, r.version) for r in services.ledger.releases(PROD)] == [
        ("exec-1", "v0.1")
    ]
    # Another execution promoting the same image moves nothing and records nothing.
    services.ledger.start_promotion("exec-2", "repo-1", image.digest, NOW)
    copy_to_stage(services, _plan("exec-2", image.digest), "PROD")
    assert len(services.ledger.releases(PROD)) == 1


def _fails_once(func: Any) -> Any:
    calls = []

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("ledger write lost")
        return func(*args, **kwargs)

    return wrapper
