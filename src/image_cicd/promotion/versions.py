"""Version tags, promotion into a stage repository, and rollback.

Each stage repository gets one immutable version tag per promoted digest (default
`v<major>.<minor>`: first `v0.1`, then the minor is bumped), and `latest` points at
the version the stage runs. Computing the next version and moving `latest` happen
under a per-repository lease, so two promotions never get the same version and
`latest` never moves backwards except by an explicit rollback.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

from image_cicd.ledger.records import RollbackPlan
from image_cicd.promotion.locks import Lease, Locker
from image_cicd.registry.client import RegistryClient
from image_cicd.registry.copy import CopyResult, Progress, copy_image, read_image

LATEST = "latest"


class VersionError(Exception):
    """A promotion or rollback that cannot be done as asked; nothing was changed."""


class NothingToRollBack(VersionError):
    pass


class VersionNotFound(VersionError):
    pass


class AlreadyAtVersion(VersionError):
    pass


class LatestUntagged(VersionError):
    """`latest` points at a digest that has no version tag."""


class VersionTaken(VersionError):
    """A version tag exists with another digest (tags were changed outside the lock)."""


@dataclass(frozen=True)
class VersionScheme:
    """A tag format with `{minor}` and optionally `{major}`, e.g. `v{major}.{minor}`."""

    format: str = "v{major}.{minor}"

    def __post_init__(self) -> None:
        if "{minor}" not in self.format:
            raise ValueError(f"version format {self.format!r} needs a {{minor}} field")
        try:
            self.render(0, 1)
        except (KeyError, IndexError, ValueError) as exc:
            msg = f"version format {self.format!r}: only {{major}} and {{minor}} fields"
            raise ValueError(msg) from exc

    @property
    def _pattern(self) -> re.Pattern[str]:
        parts = re.split(r"(\{major\}|\{minor\})", self.format)
        regex = "".join(
            f"(?P<{p[1:-1]}>0|[1-9][0-9]*)" if p in ("{major}", "{minor}") else re.escape(p)
            for p in parts
        )
        return re.compile(f"^{regex}$")

    def render(self, major: int, minor: int) -> str:
        return self.format.format(major=major, minor=minor)

    def parse(self, tag: str) -> tuple[int, int] | None:
        match = self._pattern.match(tag)
        if not match:
            return None
        groups = match.groupdict()
        return int(groups.get("major") or 0), int(groups["minor"])

    def next_after(self, tags: Sequence[str]) -> str:
        versions = [v for v in (self.parse(t) for t in tags) if v is not None]
        if not versions:
            return self.render(0, 1)
        major, minor = max(versions)
        return self.render(major, minor + 1)


@dataclass(frozen=True)
class StageState:
    """What a stage repository holds: version tag -> digest, and `latest`'s digest."""

    repository: str
    versions: dict[str, str]
    latest: str | None
    scheme: VersionScheme

    def ordered(self) -> list[str]:
        """Version tags, oldest first."""
        return sorted(self.versions, key=lambda t: self.scheme.parse(t) or (0, 0))

    def version_of(self, digest: str | None) -> str | None:
        """The newest version tag pointing at `digest`."""
        tags = [t for t in self.ordered() if self.versions[t] == digest]
        return tags[-1] if tags else None

    @property
    def current(self) -> str | None:
        return self.version_of(self.latest)


def read_stage(
    client: RegistryClient,
    repository: str,
    scheme: VersionScheme,
    latest_tag: str = LATEST,
    *,
    workers: int = 8,
) -> StageState:
    tags = client.list_tags(repository)
    wanted = [t for t in tags if scheme.parse(t) is not None]
    if latest_tag in tags:
        wanted.append(latest_tag)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        heads = list(pool.map(lambda t: client.head_manifest(repository, t), wanted))
    digests = {t: h.digest for t, h in zip(wanted, heads, strict=True) if h is not None}
    latest = digests.pop(latest_tag, None) if latest_tag in tags else None
    return StageState(repository, digests, latest, scheme)


@dataclass(frozen=True)
class PromoteResult:
    """What `promote` did in one stage: the copy, the version, where latest was before."""

    repository: str
    digest: str
    version: str
    new_version: bool
    latest_moved: bool
    previous_version: str | None
    previous_digest: str | None
    copy: CopyResult

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def promote(
    src: RegistryClient,
    src_repo: str,
    digest: str,
    dst: RegistryClient,
    dst_repo: str,
    *,
    locker: Locker,
    scheme: VersionScheme | None = None,
    latest_tag: str = LATEST,
    mount: bool = True,
    workers: int = 4,
    progress: Progress | None = None,
) -> PromoteResult:
    """Copy `src_repo@digest` into `dst_repo`, give it a version, move `latest` to it.

    The content is copied before the lock is taken (it can take long and is safe to
    repeat); only reading the tags, tagging and moving `latest` happen under it.
    """
    scheme = scheme or VersionScheme()
    image = read_image(src, src_repo, digest)
    copied = copy_image(
        src,
        src_repo,
        digest,
        dst,
        dst_repo,
        mount=mount,
        workers=workers,
        progress=progress,
        image=image,
    )
    with locker.hold(dst_repo) as lease:
        state = read_stage(dst, dst_repo, scheme, latest_tag)
        version = state.version_of(digest)
        new_version = version is None
        if version is None:
            version = scheme.next_after(list(state.versions))
            taken = dst.head_manifest(dst_repo, version)
            if taken is not None:
                raise VersionTaken(f"{dst_repo}:{version} already exists ({taken.digest})")
            lease.check()
            dst.put_manifest(dst_repo, version, image.root)
        current = state.current
        forward = current is None or _key(scheme, version) >= _key(scheme, current)
        move = state.latest != digest and forward
        if move:
            lease.check()
            dst.put_manifest(dst_repo, latest_tag, image.root)
    return PromoteResult(
        repository=dst_repo,
        digest=digest,
        version=version,
        new_version=new_version,
        latest_moved=move,
        previous_version=current,
        previous_digest=state.latest,
        copy=copied,
    )


