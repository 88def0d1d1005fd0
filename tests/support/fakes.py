"""Fakes below the level under test, shared by the unit tests: a registry serving
synthetic images, an SNS outbox, and a promotion plan."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from image_cicd.promotion.payloads import ImageFacts, Plan
from image_cicd.registry.errors import BlobUnknown
from image_cicd.registry.media import OCI_MANIFEST, Manifest
from image_cicd.registry.synthetic import SyntheticImage

DIGEST = f"sha256:{99:064x}"


class FakeRegistry:
    """Serves the manifests and blobs of synthetic images (what read_image and the
    checks call: get_manifest, open_blob and get_blob)."""

    host = "registry.example"

    def __init__(self, repository: str, *images: SyntheticImage) -> None:
        self.repository = repository
        self.manifests: dict[str, Manifest] = {}
        self.blobs: dict[str, bytes] = {}
        for image in images:
            self.manifests[image.digest] = image.manifest
            for platform in image.platforms:
                self.manifests[platform.manifest.digest] = platform.manifest
                for blob in platform.blobs:
                    self.blobs[blob.digest] = b"".join(blob.chunks())

    def get_manifest(self, repository: str, reference: str) -> Manifest:
        assert repository == self.repository
        return self.manifests[reference]

    def get_blob(self, repository: str, digest: str) -> bytes:
        assert repository == self.repository
        return self.blobs[digest]

    @contextmanager
    def open_blob(self, repository: str, digest: str) -> Iterator[Iterator[bytes]]:
        assert repository == self.repository
        if digest not in self.blobs:
            raise BlobUnknown(f"GET {repository}@{digest}: blob unknown to registry", status=404)
        data = self.blobs[digest]
        yield iter([data[:100], data[100:]])


@dataclass
class Outbox:
    """Stands in for SNS publish: records (topic ARN, subject, message)."""

    sent: list[tuple[str, str, str]] = field(default_factory=list)

    def __call__(self, topic_arn: str, subject: str, message: str) -> None:
        self.sent.append((topic_arn, subject, message))


def make_plan(**update: Any) -> Plan:
    """The plan of execution exec-1 promoting ecr-dev/repo-1@DIGEST; ``update`` changes
    fields."""
    plan = Plan(
        execution="exec-1",
        name="repo-1",
        digest=DIGEST,
        source="ecr-dev/repo-1",
        test="ecr-test/repo-1",
        prod="ecr-prod/repo-1",
        image=ImageFacts(media_type=OCI_MANIFEST, platforms=[], size=1234),
        approval_timeout_seconds=3600,
    )
    return plan.model_copy(update=update)
