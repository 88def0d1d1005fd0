"""Media types, digests and parsed manifests."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"

MANIFEST_TYPES = (OCI_INDEX, OCI_MANIFEST, DOCKER_MANIFEST_LIST, DOCKER_MANIFEST)
INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})
ACCEPT = ", ".join(MANIFEST_TYPES)

_DIGEST = re.compile(r"sha256:[a-f0-9]{64}")


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def is_digest(value: str) -> bool:
    return bool(_DIGEST.fullmatch(value))


def check_digest(value: str) -> str:
    """Return `value` if it is a sha256 digest, else raise ValueError."""
    if not is_digest(value):
        raise ValueError(f"not a sha256 digest: {value!r}")
    return value


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    platform: str | None = None

    @classmethod
    def parse(cls, raw: dict[str, Any]) -> Descriptor:
        platform = raw.get("platform")
        name = None
        if isinstance(platform, dict):
            name = "/".join(
                str(p)
                for p in (platform.get("os"), platform.get("architecture"), platform.get("variant"))
                if p
            )
        return cls(
            media_type=str(raw.get("mediaType", "")),
            digest=check_digest(str(raw.get("digest", ""))),
            size=int(raw.get("size", 0)),
            platform=name,
        )


@dataclass(frozen=True)
class Manifest:
    """A manifest exactly as the registry holds it: bytes, media type, digest."""

    data: bytes
    media_type: str
    digest: str
    _doc: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_bytes(cls, data: bytes, media_type: str | None = None) -> Manifest:
        try:
            doc = json.loads(data)
        except ValueError as exc:
            raise ValueError(f"manifest is not JSON: {exc}") from exc
        if not isinstance(doc, dict):
            raise ValueError("manifest is not a JSON object")
        declared = doc.get("mediaType")
        kind = media_type or (declared if isinstance(declared, str) else "")
        if not kind:
            # An OCI manifest may omit mediaType; tell an index by its "manifests".
            kind = OCI_INDEX if "manifests" in doc else OCI_MANIFEST
        return cls(data=data, media_type=kind, digest=sha256_digest(data), _doc=doc)

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_TYPES

    @property
    def children(self) -> list[Descriptor]:
        """The platform manifests of an index (empty for an image manifest)."""
        if not self.is_index:
            return []
        return [Descriptor.parse(m) for m in self._doc.get("manifests", [])]

    @property
    def blobs(self) -> list[Descriptor]:
        """Config and layers of an image manifest (empty for an index)."""
        if self.is_index:
            return []
        found = []
        if isinstance(self._doc.get("config"), dict):
            found.append(Descriptor.parse(self._doc["config"]))
        found.extend(Descriptor.parse(layer) for layer in self._doc.get("layers", []))
        return found

    @property
    def config(self) -> Descriptor | None:
        raw = self._doc.get("config")
        return Descriptor.parse(raw) if isinstance(raw, dict) else None

    @property
    def platforms(self) -> list[str]:
        return [c.platform for c in self.children if c.platform]