def _key(scheme: VersionScheme, tag: str) -> tuple[int, int]:
    return scheme.parse(tag) or (-1, -1)


@dataclass(frozen=True)
class Rollback:
    """A rollback's move; `from_version` is None when `latest` was at an untagged
    digest (`from_digest`). `moved` is False when `latest` was there already (a retry
    applying its plan again)."""

    repository: str
    from_version: str | None
    to_version: str
    digest: str
    from_digest: str | None = None
    moved: bool = True

    @property
    def message(self) -> str:
        where = self.from_version or f"untagged {self.from_digest}"
        return f"Rollback from {where} to {self.to_version}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "repository": self.repository,
            "from": self.from_version,
            "to": self.to_version,
            "digest": self.digest,
            "message": self.message,
        }


class LatestMoved(VersionError):
    """`latest` changed between planning a rollback and applying it."""


def plan_rollback(
    client: RegistryClient,
    repository: str,
    *,
    to: str | None = None,
    expected: str | None = None,
    scheme: VersionScheme | None = None,
    latest_tag: str = LATEST,
) -> RollbackPlan:
    """The version `latest` points at and the one before it (or `to`); reads only.

    `expected` is where the caller saw `latest` (a version tag or a digest): if it is
    no longer there, LatestMoved. A named `to` works also when `latest` points at a
    digest without a version tag (moved outside the tool).
    """
    scheme = scheme or VersionScheme()
    if to is not None and scheme.parse(to) is None:
        raise VersionNotFound(f"{to!r} is not a version tag (format {scheme.format})")
    state = read_stage(client, repository, scheme, latest_tag)
    return plan_rollback_of(state, to=to, expected=expected, latest_tag=latest_tag)


def plan_rollback_of(
    state: StageState,
    *,
    to: str | None = None,
    expected: str | None = None,
    latest_tag: str = LATEST,
) -> RollbackPlan:
    """`plan_rollback` on a stage already read (the console's repositories page)."""
    repository, scheme = state.repository, state.scheme
    if to is not None and scheme.parse(to) is None:
        raise VersionNotFound(f"{to!r} is not a version tag (format {scheme.format})")
    current = state.current
    if expected is not None and expected not in (current, state.latest):
        now = f"{current} ({state.latest})" if current else state.latest or "no image"
        raise LatestMoved(
            f"{repository}:{latest_tag} is at {now}, no longer at {expected}; nothing was changed"
        )
    if state.latest is None:
        raise NothingToRollBack(f"{repository} has no {latest_tag!r} tag: nothing runs there")
    if current is None and to is None:
        raise LatestUntagged(
            f"{repository}:{latest_tag} points at {state.latest}, which has no version tag, "
            "so there is no previous version; name the version to roll back to (--to)"
        )
    if to is not None:
        if to not in state.versions:
            known = ", ".join(state.ordered()) or "none"
            raise VersionNotFound(f"{repository} has no version {to} (versions: {known})")
        if state.versions[to] == state.latest:
            raise AlreadyAtVersion(f"{repository}:{latest_tag} is already at {to}")
        target = to
    else:
        assert current is not None  # an untagged `latest` was refused above
        older = [v for v in state.ordered() if _key(scheme, v) < _key(scheme, current)]
        if not older:
            raise NothingToRollBack(f"{repository} is at {current}: no older version")
        target = older[-1]
    return RollbackPlan(repository, current, state.latest, target, state.versions[target])


def apply_rollback(
    client: RegistryClient, plan: RollbackPlan, lease: Lease, *, latest_tag: str = LATEST
) -> Rollback:
    """Move `latest` as planned; the caller holds `lease` on the repository. Applying a
    plan again changes nothing (`moved` is False); if `latest` moved elsewhere
    meanwhile, LatestMoved."""
    head = client.head_manifest(plan.repository, latest_tag)
    now = head.digest if head else None
    moved = now != plan.to_digest  # else: done already (this is a retry)
    if moved:
        if now != plan.from_digest:
            raise LatestMoved(
                f"{plan.repository}:{latest_tag} changed since the rollback from "
                f"{plan.from_version or plan.from_digest} to {plan.to_version} was planned "
                f"(it is at {now or 'no image'}); nothing was changed"
            )
        manifest = client.get_manifest(plan.repository, plan.to_digest)
        lease.check()
        client.put_manifest(plan.repository, latest_tag, manifest)
    return Rollback(
        plan.repository,
        plan.from_version,
        plan.to_version,
        plan.to_digest,
        from_digest=plan.from_digest,
        moved=moved,
    )


def rollback(
    client: RegistryClient,
    repository: str,
    *,
    locker: Locker,
    to: str | None = None,
    scheme: VersionScheme | None = None,
    latest_tag: str = LATEST,
) -> Rollback:
    """Move `latest` to the version before the one it points at now (or to `to`),
    planned and applied under one lease.

    Nothing is deleted; a second rollback goes one version further back.
    """
    with locker.hold(repository) as lease:
        plan = plan_rollback(client, repository, to=to, scheme=scheme, latest_tag=latest_tag)
        return apply_rollback(client, plan, lease, latest_tag=latest_tag)
