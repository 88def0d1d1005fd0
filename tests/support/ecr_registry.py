"""A proxy in front of the real docker-registry that answers as Amazon ECR does where
ECR differs from the CNCF registry (the upstream registry must be anonymous):

- a chunked upload ``PATCH`` is answered ``201 Created`` with a ``Range`` stuck at the
  first chunk (aws/containers-roadmap#2831);
- a cross-repository mount is answered ``202`` with an upload session, nothing
  mounted, while ``blob_mounting`` is off (ECR's default) or the two repositories'
  ``encryption`` differs;
- a blob ``GET`` is answered ``307`` to a "pre-signed URL" on another loopback host
  (:class:`BlobStorage`), which, like S3, refuses a request carrying ``Authorization``;
- with ``auth=True``, Basic ``AWS:<token>`` as ECR takes it: :meth:`EcrProxy.issue_token`
  hands out tokens (what ``GetAuthorizationToken`` returns), :meth:`EcrProxy.expire_tokens`
  expires every token issued so far; an expired one is answered ``403 DENIED`` "Your
  authorization token has expired" (as ECR does; ``expired_status=401`` answers a Basic
  challenge instead) until a fresh one is used;
- ``PutImage`` throttling: :meth:`EcrProxy.throttle_manifest_puts` answers the next
  manifest PUTs ``429 TOOMANYREQUESTS "Rate exceeded"``;
- a manifest over 4 MiB is refused ``405 UNSUPPORTED`` "Invalid parameter at
  'ImageManifest' failed to satisfy constraint", and a tag write to an ``immutable``
  repository whose tag exists ``400 TAG_INVALID`` with ECR's message.
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
import urllib.parse
from collections.abc import Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal, Self

from image_cicd.local.fault_proxy import CHUNK, FaultProxy, ProxyHandler
from image_cicd.local.service import ThreadedHttpService
from image_cicd.registry.media import ACCEPT

MANIFEST_LIMIT = 4 * 1024 * 1024  # ECR's PutImage takes an imageManifest of at most 4 MiB
EXPIRED = "Your authorization token has expired. Reauthenticate and try again."
S3_TWO_AUTHS = (
    "<?xml version='1.0' encoding='UTF-8'?><Error><Code>InvalidArgument</Code>"
    "<Message>Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, "
    "Signature query string parameter or the Authorization header should be specified"
    "</Message></Error>"
)


def ecr_error(code: str, message: str) -> bytes:
    return json.dumps({"errors": [{"code": code, "message": message}]}).encode()


class BlobStorage(ThreadedHttpService):
    """The "S3" of the proxy: serves blobs by pre-signed URL on 127.0.0.2."""

    def __init__(self, upstream: FaultProxy) -> None:
        self._upstream = upstream
        self._signed: dict[str, str] = {}
        self._lock = threading.Lock()
        self.served = 0
        self.refused_with_authorization = 0
        super().__init__(
            ThreadingHTTPServer(("127.0.0.2", 0), self._handler_class()), "blob-storage"
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.2:{self.port}"

    def sign(self, blob_path: str) -> str:
        """A pre-signed URL for the registry path ``/v2/<repo>/blobs/<digest>``."""
        key = secrets.token_hex(8)
        with self._lock:
            self._signed[key] = blob_path
        query = urllib.parse.urlencode(
            {"X-Amz-Algorithm": "AWS4-HMAC-SHA256", "X-Amz-Signature": secrets.token_hex(16)}
        )
        return f"{self.url}/layers/{key}?{query}"

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        storage = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _answer(self, status: int, data: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                split = urllib.parse.urlsplit(self.path)
                if "Authorization" in self.headers:
                    with storage._lock:
                        storage.refused_with_authorization += 1
                    self._answer(400, S3_TWO_AUTHS.encode())
                    return
                with storage._lock:
                    blob_path = storage._signed.get(split.path.rsplit("/", 1)[-1])
                if blob_path is None or "X-Amz-Signature" not in split.query:
                    self._answer(403, b"<Error><Code>AccessDenied</Code></Error>")
                    return
                upstream = storage._upstream._connect()
                try:
                    upstream.request("GET", blob_path)
                    response = upstream.getresponse()
                    self.send_response(response.status)
                    self.send_header("Content-Length", response.getheader("Content-Length", "0"))
                    self.send_header("Content-Type", "application/octet-stream")
                    self.end_headers()
                    while data := response.read(CHUNK):
                        self.wfile.write(data)
                finally:
                    upstream.close()
                with storage._lock:
                    storage.served += 1

        return Handler


class EcrProxy(FaultProxy):
    """An ECR-flavoured front for an anonymous docker-registry; see the module docstring.

    Counters: ``mounts_refused``, ``patches_answered_201``, ``redirects``,
    ``throttled``, ``expired_refusals``, ``tokens_issued``.
    """

    def __init__(
        self,
        upstream: str,
        *,
        blob_mounting: bool = False,
        encryption: Mapping[str, str] | None = None,
        immutable: tuple[str, ...] = (),
        auth: bool = False,
        expired_status: Literal[401, 403] = 403,
        **options: Any,
    ) -> None:
        super().__init__(upstream, **options)
        self.blob_mounting = blob_mounting
        self.encryption = dict(encryption or {})  # repository prefix -> "AES256" / "KMS:<key>"
        self.immutable = immutable  # repository prefixes with IMMUTABLE tags
        self.auth = auth
        self.expired_status = expired_status
        self.storage = BlobStorage(self)
        self._tokens: dict[str, bool] = {}  # token -> still valid
        self._throttle = 0
        self._first_range: dict[str, str] = {}
        self.mounts_refused = 0
        self.patches_answered_201 = 0
        self.redirects = 0
        self.throttled = 0
        self.expired_refusals = 0
        self.tokens_issued = 0

    # -- switches -------------------------------------------------------------------

    def issue_token(self) -> str:
        """A new authorization token (the password for user ``AWS``)."""
        token = secrets.token_urlsafe(24)
        with self._lock:
            self._tokens[token] = True
            self.tokens_issued += 1
        return token

    def expire_tokens(self) -> None:
        """Every token issued so far has expired (12 hours have passed)."""
        with self._lock:
            self._tokens = dict.fromkeys(self._tokens, False)

    def throttle_manifest_puts(self, count: int) -> None:
        """Answer the next ``count`` manifest PUTs (PutImage) with 429."""
        with self._lock:
            self._throttle = count

    def start(self) -> Self:
        if self._thread is None:
            self.storage.start()
        return super().start()

    def stop(self) -> None:
        running = self._thread is not None
        super().stop()
        if running:
            self.storage.stop()

    # -- answers --------------------------------------------------------------------

    def _encryption_of(self, repository: str) -> str:
        matches = [p for p in self.encryption if repository.startswith(p)]
        return self.encryption[max(matches, key=len)] if matches else "AES256"

    def _head(self, path: str, accept: str = "") -> int:
        connection = self._connect()
        try:
            connection.request("HEAD", path, headers={"Accept": accept} if accept else {})
            status = connection.getresponse().status
        finally:
            connection.close()
        return status

    def _authorized(self, handler: ProxyHandler, body: Iterator[bytes] | None) -> bool:
        header = handler.headers.get("Authorization", "")
        token = None
        if header.startswith("Basic "):
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
            token = password if user == "AWS" else None
        with self._lock:
            valid = self._tokens.get(token or "")
        if valid:
            return True
        challenge = {"WWW-Authenticate": f'Basic realm="{self.url}/",service="ecr.amazonaws.com"'}
        if valid is False and self.expired_status == 403:
            with self._lock:
                self.expired_refusals += 1
            handler.respond(403, ecr_error("DENIED", EXPIRED), {}, body)
        else:
            if valid is False:
                with self._lock:
                    self.expired_refusals += 1
            handler.respond(401, ecr_error("UNAUTHORIZED", "Not Authorized"), challenge, body)
        return False

    def answer(self, handler: ProxyHandler, body: Iterator[bytes] | None) -> bool:
        split = urllib.parse.urlsplit(handler.path)
        method, path = handler.command, split.path
        if self.auth and not self._authorized(handler, body):
            return True
        drop = ("Authorization",)  # the upstream registry is anonymous
        parts = path.split("/")
        if method == "PUT" and "/manifests/" in path:
            data = b"".join(body or ())
            self._put_manifest(handler, path, data)
            return True
        if method == "POST" and path.endswith("/blobs/uploads/"):
            query = urllib.parse.parse_qs(split.query)
            if "mount" in query:
                target = path[len("/v2/") : -len("/blobs/uploads/")]
                source = query.get("from", [""])[0]
                same = self._encryption_of(target) == self._encryption_of(source)
                if not (self.blob_mounting and same):
                    with self._lock:
                        self.mounts_refused += 1
                    handler.forward(body, path=path, drop=drop)  # a plain upload session
                    return True
        if method == "PATCH" and "/blobs/uploads/" in path:
            session = parts[-1]

            def as_ecr(status: int, headers: list[tuple[str, str]]) -> tuple[int, list[Any]]:
                if status != 202:
                    return status, headers
                out = []
                for key, value in headers:
                    if key.lower() == "range":
                        value = self._first_range.setdefault(session, value)  # stuck
                    out.append((key, value))
                with self._lock:
                    self.patches_answered_201 += 1
                return 201, out

            handler.forward(body, drop=drop, on_response=as_ecr)
            return True
        if method == "GET" and "/blobs/sha256:" in path and self._head(path) == 200:
            with self._lock:
                self.redirects += 1
            handler.respond(307, b"", {"Location": self.storage.sign(path)}, body)
            return True
        handler.forward(body, drop=drop)
        return True

    def _put_manifest(self, handler: ProxyHandler, path: str, data: bytes) -> None:
        repository, _, reference = path[len("/v2/") :].partition("/manifests/")
        if len(data) > MANIFEST_LIMIT:
            message = (
                "Invalid parameter at 'ImageManifest' failed to satisfy constraint: "
                f"'Member must have length less than or equal to {MANIFEST_LIMIT}'"
            )
            handler.respond(405, ecr_error("UNSUPPORTED", message))
            return
        with self._lock:
            throttled = self._throttle > 0
            if throttled:
                self._throttle -= 1
                self.throttled += 1
        if throttled:
            handler.respond(429, ecr_error("TOOMANYREQUESTS", "Rate exceeded"))
            return
        is_tag = not reference.startswith("sha256:")
        if (
            is_tag
            and repository.startswith(self.immutable)
            and self.immutable
            and self._head(path, ACCEPT) == 200
        ):
            message = (
                f"The image tag '{reference}' already exists in the '{repository}' repository "
                "and cannot be overwritten because the repository is immutable."
            )
            handler.respond(400, ecr_error("TAG_INVALID", message))
            return
        handler.forward(iter([data]) if data else None, drop=("Authorization",))
