"""The copy engine against the real docker-registry, with skopeo as an independent oracle.

The tests that take `front` run twice: against the registry itself, and through an
ECR-flavoured proxy in front of it (tests/support/ecr_registry.py: PATCH answered 201,
mounts refused as with BLOB_MOUNTING off, blob GETs redirected to another host).
skopeo always reads the registry itself, past the proxy."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from typing import Any

import pytest
from support import BasicRegistry, TokenRegistry
from support.ecr_registry import EcrProxy
from support.registry_storage import corrupt_blob

from image_cicd.local.fault_proxy import FaultProxy
from image_cicd.local.registry import RegistryServer
from image_cicd.promotion.locks import ThreadLocker
from image_cicd.promotion.versions import promote
from image_cicd.registry.auth import static_credentials
from image_cicd.registry.client import RegistryClient
from image_cicd.registry.copy import MOUNT_REFUSED, copy_image
from image_cicd.registry.errors import DigestMismatch, ManifestUnknown, RegistryUnavailable
from image_cicd.registry.media import (
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    OCI_INDEX,
    OCI_MANIFEST,
)
from image_cicd.registry.synthetic import SyntheticImage, build_image, push_image

DEV, TEST, PROD = "ecr-dev/repo-1", "ecr-test/repo-1", "ecr-prod/repo-1"


def skopeo_raw(host: str, repository: str, reference: str, *creds: str) -> bytes:
    """The manifest bytes as skopeo (an independent client) reads them."""
    sep = "@" if reference.startswith("sha256:") else ":"
    args = ["skopeo", "inspect", "--raw", "--tls-verify=false"]
    if creds:
        args += ["--creds", ":".join(creds)]
    out = subprocess.run(
        [*args, f"docker://{host}/{repository}{sep}{reference}"],
        capture_output=True,
        check=True,
        timeout=60,
    )
    return out.stdout


class Front:
    """How the clients reach a registry: directly ("plain") or through an ECR proxy."""

    def __init__(self, flavour: str, ecr_proxy: Callable[..., EcrProxy]) -> None:
        self.flavour = flavour
        self.proxies: list[EcrProxy] = []
        self._ecr_proxy = ecr_proxy

    @property
    def ecr(self) -> bool:
        return self.flavour == "ecr"

    def url(self, server: RegistryServer) -> str:
        if not self.ecr:
            return server.url
        self.proxies.append(self._ecr_proxy(server.url))
        return self.proxies[-1].url


@pytest.fixture(params=["plain", "ecr"])
def front(request: pytest.FixtureRequest, ecr_proxy: Callable[..., EcrProxy]) -> Front:
    return Front(request.param, ecr_proxy)


IMAGES: dict[str, Callable[[], SyntheticImage]] = {
    "oci-manifest": lambda: build_image(layers=3, layer_size=200_000),
    "docker-v2-manifest": lambda: build_image(layers=3, layer_size=200_000, fmt="docker"),
    "oci-index": lambda: build_image(
        layers=2, layer_size=100_000, platforms=["linux/amd64", "linux/arm64"]
    ),
    "docker-manifest-list": lambda: build_image(
        layers=2, layer_size=100_000, platforms=["linux/amd64", "linux/arm64"], fmt="docker"
    ),
    "unusual-whitespace": lambda: build_image(layers=2, layer_size=50_000, indent="\t"),
}
MEDIA_TYPES = {
    "oci-manifest": OCI_MANIFEST,
    "docker-v2-manifest": DOCKER_MANIFEST,
    "oci-index": OCI_INDEX,
    "docker-manifest-list": DOCKER_MANIFEST_LIST,
    "unusual-whitespace": OCI_MANIFEST,
}


@pytest.mark.parametrize("kind", sorted(IMAGES))
def test_promotion_dev_test_prod_preserves_digest_and_bytes(
    registry: RegistryServer, front: Front, kind: str
) -> None:
    client = RegistryClient(front.url(registry))
    image = IMAGES[kind]()
    push_image(client, DEV, image, tags=["latest"])
    locker = ThreadLocker()

    to_test = promote(client, DEV, image.digest, client, TEST, locker=locker)
    to_prod = promote(client, TEST, image.digest, client, PROD, locker=locker)

    assert (to_test.version, to_prod.version) == ("v0.1", "v0.1")
    assert to_test.copy.media_type == MEDIA_TYPES[kind]
    if kind in ("oci-index", "docker-manifest-list"):
        assert to_prod.copy.platforms == ["linux/amd64", "linux/arm64"]
        assert to_prod.copy.manifests == 3
    for repository in (TEST, PROD):
        for reference in (image.digest, "v0.1", "latest"):
            raw = skopeo_raw(registry.host, repository, reference)
            assert raw == image.manifest.data, f"{repository}:{reference} differs from DEV"
    for platform in image.platforms:  # every child is there, byte-exact, by digest
        raw = skopeo_raw(registry.host, PROD, platform.manifest.digest)
        assert raw == platform.manifest.data


def test_same_registry_copy_mounts_every_blob_and_moves_no_bytes(
    registry: RegistryServer, front: Front
) -> None:
    client = RegistryClient(front.url(registry))
    image = build_image(layers=4, layer_size=300_000, platforms=["linux/amd64", "linux/arm64"])
    push_image(client, DEV, image)

    result = copy_image(client, DEV, image.digest, client, TEST)

    blobs = sum(len(p.blobs) for p in image.platforms)
    if front.ecr:  # BLOB_MOUNTING off: every mount answered 202, every blob streamed
        assert (result.blobs_mounted, result.blobs_copied, result.mounts_refused) == (
            0,
            blobs,
            blobs,
        )
        assert result.mount_refused_reason == MOUNT_REFUSED
        assert result.bytes_moved == sum(b.size for p in image.platforms for b in p.blobs)
    else:
        assert (result.blobs_mounted, result.blobs_copied, result.blobs_present) == (blobs, 0, 0)
        assert (result.bytes_moved, result.mounts_refused) == (0, 0)
    assert result.image_bytes == image.size
    assert skopeo_raw(registry.host, TEST, image.digest) == image.manifest.data
    again = copy_image(client, DEV, image.digest, client, TEST)
    assert (again.blobs_present, again.blobs_mounted, again.bytes_moved) == (blobs, 0, 0)


def test_no_mount_streams_every_blob_within_one_registry(
    registry: RegistryServer, front: Front
) -> None:
    client = RegistryClient(front.url(registry))
    image = build_image(layers=2, layer_size=250_000)
    push_image(client, DEV, image)

    result = copy_image(client, DEV, image.digest, client, TEST, mount=False)

    assert result.blobs_mounted == 0
    assert result.blobs_copied == len(image.platforms[0].blobs)
    assert result.bytes_moved == sum(b.size for b in image.platforms[0].blobs)


@pytest.mark.parametrize("chunk", [64 << 20, 150_000], ids=["monolithic-put", "chunked-patch"])
def test_cross_registry_copy_streams_and_verifies(
    registry_pair: tuple[RegistryServer, RegistryServer], front: Front, chunk: int
) -> None:
    a, b = registry_pair
    src = RegistryClient(front.url(a))
    dst = RegistryClient(front.url(b), upload_chunk_size=chunk)
    image = build_image(layers=3, layer_size=400_000, platforms=["linux/amd64", "linux/arm64"])
    push_image(src, DEV, image)

    result = copy_image(src, DEV, image.digest, dst, PROD, tags=["latest"], workers=3)

    blob_bytes = sum(b.size for p in image.platforms for b in p.blobs)
    assert result.blobs_mounted == 0
    assert result.bytes_moved == blob_bytes
    assert skopeo_raw(b.host, PROD, "latest") == image.manifest.data
    for platform in image.platforms:
        for blob in platform.blobs:
            assert dst.get_blob(PROD, blob.digest) == b"".join(blob.chunks())
    if front.ecr:  # the source redirected every blob GET; PATCHes were answered 201
        source, destination = front.proxies
        assert source.redirects >= len({x.digest for p in image.platforms for x in p.blobs})
        assert (destination.patches_answered_201 > 0) == (chunk < 400_000)


def test_blob_that_does_not_match_its_digest_is_refused_and_nothing_is_tagged(
    registry_pair: tuple[RegistryServer, RegistryServer], front: Front
) -> None:
    a, b = registry_pair
    src, dst = RegistryClient(front.url(a)), RegistryClient(front.url(b))
    image = build_image(layers=2, layer_size=300_000)
    push_image(src, DEV, image)
    corrupt_blob(a, image.platforms[0].layers[1].digest)

    with pytest.raises(DigestMismatch, match=image.platforms[0].layers[1].digest):
        copy_image(src, DEV, image.digest, dst, PROD, tags=["latest"])

    assert dst.list_tags(PROD) == []
    assert dst.head_manifest(PROD, image.digest) is None
    assert dst.blob_size(PROD, image.platforms[0].layers[1].digest) is None


def test_unknown_image_is_a_typed_error(registry: RegistryServer, front: Front) -> None:
    client = RegistryClient(front.url(registry))
    push_image(client, DEV, build_image(layers=1, layer_size=1000))
    with pytest.raises(ManifestUnknown):
        copy_image(client, DEV, "sha256:" + "0" * 64, client, TEST)
    assert client.list_tags(TEST) == []


def test_basic_auth_registry(basic_registry: BasicRegistry) -> None:
    server = basic_registry.server
    creds = static_credentials(basic_registry.username, basic_registry.password)
    client = RegistryClient(server.url, credentials=creds)
    image = build_image(layers=2, layer_size=100_000, platforms=["linux/amd64", "linux/arm64"])
    push_image(client, DEV, image)

    result = copy_image(client, DEV, image.digest, client, TEST, tags=["v0.1"])

    assert result.blobs_mounted == sum(len(p.blobs) for p in image.platforms)
    raw = skopeo_raw(server.host, TEST, "v0.1", basic_registry.username, basic_registry.password)
    assert raw == image.manifest.data


def test_token_auth_mount_asks_for_pull_on_the_source(token_registry: TokenRegistry) -> None:
    server, tokens = token_registry.server, token_registry.token_server
    creds = static_credentials(token_registry.username, token_registry.password)
    client = RegistryClient(server.url, credentials=creds)
    client.ping()
    image = build_image(layers=2, layer_size=100_000)
    push_image(client, DEV, image)

    result = copy_image(client, DEV, image.digest, client, TEST, tags=["v0.1"])

    assert result.blobs_mounted == 3
    assert f"repository:{TEST}:pull,push" in tokens.requested_scopes
    assert f"repository:{DEV}:pull" in tokens.requested_scopes
    assert RegistryClient(server.url, credentials=creds).get_manifest(TEST, "v0.1").data == (
        image.manifest.data
    )


def test_token_auth_wrong_password_is_unauthorized(token_registry: TokenRegistry) -> None:
    from image_cicd.registry.errors import Unauthorized

    client = RegistryClient(
        token_registry.server.url, credentials=static_credentials(token_registry.username, "no")
    )
    with pytest.raises(Unauthorized):
        client.list_tags(DEV)


def test_copy_succeeds_through_injected_faults(
    registry_pair: tuple[RegistryServer, RegistryServer],
    fault_proxy: Callable[..., FaultProxy],
) -> None:
    a, b = registry_pair
    image = build_image(layers=6, layer_size=200_000, platforms=["linux/amd64", "linux/arm64"])
    push_image(RegistryClient(a.url), DEV, image)
    src_proxy = fault_proxy(a.url, fault_rate=0.15, seed=3)
    dst_proxy = fault_proxy(b.url, fault_rate=0.15, seed=4)
    fast: dict[str, Any] = {"backoff": 0.01, "retries": 6}
    src = RegistryClient(src_proxy.url, **fast)
    dst = RegistryClient(dst_proxy.url, **fast)

    result = copy_image(src, DEV, image.digest, dst, PROD, tags=["latest"], blob_attempts=6)

    assert src_proxy.injected + dst_proxy.injected > 5
    assert result.digest == image.digest
    assert skopeo_raw(b.host, PROD, "latest") == image.manifest.data


def test_registry_down_fails_clearly_and_leaves_no_tag(
    registry: RegistryServer, fault_proxy: Callable[..., FaultProxy]
) -> None:
    client = RegistryClient(registry.url)
    image = build_image(layers=2, layer_size=100_000)
    push_image(client, DEV, image)
    proxy = fault_proxy(registry.url)
    via_proxy = RegistryClient(proxy.url, backoff=0.01, retries=2)
    manifest_source = RegistryClient(registry.url)
    proxy.down("503")

    with pytest.raises(RegistryUnavailable, match="503|did not answer|gave up"):
        copy_image(manifest_source, DEV, image.digest, via_proxy, PROD, tags=["latest"])

    assert client.list_tags(PROD) == []
