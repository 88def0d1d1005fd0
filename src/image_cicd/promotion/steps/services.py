"""What the steps work with (`Services`) and the reads several steps share."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from image_cicd.ledger.records import ImageRef
from image_cicd.ledger.store import Ledger
from image_cicd.promotion.errors import ImageNotFound
from image_cicd.promotion.locks import Locker
from image_cicd.promotion.settings import Settings
from image_cicd.promotion.versions import VersionScheme, read_stage
from image_cicd.registry.client import RegistryClient
from image_cicd.registry.copy import Image, read_image
from image_cicd.registry.errors import ManifestUnknown, NameUnknown

Publish = Callable[[str, str, str], None]
"""publish(topic_arn, subject, message)."""


@dataclass(frozen=True)
class Services:
    """What the steps work with; built once per process by `image_cicd.aws.wiring`.

    The registry client is made on first use (`connect`): on ECR that asks for an
    authorization token, which the functions that never touch images (approval-api,
    notify) neither need nor are allowed to.
    """

    settings: Settings
    connect: Callable[[], RegistryClient]
    ledger: Ledger
    locker: Locker
    publish: Publish

    @functools.cached_property
    def registry(self) -> RegistryClient:
        return self.connect()

    @property
    def scheme(self) -> VersionScheme:
        return VersionScheme(self.settings.version_format)


def utc_now() -> datetime:
    return datetime.now(UTC)


def read_existing(registry: RegistryClient, repository: str, digest: str, when: str) -> Image:
    try:
        return read_image(registry, repository, digest)
    except (ManifestUnknown, NameUnknown) as exc:
        raise ImageNotFound(f"{repository}@{digest} does not exist ({when})") from exc


def current_image(services: Services, repository: str) -> ImageRef | None:
    state = read_stage(services.registry, repository, services.scheme)
    return ImageRef(digest=state.latest, version=state.current) if state.latest else None
