"""The start/stop/with contract every local component shares (image_cicd.local.service)."""

from __future__ import annotations

import http.client
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self

import pytest

from image_cicd.local.service import Service, ThreadedHttpService


class _Hello(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "5")
        self.end_headers()
        self.wfile.write(b"hello")

    def log_message(self, format: str, *args: object) -> None:
        pass


def _get(port: int) -> bytes:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", "/")
        return connection.getresponse().read()
    finally:
        connection.close()


def test_with_starts_and_stops_a_service() -> None:
    calls: list[str] = []

    class Recorder(Service):
        def start(self) -> Self:
            calls.append("start")
            return self

        def stop(self) -> None:
            calls.append("stop")

    def fail_inside() -> None:
        with Recorder() as recorder:
            assert isinstance(recorder, Recorder)
            raise RuntimeError("the block fails")

    with pytest.raises(RuntimeError):
        fail_inside()
    assert calls == ["start", "stop"]


def test_a_threaded_http_service_serves_between_start_and_stop() -> None:
    service = ThreadedHttpService(ThreadingHTTPServer(("127.0.0.1", 0), _Hello), "hello")
    port = service.port
    with service:
        assert service.start() is service  # a second start serves once
        assert [t.name for t in threading.enumerate()].count("hello") == 1
        assert _get(port) == b"hello"
    assert "hello" not in [t.name for t in threading.enumerate()]
    with pytest.raises(ConnectionRefusedError):
        _get(port)
