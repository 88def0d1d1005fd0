"""Registry authentication: anonymous, Basic, Bearer-token challenge, Amazon ECR.

Credentials come from a provider (a callable returning `(username, password)` or
None), so the ECR provider can refresh its token when it expires. Bearer tokens are
cached per set of scopes; a mount asks for `push` on the destination and `pull` on
the source repository in the same token.
"""

from __future__ import annotations

import base64
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import requests

Credentials = tuple[str, str]
CredentialsProvider = Callable[[], Credentials | None]


@runtime_checkable
class RenewableCredentials(Protocol):
    """A provider whose credentials can expire before it knows (a cached ECR token)."""

    def __call__(self) -> Credentials | None: ...

    def renew(self, refused: Credentials) -> None:
        """`refused` was turned down by the registry: fetch new ones on the next call."""


_PARAM = re.compile(r'(\w+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')


@dataclass(frozen=True)
class Challenge:
    scheme: str
    params: dict[str, str] = field(default_factory=dict)


def parse_challenge(header: str) -> Challenge | None:
    """Parse a `WWW-Authenticate` header (`Bearer realm="...",service="..."`)."""
    header = header.strip()
    if not header:
        return None
    scheme, _, rest = header.partition(" ")
    params = {m.group(1).lower(): m.group(2) or m.group(3) or "" for m in _PARAM.finditer(rest)}
    return Challenge(scheme=scheme.lower(), params=params)


def static_credentials(username: str, password: str) -> CredentialsProvider:
    creds = (username, password)
    return lambda: creds


def _basic(creds: Credentials) -> str:
    return "Basic " + base64.b64encode(f"{creds[0]}:{creds[1]}".encode()).decode()


class EcrCredentials:
    """Amazon ECR: `GetAuthorizationToken` via boto3, used as Basic `AWS:<password>`.

    The token (valid 12 hours) is cached until five minutes before it expires, or
    until the registry refuses it (`renew`): a warm Lambda process can outlive it.
    """

    def __init__(self, ecr_client: Any, registry_id: str | None = None) -> None:
        self._client = ecr_client
        self._registry_id = registry_id
        self._lock = threading.Lock()
        self._creds: Credentials | None = None
        self._until = 0.0
        self.endpoint = ""

    def __call__(self) -> Credentials:
        with self._lock:
            if self._creds is None or time.time() > self._until:
                kwargs = {"registryIds": [self._registry_id]} if self._registry_id else {}
                data = self._client.get_authorization_token(**kwargs)["authorizationData"][0]
                user, _, password = (
                    base64.b64decode(data["authorizationToken"]).decode().partition(":")
                )
                self._creds = (user, password)
                self._until = data["expiresAt"].timestamp() - 300
                self.endpoint = data["proxyEndpoint"]
            return self._creds

    def renew(self, refused: Credentials) -> None:
        with self._lock:  # several threads may see the same token refused: fetch once
            if self._creds == refused:
                self._creds = None


class Authenticator:
    """Learns the registry's scheme from its first challenge, then authorizes up front."""

    def __init__(
        self,
        credentials: CredentialsProvider | None,
        session: requests.Session,
        *,
        verify: bool | str,
        timeout: tuple[float, float],
        on_request: Callable[[], None],
    ) -> None:
        self._credentials = credentials
        self._session = session
        self._verify = verify
        self._timeout = timeout
        self._on_request = on_request
        self._challenge: Challenge | None = None
        self._tokens: dict[frozenset[str], tuple[str, float]] = {}
        self._lock = threading.Lock()

    def header(self, scopes: Iterable[str]) -> str | None:
        """The Authorization header to send before any challenge, if one is known."""
        challenge = self._challenge
        if challenge is None:
            return None
        if challenge.scheme == "basic":
            creds = self._credentials() if self._credentials else None
            return _basic(creds) if creds else None
        if challenge.scheme == "bearer":
            return self._bearer(challenge, frozenset(scopes))
        return None

    def challenged(
        self, www_authenticate: str | None, scopes: Iterable[str], refused: str | None = None
    ) -> str | None:
        """Answer a refusal (a 401's challenge, or None for ECR's 403 "token has expired"):
        the header to retry with, or None when there is nothing to try. When the refused
        header carried the provider's current credentials, they are renewed first."""
        challenge = parse_challenge(www_authenticate) if www_authenticate else self._challenge
        if challenge is None or challenge.scheme not in ("basic", "bearer"):
            return None
        key = frozenset(scopes)
        with self._lock:
            self._challenge = challenge
            self._tokens.pop(key, None)  # a cached token was refused: fetch a new one
        provider = self._credentials
        if challenge.scheme == "basic":
            creds = provider() if provider else None
            if creds and refused == _basic(creds) and isinstance(provider, RenewableCredentials):
                provider.renew(creds)
                creds = provider()
            return _basic(creds) if creds else None
        return self._bearer(challenge, key)

    def _bearer(self, challenge: Challenge, scopes: frozenset[str]) -> str | None:
        with self._lock:
            hit = self._tokens.get(scopes)
            if hit and hit[1] > time.monotonic():
                return "Bearer " + hit[0]
        realm = challenge.params.get("realm")
        if not realm:
            return None
        params: list[tuple[str, str]] = []
        if "service" in challenge.params:
            params.append(("service", challenge.params["service"]))
        params.extend(("scope", s) for s in sorted(scopes))
        creds = self._credentials() if self._credentials else None
        self._on_request()
        resp = self._session.get(
            realm,
            params=params,
            auth=creds,
            verify=self._verify,
            timeout=self._timeout,
        )
        if resp.status_code != 200:
            return None
        body = resp.json()
        token = body.get("token") or body.get("access_token")
        if not token:
            return None
        ttl = float(body.get("expires_in") or 60)
        with self._lock:
            self._tokens[scopes] = (token, time.monotonic() + max(ttl - 10, 5))
        return "Bearer " + str(token)
