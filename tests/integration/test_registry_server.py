"""The local registry, the token server and the fault proxy, against the real binary."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
from support import BasicRegistry, TokenRegistry

from image_cicd.local.fault_proxy import FaultProxy
from image_cicd.local.registry import NotificationEndpoint, RegistryError, RegistryServer

TIMEOUT = 10
VERIFY = True  # every URL here is plain http on loopback
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"


@pytest.fixture
def http() -> Iterator[requests.Session]:
    """A session that ignores proxy variables and ~/.netrc (they would skew auth tests)."""
    with requests.Session() as session:
        session.trust_env = False
        yield session


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def push_blob(
    http: requests.Session, base: str, repo: str, data: bytes, headers: dict[str, str] | None = None
) -> requests.Response:
    """POST an upload session, then PUT the bytes with ?digest=; returns the PUT response."""
    headers = headers or {}
    start = http.post(
        f"{base}/v2/{repo}/blobs/uploads/", headers=headers, timeout=TIMEOUT, verify=VERIFY
    )
    if start.status_code != 202:
        return start
    return http.put(
        start.headers["Location"],
        params={"digest": digest_of(data)},
        data=data,
        headers={**headers, "Content-Type": "application/octet-stream"},
        timeout=TIMEOUT,
        verify=VERIFY,
    )


def token_for(
    http: requests.Session, registry: TokenRegistry, *scopes: str, password: str | None = None
) -> requests.Response:
    return http.get(
        registry.token_server.realm,
        params={"service": registry.token_server.service, "scope": list(scopes)},
        auth=(registry.username, password or registry.password),
        timeout=TIMEOUT,
        verify=VERIFY,
    )


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# --- anonymous and Basic ---------------------------------------------------------------


def test_anonymous_registry_answers_v2(registry: RegistryServer, http: requests.Session) -> None:
    response = http.get(f"{registry.url}/v2/", timeout=TIMEOUT, verify=VERIFY)

    assert response.status_code == 200
    assert response.headers["Docker-Distribution-API-Version"] == "registry/2.0"
    assert registry.url == f"http://{registry.host}"
    assert registry.host.startswith("127.0.0.1:")


def test_registry_pair_is_two_independent_registries(
    registry_pair: tuple[RegistryServer, RegistryServer], http: requests.Session
) -> None:
    first, second = registry_pair
    assert first.port != second.port
    assert push_blob(http, first.url, "ecr-dev/repo-1", b"only in the first").status_code == 201

    url = f"/v2/ecr-dev/repo-1/blobs/{digest_of(b'only in the first')}"
    assert http.head(first.url + url, timeout=TIMEOUT, verify=VERIFY).status_code == 200
    assert http.head(second.url + url, timeout=TIMEOUT, verify=VERIFY).status_code == 404


def test_basic_registry_requires_credentials(
    basic_registry: BasicRegistry, http: requests.Session
) -> None:
    url = f"{basic_registry.server.url}/v2/"
    good = (basic_registry.username, basic_registry.password)

    without = http.get(url, timeout=TIMEOUT, verify=VERIFY)
    wrong = http.get(url, auth=(basic_registry.username, "nope"), timeout=TIMEOUT, verify=VERIFY)
    right = http.get(url, auth=good, timeout=TIMEOUT, verify=VERIFY)

    assert without.status_code == 401
    assert without.headers["WWW-Authenticate"].startswith("Basic realm=")
    assert wrong.status_code == 401
    assert right.status_code == 200


# --- Bearer token ----------------------------------------------------------------------


def test_token_registry_challenges_with_bearer_realm_and_service(
    token_registry: TokenRegistry, http: requests.Session
) -> None:
    response = http.get(f"{token_registry.server.url}/v2/", timeout=TIMEOUT, verify=VERIFY)

    assert response.status_code == 401
    challenge = response.headers["WWW-Authenticate"]
    assert challenge.startswith("Bearer ")
    assert f'realm="{token_registry.token_server.realm}"' in challenge
    assert f'service="{token_registry.token_server.service}"' in challenge


def test_token_opens_v2_and_records_requested_scopes(
    token_registry: TokenRegistry, http: requests.Session
) -> None:
    issued = token_for(http, token_registry, "repository:ecr-dev/repo-1:pull")

    assert issued.status_code == 200
    body = issued.json()
    assert body["token"] == body["access_token"]
    assert body["expires_in"] == 300
    response = http.get(
        f"{token_registry.server.url}/v2/",
        headers=bearer(body["token"]),
        timeout=TIMEOUT,
        verify=VERIFY,
    )
    assert response.status_code == 200
    assert token_registry.token_server.requested_scopes == ["repository:ecr-dev/repo-1:pull"]


def test_token_server_refuses_wrong_credentials(
    token_registry: TokenRegistry, http: requests.Session
) -> None:
    response = token_for(http, token_registry, "repository:r:pull", password="wrong")
    anonymous = http.get(token_registry.token_server.realm, timeout=TIMEOUT, verify=VERIFY)

    assert response.status_code == 401
    assert anonymous.status_code == 401
    assert token_registry.token_server.failed_logins == 1


def test_push_needs_a_push_token(token_registry: TokenRegistry, http: requests.Session) -> None:
    repo, data = "ecr-dev/repo-1", b"a small blob"
    base = token_registry.server.url
    pull_only = token_for(http, token_registry, f"repository:{repo}:pull").json()["token"]
    push = token_for(http, token_registry, f"repository:{repo}:pull,push").json()["token"]

    refused = push_blob(http, base, repo, data, bearer(pull_only))
    pushed = push_blob(http, base, repo, data, bearer(push))

    assert refused.status_code == 401
    assert 'error="insufficient_scope"' in refused.headers["WWW-Authenticate"]
    assert pushed.status_code == 201
    assert pushed.headers["Docker-Content-Digest"] == digest_of(data)
    fetched = http.get(
        f"{base}/v2/{repo}/blobs/{digest_of(data)}",
        headers=bearer(pull_only),
        timeout=TIMEOUT,
        verify=VERIFY,
    )
    assert fetched.content == data


def test_cross_repository_mount_with_a_two_repository_token(
    token_registry: TokenRegistry, http: requests.Session
) -> None:
    base, data = token_registry.server.url, b"layer bytes"
    dev, test = "ecr-dev/repo-1", "ecr-test/repo-1"
    dev_token = token_for(http, token_registry, f"repository:{dev}:pull,push").json()["token"]
    assert push_blob(http, base, dev, data, bearer(dev_token)).status_code == 201
    both = token_for(
        http, token_registry, f"repository:{test}:pull,push", f"repository:{dev}:pull"
    ).json()["token"]

    mounted = http.post(
        f"{base}/v2/{test}/blobs/uploads/",
        params={"mount": digest_of(data), "from": dev},
        headers=bearer(both),
        timeout=TIMEOUT,
        verify=VERIFY,
    )

    assert mounted.status_code == 201
    assert f"repository:{dev}:pull" in token_registry.token_server.requested_scopes


# --- fault proxy -----------------------------------------------------------------------


def test_fault_proxy_injects_about_the_configured_fraction(
    registry: RegistryServer,
    fault_proxy: Callable[..., FaultProxy],
    http: requests.Session,
) -> None:
    proxy = fault_proxy(registry.url, fault_rate=0.25, seed=7)
    seen: dict[str, int] = {"200": 0, "500": 0, "429": 0, "drop": 0}

    for _ in range(400):
        try:
            response = http.get(f"{proxy.url}/v2/", timeout=TIMEOUT, verify=VERIFY)
        except requests.ConnectionError:
            seen["drop"] += 1
            continue
        seen[str(response.status_code)] += 1
        if response.status_code == 429:
            assert response.headers["Retry-After"] == "0"

    assert seen == {
        "200": proxy.forwarded,
        "500": proxy.injected_500,
        "429": proxy.injected_429,
        "drop": proxy.injected_drop,
    }
    assert 0.18 <= proxy.injected / 400 <= 0.32
    assert min(proxy.injected_500, proxy.injected_429, proxy.injected_drop) > 0
    assert proxy.requests == 400


def test_fault_proxy_is_deterministic_per_seed(
    registry: RegistryServer, fault_proxy: Callable[..., FaultProxy], http: requests.Session
) -> None:
    runs = []
    for _ in range(2):
        proxy = fault_proxy(registry.url, fault_rate=0.5, kinds=("500", "429"), seed=3)
        runs.append(
            [
                http.get(f"{proxy.url}/v2/", timeout=TIMEOUT, verify=VERIFY).status_code
                for _ in range(30)
            ]
        )

    assert runs[0] == runs[1]
    assert set(runs[0]) == {200, 500, 429}


def test_fault_proxy_forwards_a_5_mb_blob_byte_exact(
    registry: RegistryServer, fault_proxy: Callable[..., FaultProxy], http: requests.Session
) -> None:
    proxy = fault_proxy(registry.url)
    data = os.urandom(5 * 1024 * 1024)
    repo, half = "ecr-dev/repo-1", len(data) // 2

    start = http.post(f"{proxy.url}/v2/{repo}/blobs/uploads/", timeout=TIMEOUT, verify=VERIFY)
    assert start.status_code == 202
    assert start.headers["Location"].startswith(proxy.url)
    # First half streamed with chunked transfer encoding, second half with a length.
    chunks = (data[i : min(i + 100_000, half)] for i in range(0, half, 100_000))
    patched = http.patch(
        start.headers["Location"],
        data=chunks,
        headers={"Content-Type": "application/octet-stream"},
        timeout=TIMEOUT,
        verify=VERIFY,
    )
    assert patched.status_code == 202, patched.text
    assert patched.headers["Range"] == f"0-{half - 1}"
    done = http.put(
        patched.headers["Location"],
        params={"digest": digest_of(data)},
        data=data[half:],
        headers={"Content-Type": "application/octet-stream"},
        timeout=TIMEOUT,
        verify=VERIFY,
    )
    assert done.status_code == 201, done.text
    assert done.headers["Location"].startswith(proxy.url)

    blob_url = f"{proxy.url}/v2/{repo}/blobs/{digest_of(data)}"
    with http.get(blob_url, stream=True, timeout=TIMEOUT, verify=VERIFY) as response:
        assert response.status_code == 200
        assert int(response.headers["Content-Length"]) == len(data)
        received = hashlib.sha256()
        for chunk in response.iter_content(256 * 1024):
            received.update(chunk)
    assert "sha256:" + received.hexdigest() == digest_of(data)
    head = http.head(blob_url, timeout=TIMEOUT, verify=VERIFY)
    assert int(head.headers["Content-Length"]) == len(data)
    ranged = http.get(blob_url, headers={"Range": "bytes=100-199"}, timeout=TIMEOUT, verify=VERIFY)
    assert ranged.status_code == 206
    assert ranged.content == data[100:200]
    assert proxy.injected == 0


def test_fault_proxy_down_fails_everything_until_up(
    registry: RegistryServer, fault_proxy: Callable[..., FaultProxy], http: requests.Session
) -> None:
    proxy = fault_proxy(registry.url)

    proxy.down()
    during = [
        http.get(f"{proxy.url}/v2/", timeout=TIMEOUT, verify=VERIFY).status_code for _ in range(3)
    ]
    proxy.down("drop")
    with pytest.raises(requests.ConnectionError):
        http.get(f"{proxy.url}/v2/", timeout=TIMEOUT, verify=VERIFY)
    proxy.up()
    after = http.get(f"{proxy.url}/v2/", timeout=TIMEOUT, verify=VERIFY)

    assert during == [503, 503, 503]
    assert after.status_code == 200
    assert (proxy.injected_503, proxy.injected_drop) == (3, 1)


# --- lifecycle -------------------------------------------------------------------------


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_stop_leaves_no_process(tmp_path: Path, http: requests.Session) -> None:
    server = RegistryServer(tmp_path / "registry").start()
    pid = server.pid
    assert pid is not None
    assert _alive(pid)

    server.stop()
    server.stop()  # a second stop is harmless

    assert not _alive(pid)
    assert not server.running
    with pytest.raises(requests.ConnectionError):
        http.get(f"{server.url}/v2/", timeout=TIMEOUT, verify=VERIFY)


def test_start_failure_reports_the_registry_log(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        server = RegistryServer(tmp_path / "registry", port=taken.getsockname()[1])
        with pytest.raises(RegistryError, match="address already in use"):
            server.start()
    assert not server.running


# --- notifications ---------------------------------------------------------------------


class _Sink(ThreadingHTTPServer):
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                sink.events.extend(json.loads(body)["events"])
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        self.daemon_threads = True


@pytest.fixture
def sink() -> Iterator[_Sink]:
    server = _Sink()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    thread.join()
    server.server_close()


def test_manifest_push_is_notified(tmp_path: Path, sink: _Sink, http: requests.Session) -> None:
    endpoint = NotificationEndpoint(
        url=f"http://127.0.0.1:{sink.server_address[1]}/events", timeout="1s", backoff="200ms"
    )
    repo = "ecr-dev/repo-1"
    config = b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}'
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": digest_of(config), "size": len(config)},
            "layers": [],
        }
    ).encode()

    with RegistryServer(tmp_path / "registry", notifications=[endpoint]) as server:
        assert push_blob(http, server.url, repo, config).status_code == 201
        put = http.put(
            f"{server.url}/v2/{repo}/manifests/latest",
            data=manifest,
            headers={"Content-Type": OCI_MANIFEST},
            timeout=TIMEOUT,
            verify=VERIFY,
        )
        assert put.status_code == 201, put.text

        deadline = time.monotonic() + 10
        pushes: list[dict[str, Any]] = []
        while not pushes and time.monotonic() < deadline:
            pushes = [
                event
                for event in list(sink.events)
                if event["action"] == "push" and event["target"]["mediaType"] == OCI_MANIFEST
            ]
            time.sleep(0.05)

    assert pushes, f"no manifest push event; got {sink.events}"
    target = pushes[0]["target"]
    assert target["repository"] == repo
    assert target["digest"] == digest_of(manifest)
    assert target["tag"] == "latest"
