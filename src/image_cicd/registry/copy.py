"""The copy engine: an image, by digest, from one repository to another, byte-exact.

Order of work: read the root manifest (and an index's children), verify every digest;
if the destination has that manifest already, only add the tags; otherwise bring
every blob into the destination (same registry: mount, and where the mount is
refused, as Amazon ECR does by default, stream it; otherwise skip it when
it is there, else stream it with a digest check), PUT the child manifests by digest,
then the root — by its tag when it has one. The root goes last, after all the
content it refers to, so nothing is tagged before all its content is there.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import requests

from image_cicd.registry.client import RegistryClient
from image_cicd.registry.errors import BlobUnknown, DigestMismatch, RegistryUnavailable
from image_cicd.registry.media import Descriptor, Manifest

BlobOutcome = Literal["present", "mounted", "copied"]
MOUNT_REFUSED = (
    "the registry answered the cross-repository mount with an upload session (202), so "
    "the blob was streamed: on Amazon ECR blob mounting is off (account setting "
    "BLOB_MOUNTING, off by default) or the two repositories use different encryption; "
    "turn it on with `aws ecr put-account-setting --name BLOB_MOUNTING --value ENABLED`"
)
Progress = Callable[[str, int], None]
"""Called with ("bytes", n) as blob bytes move and (outcome, size) when a blob is done."""


@dataclass
class CopyResult:
    source: str
    destination: str
    digest: str
    media_type: str
    platforms: list[str]
    manifests: int = 0
    blobs_present: int = 0
    blobs_mounted: int = 0
    blobs_copied: int = 0
    bytes_moved: int = 0
    mounts_refused: int = 0  # mounts asked for and answered 202: those blobs streamed
    mount_refused_reason: str = ""
    image_bytes: int = 0
    requests: int = 0
    seconds: float = 0.0
    tags: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Image:
    """A root manifest with its child manifests (for an index), all verified."""

    root: Manifest
    children: tuple[Manifest, ...]

    @property
    def manifests(self) -> tuple[Manifest, ...]:
        return (*self.children, self.root)

    @property
    def blobs(self) -> list[Descriptor]:
        seen: dict[str, Descriptor] = {}
        for manifest in self.manifests:
            for blob in manifest.blobs:
                seen.setdefault(blob.digest, blob)
        return list(seen.values())

    @property
    def size(self) -> int:
        return sum(len(m.data) for m in self.manifests) + sum(b.size for b in self.blobs)


def read_image(client: RegistryClient, repository: str, reference: str) -> Image:
    """The manifest at `reference` and, for an index, every child (each digest-checked)."""
    root = client.get_manifest(repository, reference)
    children = tuple(client.get_manifest(repository, c.digest) for c in root.children)
    return Image(root=root, children=children)


def _verified(
    chunks: Iterable[bytes], digest: str, size: int, progress: Progress
) -> Iterator[bytes]:
    """Pass chunks through, refusing to hand over the last byte of a mismatching blob."""
    hasher = hashlib.sha256()
    seen = 0
    for chunk in chunks:
        seen += len(chunk)
        hasher.update(chunk)
        if seen >= size:
            actual = "sha256:" + hasher.hexdigest()
            if seen != size or actual != digest:
                raise DigestMismatch(
                    f"blob {digest}: source sent {seen} bytes hashing to {actual}, "
                    f"expected {size} bytes"
                )
        progress("bytes", len(chunk))
        yield chunk
    if seen < size:
        raise DigestMismatch(f"blob {digest}: source sent {seen} of {size} bytes")


@dataclass(frozen=True)
class BlobsRead:
    """What `read_blobs` did: every blob of an image streamed and hashed."""

    blobs: int
    bytes: int  # hashed and matching
    failures: tuple[str, ...]  # one line per blob that is missing or does not match


def read_blobs(
    client: RegistryClient,
    repository: str,
    image: Image,
    *,
    workers: int = 4,
    blob_attempts: int = 3,
) -> BlobsRead:
    """Stream every blob of `image` from `repository` and hash it as the copy engine
    does (`_verified`), in parallel, one chunk per worker in memory.

    A blob whose bytes do not hash to its digest, or that the registry does not have,
    is a failure to report; a registry that does not answer raises RegistryUnavailable.
    """

    def one(blob: Descriptor) -> tuple[int, str | None]:
        for attempt in range(1, blob_attempts + 1):
            try:
                with client.open_blob(repository, blob.digest) as chunks:
                    for _ in _verified(chunks, blob.digest, blob.size, lambda _k, _n: None):
                        pass
                return blob.size, None
            except DigestMismatch as exc:
                return 0, exc.message
            except BlobUnknown as exc:
                return 0, f"blob {blob.digest}: not in {repository} ({exc.message})"
            except (RegistryUnavailable, requests.RequestException) as exc:
                if attempt == blob_attempts:
                    raise RegistryUnavailable(
                        f"blob {blob.digest} of {repository}: gave up reading it after "
                        f"{attempt} attempts ({exc})"
                    ) from exc
                time.sleep(0.1 * attempt)
        raise AssertionError("unreachable")

    blobs = image.blobs
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="hash") as pool:
        outcomes = list(pool.map(one, blobs))
    return BlobsRead(
        blobs=len(blobs),
        bytes=sum(size for size, _ in outcomes),
        failures=tuple(failure for _, failure in outcomes if failure),
    )


class _Copier:
    def __init__(
        self,
        src: RegistryClient,
        src_repo: str,
        dst: RegistryClient,
        dst_repo: str,
        *,
        mount: bool,
        progress: Progress,
        blob_attempts: int,
    ) -> None:
        self.src, self.src_repo, self.dst, self.dst_repo = src, src_repo, dst, dst_repo
        self.mount = mount and src.base_url == dst.base_url
        self.progress = progress
        self.blob_attempts = blob_attempts

    def blob(self, blob: Descriptor) -> tuple[BlobOutcome, int, bool]:
        """How the blob got there, the bytes moved, and whether a mount was refused."""
        # Within one registry the mount request alone does it: the registry answers
        # 201 whether it links the blob now or already had it (counted as mounted).
        if not self.mount and self.dst.blob_size(self.dst_repo, blob.digest) is not None:
            self.progress("present", blob.size)
            return "present", 0, False
        for attempt in range(1, self.blob_attempts + 1):
            try:
                return self._transfer(blob)
            except (RegistryUnavailable, requests.RequestException) as exc:
                if attempt == self.blob_attempts:
                    raise RegistryUnavailable(
                        f"blob {blob.digest} to {self.dst_repo}: gave up after {attempt} "
                        f"attempts ({exc})"
                    ) from exc
                time.sleep(0.1 * attempt)
        raise AssertionError("unreachable")

    def _transfer(self, blob: Descriptor) -> tuple[BlobOutcome, int, bool]:
        upload = self.dst.start_upload(
            self.dst_repo,
            mount=blob.digest if self.mount else None,
            from_repository=self.src_repo if self.mount else None,
        )
        if upload is None:
            self.progress("mounted", blob.size)
            return "mounted", 0, False
        refused = self.mount  # a mount was asked for and answered 202 (see MOUNT_REFUSED)
        try:
            if refused and self.dst.blob_size(self.dst_repo, blob.digest) is not None:
                self.dst.cancel_upload(upload, self.dst_repo)
                self.progress("present", blob.size)
                return "present", 0, True
            with self.src.open_blob(self.src_repo, blob.digest) as chunks:
                body = _verified(chunks, blob.digest, blob.size, self.progress)
                self.dst.upload_blob(self.dst_repo, blob.digest, blob.size, body, upload)
        except BaseException:
            self.dst.cancel_upload(upload, self.dst_repo)
            raise
        self.progress("copied", blob.size)
        return "copied", blob.size, refused


def copy_image(
    src: RegistryClient,
    src_repo: str,
    reference: str,
    dst: RegistryClient,
    dst_repo: str,
    *,
    tags: Sequence[str] = (),
    mount: bool = True,
    workers: int = 4,
    progress: Progress | None = None,
    image: Image | None = None,
    blob_attempts: int = 3,
) -> CopyResult:
    """Copy `src_repo@reference` to `dst_repo` byte-exact and return what it took.

    `reference` may be a tag, but promotion always passes a digest. `image` skips
    reading the source manifests again when the caller already has them.
    """
    started = time.perf_counter()
    before = src.requests_made + (dst.requests_made if dst is not src else 0)
    image = image or read_image(src, src_repo, reference)
    result = CopyResult(
        source=f"{src.host}/{src_repo}@{image.root.digest}",
        destination=f"{dst.host}/{dst_repo}@{image.root.digest}",
        digest=image.root.digest,
        media_type=image.root.media_type,
        platforms=image.root.platforms,
        manifests=len(image.manifests),
        image_bytes=image.size,
    )
    copier = _Copier(
        src,
        src_repo,
        dst,
        dst_repo,
        mount=mount,
        progress=progress or (lambda _kind, _n: None),
        blob_attempts=blob_attempts,
    )
    if dst.head_manifest(dst_repo, image.root.digest) is not None:
        # The destination has this image already (a re-promotion): only tags to add.
        result.blobs_present = len(image.blobs)
        copier.progress("present", image.size)
        for tag in tags:
            dst.put_manifest(dst_repo, tag, image.root)
    else:
        with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="blob") as pool:
            outcomes = list(pool.map(copier.blob, image.blobs))
        for outcome, moved, refused in outcomes:
            setattr(result, f"blobs_{outcome}", getattr(result, f"blobs_{outcome}") + 1)
            result.bytes_moved += moved
            result.mounts_refused += refused
        if result.mounts_refused:
            result.mount_refused_reason = MOUNT_REFUSED
        for manifest in image.children:  # children before the index that lists them
            dst.put_manifest(dst_repo, manifest.digest, manifest)
        # The root last: by its first tag (which stores it by digest too), or by digest.
        for reference in tags or [image.root.digest]:
            dst.put_manifest(dst_repo, reference, image.root)
    result.tags.extend(tags)
    result.requests = src.requests_made + (dst.requests_made if dst is not src else 0) - before
    result.seconds = round(time.perf_counter() - started, 4)
    return result
