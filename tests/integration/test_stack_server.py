"""The embedded stack's HTTP server under load and hostile input (real sockets, loopback).

The approval Lambda behind the server is replaced by a recorder of invocations: what
is under test is the server's own handling of connections, bodies and methods.
"""

from __future__ import annotations

import http.client
import json
import logging
import socket
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from image_cicd.console.inbox import Inbox
from image_cicd.local.deployer import Route
from image_cicd.local.server import HOOK_HEADER, MAX_BODY_BYTES, StackServer
from image_cicd.web.http import Reply

HOOK_SECRET = "s3cret-of-this-stack"


class RecordingLambda:
    """Answers every invoke like an approval function that accepted the request."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def invoke(self, FunctionName: str, Payload: bytes) -> dict[str, Any]:
        with self._lock:
            self.events.append(json.loads(Payload))

        class Body:
            @staticmethod
            def read() -> bytes:
                return json.dumps({"statusCode": 200, "body": "ok"}).encode()

        return {"Payload": Body()}


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[StackServer, RecordingLambda, list[dict[str, Any]]]]:
    recorder = RecordingLambda()
    registry_events: list[dict[str, Any]] = []
    server = StackServer(
        lambda_client=lambda: recorder,
        routes=[
            Route("GET", "/approvals/{id}", "approval-api"),
            Route("POST", "/approvals/{id}", "approval-api"),
        ],
        inbox=Inbox(tmp_path / "inbox.jsonl"),
        on_registry_event=registry_events.append,
        hook_secret=HOOK_SECRET,
        on_aws_event=registry_events.append,  # one list: either hook's deliveries
    )
    server.mount("/", lambda req: Reply(404, "console"))  # the console answers the rest
    server.start()
    try:
        yield server, recorder, registry_events
    finally:
        server.stop()


def _raw(port: int, request: bytes) -> bytes:
    """Send one raw HTTP request and read the whole answer (the server closes or answers)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(request)
        chunks = []
        conn.settimeout(10)
        while True:
            try:
                data = conn.recv(65536)
            except TimeoutError:
                break
            if not data:
                break
            chunks.append(data)
            if b"\r\n\r\n" in b"".join(chunks):
                head, _, rest = b"".join(chunks).partition(b"\r\n\r\n")
                length = [
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                ]
                if length and len(rest) >= length[0]:
                    break
        return b"".join(chunks)


def _status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def test_two_hundred_simultaneous_posts_are_all_answered(served: Any) -> None:
    # Given 200 clients that connect at the same moment
    server, recorder, _ = served
    barrier = threading.Barrier(200)

    def post(i: int) -> int:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        barrier.wait()
        conn.request(
            "POST",
            f"/approvals/a{i}",
            body=b"decision=approve",
            headers={"Host": f"127.0.0.1:{server.port}"},
        )
        status = conn.getresponse().status
        conn.close()
        return status

    # When each POSTs an approval
    with ThreadPoolExecutor(200) as pool:
        statuses = list(pool.map(post, range(200)))

    # Then none was reset and every one reached the approval function
    assert statuses == [200] * 200
    assert sorted(e["pathParameters"]["id"] for e in recorder.events) == sorted(
        f"a{i}" for i in range(200)
    )


def test_a_body_over_the_limit_is_refused_before_it_is_read(served: Any) -> None:
    server, recorder, _ = served
    head = (
        f"POST /approvals/x HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
        f"Content-Length: {MAX_BODY_BYTES + 1}\r\n\r\n"
    ).encode()
    # The body is never sent: a server that tried to read it would hang until the timeout.
    answer = _raw(server.port, head)
    assert _status(answer) == 413
    assert recorder.events == []


