"""Synthetic images: single- or multi-platform, N layers of given sizes, random content.

Layers are real (uncompressed, or gzip for the Docker format) tar archives holding
one file of seeded random bytes. Content is generated in chunks twice — once to hash,
once to upload — so pushing a 500 MB image needs no more memory than one chunk.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import random
import tarfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from image_cicd.registry.client import RegistryClient
from image_cicd.registry.media import (
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    OCI_INDEX,
    OCI_MANIFEST,
    Manifest,
)

Format = Literal["oci", "docker"]
CHUNK = 1 << 20

_LAYER_TYPES = {
    "oci": "application/vnd.oci.image.layer.v1.tar",
    "docker": "application/vnd.docker.image.rootfs.diff.tar.gzip",
}
_CONFIG_TYPES = {
    "oci": "application/vnd.oci.image.config.v1+json",
    "docker": "application/vnd.docker.container.image.v1+json",
}


@dataclass(frozen=True)
class Blob:
    """Content defined by a generator; digest and size are computed once."""

    media_type: str
    chunks: Callable[[], Iterator[bytes]]
    digest: str
    size: int
    diff_id: str

    @classmethod
    def from_bytes(cls, media_type: str, data: bytes) -> Blob:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        return cls(media_type, lambda: iter([data]), digest, len(data), digest)

    @classmethod
    def from_generator(
        cls, media_type: str, chunks: Callable[[], Iterator[bytes]], diff_id: str | None = None
    ) -> Blob:
        hasher, size = hashlib.sha256(), 0
        for chunk in chunks():
            hasher.update(chunk)
            size += len(chunk)
        digest = "sha256:" + hasher.hexdigest()
        return cls(media_type, chunks, digest, size, diff_id or digest)

    def descriptor(self) -> dict[str, object]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}


def _tar_layer(seed: int, size: int, name: str) -> Callable[[], Iterator[bytes]]:
    """A tar archive with one file of `size` seeded random bytes, streamed."""

    def chunks() -> Iterator[bytes]:
        info = tarfile.TarInfo(name)
        info.size = size
        info.mode = 0o644
        info.mtime = 0
        yield info.tobuf(format=tarfile.PAX_FORMAT)
        rng = random.Random(seed)
        left = size
        while left:
            n = min(CHUNK, left)
            yield rng.randbytes(n)
            left -= n
        yield b"\0" * ((512 - size % 512) % 512 + 1024)

    return chunks


def _gzipped(source: Callable[[], Iterator[bytes]]) -> Callable[[], Iterator[bytes]]:
    def chunks() -> Iterator[bytes]:
        buf = io.BytesIO()
        with gzip.GzipFile(fileobj=buf, mode="wb", compresslevel=1, mtime=0) as gz:
            for chunk in source():
                gz.write(chunk)
                if buf.tell() >= CHUNK:
                    yield buf.getvalue()
                    buf.seek(0)
                    buf.truncate()
        yield buf.getvalue()

    return chunks


@dataclass(frozen=True)
class PlatformImage:
    platform: str
    config: Blob
    layers: tuple[Blob, ...]
    manifest: Manifest

    @property
    def blobs(self) -> tuple[Blob, ...]:
        return (self.config, *self.layers)


@dataclass(frozen=True)
class SyntheticImage:
    manifest: Manifest
    platforms: tuple[PlatformImage, ...] = field(default_factory=tuple)

    @property
    def digest(self) -> str:
        return self.manifest.digest

    @property
    def size(self) -> int:
        return len(self.manifest.data) + sum(
            len(p.manifest.data) + sum(b.size for b in p.blobs) for p in self.platforms
        )


def _platform_image(
    platform: str,
    layer_sizes: Sequence[int],
    seed: int,
    fmt: Format,
    labels: Mapping[str, str],
    user: str,
    indent: str | int | None,
) -> PlatformImage:
    os_name, _, arch = platform.partition("/")
    layers = []
    for i, size in enumerate(layer_sizes):
        tar = _tar_layer(seed * 1000 + i, size, f"data/layer-{i}.bin")
        if fmt == "docker":
            diff_id = Blob.from_generator("", tar).digest
            layers.append(Blob.from_generator(_LAYER_TYPES[fmt], _gzipped(tar), diff_id))
        else:
            layers.append(Blob.from_generator(_LAYER_TYPES[fmt], tar))
    config_doc = {
        "architecture": arch or "amd64",
        "os": os_name or "linux",
        "created": "2026-01-01T00:00:00Z",
        "config": {"User": user, "Labels": dict(labels), "Cmd": ["/bin/true"]},
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]},
        "history": [{"created_by": f"image-cicd synthetic layer {i}"} for i in range(len(layers))],
    }
    config = Blob.from_bytes(_CONFIG_TYPES[fmt], json.dumps(config_doc, sort_keys=True).encode())
    media_type = OCI_MANIFEST if fmt == "oci" else DOCKER_MANIFEST
    doc = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": config.descriptor(),
        "layers": [layer.descriptor() for layer in layers],
    }
    data = _dumps(doc, indent)
    return PlatformImage(platform, config, tuple(layers), Manifest.from_bytes(data, media_type))


def _dumps(doc: object, indent: str | int | None) -> bytes:
    if indent is None:
        return json.dumps(doc, separators=(",", ":")).encode()
    # Unusual but valid JSON whitespace: the digest must survive it untouched.
    return (json.dumps(doc, indent=indent, separators=(" ,", " :  ")) + "\n\n").encode()


def build_image(
    *,
    layers: int = 2,
    layer_size: int = 1 << 20,
    layer_sizes: Sequence[int] | None = None,
    platforms: Sequence[str] = ("linux/amd64",),
    index: bool | None = None,
    fmt: Format = "oci",
    seed: int | None = None,
    labels: Mapping[str, str] | None = None,
    user: str = "1000:1000",
    indent: str | int | None = None,
) -> SyntheticImage:
    """Build (without pushing) an image; more than one platform makes an index."""
    seed = random.randrange(1 << 30) if seed is None else seed
    sizes = list(layer_sizes) if layer_sizes is not None else [layer_size] * layers
    built = tuple(
        _platform_image(p, sizes, seed * 31 + n, fmt, labels or {}, user, indent)
        for n, p in enumerate(platforms)
    )
    if not (index if index is not None else len(built) > 1):
        return SyntheticImage(built[0].manifest, built)
    media_type = OCI_INDEX if fmt == "oci" else DOCKER_MANIFEST_LIST
    doc = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "manifests": [
            {
                "mediaType": p.manifest.media_type,
                "digest": p.manifest.digest,
                "size": len(p.manifest.data),
                "platform": {
                    "os": p.platform.partition("/")[0],
                    "architecture": p.platform.partition("/")[2],
                },
            }
            for p in built
        ],
    }
    return SyntheticImage(Manifest.from_bytes(_dumps(doc, indent), media_type), built)


def push_image(
    client: RegistryClient,
    repository: str,
    image: SyntheticImage,
    *,
    tags: Sequence[str] = (),
    progress: Callable[[int], None] | None = None,
) -> str:
    """Push blobs, manifests by digest, then the tags. Returns the image digest."""
    for platform in image.platforms:
        for blob in platform.blobs:
            if client.blob_size(repository, blob.digest) is None:
                client.upload_blob(repository, blob.digest, blob.size, _counted(blob, progress))
        client.put_manifest(repository, platform.manifest.digest, platform.manifest)
    client.put_manifest(repository, image.digest, image.manifest)
    for tag in tags:
        client.put_manifest(repository, tag, image.manifest)
    return image.digest


def _counted(blob: Blob, progress: Callable[[int], None] | None) -> Iterator[bytes]:
    for chunk in blob.chunks():
        if progress:
            progress(len(chunk))
        yield chunk


def _file_blob(path: Path, media_type: str, digest: str) -> Blob:
    def chunks() -> Iterator[bytes]:
        with path.open("rb") as f:
            while chunk := f.read(CHUNK):
                yield chunk

    blob = Blob.from_generator(media_type, chunks)
    if blob.digest != digest:
        raise ValueError(f"{path}: content hashes to {blob.digest}, the layout says {digest}")
    return blob


def oci_layout_image(layout: Path) -> SyntheticImage:
    """The (first) image of an OCI image layout directory, ready for `push_image`."""
    try:
        index = json.loads((layout / "index.json").read_text())
        top = index["manifests"][0]
    except (OSError, ValueError, KeyError, IndexError) as exc:
        raise ValueError(f"{layout} is not an OCI image layout with an image: {exc}") from exc

    def blob_path(digest: str) -> Path:
        algorithm, _, hexd = digest.partition(":")
        return layout / "blobs" / algorithm / hexd

    def manifest(descriptor: Mapping[str, object]) -> Manifest:
        digest = str(descriptor["digest"])
        data = blob_path(digest).read_bytes()
        found = Manifest.from_bytes(data, str(descriptor.get("mediaType") or "") or None)
        if found.digest != digest:
            raise ValueError(f"{layout}: manifest {digest} does not match its content")
        return found

    def platform_image(m: Manifest, platform: str) -> PlatformImage:
        blobs = [_file_blob(blob_path(d.digest), d.media_type, d.digest) for d in m.blobs]
        return PlatformImage(platform, blobs[0], tuple(blobs[1:]), m)

    root = manifest(top)
    if root.is_index:
        children = tuple(
            platform_image(
                manifest({"digest": c.digest, "mediaType": c.media_type}), c.platform or ""
            )
            for c in root.children
        )
        return SyntheticImage(root, children)
    return SyntheticImage(root, (platform_image(root, ""),))
