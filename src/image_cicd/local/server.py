"""The embedded stack's HTTP server.

- `/approvals/{id}` (GET, HEAD, POST): what API Gateway does on AWS — turns the
  request into an HTTP API (v2) event, invokes the approval-api Lambda through the
  Lambda API, and turns its answer back into HTTP.
- `/_events/registry`: the registry's notification webhook (the trigger path).
- `/_events/sns/<secret>`: SNS `http` deliveries of the approvals and notifications
  topics, kept in the local inbox. moto's SNS cannot send a header, so the stack
  subscribes with a URL that carries a secret of this start (`sns_endpoint`): a POST
  by anyone else is refused and reaches no inbox. The secret is never logged.
- `/_events/aws`: EventBridge events of the local AWS services (Step Functions'
  execution status changes, from the moto server), routed to the template's rules.
- everything else: the local console, when one is attached.
"""

from __future__ import annotations

import base64
import hmac
import json
import logging
import secrets
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from image_cicd.console.inbox import Inbox
from image_cicd.local.deployer import Route
from image_cicd.local.service import ThreadedHttpService
from image_cicd.web.http import Reply, Request

log = logging.getLogger(__name__)

# Approval forms and registry/SNS deliveries are a few KiB; nothing the stack serves
# takes more.
MAX_BODY_BYTES = 256 * 1024
HOOK_HEADER = "X-Image-Cicd-Hook"
SNS_HOOK = "/_events/sns/"

Handler = Callable[[Request], Reply]


def _match(route: str, path: str) -> dict[str, str] | None:
    """`/approvals/{id}` against `/approvals/abc` -> {"id": "abc"}."""
    want, got = route.strip("/").split("/"), path.strip("/").split("/")
    if len(want) != len(got):
        return None
    params = {}
    for w, g in zip(want, got, strict=True):
        if w.startswith("{") and w.endswith("}"):
            if not g:
                return None
            params[w[1:-1]] = g
        elif w != g:
            return None
    return params


def http_api_event(req: Request, route: Route, params: dict[str, str], host: str) -> dict[str, Any]:
    """An API Gateway HTTP API (payload format 2.0) event, as AWS sends it."""
    now = datetime.now(UTC)
    text_body = req.body.decode("utf-8", errors="replace")
    binary = req.body and text_body.encode() != req.body
    return {
        "version": "2.0",
        "routeKey": f"{route.method} {route.path}",
        "rawPath": req.path,
        "rawQueryString": req.query,
        "headers": {k.lower(): v for k, v in req.headers.items()},
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "local",
            "domainName": host,
            "domainPrefix": host.split(".")[0],
            "http": {
                "method": route.method,
                "path": req.path,
                "protocol": "HTTP/1.1",
                "sourceIp": req.client,
                "userAgent": req.headers.get("user-agent", ""),
            },
            "requestId": str(uuid.uuid4()),
            "routeKey": f"{route.method} {route.path}",
            "stage": "$default",
            "time": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "timeEpoch": int(now.timestamp() * 1000),
        },
        "pathParameters": params,
        "body": base64.b64encode(req.body).decode() if binary else text_body,
        "isBase64Encoded": bool(binary),
    }


class _Listener(ThreadingHTTPServer):
    # A burst of clicks or deliveries must wait in the kernel's queue, not be reset
    # (the default backlog is 5).
    request_queue_size = 512
    daemon_threads = True


