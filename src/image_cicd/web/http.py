"""The requests and replies of the local HTTP server, as the console's routes see them.

The embedded stack's server (local/server.py) turns each HTTP request into a
`Request` and sends back the `Reply` that a handler such as the console returns.
"""

from __future__ import annotations


class Request:
    def __init__(
        self, method: str, path: str, query: str, headers: dict[str, str], body: bytes, client: str
    ) -> None:
        self.method, self.path, self.query = method, path, query
        self.headers, self.body, self.client = headers, body, client


class Reply:
    def __init__(
        self, status: int, body: bytes | str = b"", headers: dict[str, str] | None = None
    ) -> None:
        self.status = status
        self.body = body.encode() if isinstance(body, str) else body
        self.headers = headers or {}