@pytest.mark.parametrize("length", ["abc", "-5", "1e3", ""])
def test_a_content_length_that_is_not_a_count_is_a_bad_request(served: Any, length: str) -> None:
    server, recorder, _ = served
    head = (
        f"POST /approvals/x HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()
    answer = _raw(server.port, head)
    assert _status(answer) == 400
    assert recorder.events == []


@pytest.mark.parametrize("header", ["Origin", "origin", "ORIGIN"])
def test_event_hooks_refuse_a_browser_post_whatever_the_header_case(
    served: Any, header: str
) -> None:
    server, _, registry_events = served
    body = json.dumps({"events": []}).encode()
    head = (
        f"POST /_events/registry HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
        f"{header}: http://evil.example\r\n{HOOK_HEADER}: {HOOK_SECRET}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    assert _status(_raw(server.port, head + body)) == 403
    assert registry_events == []


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH", "OPTIONS"])
def test_other_methods_on_an_approval_are_not_allowed(served: Any, method: str) -> None:
    server, recorder, _ = served
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.request(method, "/approvals/abc", headers={"Host": f"127.0.0.1:{server.port}"})
    answer = conn.getresponse()
    assert answer.status == 405
    assert set(answer.getheader("Allow", "").replace(" ", "").split(",")) == {"GET", "HEAD", "POST"}
    assert recorder.events == []


HOOKS = ["/_events/registry", "/_events/aws"]


def _deliver(port: int, hook: str, body: bytes, headers: dict[str, str]) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("POST", hook, body=body, headers={"Host": f"127.0.0.1:{port}", **headers})
    return conn.getresponse().status


@pytest.mark.parametrize("hook", HOOKS)
@pytest.mark.parametrize("secret", [None, "", "guess", HOOK_SECRET + "x"])
def test_a_delivery_without_the_stacks_secret_is_refused(
    served: Any, hook: str, secret: str | None
) -> None:
    server, _, delivered = served
    headers = {} if secret is None else {HOOK_HEADER: secret}
    body = json.dumps({"events": [{"action": "push"}], "detail": {}}).encode()

    assert _deliver(server.port, hook, body, headers) == 401
    assert delivered == []


@pytest.mark.parametrize("hook", HOOKS)
@pytest.mark.parametrize("body", [b"not json", b"[]", b'"x"', b"null"])
def test_a_delivery_that_is_not_a_json_object_is_400(served: Any, hook: str, body: bytes) -> None:
    server, _, delivered = served
    assert _deliver(server.port, hook, body, {HOOK_HEADER: HOOK_SECRET}) == 400
    assert delivered == []


@pytest.mark.parametrize("hook", HOOKS)
def test_a_delivery_with_the_secret_is_passed_on(served: Any, hook: str) -> None:
    server, _, delivered = served
    notification = {"events": [{"action": "push", "target": {"digest": "sha256:" + "a" * 64}}]}

    body = json.dumps(notification).encode()
    assert _deliver(server.port, hook, body, {HOOK_HEADER: HOOK_SECRET}) == 200
    assert delivered == [notification]


def _sns_notification(topic: str = "arn:aws:sns:us-east-1:123456789012:approvals") -> bytes:
    return json.dumps(
        {
            "Type": "Notification",
            "TopicArn": topic,
            "Subject": "Approval needed",
            "Message": "Open https://evil.example/approvals/x to approve",
            "Timestamp": "2026-12-01T00:00:00Z",
        }
    ).encode()


@pytest.mark.parametrize(
    "path", ["/_events/sns", "/_events/sns/", "/_events/sns/guess", "/_events/sns/x/y"]
)
def test_an_sns_delivery_to_another_url_than_the_subscribed_one_is_refused(
    served: Any, path: str
) -> None:
    server, _, _ = served
    headers = {"x-amz-sns-message-type": "Notification", HOOK_HEADER: HOOK_SECRET}

    assert _deliver(server.port, path, _sns_notification(), headers) == 401
    assert server.inbox.messages() == []


def test_an_sns_delivery_to_the_subscribed_url_reaches_the_inbox_and_no_log(
    served: Any, caplog: pytest.LogCaptureFixture
) -> None:
    server, _, _ = served
    endpoint = server.sns_endpoint
    path = endpoint.removeprefix(server.url)
    secret = path.rsplit("/", 1)[-1]
    assert endpoint.startswith(f"{server.url}/_events/sns/")
    assert len(secret) >= 32
    caplog.set_level(logging.DEBUG, logger="image_cicd.local.server")

    assert _deliver(server.port, path, _sns_notification(), {}) == 200
    assert _deliver(server.port, path, b"not json", {}) == 400
    assert _deliver(server.port, path, b"[]", {}) == 400

    assert [m["subject"] for m in server.inbox.messages()] == ["Approval needed"]
    assert "/_events/sns/" in caplog.text
    assert secret not in caplog.text
