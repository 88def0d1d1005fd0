"""The copy engine against an ECR-flavoured front (tests/support/ecr_registry.py) of the
real docker-registry: each test is one way Amazon ECR answers differently from the
CNCF registry. skopeo reads the result from the registry itself, past the proxy."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
import requests
from support.ecr_registry import EcrProxy
from test_copy import DEV, PROD, TEST, skopeo_raw

from image_cicd.local.registry import RegistryServer
from image_cicd.promotion.locks import ThreadLocker
from image_cicd.promotion.versions import promote
from image_cicd.registry.auth import EcrCredentials
from image_cicd.registry.client import RegistryClient
from image_cicd.registry.copy import MOUNT_REFUSED, copy_image
from image_cicd.registry.errors import ManifestTooLarge, TagImmutable
from image_cicd.registry.media import OCI_MANIFEST, Manifest
from image_cicd.registry.synthetic import build_image, push_image

FAST: dict[str, Any] = {"backoff": 0.01}


class _TokenIssuer:
    """Stands in for the ECR API below the registry client: GetAuthorizationToken."""

    def __init__(self, proxy: EcrProxy) -> None:
        self.proxy = proxy
        self.calls = 0

    def get_authorization_token(self, **_: Any) -> dict[str, Any]:
        import base64
        from datetime import UTC, datetime, timedelta

        self.calls += 1
        token = base64.b64encode(f"AWS:{self.proxy.issue_token()}".encode()).decode()
        return {
            "authorizationData": [
                {
                    "authorizationToken": token,
                    "expiresAt": datetime.now(UTC) + timedelta(hours=12),
                    "proxyEndpoint": self.proxy.url,
                }
            ]
        }


def test_chunked_upload_answered_201_with_a_stale_range(
    registry_pair: tuple[RegistryServer, RegistryServer], ecr_proxy: Callable[..., EcrProxy]
) -> None:
    a, b = registry_pair
    proxy = ecr_proxy(b.url)
    src, dst = RegistryClient(a.url), RegistryClient(proxy.url, upload_chunk_size=150_000)
    image = build_image(layers=3, layer_size=400_000)
    push_image(src, DEV, image)

    result = copy_image(src, DEV, image.digest, dst, PROD, tags=["latest"])

    assert proxy.patches_answered_201 >= 3 * 2  # every layer went in 3 parts
    assert result.bytes_moved == sum(x.size for x in image.platforms[0].blobs)
    assert skopeo_raw(b.host, PROD, "latest") == image.manifest.data
    for blob in image.platforms[0].blobs:
        assert RegistryClient(b.url).get_blob(PROD, blob.digest) == b"".join(blob.chunks())


def test_mount_refused_streams_and_says_why(
    registry: RegistryServer, ecr_proxy: Callable[..., EcrProxy]
) -> None:
    proxy = ecr_proxy(registry.url)  # BLOB_MOUNTING off: ECR's default
    client = RegistryClient(proxy.url)
    image = build_image(layers=3, layer_size=200_000)
    push_image(client, DEV, image)

    result = copy_image(client, DEV, image.digest, client, TEST)

    blobs = image.platforms[0].blobs
    assert (result.blobs_mounted, result.blobs_copied) == (0, len(blobs))
    assert result.mounts_refused == proxy.mounts_refused == len(blobs)
    assert result.mount_refused_reason == MOUNT_REFUSED
    assert "BLOB_MOUNTING" in MOUNT_REFUSED
    assert result.bytes_moved == sum(x.size for x in blobs)
    assert skopeo_raw(registry.host, TEST, image.digest) == image.manifest.data


def test_mount_refused_between_repositories_of_different_encryption(
    registry: RegistryServer, ecr_proxy: Callable[..., EcrProxy]
) -> None:
    proxy = ecr_proxy(registry.url, blob_mounting=True, encryption={"ecr-prod/": "KMS:key-1"})
    client = RegistryClient(proxy.url)
    image = build_image(layers=2, layer_size=100_000)
    push_image(client, DEV, image)
    locker = ThreadLocker()

    to_test = promote(client, DEV, image.digest, client, TEST, locker=locker)
    to_prod = promote(client, TEST, image.digest, client, PROD, locker=locker)

    assert (to_test.copy.blobs_mounted, to_test.copy.mounts_refused) == (3, 0)
    assert (to_prod.copy.blobs_mounted, to_prod.copy.mounts_refused) == (0, 3)
    assert to_prod.copy.mount_refused_reason == MOUNT_REFUSED
    assert skopeo_raw(registry.host, PROD, "v0.1") == image.manifest.data


def test_blob_get_follows_the_redirect_without_authorization(
    registry_pair: tuple[RegistryServer, RegistryServer], ecr_proxy: Callable[..., EcrProxy]
) -> None:
    a, b = registry_pair
    proxy = ecr_proxy(a.url, auth=True)
    issuer = _TokenIssuer(proxy)
    src = RegistryClient(proxy.url, credentials=EcrCredentials(issuer))
    dst = RegistryClient(b.url)
    image = build_image(layers=2, layer_size=300_000, platforms=["linux/amd64", "linux/arm64"])
    push_image(src, DEV, image)

    result = copy_image(src, DEV, image.digest, dst, PROD, tags=["latest"])

    blobs = {x.digest for p in image.platforms for x in p.blobs}
    assert proxy.redirects >= len(blobs)
    assert proxy.storage.served >= len(blobs)
    assert proxy.storage.refused_with_authorization == 0
    assert result.bytes_moved == sum(x.size for p in image.platforms for x in p.blobs)
    assert skopeo_raw(b.host, PROD, "latest") == image.manifest.data
    # The storage host does refuse a pre-signed URL that carries Authorization, as S3 does.
    blob = image.platforms[0].layers[0]
    signed = proxy.storage.sign(f"/v2/{DEV}/blobs/{blob.digest}")
    with_auth = requests.get(signed, headers={"Authorization": "Basic eA=="}, timeout=10)
    assert with_auth.status_code == 400
    assert requests.get(signed, timeout=10).content == b"".join(blob.chunks())


@pytest.mark.parametrize("status", [403, 401], ids=["denied-as-ecr", "basic-challenge"])
def test_token_expired_mid_copy_fetches_a_new_one_and_goes_on(
    registry: RegistryServer, ecr_proxy: Callable[..., EcrProxy], status: int
) -> None:
    proxy = ecr_proxy(registry.url, auth=True, expired_status=status)
    issuer = _TokenIssuer(proxy)
    client = RegistryClient(proxy.url, credentials=EcrCredentials(issuer), **FAST)
    image = build_image(layers=4, layer_size=200_000)
    push_image(client, DEV, image)
    assert issuer.calls == 1
    done: list[str] = []

    def expire_during_the_second_blob(kind: str, _size: int) -> None:
        if kind == "copied":
            done.append(kind)
        elif kind == "bytes" and len(done) == 1 and proxy.expired_refusals == 0:
            proxy.expire_tokens()  # while the second blob's PUT is under way

    result = copy_image(
        client, DEV, image.digest, client, TEST, workers=1, progress=expire_during_the_second_blob
    )

    assert proxy.expired_refusals >= 1
    assert issuer.calls == 2  # GetAuthorizationToken once more, not per request
    assert result.blobs_copied == len(image.platforms[0].blobs)
    assert skopeo_raw(registry.host, TEST, image.digest) == image.manifest.data


def test_put_image_throttled_is_retried_with_backoff(
    registry: RegistryServer, ecr_proxy: Callable[..., EcrProxy]
) -> None:
    proxy = ecr_proxy(registry.url, blob_mounting=True)
    client = RegistryClient(proxy.url, **FAST)
    image = build_image(layers=2, layer_size=50_000, platforms=["linux/amd64", "linux/arm64"])
    push_image(client, DEV, image)
    proxy.throttle_manifest_puts(4)

    result = copy_image(client, DEV, image.digest, client, TEST, tags=["v0.1"])

    assert proxy.throttled == 4
    assert result.digest == image.digest
    assert skopeo_raw(registry.host, TEST, "v0.1") == image.manifest.data


def test_manifest_over_4_mib_is_a_named_error(
    registry: RegistryServer, ecr_proxy: Callable[..., EcrProxy]
) -> None:
    proxy = ecr_proxy(registry.url)
    client = RegistryClient(proxy.url)
    image = build_image(layers=1, layer_size=1000)
    push_image(client, DEV, image)
    big = json.loads(image.manifest.data)
    big["annotations"] = {"org.example.padding": "x" * (4 * 1024 * 1024)}
    manifest = Manifest.from_bytes(json.dumps(big).encode(), OCI_MANIFEST)

    with pytest.raises(ManifestTooLarge, match="4 MiB"):
        client.put_manifest(DEV, "big", manifest)

    assert "big" not in RegistryClient(registry.url).list_tags(DEV)


def test_immutable_tag_is_a_named_error_and_nothing_moves(
    registry: RegistryServer, ecr_proxy: Callable[..., EcrProxy]
) -> None:
    proxy = ecr_proxy(registry.url, blob_mounting=True, immutable=("ecr-prod/",))
    client = RegistryClient(proxy.url)
    first, second = build_image(layers=1, layer_size=1000), build_image(layers=1, layer_size=1000)
    locker = ThreadLocker()
    for image in (first, second):
        push_image(client, TEST, image)
    promote(client, TEST, first.digest, client, PROD, locker=locker)

    with pytest.raises(TagImmutable, match="cannot be overwritten.*MUTABLE"):
        promote(client, TEST, second.digest, client, PROD, locker=locker)

    assert client.head_manifest(PROD, "latest").digest == first.digest  # type: ignore[union-attr]
