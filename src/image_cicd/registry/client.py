"""A small client for the OCI distribution API.

Every request carries an explicit TLS `verify` and a timeout. Operations that are
safe to repeat (GET, HEAD, manifest PUT, upload start, mount) are retried with
exponential backoff and full jitter on 429, 5xx and connection errors; a streamed
blob body is not (the copy engine retries the whole blob instead).

Why one module of ~500 lines: it is one class, `RegistryClient`, whose every public
method is one endpoint of the distribution API (manifests, blobs, uploads, tags, the
catalog) made through the one private `_request` that holds the retry, redirect,
auth and request-count rules; the helpers below it serve only those methods. Moving
the endpoints away from `_request` would split a class the copy engine, the version
reads and the CLI use as one unit, and leave a module that could not be read without
the other. Auth (`auth.py`), errors (`errors.py`), media types (`media.py`) and the
copy engine (`copy.py`) are already modules of their own.
"""

from __future__ import annotations

import contextlib
import random
import re
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin

import requests
from requests.adapters import HTTPAdapter

from image_cicd.registry.auth import Authenticator, CredentialsProvider
from image_cicd.registry.errors import (
    CredentialsRenewed,
    DigestMismatch,
    RegistryError,
    RegistryUnavailable,
    error_from_response,
)
from image_cicd.registry.media import ACCEPT, Descriptor, Manifest, is_digest, sha256_digest

_TRANSIENT_STATUS = frozenset({429, 500, 502, 503, 504})
_REDIRECTS = (301, 302, 303, 307, 308)
_TRANSIENT_ERRORS = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
)
CHUNK = 1 << 20


@dataclass(frozen=True)
class Upload:
    """Where a blob upload continues (the registry's `Location`)."""

    url: str


class _SizedStream:
    """An iterable body with a known length, so requests sends Content-Length."""

    def __init__(self, chunks: Iterable[bytes], size: int) -> None:
        self._chunks = chunks
        self._size = size

    def __len__(self) -> int:
        return self._size

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._chunks)