class StackServer(ThreadedHttpService):
    """One threaded HTTP server on loopback for everything the stack serves."""

    def __init__(
        self,
        *,
        lambda_client: Callable[[], Any],
        routes: list[Route],
        inbox: Inbox,
        on_registry_event: Callable[[dict[str, Any]], None],
        hook_secret: str,
        port: int = 0,
        on_aws_event: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.lambda_client = lambda_client
        self.routes = routes
        self.inbox = inbox
        self.on_registry_event = on_registry_event
        self.hook_secret = hook_secret
        self.on_aws_event = on_aws_event  # EventBridge events of the local AWS services
        self.extra: list[tuple[str, Handler]] = []  # (path prefix, handler): the console
        self._sns_secret = secrets.token_urlsafe(32)  # in SNS's delivery URL only
        super().__init__(_Listener(("127.0.0.1", port), self._handler_class()), "stack-server")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def sns_endpoint(self) -> str:
        """The URL to subscribe the stack's topics with (server to server: it holds the
        secret that makes a delivery the stack's own; show it to no one)."""
        return f"{self.url}{SNS_HOOK}{self._sns_secret}"

    def loggable(self, path: str) -> str:
        """`path` as it may be logged: without the SNS delivery secret."""
        return SNS_HOOK + "…" if path.startswith(SNS_HOOK) else path

    def mount(self, prefix: str, handler: Handler) -> None:
        self.extra.append((prefix, handler))

    def handle(self, req: Request) -> Reply:
        # Only this machine's own names: a page elsewhere that rebinds its DNS name to
        # 127.0.0.1 sends its own host name, and gets nothing.
        host = req.headers.get("host", "")
        if host not in (f"127.0.0.1:{self.port}", f"localhost:{self.port}"):
            return Reply(421, "unknown host", {"Content-Type": "text/plain"})
        if req.path.startswith("/_events/"):
            return self._event(req)
        method = "GET" if req.method == "HEAD" else req.method
        allowed = set()
        for route in self.routes:
            params = _match(route.path, req.path)
            if params is not None:
                if route.method == method:
                    return self._invoke(req, route, params)
                allowed.add(route.method)
        if allowed:
            allow = ", ".join(sorted(allowed | ({"HEAD"} if "GET" in allowed else set())))
            return Reply(405, "method not allowed", {"Content-Type": "text/plain", "Allow": allow})
        for prefix, handler in self.extra:
            if req.path == prefix or req.path.startswith(prefix.rstrip("/") + "/"):
                return handler(req)
        return Reply(404, "not found", {"Content-Type": "text/plain"})

    def _event(self, req: Request) -> Reply:
        """The registry's and SNS's deliveries: server to server, never from a browser
        (a browser's cross-site POST carries an Origin header)."""
        if req.method != "POST" or "origin" in req.headers:
            return Reply(403, "forbidden", {"Content-Type": "text/plain"})
        if req.path.startswith(SNS_HOOK) or req.path == SNS_HOOK.rstrip("/"):
            given = req.path[len(SNS_HOOK) :]
            if not hmac.compare_digest(given.encode(), self._sns_secret.encode()):
                return Reply(401, "unauthorized", {"Content-Type": "text/plain"})
            return self._sns(req)
        hooks = {"/_events/registry": self.on_registry_event, "/_events/aws": self.on_aws_event}
        hook = hooks.get(req.path)
        if hook is None:
            return Reply(404, "not found", {"Content-Type": "text/plain"})
        # The registry and the moto server send the stack's secret with each delivery
        # (the registry's notification `headers`); nothing else on this machine knows it.
        given = req.headers.get(HOOK_HEADER.lower(), "")
        if not hmac.compare_digest(given.encode(), self.hook_secret.encode()):
            return Reply(401, "unauthorized", {"Content-Type": "text/plain"})
        try:
            delivered = json.loads(req.body or b"{}")
        except ValueError:
            return Reply(400, "not JSON", {"Content-Type": "text/plain"})
        if not isinstance(delivered, dict):
            return Reply(400, "not a JSON object", {"Content-Type": "text/plain"})
        hook(delivered)
        return Reply(200)

    def _sns(self, req: Request) -> Reply:
        try:
            body = json.loads(req.body or b"{}")
        except ValueError:
            return Reply(400, "not JSON", {"Content-Type": "text/plain"})
        if not isinstance(body, dict):
            return Reply(400, "not a JSON object", {"Content-Type": "text/plain"})
        kind = req.headers.get("x-amz-sns-message-type") or body.get("Type", "")
        if kind == "SubscriptionConfirmation":
            return Reply(200)  # moto confirms http subscriptions by itself
        self.inbox.add(
            {
                "topic": body.get("TopicArn", ""),
                "subject": body.get("Subject") or "",
                "message": body.get("Message") or "",
                "at": body.get("Timestamp") or datetime.now(UTC).isoformat(),
            }
        )
        return Reply(200)

    def _invoke(self, req: Request, route: Route, params: dict[str, str]) -> Reply:
        event = http_api_event(req, route, params, req.headers.get("host", "127.0.0.1"))
        answer = self.lambda_client().invoke(
            FunctionName=route.function, Payload=json.dumps(event).encode()
        )
        payload = json.loads(answer["Payload"].read() or b"{}")
        if answer.get("FunctionError"):
            log.warning("%s failed: %s", route.function, payload.get("errorMessage"))
            return Reply(
                500, '{"message":"Internal Server Error"}', {"Content-Type": "application/json"}
            )
        body = payload.get("body") or ""
        data = base64.b64decode(body) if payload.get("isBase64Encoded") else body.encode()
        headers = {str(k): str(v) for k, v in (payload.get("headers") or {}).items()}
        return Reply(int(payload.get("statusCode", 200)), data, headers)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class HTTPHandler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                line = format % args
                if server._sns_secret in line:  # the request line of an SNS delivery
                    line = line.replace(server._sns_secret, "…")
                log.debug("%s %s", self.client_address[0], line)

            def _body(self) -> bytes | Reply:
                """The request body, or the answer that refuses it before it is read."""
                text = self.headers.get("Content-Length")
                if text is None:
                    return b""
                if not text.strip().isdigit():
                    return Reply(400, "bad Content-Length", {"Content-Type": "text/plain"})
                length = int(text)
                if length > MAX_BODY_BYTES:
                    return Reply(413, "request body too large", {"Content-Type": "text/plain"})
                return self.rfile.read(length) if length else b""

            def _serve(self) -> None:
                started = time.perf_counter()
                url = urlsplit(self.path)
                body = self._body()
                if isinstance(body, Reply):
                    # What was not read cannot be skipped: the connection ends here.
                    self.close_connection = True
                    reply = body
                else:
                    req = Request(
                        self.command,
                        url.path,
                        url.query,
                        {k.lower(): v for k, v in self.headers.items()},
                        body,
                        self.client_address[0],
                    )
                    try:
                        reply = server.handle(req)
                    except Exception:
                        log.exception(
                            "error serving %s %s", self.command, server.loggable(url.path)
                        )
                        reply = Reply(500, "internal error", {"Content-Type": "text/plain"})
                self.send_response(reply.status)
                for key, value in reply.headers.items():
                    if key.lower() not in ("content-length", "connection"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(reply.body)
                seconds = time.perf_counter() - started
                log.debug("%s %s %.3fs", self.command, server.loggable(url.path), seconds)

            do_GET = do_POST = do_HEAD = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _serve

        return HTTPHandler
