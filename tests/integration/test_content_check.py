"""The built-in content check against the real docker-registry: it reads every blob of
the TEST image and hashes it, so a blob corrupted in the registry's own storage fails
the check by name. Run directly and through an ECR-flavoured proxy (blob GETs
redirected to another host, as ECR redirects to S3)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from support.ecr_registry import EcrProxy
from support.registry_storage import corrupt_blob

from image_cicd.ledger.records import CheckResult
from image_cicd.local.registry import RegistryServer
from image_cicd.promotion.checks import builtin_checks
from image_cicd.promotion.settings import RepositoryTests
from image_cicd.registry.client import RegistryClient
from image_cicd.registry.synthetic import build_image, push_image

TEST = "ecr-test/repo-1"


class NoScans:
    def severity_counts(self, repository: str, digest: str) -> dict[str, int] | None:
        raise AssertionError("no scan is configured")


def content(results: list[CheckResult]) -> CheckResult:
    [found] = [r for r in results if r.name == "content"]
    return found


@pytest.fixture(params=["plain", "ecr"])
def client(
    request: pytest.FixtureRequest, registry: RegistryServer, ecr_proxy: Callable[..., EcrProxy]
) -> RegistryClient:
    url = registry.url if request.param == "plain" else ecr_proxy(registry.url).url
    return RegistryClient(url)


def test_an_intact_image_passes_and_the_check_says_what_it_read(client: RegistryClient) -> None:
    image = build_image(layers=3, layer_size=300_000, platforms=["linux/amd64", "linux/arm64"])
    push_image(client, TEST, image)
    blobs = {b.digest: b.size for p in image.platforms for b in p.blobs}

    check = content(builtin_checks(client, TEST, image.digest, RepositoryTests(), NoScans()))

    assert check.passed
    assert check.detail == (
        f"3 manifest(s) and {len(blobs)} blob(s) ({sum(blobs.values()):,} bytes) read "
        "from the registry and hashed: every one matches its digest"
    )


def test_a_layer_corrupted_in_the_registry_storage_fails_the_check_by_name(
    registry: RegistryServer, client: RegistryClient
) -> None:
    image = build_image(layers=3, layer_size=300_000)
    push_image(client, TEST, image)
    bad = image.platforms[0].layers[1].digest
    corrupt_blob(registry, bad)

    results = builtin_checks(
        client, TEST, image.digest, RepositoryTests(labels=["x"], non_root=True), NoScans()
    )

    check = content(results)
    assert not check.passed
    assert bad in check.detail
    assert "1 of 4 blob(s) do not match" in check.detail
    assert [r.name for r in results] == ["content"]  # nothing else judged on bad bytes


def test_a_corrupted_config_fails_the_content_check_rather_than_raising(
    registry: RegistryServer, client: RegistryClient
) -> None:
    image = build_image(layers=1, layer_size=10_000)
    push_image(client, TEST, image)
    config = image.platforms[0].config.digest
    corrupt_blob(registry, config)

    [check] = builtin_checks(client, TEST, image.digest, RepositoryTests(), NoScans())

    assert not check.passed
    assert config in check.detail
