"""Image references: `host[:port]/repository[:tag][@digest]`."""

from __future__ import annotations

import re
from dataclasses import dataclass

from image_cicd.registry.media import is_digest

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPO = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_HOST = re.compile(r"^(?:[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*|\[[0-9a-fA-F:]+\])(?::\d+)?$")


def _is_host(text: str) -> bool:
    """As Docker decides: a host has a dot or a port, or is localhost."""
    looks_like_host = "." in text or ":" in text or text == "localhost"
    return looks_like_host and bool(_HOST.match(text))


class BadReference(ValueError):
    pass


@dataclass(frozen=True)
class Reference:
    host: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def reference(self) -> str:
        """What goes after /manifests/: the digest if pinned, else the tag."""
        return self.digest or self.tag or "latest"

    def __str__(self) -> str:
        text = f"{self.host}/{self.repository}"
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


def check_repository(name: str) -> str:
    if not _REPO.match(name) or len(name) > 255:
        raise BadReference(f"not a valid repository name: {name!r}")
    return name


def check_tag(tag: str) -> str:
    if not _TAG.match(tag):
        raise BadReference(f"not a valid tag: {tag!r}")
    return tag


def parse_reference(text: str) -> Reference:
    """Parse `host[:port]/repository[:tag][@sha256:...]`; the host is required."""
    rest, digest = text, None
    if "@" in rest:
        rest, digest = rest.split("@", 1)
        if not is_digest(digest):
            raise BadReference(f"{text!r}: not a sha256 digest after '@': {digest!r}")
    if "/" not in rest:
        raise BadReference(f"{text!r}: expected host[:port]/repository[:tag|@digest]")
    host, path = rest.split("/", 1)
    if not _is_host(host):
        raise BadReference(f"{text!r}: {host!r} is not a registry host (host[:port])")
    tag = None
    last = path.rsplit("/", 1)[-1]
    if ":" in last:
        path, tag = path.rsplit(":", 1)
        check_tag(tag)
    check_repository(path)
    return Reference(host=host, repository=path, tag=tag, digest=digest)
