"""A reverse proxy in front of a registry that injects faults, for resilience tests.

A seeded fraction (``fault_rate``) of requests gets HTTP 500, HTTP 429 (``Retry-After:
0``) or a dropped connection; the rest are forwarded with bodies streamed in chunks
both ways. :meth:`FaultProxy.down` fails every request until :meth:`FaultProxy.up`.
It also counts requests and body bytes (:class:`WireCounts`); ``bench/bench.py`` uses
it with ``fault_rate=0`` for its counted runs.
"""

from __future__ import annotations

import contextlib
import http.client
import random
import socket
import threading
import urllib.parse
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

from image_cicd.local.service import ThreadedHttpService

FaultKind = Literal["500", "503", "429", "drop"]
CHUNK = 64 * 1024
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
    }
)


class _QuietServer(ThreadingHTTPServer):
    """Connections dropped on purpose (or by the client) are expected here."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        import sys

        if not isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            super().handle_error(request, client_address)


@dataclass
class WireCounts:
    """Requests and body bytes through a proxy; faulted requests count too."""

    requests: int = 0
    by_method: Counter[str] = field(default_factory=Counter)
    bytes_up: int = 0  # request bodies (uploads, manifests)
    bytes_down_blobs: int = 0  # relayed bodies of GET .../blobs/sha256:...
    bytes_down_other: int = 0  # every other relayed response body (manifests, errors)

    @property
    def wire_bytes(self) -> int:
        return self.bytes_up + self.bytes_down_blobs

    def __add__(self, other: WireCounts) -> WireCounts:
        return WireCounts(
            self.requests + other.requests,
            self.by_method + other.by_method,
            self.bytes_up + other.bytes_up,
            self.bytes_down_blobs + other.bytes_down_blobs,
            self.bytes_down_other + other.bytes_down_other,
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "by_method": dict(sorted(self.by_method.items())),
            "bytes_up": self.bytes_up,
            "bytes_down_blobs": self.bytes_down_blobs,
            "bytes_down_other": self.bytes_down_other,
            "wire_bytes": self.wire_bytes,
        }


class FaultProxy(ThreadedHttpService):
    """Forwards to ``upstream`` (``http://host:port``); see the module docstring.

    Counters: ``injected_500``, ``injected_503``, ``injected_429``, ``injected_drop``
    (faults, including those from ``down()``), ``forwarded`` and ``requests`` (all);
    ``faults`` lists ``(method, path, kind)`` of every injected fault. ``counts``
    (:class:`WireCounts`) is reset by :meth:`take_counts` and :meth:`reset_counts`.
    """

    def __init__(
        self,
        upstream: str,
        *,
        fault_rate: float = 0.0,
        kinds: Sequence[FaultKind] = ("500", "429", "drop"),
        seed: int = 0,
        timeout: float = 60.0,
    ) -> None:
        url = urllib.parse.urlsplit(upstream)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"upstream must be an http(s) base URL, got {upstream!r}")
        self.upstream = f"{url.scheme}://{url.netloc}"
        self._upstream_url = url
        self.fault_rate = fault_rate
        self.kinds = tuple(kinds)
        self.timeout = timeout
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._down: FaultKind | None = None
        self.injected_500 = 0
        self.injected_503 = 0
        self.injected_429 = 0
        self.injected_drop = 0
        self.forwarded = 0
        self.requests = 0
        self.faults: list[tuple[str, str, FaultKind]] = []
        self.counts = WireCounts()
        super().__init__(_QuietServer(("127.0.0.1", 0), self._handler_class()), "fault-proxy")

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    @property
    def injected(self) -> int:
        return self.injected_500 + self.injected_503 + self.injected_429 + self.injected_drop

    def down(self, kind: FaultKind = "503") -> None:
        """Fail every request with ``kind`` until :meth:`up`."""
        self._down = kind

    def up(self) -> None:
        self._down = None

    def take_counts(self) -> WireCounts:
        """The counts so far; the next ones start from zero."""
        with self._lock:
            counts, self.counts = self.counts, WireCounts()
        return counts

    def reset_counts(self) -> None:
        self.take_counts()

    def _count(self, name: str, size: int) -> None:
        with self._lock:
            setattr(self.counts, name, getattr(self.counts, name) + size)

    def _choose(self, method: str, path: str) -> FaultKind | None:
        """The fault for this request, if any, and count it (deterministic per seed)."""
        with self._lock:
            self.requests += 1
            self.counts.requests += 1
            self.counts.by_method[method] += 1
            kind = self._down
            if kind is None and self.kinds and self._random.random() < self.fault_rate:
                kind = self._random.choice(self.kinds)
            if kind is None:
                self.forwarded += 1
                return None
            attribute = f"injected_{kind}"
            setattr(self, attribute, getattr(self, attribute) + 1)
            self.faults.append((method, path, kind))
            return kind

    def _connect(self) -> http.client.HTTPConnection:
        url = self._upstream_url
        if url.scheme == "https":
            return http.client.HTTPSConnection(url.hostname or "", url.port, timeout=self.timeout)
        return http.client.HTTPConnection(url.hostname or "", url.port, timeout=self.timeout)

    def _rewrite_location(self, value: str) -> str:
        if value.startswith(self.upstream):
            return self.url + value[len(self.upstream) :]
        return value

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        return type("Handler", (ProxyHandler,), {"proxy": self})

    def answer(self, handler: ProxyHandler, body: Iterator[bytes] | None) -> bool:
        """Answer a request that was not faulted; True when it was answered here.

        This one forwards everything; a subclass changes how some requests are answered.
        """
        handler.forward(body)
        return True


ResponseHook = Callable[[int, list[tuple[str, str]]], tuple[int, list[tuple[str, str]]]]
"""Change a relayed response's (status, headers) before they are sent."""


class ProxyHandler(BaseHTTPRequestHandler):
    """One connection to a :class:`FaultProxy` (or a subclass): bodies streamed both ways."""

    proxy: FaultProxy
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are separate writes
    timeout = 120  # idle keep-alive connections end eventually

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _request_body(self) -> Iterator[bytes] | None:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked()
        length = int(self.headers.get("Content-Length") or 0)
        return self._read_length(length) if length else None

    def _read_length(self, remaining: int) -> Iterator[bytes]:
        while remaining > 0:
            data = self.rfile.read(min(CHUNK, remaining))
            if not data:
                raise ConnectionError("client closed the request body early")
            remaining -= len(data)
            self.proxy._count("bytes_up", len(data))
            yield data

    def _read_chunked(self) -> Iterator[bytes]:
        while True:
            size = int(self.rfile.readline().split(b";")[0].strip(), 16)
            if size == 0:
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return
            yield from self._read_length(size)
            self.rfile.readline()

    def respond(
        self,
        status: int,
        data: bytes = b"",
        headers: Mapping[str, str] | None = None,
        body: Iterator[bytes] | None = None,
    ) -> None:
        """Answer here (the request body, if any, is drained so the connection stays usable)."""
        for _ in body or ():
            pass
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _fault(self, kind: FaultKind, body: Iterator[bytes] | None) -> None:
        if kind == "drop":
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        status = int(kind)
        data = f'{{"errors":[{{"code":"INJECTED","message":"fault {kind}"}}]}}'.encode()
        headers = {"Content-Type": "application/json"}
        if status in (429, 503):
            headers["Retry-After"] = "0"
        self.respond(status, data, headers, body)

    def _handle(self) -> None:
        body = self._request_body()
        kind = self.proxy._choose(self.command, self.path)
        if kind is not None:
            self._fault(kind, body)
            return
        self.proxy.answer(self, body)

    def forward(
        self,
        body: Iterator[bytes] | None,
        *,
        path: str | None = None,
        drop: Sequence[str] = (),
        on_response: ResponseHook | None = None,
    ) -> None:
        """Send the request upstream (to ``path``, without the headers named in ``drop``)
        and relay the answer, its status and headers changed by ``on_response``."""
        dropped = HOP_BY_HOP | {d.lower() for d in drop}
        upstream = self.proxy._connect()
        try:
            try:
                upstream.connect()
                upstream.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                upstream.putrequest(self.command, path or self.path, skip_accept_encoding=True)
                for key, value in self.headers.items():  # repeats kept (Accept)
                    if key.lower() not in dropped:
                        upstream.putheader(key, value)
                chunked = body is not None and "Content-Length" not in self.headers
                if chunked:
                    upstream.putheader("Transfer-Encoding", "chunked")
                upstream.endheaders()
                for data in body or ():
                    if chunked:
                        upstream.send(b"%x\r\n%b\r\n" % (len(data), data))
                    else:
                        upstream.send(data)
                if chunked:
                    upstream.send(b"0\r\n\r\n")
                response = upstream.getresponse()
            except OSError as error:
                self.respond(502, f"upstream unreachable: {error}".encode())
                return
            self._relay(response, on_response)
        finally:
            upstream.close()

    def _relay(self, response: http.client.HTTPResponse, on_response: ResponseHook | None) -> None:
        headers = [
            (key, self.proxy._rewrite_location(value) if key.lower() == "location" else value)
            for key, value in response.getheaders()
            if key.lower() not in HOP_BY_HOP
        ]
        status, reason = response.status, response.reason
        if on_response is not None:
            status, headers = on_response(status, headers)
            reason = HTTPStatus(status).phrase
        self.send_response_only(status, reason)
        length = response.getheader("Content-Length")
        no_body = self.command == "HEAD" or response.status in (204, 304)
        for key, value in headers:
            self.send_header(key, value)
        chunked = not no_body and length is None
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        if no_body:
            return
        path = urllib.parse.urlsplit(self.path).path
        is_blob = self.command == "GET" and "/blobs/sha256:" in path
        counter = "bytes_down_blobs" if is_blob else "bytes_down_other"
        while data := response.read(CHUNK):
            self.proxy._count(counter, len(data))
            self.wfile.write(b"%x\r\n%b\r\n" % (len(data), data) if chunked else data)
        if chunked:
            self.wfile.write(b"0\r\n\r\n")

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _handle
