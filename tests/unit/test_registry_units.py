"""Pure pieces of the registry client: references, media, errors, challenges, versions."""

from __future__ import annotations

import json

import pytest

from image_cicd.promotion.versions import VersionScheme
from image_cicd.registry.auth import parse_challenge
from image_cicd.registry.errors import (
    ManifestUnknown,
    NameUnknown,
    RegistryUnavailable,
    TagImmutable,
    TooManyRequests,
    Unauthorized,
    error_from_response,
)
from image_cicd.registry.media import OCI_INDEX, OCI_MANIFEST, Manifest, sha256_digest
from image_cicd.registry.reference import BadReference, parse_reference

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("text", "host", "repository", "tag", "digest"),
    [
        (
            "127.0.0.1:5000/ecr-dev/repo-1:latest",
            "127.0.0.1:5000",
            "ecr-dev/repo-1",
            "latest",
            None,
        ),
        (f"localhost/repo@{DIGEST}", "localhost", "repo", None, DIGEST),
        (f"r.example.com/a/b:v0.1@{DIGEST}", "r.example.com", "a/b", "v0.1", DIGEST),
        (
            "1234.dkr.ecr.eu-west-1.amazonaws.com/ecr-prod/x",
            "1234.dkr.ecr.eu-west-1.amazonaws.com",
            "ecr-prod/x",
            None,
            None,
        ),
    ],
)
def test_parse_reference(
    text: str, host: str, repository: str, tag: str | None, digest: str | None
) -> None:
    ref = parse_reference(text)
    assert (ref.host, ref.repository, ref.tag, ref.digest) == (host, repository, tag, digest)
    assert str(ref) == text


@pytest.mark.parametrize(
    "text",
    ["repo-1", "ecr-dev/repo-1", "h:5000/UPPER", "h:5000/r:bad~tag", "h:5000/r@sha256:123", ""],
)
def test_bad_references_are_refused(text: str) -> None:
    with pytest.raises(BadReference):
        parse_reference(text)


def test_manifest_parse_index_and_blobs() -> None:
    child = {
        "mediaType": OCI_MANIFEST,
        "digest": DIGEST,
        "size": 10,
        "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"},
    }
    index = Manifest.from_bytes(json.dumps({"schemaVersion": 2, "manifests": [child]}).encode())
    assert index.media_type == OCI_INDEX
    assert index.platforms == ["linux/arm64/v8"]
    assert index.blobs == []
    image = Manifest.from_bytes(
        json.dumps(
            {
                "schemaVersion": 2,
                "config": {"digest": DIGEST, "size": 3},
                "layers": [{"digest": DIGEST, "size": 4}],
            }
        ).encode()
    )
    assert image.media_type == OCI_MANIFEST
    assert [b.size for b in image.blobs] == [3, 4]
    assert image.digest == sha256_digest(image.data)


def test_manifest_rejects_non_json() -> None:
    with pytest.raises(ValueError, match="not JSON"):
        Manifest.from_bytes(b"<html>")


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (
            404,
            {"errors": [{"code": "MANIFEST_UNKNOWN", "message": "manifest unknown"}]},
            ManifestUnknown,
        ),
        (404, {"errors": [{"code": "NAME_UNKNOWN", "message": "repository name"}]}, NameUnknown),
        (401, {}, Unauthorized),
        (429, {}, TooManyRequests),
        (503, {}, RegistryUnavailable),
        (
            400,
            {
                "errors": [
                    {
                        "code": "TAG_INVALID",
                        "message": "The image tag 'latest' already exists in the "
                        "'ecr-prod/x' repository and cannot be overwritten because the "
                        "repository is immutable.",
                    }
                ]
            },
            TagImmutable,
        ),
    ],
)
def test_error_bodies_become_typed_errors(status: int, body: dict, expected: type) -> None:
    err = error_from_response(status, json.dumps(body).encode(), "GET x")
    assert type(err) is expected
    assert err.status == status
    assert str(err).startswith(expected.code)
    if expected is TagImmutable:
        assert "IMMUTABLE_WITH_EXCLUSION" in str(err)


def test_parse_bearer_challenge() -> None:
    ch = parse_challenge(
        'Bearer realm="https://auth.example.com/token",service="registry",'
        'scope="repository:a/b:pull,push"'
    )
    assert ch is not None
    assert ch.scheme == "bearer"
    assert ch.params == {
        "realm": "https://auth.example.com/token",
        "service": "registry",
        "scope": "repository:a/b:pull,push",
    }
    basic = parse_challenge('Basic realm="basic-realm"')
    assert basic is not None
    assert basic.scheme == "basic"


def test_version_scheme_default_and_custom() -> None:
    scheme = VersionScheme()
    assert scheme.next_after([]) == "v0.1"
    assert scheme.next_after(["latest", "v0.9", "v0.10", "v0.2", "v1x"]) == "v0.11"
    assert scheme.next_after(["v1.4", "v0.15"]) == "v1.5"
    assert scheme.parse("v0.15") == (0, 15)
    assert scheme.parse("v0.015") is None
    assert scheme.parse("latest") is None
    custom = VersionScheme("release-{minor}")
    assert custom.next_after(["release-3", "release-12"]) == "release-13"


@pytest.mark.parametrize("fmt", ["v{major}", "v{patch}.{minor}", "{0}{minor}"])
def test_bad_version_formats_are_refused(fmt: str) -> None:
    with pytest.raises(ValueError, match="version format"):
        VersionScheme(fmt)
