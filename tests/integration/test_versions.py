"""Version tags, promotion and rollback on the real registry, serialized by real locks."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import boto3
import pytest
from moto import mock_aws
from support.ledger_table import create_ledger_table

from image_cicd.local.registry import RegistryServer
from image_cicd.promotion.locks import DynamoDBLocker, Locker, ThreadLocker
from image_cicd.promotion.versions import (
    AlreadyAtVersion,
    LatestUntagged,
    NothingToRollBack,
    VersionNotFound,
    VersionScheme,
    promote,
    read_stage,
    rollback,
)
from image_cicd.registry.client import RegistryClient
from image_cicd.registry.synthetic import SyntheticImage, build_image, push_image

DEV, PROD = "ecr-dev/repo-1", "ecr-prod/repo-1"
SCHEME = VersionScheme()


@pytest.fixture
def client(registry: RegistryServer) -> RegistryClient:
    return RegistryClient(registry.url)


@pytest.fixture
def dynamodb_locker() -> Iterator[DynamoDBLocker]:
    with mock_aws():
        ddb = boto3.client("dynamodb", region_name="us-east-1")
        create_ledger_table(ddb, "ledger")
        yield DynamoDBLocker("ledger", ddb, lease_seconds=30, wait_seconds=30, poll_seconds=0.02)


def pushed(client: RegistryClient, n: int = 1) -> list[SyntheticImage]:
    images = [build_image(layers=1, layer_size=20_000 + i) for i in range(n)]
    for image in images:
        push_image(client, DEV, image, tags=["latest"])
    return images


def stage(client: RegistryClient) -> tuple[dict[str, str], str | None]:
    state = read_stage(client, PROD, SCHEME)
    return state.versions, state.latest


def promote_all(client: RegistryClient, images: list[SyntheticImage], locker: Locker) -> None:
    for image in images:
        promote(client, DEV, image.digest, client, PROD, locker=locker)


def test_first_version_then_bump_and_latest_follows(client: RegistryClient) -> None:
    a, b = pushed(client, 2)
    first = promote(client, DEV, a.digest, client, PROD, locker=ThreadLocker())
    second = promote(client, DEV, b.digest, client, PROD, locker=ThreadLocker())

    assert (first.version, first.new_version, first.previous_version) == ("v0.1", True, None)
    assert (second.version, second.previous_version) == ("v0.2", "v0.1")
    assert stage(client) == ({"v0.1": a.digest, "v0.2": b.digest}, b.digest)


def test_same_digest_twice_keeps_its_version(client: RegistryClient) -> None:
    (a,) = pushed(client)
    promote(client, DEV, a.digest, client, PROD, locker=ThreadLocker())
    again = promote(client, DEV, a.digest, client, PROD, locker=ThreadLocker())

    assert (again.version, again.new_version, again.latest_moved) == ("v0.1", False, False)
    assert again.copy.blobs_present == 2
    assert stage(client) == ({"v0.1": a.digest}, a.digest)


def test_a_promotion_after_a_dead_attempt_finishes_it_without_a_new_version(
    client: RegistryClient, dynamodb_locker: DynamoDBLocker
) -> None:
    """An attempt killed after tagging B (v0.2) and before moving `latest` left the tag:
    the retry (or a later promotion of B) keeps v0.2 and moves `latest` to it."""
    a, b = pushed(client, 2)
    promote(client, DEV, a.digest, client, PROD, locker=dynamodb_locker)
    dead = promote(client, DEV, b.digest, client, PROD, locker=dynamodb_locker)
    client.put_manifest(PROD, "latest", client.get_manifest(PROD, a.digest))  # as it was
    assert stage(client) == ({"v0.1": a.digest, "v0.2": b.digest}, a.digest)

    retried = promote(client, DEV, b.digest, client, PROD, locker=dynamodb_locker)

    assert (retried.version, retried.new_version, retried.latest_moved) == ("v0.2", False, True)
    assert retried.previous_version == "v0.1"
    assert retried.version == dead.version
    assert stage(client) == ({"v0.1": a.digest, "v0.2": b.digest}, b.digest)


def test_custom_format(client: RegistryClient) -> None:
    a, b = pushed(client, 2)
    scheme = VersionScheme("release-{minor}")
    for image in (a, b):
        promote(client, DEV, image.digest, client, PROD, locker=ThreadLocker(), scheme=scheme)
    assert read_stage(client, PROD, scheme).versions == {
        "release-1": a.digest,
        "release-2": b.digest,
    }


def test_rollback_twice_goes_one_further_back_each_time(
    client: RegistryClient, dynamodb_locker: DynamoDBLocker
) -> None:
    a, b, c = pushed(client, 3)
    promote_all(client, [a, b, c], dynamodb_locker)

    first = rollback(client, PROD, locker=dynamodb_locker)
    second = rollback(client, PROD, locker=dynamodb_locker)

    assert first.message == "Rollback from v0.3 to v0.2"
    assert second.message == "Rollback from v0.2 to v0.1"
    versions, latest = stage(client)
    assert latest == a.digest
    assert versions == {"v0.1": a.digest, "v0.2": b.digest, "v0.3": c.digest}  # none deleted


def test_rollback_to_a_named_version_and_forward_again(client: RegistryClient) -> None:
    a, b, c = pushed(client, 3)
    promote_all(client, [a, b, c], ThreadLocker())

    back = rollback(client, PROD, to="v0.1", locker=ThreadLocker())
    forward = rollback(client, PROD, to="v0.3", locker=ThreadLocker())

    assert (back.from_version, back.to_version, back.digest) == ("v0.3", "v0.1", a.digest)
    assert (forward.from_version, forward.to_version) == ("v0.1", "v0.3")
    assert stage(client)[1] == c.digest


def test_a_promotion_after_a_rollback_gets_the_next_version(client: RegistryClient) -> None:
    a, b, c = pushed(client, 3)
    promote_all(client, [a, b], ThreadLocker())
    rollback(client, PROD, locker=ThreadLocker())

    result = promote(client, DEV, c.digest, client, PROD, locker=ThreadLocker())

    assert (result.version, result.previous_version) == ("v0.3", "v0.1")
    assert stage(client)[1] == c.digest


def test_rollback_errors_change_nothing(client: RegistryClient) -> None:
    locker = ThreadLocker()
    with pytest.raises(NothingToRollBack, match="no 'latest'"):
        rollback(client, PROD, locker=locker)
    a, b = pushed(client, 2)
    promote(client, DEV, a.digest, client, PROD, locker=locker)
    with pytest.raises(NothingToRollBack, match="no older version"):
        rollback(client, PROD, locker=locker)
    promote(client, DEV, b.digest, client, PROD, locker=locker)
    before = stage(client)

    with pytest.raises(VersionNotFound, match="v0.9"):
        rollback(client, PROD, to="v0.9", locker=locker)
    with pytest.raises(VersionNotFound, match="not a version tag"):
        rollback(client, PROD, to="latest", locker=locker)
    with pytest.raises(AlreadyAtVersion):
        rollback(client, PROD, to="v0.2", locker=locker)
    assert stage(client) == before

    stray = build_image(layers=1, layer_size=999)
    push_image(client, PROD, stray, tags=["latest"])  # someone moved latest by hand
    with pytest.raises(LatestUntagged, match="no version tag"):
        rollback(client, PROD, locker=locker)


def test_concurrent_promotions_get_distinct_versions(
    client: RegistryClient, dynamodb_locker: DynamoDBLocker
) -> None:
    images = pushed(client, 4)
    barrier = threading.Barrier(len(images))
    results = {}
    errors: list[BaseException] = []

    def run(image: SyntheticImage) -> None:
        try:
            barrier.wait()
            results[image.digest] = promote(
                RegistryClient(client.base_url),
                DEV,
                image.digest,
                RegistryClient(client.base_url),
                PROD,
                locker=dynamodb_locker,
            )
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(image,)) for image in images]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert errors == []
    versions = sorted(r.version for r in results.values())
    assert versions == ["v0.1", "v0.2", "v0.3", "v0.4"]
    last = max(results.values(), key=lambda r: SCHEME.parse(r.version) or (0, 0))
    assert stage(client)[1] == last.digest