class RegistryClient:
    def __init__(
        self,
        base_url: str,
        *,
        credentials: CredentialsProvider | None = None,
        verify: bool | str = True,
        timeout: tuple[float, float] = (5.0, 60.0),
        retries: int = 4,
        backoff: float = 0.2,
        pool_size: int = 16,
        upload_chunk_size: int = 64 << 20,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.credentials = credentials
        self.verify = verify
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.upload_chunk_size = upload_chunk_size
        self._made = 0
        self._count_lock = threading.Lock()
        self._session = requests.Session()
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=pool_size, max_retries=0)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)
        self._session.headers["User-Agent"] = "image-cicd"
        self._auth = Authenticator(
            credentials, self._session, verify=verify, timeout=timeout, on_request=self._count
        )

    @classmethod
    def for_host(cls, host: str, *, insecure: bool = False, **kwargs: Any) -> RegistryClient:
        """A client for `host[:port]`: HTTPS unless `insecure` (plain HTTP)."""
        return cls(("http://" if insecure else "https://") + host, **kwargs)

    @property
    def host(self) -> str:
        return self.base_url.split("://", 1)[-1]

    @property
    def requests_made(self) -> int:
        return self._made

    def _count(self) -> None:
        with self._count_lock:
            self._made += 1

    def close(self) -> None:
        self._session.close()

    # -- transport -----------------------------------------------------------------

    def _request(
        self,
        method: str,
        url: str,
        scopes: tuple[str, ...],
        *,
        context: str,
        ok: tuple[int, ...] = (200,),
        retry: bool = True,
        allow_404: bool = False,
        anonymous: bool = False,
        **kwargs: Any,
    ) -> requests.Response:
        if not url.startswith(("http://", "https://")):
            url = urljoin(self.base_url + "/", url.lstrip("/"))
        headers = dict(kwargs.pop("headers", {}) or {})
        attempts = self.retries + 1 if retry else 1
        last: Exception | None = None
        for attempt in range(attempts):
            if attempt:
                self._sleep(attempt, last)
            auth = None if anonymous else self._auth.header(scopes)
            if auth:
                headers["Authorization"] = auth
            try:
                self._count()
                resp = self._session.request(
                    method, url, headers=headers, verify=self.verify, timeout=self.timeout, **kwargs
                )
                if not anonymous and _refused(resp):
                    retry_auth = self._auth.challenged(
                        resp.headers.get("WWW-Authenticate"), scopes, refused=auth
                    )
                    if retry_auth and retry_auth != auth:
                        if not _replayable(kwargs):  # the body is spent: send it again
                            resp.close()
                            raise CredentialsRenewed(
                                f"{method} {context}: {self.host} refused the credentials "
                                "(expired); renewed them, the transfer must start again",
                                status=resp.status_code,
                            )
                        headers["Authorization"] = retry_auth
                        resp.close()
                        self._count()
                        resp = self._session.request(
                            method,
                            url,
                            headers=headers,
                            verify=self.verify,
                            timeout=self.timeout,
                            **kwargs,
                        )
            except _TRANSIENT_ERRORS as exc:
                last = exc
                continue
            if resp.status_code in ok or (allow_404 and resp.status_code == 404):
                return resp
            if resp.status_code in _TRANSIENT_STATUS:
                last = _StatusError(resp)
                resp.close()
                continue
            raise error_from_response(resp.status_code, resp.content, f"{method} {context}")
        if isinstance(last, _StatusError):  # 429 or 5xx every time: try again later
            cause = error_from_response(last.status, last.body, f"{method} {context}")
            raise RegistryUnavailable(
                f"{cause.message} (HTTP {last.status}, {attempts} attempt(s))", status=last.status
            )
        raise RegistryUnavailable(
            f"{method} {context}: {self.host} did not answer after {attempts} attempts "
            f"({_reason(last)})"
        )

    def _sleep(self, attempt: int, last: Exception | None) -> None:
        delay = random.uniform(0, self.backoff * (2 ** (attempt - 1)))
        if isinstance(last, _StatusError) and last.retry_after is not None:
            delay = min(max(delay, last.retry_after), 30.0)
        time.sleep(delay)

    # -- API -----------------------------------------------------------------------

    def ping(self) -> None:
        """GET /v2/ — learns the auth scheme; raises if the registry is not usable."""
        self._request("GET", "/v2/", (), context=f"{self.host}/v2/")

    def get_manifest(self, repository: str, reference: str) -> Manifest:
        """Fetch a manifest by tag or digest; a digest is verified against the bytes."""
        resp = self._request(
            "GET",
            f"/v2/{repository}/manifests/{reference}",
            (f"repository:{repository}:pull",),
            context=f"{repository}:{reference}",
            headers={"Accept": ACCEPT},
        )
        content_type = resp.headers.get("Content-Type", "").split(";")[0].strip()
        manifest = Manifest.from_bytes(
            resp.content, content_type if content_type.startswith("application/vnd.") else None
        )
        expected = reference if is_digest(reference) else resp.headers.get("Docker-Content-Digest")
        if expected and expected != manifest.digest:
            raise DigestMismatch(
                f"{repository}:{reference}: manifest bytes hash to {manifest.digest}, "
                f"expected {expected}"
            )
        return manifest

    def head_manifest(self, repository: str, reference: str) -> Descriptor | None:
        """The descriptor a tag or digest resolves to, or None if there is none."""
        resp = self._request(
            "HEAD",
            f"/v2/{repository}/manifests/{reference}",
            (f"repository:{repository}:pull",),
            context=f"{repository}:{reference}",
            headers={"Accept": ACCEPT},
            allow_404=True,
        )
        if resp.status_code == 404:
            return None
        digest = resp.headers.get("Docker-Content-Digest")
        if not digest:  # some registries omit it on HEAD
            return Descriptor(
                media_type=(m := self.get_manifest(repository, reference)).media_type,
                digest=m.digest,
                size=len(m.data),
            )
        return Descriptor(
            media_type=resp.headers.get("Content-Type", "").split(";")[0].strip(),
            digest=digest,
            size=int(resp.headers.get("Content-Length") or 0),
        )

    def put_manifest(self, repository: str, reference: str, manifest: Manifest) -> str:
        """PUT the exact bytes with their media type; returns the digest the registry stored."""
        resp = self._request(
            "PUT",
            f"/v2/{repository}/manifests/{reference}",
            (f"repository:{repository}:pull,push",),
            context=f"{repository}:{reference}",
            ok=(201, 200),
            data=manifest.data,
            headers={"Content-Type": manifest.media_type},
        )
        stored = resp.headers.get("Docker-Content-Digest", manifest.digest)
        if stored != manifest.digest:
            raise DigestMismatch(
                f"{repository}:{reference}: registry stored {stored}, sent {manifest.digest}"
            )
        return stored

    def delete_manifest(self, repository: str, digest: str) -> None:
        self._request(
            "DELETE",
            f"/v2/{repository}/manifests/{digest}",
            (f"repository:{repository}:pull,push,delete",),
            context=f"{repository}@{digest}",
            ok=(202, 200),
        )

    def blob_size(self, repository: str, digest: str) -> int | None:
        """Size of a blob in the repository, or None if it is not there."""
        resp = self._request(
            "HEAD",
            f"/v2/{repository}/blobs/{digest}",
            (f"repository:{repository}:pull",),
            context=f"{repository}@{digest}",
            allow_404=True,
        )
        if resp.status_code == 404:
            return None
        return int(resp.headers.get("Content-Length") or 0)

    @contextmanager
    def open_blob(self, repository: str, digest: str) -> Iterator[Iterator[bytes]]:
        """Stream a blob's bytes in chunks.

        A redirect to storage (Amazon ECR: a pre-signed S3 URL) is followed without the
        registry's Authorization: the URL carries its own, and S3 refuses a second one.
        """
        context = f"{repository}@{digest}"
        resp = self._request(
            "GET",
            f"/v2/{repository}/blobs/{digest}",
            (f"repository:{repository}:pull",),
            context=context,
            ok=(200, *_REDIRECTS),
            stream=True,
            allow_redirects=False,
        )
        if resp.status_code in _REDIRECTS:
            resp.close()
            location = urljoin(resp.url, resp.headers.get("Location", ""))
            resp = self._request("GET", location, (), context=context, stream=True, anonymous=True)
        try:
            yield resp.iter_content(CHUNK)
        finally:
            resp.close()

    def get_blob(self, repository: str, digest: str) -> bytes:
        """A small blob (a config) in memory, verified against its digest."""
        with self.open_blob(repository, digest) as chunks:
            data = b"".join(chunks)
        if sha256_digest(data) != digest:
            raise DigestMismatch(f"{repository}@{digest}: blob bytes do not match the digest")
        return data

    def start_upload(
        self, repository: str, *, mount: str | None = None, from_repository: str | None = None
    ) -> Upload | None:
        """POST an upload; with `mount`, ask for a cross-repository mount first.

        Returns None when the blob was mounted (201), else where to upload (202).
        """
        scopes = [f"repository:{repository}:pull,push"]
        params = {}
        if mount and from_repository:
            scopes.append(f"repository:{from_repository}:pull")
            params = {"mount": mount, "from": from_repository}
        resp = self._request(
            "POST",
            f"/v2/{repository}/blobs/uploads/",
            tuple(scopes),
            context=f"{repository} blob upload",
            ok=(201, 202),
            params=params,
        )
        resp.close()
        if resp.status_code == 201:
            return None
        location = resp.headers.get("Location")
        if not location:
            raise RegistryError(f"POST {repository} blob upload: no Location in the answer")
        return Upload(urljoin(self.base_url + "/", location))

    def cancel_upload(self, upload: Upload, repository: str) -> None:
        with contextlib.suppress(RegistryError):  # registries expire abandoned uploads
            self._request(
                "DELETE",
                upload.url,
                (f"repository:{repository}:pull,push",),
                context=f"{repository} cancel upload",
                ok=(204, 200, 202, 404),
                retry=False,
            )

    def upload_blob(
        self,
        repository: str,
        digest: str,
        size: int,
        chunks: Iterable[bytes],
        upload: Upload | None = None,
    ) -> None:
        """Upload a blob from a stream of chunks.

        Blobs up to `upload_chunk_size` go as one PUT; larger ones as PATCH requests
        of that size each (with Content-Range), then an empty PUT with the digest. The
        offset is what was sent, not the answer's `Range`: Amazon ECR answers a PATCH
        `201` with a `Range` stuck at the first part (aws/containers-roadmap#2831).
        """
        upload = upload or self.start_upload(repository)
        assert upload is not None
        scopes = (f"repository:{repository}:pull,push",)
        context = f"{repository}@{digest}"
        url = upload.url
        if size <= self.upload_chunk_size:
            self._request(
                "PUT",
                _with_digest(url, digest),
                scopes,
                context=context,
                ok=(201,),
                retry=False,
                data=_SizedStream(chunks, size),
                headers={"Content-Type": "application/octet-stream"},
            )
            return
        parts = _Parts(chunks)
        sent = 0
        while sent < size:
            part = min(self.upload_chunk_size, size - sent)
            body = parts.take(part)
            resp = self._request(
                "PATCH",
                url,
                scopes,
                context=context,
                ok=(202, 201),  # Amazon ECR answers 201 Created
                retry=False,
                data=_SizedStream(body, part),
                headers={
                    "Content-Type": "application/octet-stream",
                    "Content-Range": f"{sent}-{sent + part - 1}",
                },
            )
            resp.close()
            url = urljoin(self.base_url + "/", resp.headers.get("Location", url))
            sent += part
        self._request(
            "PUT",
            _with_digest(url, digest),
            scopes,
            context=context,
            ok=(201,),
            retry=False,
            headers={"Content-Length": "0"},
        )

    def list_tags(self, repository: str, *, page_size: int = 1000) -> list[str]:
        """All tags of a repository, following `Link` pagination."""
        tags: list[str] = []
        url = f"/v2/{repository}/tags/list?n={page_size}"
        while url:
            resp = self._request(
                "GET",
                url,
                (f"repository:{repository}:pull",),
                context=f"{repository} tags",
                allow_404=True,
            )
            if resp.status_code == 404:  # no such repository yet: no tags
                resp.close()
                return tags
            tags.extend(resp.json().get("tags") or [])
            url = _next_link(resp)
        return tags

    def catalog(self, *, page_size: int = 1000) -> list[str]:
        """Repository names (registries that offer `/v2/_catalog`)."""
        names: list[str] = []
        url = f"/v2/_catalog?n={page_size}"
        while url:
            resp = self._request(
                "GET", url, ("registry:catalog:*",), context=f"{self.host} catalog"
            )
            names.extend(resp.json().get("repositories") or [])
            url = _next_link(resp)
        return names


