"""Run the CNCF distribution registry (Debian ``docker-registry``) as a child process.

The registry stands in for Amazon ECR in the local stack and in tests. Its config is
written as JSON, which the registry's YAML parser reads unchanged.
"""

from __future__ import annotations

import atexit
import contextlib
import http.client
import json
import secrets
import socket
import subprocess
import time
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import bcrypt

from image_cicd.local.service import Service

DEFAULT_BINARY = "/usr/bin/docker-registry"
# Go's bcrypt.MinCost: the registry checks the password on every request.
_BCRYPT_ROUNDS = 4


class RegistryError(RuntimeError):
    """The registry could not be started."""


@dataclass(frozen=True)
class TokenAuth:
    """Bearer token auth (``auth.token``): tokens are issued by ``realm``."""

    realm: str
    service: str
    issuer: str
    rootcertbundle: Path


@dataclass(frozen=True)
class NotificationEndpoint:
    """A ``notifications.endpoints[]`` entry: the registry POSTs events to ``url``."""

    url: str
    name: str = "endpoint"
    timeout: str = "2s"
    threshold: int = 3
    backoff: str = "1s"
    ignored_actions: tuple[str, ...] = ()
    ignored_media_types: tuple[str, ...] = ()
    headers: tuple[tuple[str, str], ...] = ()  # sent with every delivery


_running: weakref.WeakSet[RegistryServer] = weakref.WeakSet()


@atexit.register
def _stop_all() -> None:
    for server in list(_running):
        server.stop()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RegistryServer(Service):
    """A docker-registry child process on ``127.0.0.1`` with filesystem storage.

    ``users`` (name -> password) enables Basic auth, ``token_auth`` Bearer token auth
    (not both). ``port=0`` picks a free port. Logs go to ``<storage_dir>/registry.log``.
    """

    def __init__(
        self,
        storage_dir: Path | str,
        *,
        port: int = 0,
        users: Mapping[str, str] | None = None,
        token_auth: TokenAuth | None = None,
        notifications: Sequence[NotificationEndpoint] = (),
        log_level: str = "warn",
        binary: str = DEFAULT_BINARY,
        start_timeout: float = 10.0,
    ) -> None:
        if users and token_auth:
            raise ValueError("choose Basic auth (users) or token auth, not both")
        self.storage_dir = Path(storage_dir)
        self.users = dict(users or {})
        self.token_auth = token_auth
        self.notifications = tuple(notifications)
        self.log_level = log_level
        self.binary = binary
        self.start_timeout = start_timeout
        self._requested_port = port
        self.port = port
        self.config_path = self.storage_dir / "config.yml"
        self.log_path = self.storage_dir / "registry.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def _config(self) -> dict[str, Any]:
        config: dict[str, Any] = {
            "version": "0.1",
            "log": {"level": self.log_level, "accesslog": {"disabled": True}},
            "storage": {
                "filesystem": {"rootdirectory": str(self.storage_dir / "data")},
                "delete": {"enabled": True},
            },
            "http": {"addr": self.host, "secret": secrets.token_hex(16)},
        }
        if self.users:
            htpasswd = self.storage_dir / "htpasswd"
            salt = bcrypt.gensalt(rounds=_BCRYPT_ROUNDS)
            htpasswd.write_text(
                "".join(
                    f"{user}:{bcrypt.hashpw(password.encode(), salt).decode()}\n"
                    for user, password in self.users.items()
                )
            )
            config["auth"] = {"htpasswd": {"realm": "image-cicd", "path": str(htpasswd)}}
        elif self.token_auth:
            config["auth"] = {
                "token": {
                    "realm": self.token_auth.realm,
                    "service": self.token_auth.service,
                    "issuer": self.token_auth.issuer,
                    "rootcertbundle": str(self.token_auth.rootcertbundle),
                }
            }
        if self.notifications:
            config["notifications"] = {
                "endpoints": [
                    {
                        "name": endpoint.name,
                        "url": endpoint.url,
                        "timeout": endpoint.timeout,
                        "threshold": endpoint.threshold,
                        "backoff": endpoint.backoff,
                        "headers": {name: [value] for name, value in endpoint.headers},
                        "ignore": {
                            "actions": list(endpoint.ignored_actions),
                            "mediatypes": list(endpoint.ignored_media_types),
                        },
                    }
                    for endpoint in self.notifications
                ]
            }
        return config

    def start(self) -> Self:
        """Start the registry and wait until ``GET /v2/`` answers."""
        if self.running:
            return self
        self.storage_dir.mkdir(parents=True, exist_ok=True)
        # A port chosen by _free_port can be taken before the registry binds it.
        attempts = 3 if self._requested_port == 0 else 1
        for attempt in range(attempts):
            self.port = self._requested_port or _free_port()
            self.config_path.write_text(json.dumps(self._config(), indent=2))
            with self.log_path.open("ab") as log:
                self._process = subprocess.Popen(
                    [self.binary, "serve", str(self.config_path)],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            _running.add(self)
            try:
                self._wait_ready()
                return self
            except RegistryError as error:
                self.stop()
                if "address already in use" not in str(error) or attempt == attempts - 1:
                    raise
        raise AssertionError("unreachable")

    def _wait_ready(self) -> None:
        assert self._process is not None
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            code = self._process.poll()
            if code is not None:
                raise RegistryError(
                    f"docker-registry exited with code {code} on start; "
                    f"log tail ({self.log_path}):\n{self.log_tail()}"
                )
            connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=1)
            try:
                connection.request("GET", "/v2/")
                connection.getresponse().read()
            except OSError:
                time.sleep(0.02)
                continue
            finally:
                connection.close()
            if self._process.poll() is None:  # the answer came from this registry, alive
                return
        raise RegistryError(
            f"docker-registry did not answer on {self.url} within {self.start_timeout}s; "
            f"log tail ({self.log_path}):\n{self.log_tail()}"
        )

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 5.0) -> None:
        """Terminate the registry (kill it if it does not exit); safe to call twice."""
        process, self._process = self._process, None
        _running.discard(self)
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        # Reap in every case so no zombie is left.
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(0)
