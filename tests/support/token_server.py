"""A Docker registry token server for tests (the Bearer token flow, hand-written JWT).

``GET /token?service=S&scope=repository:NAME:pull,push`` (scope may repeat) with Basic
credentials, or the OAuth2 ``POST /token`` password grant, returns
``{"token", "access_token", "expires_in", "issued_at"}``. Tokens are ES256 JWTs whose
``x5c`` header holds a self-signed certificate; write it to the registry's
``rootcertbundle`` with :meth:`TokenServer.write_rootcertbundle`.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import secrets
import threading
import time
import urllib.parse
from collections.abc import Collection, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from image_cicd.local.service import ThreadedHttpService

ALL_ACTIONS = frozenset({"pull", "push", "delete", "*"})


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def parse_scope(scope: str) -> tuple[str, str, list[str]]:
    """``repository:ecr-dev/repo-1:pull,push`` -> (type, name, actions)."""
    kind, _, rest = scope.partition(":")
    name, _, actions = rest.rpartition(":")
    return kind, name, [action for action in actions.split(",") if action]


class TokenServer(ThreadedHttpService):
    """Issues registry tokens to configured users; records every scope asked for.

    ``permissions`` maps a user to the actions they may be granted (default: all).
    Requests without credentials get a token with no access when ``allow_anonymous``,
    401 otherwise; wrong credentials always get 401.
    """

    def __init__(
        self,
        users: Mapping[str, str],
        *,
        service: str = "image-cicd-registry",
        issuer: str = "image-cicd-test-issuer",
        permissions: Mapping[str, Collection[str]] | None = None,
        allow_anonymous: bool = False,
        expires_in: int = 300,
    ) -> None:
        self.users = dict(users)
        self.service = service
        self.issuer = issuer
        self.permissions = {user: frozenset(acts) for user, acts in (permissions or {}).items()}
        self.allow_anonymous = allow_anonymous
        self.expires_in = expires_in
        self.requested_scopes: list[str] = []
        self.token_requests = 0
        self.failed_logins = 0
        self._lock = threading.Lock()
        self._key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)])
        self.certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self._key, hashes.SHA256())
        )
        super().__init__(
            ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class()), "token-server"
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def realm(self) -> str:
        return f"{self.url}/token"

    @property
    def cert_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def write_rootcertbundle(self, path: Path) -> Path:
        path.write_bytes(self.cert_pem)
        return path

    def issue(self, subject: str, scopes: list[str], service: str | None = None) -> str:
        """A signed token granting ``subject`` the allowed part of ``scopes``."""
        allowed = self.permissions.get(subject, ALL_ACTIONS) if subject else frozenset()
        access: list[dict[str, Any]] = []
        for scope in scopes:
            kind, name, actions = parse_scope(scope)
            granted = [action for action in actions if action in allowed]
            if granted:
                access.append({"type": kind, "name": name, "actions": granted})
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "sub": subject,
            "aud": service or self.service,
            "exp": now + self.expires_in,
            "nbf": now - 10,
            "iat": now,
            "jti": secrets.token_hex(16),
            "access": access,
        }
        der = self.certificate.public_bytes(serialization.Encoding.DER)
        header = {"typ": "JWT", "alg": "ES256", "x5c": [base64.b64encode(der).decode()]}
        signing_input = (
            _b64url(json.dumps(header, separators=(",", ":")).encode())
            + "."
            + _b64url(json.dumps(claims, separators=(",", ":")).encode())
        )
        r, s = decode_dss_signature(
            self._key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
        )
        return f"{signing_input}.{_b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"

    def _authenticate(self, username: str | None, password: str | None) -> str | None:
        """The subject for these credentials, ``""`` for anonymous, None if refused."""
        if username is None:
            return "" if self.allow_anonymous else None
        if self.users.get(username) is not None and secrets.compare_digest(
            self.users[username], password or ""
        ):
            return username
        with self._lock:
            self.failed_logins += 1
        return None

    def _token_response(
        self, username: str | None, password: str | None, service: str | None, scopes: list[str]
    ) -> tuple[int, dict[str, Any]]:
        with self._lock:
            self.token_requests += 1
            self.requested_scopes.extend(scopes)
        subject = self._authenticate(username, password)
        if subject is None:
            return 401, {"errors": [{"code": "UNAUTHORIZED", "message": "bad credentials"}]}
        token = self.issue(subject, scopes, service)
        issued = dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z")
        body = {
            "token": token,
            "access_token": token,
            "expires_in": self.expires_in,
            "issued_at": issued,
        }
        return 200, body

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body are separate writes

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _send(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                if status == 401:
                    self.send_header("WWW-Authenticate", 'Basic realm="token"')
                self.end_headers()
                self.wfile.write(data)

            def _basic(self) -> tuple[str | None, str | None]:
                header = self.headers.get("Authorization", "")
                if not header.lower().startswith("basic "):
                    return None, None
                try:
                    decoded = base64.b64decode(header[6:].strip()).decode()
                except ValueError:
                    return "", ""
                username, _, password = decoded.partition(":")
                return username, password

            def do_GET(self) -> None:
                url = urllib.parse.urlsplit(self.path)
                if url.path != "/token":
                    self._send(404, {"error": "not found"})
                    return
                query = urllib.parse.parse_qs(url.query)
                scopes = [s for value in query.get("scope", []) for s in value.split()]
                username, password = self._basic()
                self._send(
                    *server._token_response(
                        username, password, query.get("service", [None])[0], scopes
                    )
                )

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                form = urllib.parse.parse_qs(self.rfile.read(length).decode())
                if urllib.parse.urlsplit(self.path).path != "/token":
                    self._send(404, {"error": "not found"})
                    return
                if form.get("grant_type", [""])[0] != "password":
                    self._send(400, {"error": "unsupported_grant_type"})
                    return
                scopes = [s for value in form.get("scope", []) for s in value.split()]
                self._send(
                    *server._token_response(
                        form.get("username", [None])[0],
                        form.get("password", [None])[0],
                        form.get("service", [None])[0],
                        scopes,
                    )
                )

        return Handler