class _StatusError(Exception):
    def __init__(self, resp: requests.Response) -> None:
        self.status = resp.status_code
        self.body = resp.content
        value = resp.headers.get("Retry-After", "")
        self.retry_after = float(value) if value.isdigit() else None
        super().__init__(f"HTTP {self.status}")


def _reason(exc: Exception | None) -> str:
    """A short reason for a transport error ("Connection refused", "ReadTimeout")."""
    found = re.search(r"\[Errno -?\d+\] ([^'\")]+)", str(exc))
    return found.group(1).strip() if found else type(exc).__name__


def _refused(resp: requests.Response) -> bool:
    """A 401 challenge, or Amazon ECR's 403 DENIED for an expired authorization token."""
    if resp.status_code == 401:
        return "WWW-Authenticate" in resp.headers
    return resp.status_code == 403 and b"token has expired" in resp.content.lower()


def _replayable(kwargs: dict[str, Any]) -> bool:
    return not isinstance(kwargs.get("data"), _SizedStream)


def _with_digest(url: str, digest: str) -> str:
    return url + ("&" if "?" in url else "?") + "digest=" + digest


def _next_link(resp: requests.Response) -> str:
    link = resp.links.get("next", {}).get("url", "")
    return str(link)


class _Parts:
    """Cut a stream of chunks into consecutive parts of given sizes, lazily."""

    def __init__(self, stream: Iterable[bytes]) -> None:
        self._stream = iter(stream)
        self._pending = b""

    def take(self, count: int) -> Iterator[bytes]:
        have = 0
        while have < count:
            if not self._pending:
                try:
                    self._pending = next(self._stream)
                except StopIteration:
                    raise RegistryError(f"blob stream ended {count - have} bytes short") from None
            piece = self._pending[: count - have]
            self._pending = self._pending[len(piece) :]
            have += len(piece)
            yield piece
