"""The local console: what the Step Functions console shows on AWS, for the embedded
stack — executions of both state machines, each with its graph and per-state
status, the approval inbox, and the repositories with a rollback button.

A request handler for `StackServer.mount`:

    stack.server.mount("/", Console(deployed_stack(stack.info), stack.inbox))

This module routes and guards (methods, the rollback's confirmation, CSRF token and
Origin check); console/queries.py reads the stack; the pages are the templates in
web/templates/console/ (every value escaped), with the one stylesheet and script
served from the package at /static/. GET and HEAD never change anything; the only
action (rollback) is a POST with a confirmation step and a CSRF token.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import secrets
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlencode

from markupsafe import Markup

from image_cicd.approvals.decisions import approval_link, version_label
from image_cicd.aws.operations import start_rollback
from image_cicd.aws.stack import DeployedStack
from image_cicd.console.graph import format_seconds, render_svg, status_key, status_label
from image_cicd.console.inbox import Inbox
from image_cicd.console.queries import MAX_ROWS, Queries
from image_cicd.promotion.errors import cause_text
from image_cicd.promotion.versions import VersionError, plan_rollback
from image_cicd.web import STATIC_TYPES, render, static_file
from image_cicd.web.http import Reply, Request

__all__ = ["HEADERS", "Console"]

log = logging.getLogger(__name__)

HEADERS = {
    "Content-Type": "text/html; charset=utf-8",
    "Cache-Control": "no-store",
    # same-origin: the browser then sends a real Origin with the console's own POSTs
    # (with no-referrer it sends `Origin: null`, which the rollback refuses).
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
}
# The stylesheet and the script come from /static/ only: no inline style or script.
_CSP = (
    "default-src 'none'; style-src 'self'; img-src data:; {script}"
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
STATUSES = ("RUNNING", "SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED")
MAX_BODY = 16 * 1024
_URL = re.compile(r"(https?://[^\s<>\"']+)")


# ------------------------------------------------------- what templates print


def _utc(value: datetime | None) -> str:
    if value is None:
        return ""
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _short(digest: str | None) -> str:
    if not digest:
        return ""
    algo, _, hexpart = digest.partition(":")
    return f"{algo}:{hexpart[:12]}" if hexpart else digest[:19]


def _pretty(text: str | None, limit: int = 20_000) -> str:
    if text is None:
        return ""
    try:
        shown = json.dumps(json.loads(text), indent=2, sort_keys=False)
    except ValueError:
        shown = text
    return shown if len(shown) <= limit else shown[:limit] + "\n… (truncated)"


def _duration(started: datetime | None, stopped: datetime | None) -> str:
    if started is None:
        return ""
    end = stopped or datetime.now(UTC)
    return format_seconds(max(0.0, (end - started).total_seconds()))


def _retry_text(spec: Mapping[str, Any]) -> str:
    return "; ".join(
        ", ".join(str(e) for e in r.get("ErrorEquals") or []) + f" (x{r.get('MaxAttempts', 3)})"
        for r in spec["Retry"]
    )


def _catch_text(spec: Mapping[str, Any]) -> str:
    return "; ".join(
        ", ".join(str(e) for e in c.get("ErrorEquals") or []) + f" → {c.get('Next')}"
        for c in spec["Catch"]
    )


def _parts(text: str) -> list[tuple[str, bool]]:
    """The text split into (piece, is an http(s) URL)."""
    return [(piece, i % 2 == 1) for i, piece in enumerate(_URL.split(text)) if piece]


_PRINT: dict[str, Callable[..., Any]] = {
    "utc": _utc,
    "short": _short,
    "pretty": _pretty,
    "duration": _duration,
    "seconds": format_seconds,
    "status_key": status_key,
    "status_label": status_label,
    "cause_text": cause_text,
    "retry_text": _retry_text,
    "catch_text": _catch_text,
    "version_label": version_label,
}


class Console:
    """The console's pages, as a `server.Handler` (`Request` -> `Reply`).

    `stack` is the stack (`image_cicd.local.stack.deployed_stack(info)`), `inbox` the
    stack's SNS inbox (its messages are shown on the approvals page).
    """

    def __init__(
        self,
        stack: DeployedStack,
        inbox: Inbox | None = None,
        *,
        prefix: str = "",
        refresh_seconds: float = 2.0,
        secret: bytes | None = None,
    ) -> None:
        self.stack = stack
        self.inbox = inbox
        self.prefix = prefix.rstrip("/")
        self.scheme = stack.scheme
        self.refresh_ms = max(250, int(refresh_seconds * 1000))
        self.queries = Queries(stack)
        self._secret = secret or secrets.token_bytes(32)

    # ------------------------------------------------------------------ routing

    def __call__(self, req: Request) -> Reply:
        path = req.path[len(self.prefix) :] if req.path.startswith(self.prefix) else req.path
        path = "/" + path.strip("/")
        query = {k: v[-1] for k, v in parse_qs(req.query, keep_blank_values=True).items()}
        method = "GET" if req.method == "HEAD" else req.method
        try:
            reply = self._route(method, path, query, req)
        except Exception as exc:
            log.exception("console error on %s %s", req.method, req.path)
            reply = self._message(500, "Something went wrong", f"{type(exc).__name__}: {exc}")
        return reply  # for HEAD the server sends the headers only

    def _route(self, method: str, path: str, query: dict[str, str], req: Request) -> Reply:
        gets: dict[str, Callable[[], Reply]] = {
            "/": lambda: self.executions_page(query),
            "/approvals": self.approvals_page,
            "/repositories": self.repositories_page,
        }
        if path in gets:
            return gets[path]() if method == "GET" else self._not_allowed("GET, HEAD")
        if path == "/repositories/rollback":
            if method != "POST":
                return self._not_allowed("POST")
            return self.rollback(req)
        if path.startswith("/static/") and path[len("/static/") :] in STATIC_TYPES:
            if method != "GET":
                return self._not_allowed("GET, HEAD")
            name = path[len("/static/") :]
            return Reply(200, static_file(name), {**HEADERS, "Content-Type": STATIC_TYPES[name]})
        if path.startswith("/executions/"):
            name = unquote(path[len("/executions/") :])
            if method != "GET":
                return self._not_allowed("GET, HEAD")
            if name.endswith(".json"):
                return self.execution_json(name[: -len(".json")])
            return self.execution_page(name, query.get("state"))
        return self._message(404, "Not found", "There is no console page at this address.")

    def _url(self, path: str, **params: str) -> str:
        query = urlencode({k: v for k, v in params.items() if v})
        return f"{self.prefix}{path}" + (f"?{query}" if query else "")

    def _execution_url(self, name: str, state: str | None = None) -> str:
        return self._url(f"/executions/{quote(name, safe='')}", state=state or "")

    # -------------------------------------------------------------- documents

    def _page(
        self,
        status: int,
        template: str,
        title: str,
        active: str = "",
        *,
        script: bool = False,
        body_attrs: Mapping[str, str] | None = None,
        **context: Any,
    ) -> Reply:
        document = render(
            f"console/{template}",
            title=title,
            active=active,
            script=script,
            body_attrs=body_attrs or {},
            stack_name=self.stack.name,
            url=self._url,
            execution_url=self._execution_url,
            **_PRINT,
            **context,
        )
        csp = _CSP.format(script="script-src 'self'; " if script else "")
        return Reply(status, document, {**HEADERS, "Content-Security-Policy": csp})

    def _message(self, status: int, title: str, text: str, *, back: bool = False) -> Reply:
        return self._page(status, "message.html", title, text=text, back=back)

    def _not_allowed(self, allow: str) -> Reply:
        reply = self._message(405, "Method not allowed", f"This page answers {allow} only.")
        reply.headers["Allow"] = allow
        return reply

    # ------------------------------------------------------------ executions

    def executions_page(self, query: Mapping[str, str]) -> Reply:
        chosen = {k: query.get(k, "") for k in ("repository", "status", "workflow")}
        rows = [
            r
            for r in self.queries.rows()
            if (not chosen["repository"] or r.repository == chosen["repository"])
            and (not chosen["status"] or r.status == chosen["status"])
            and (not chosen["workflow"] or r.workflow == chosen["workflow"])
        ][:MAX_ROWS]
        return self._page(
            200,
            "executions.html",
            "Executions",
            "executions",
            rows=rows,
            chosen=chosen,
            repositories=self.stack.repositories,
            statuses=STATUSES,
        )

    def _approval_url(self, approval_id: str) -> str:
        return approval_link(self.stack.output("ApprovalBaseUrl"), approval_id)

    def execution_json(self, name: str) -> Reply:
        found = self.queries.execution(name)
        json_headers = {**HEADERS, "Content-Type": "application/json"}
        if found is None:
            return Reply(404, '{"error":"not found"}', json_headers)
        ex, approval = found.view, found.approval
        data = {
            "name": ex.name,
            "status": ex.status,
            "fingerprint": found.fingerprint,
            "path": ex.path,
            "states": {s.name: s.status for s in ex.states.values()},
            "approval": self._approval_url(approval.approval_id) if approval else None,
        }
        return Reply(200, json.dumps(data), json_headers)

    def execution_page(self, name: str, selected: str | None) -> Reply:
        found = self.queries.execution(name, with_promotion=True)
        if found is None:
            return self._message(404, "No such execution", f"There is no execution {name!r}.")
        ex, approval = found.view, found.approval
        link = self._approval_url(approval.approval_id) if approval else None
        if selected not in ex.states:
            waiting = ex.waiting
            selected = waiting[0].name if waiting else (ex.path[-1] if ex.path else None)
        svg = render_svg(
            found.definition,
            ex.states,
            ex.path,
            link=lambda state: self._execution_url(ex.name, state),
            selected=selected,
            title=f"{found.workflow} {ex.name}",
        )
        running = ex.status == "RUNNING"
        attrs = {"data-execution-status": ex.status, "data-fingerprint": found.fingerprint}
        if running:
            attrs["data-poll"] = self._url(f"/executions/{quote(ex.name, safe='')}.json")
            attrs["data-refresh-ms"] = str(self.refresh_ms)
        return self._page(
            200,
            "execution.html",
            ex.name,
            "executions",
            script=running,
            body_attrs=attrs,
            execution=found,
            link=link,
            selected=selected,
            svg=Markup(svg),  # noqa: S704 - graph.py escapes every text it draws
            path=list(dict.fromkeys(ex.path)),
        )

    # -------------------------------------------------------------- approvals

    def _inbox(self) -> list[dict[str, Any]]:
        """The inbox, newest first. What this stack cannot have sent (another topic, or
        a link outside its approval endpoint) is not verified: its links are no links."""
        found = list(reversed(self.inbox.messages())) if self.inbox is not None else []
        outputs = self.stack.outputs
        topics = {outputs.get("ApprovalsTopicArn"), outputs.get("NotificationsTopicArn")} - {None}
        base = outputs.get("ApprovalBaseUrl") or ""
        shown = []
        for m in found[:MAX_ROWS]:
            topic, text = str(m.get("topic", "")), str(m.get("message", ""))
            own = topic in topics and all(base and u.startswith(base) for u in _URL.findall(text))
            shown.append(
                {
                    "topic": topic.rsplit(":", 1)[-1],
                    "subject": m.get("subject"),
                    "at": m.get("at", ""),
                    "verified": own,
                    "parts": _parts(text) if own else [(text, False)],
                }
            )
        return shown

    def approvals_page(self) -> Reply:
        approvals = self.queries.approvals()
        return self._page(
            200,
            "approvals.html",
            "Approvals",
            "approvals",
            pending=[a for a in approvals if a.status == "PENDING"],
            decided=[a for a in approvals if a.status != "PENDING"],
            messages=self._inbox(),
            approval_link=lambda a: self._approval_url(a.approval_id),
        )

    # ----------------------------------------------------------- repositories

    def repositories_page(self) -> Reply:
        repositories = []
        for name in self.stack.repositories:
            stages = self.queries.stages(name)
            previous, choices = self.queries.rollback_choices(stages[-1].state)
            repositories.append(
                {"name": name, "stages": stages, "previous": previous, "choices": choices}
            )
        return self._page(
            200, "repositories.html", "Repositories", "repositories", repositories=repositories
        )

    # -------------------------------------------------------------- rollback

    def _token(self, repository: str, to: str, here: str, key: str) -> str:
        message = f"rollback\n{repository}\n{to}\n{here}\n{key}".encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()

    def rollback(self, req: Request) -> Reply:
        """POST: first a confirmation page, then (confirm=yes + token) the rollback.

        The confirmation shows the core's plan (`plan_rollback`) and carries where
        `latest` was (`from`) and a key of its own that names the execution: posting it
        again, at once or later, starts nothing new and shows the same execution. The
        rollback moves `latest` only if it is still at `from` (else LatestMoved, shown
        on the execution's page).
        """
        if len(req.body) > MAX_BODY:
            return self._message(413, "Request too large", "The form is too large.")
        form = {
            k: v[-1]
            for k, v in parse_qs(
                req.body.decode("utf-8", "replace"), keep_blank_values=True
            ).items()
        }
        name, to = form.get("repository", ""), form.get("to", "")
        if name not in self.stack.repositories:
            return self._message(400, "Unknown repository", f"No repository named {name!r}.")
        if to and self.scheme.parse(to) is None:
            return self._message(400, "Not a version", f"{to!r} is not a version tag.")
        prod_repo = self.stack.stage_repository(name, "PROD")
        if form.get("confirm") == "yes":
            return self._start(req, form, name, prod_repo, to)
        try:
            plan = plan_rollback(self.stack.registry, prod_repo, to=to or None, scheme=self.scheme)
        except VersionError as exc:
            return self._message(409, "Nothing to roll back", str(exc), back=True)
        except Exception:
            log.warning("cannot read %s", prod_repo, exc_info=True)
            return self._message(503, "Registry unavailable", f"Cannot read {prod_repo}.")
        here, key = plan.from_version or plan.from_digest, secrets.token_hex(8)
        return self._page(
            200,
            "confirm.html",
            f"Roll back {prod_repo}?",
            "repositories",
            plan=plan,
            name=name,
            to=to,
            here=here,
            key=key,
            csrf=self._token(name, to, here, key),
        )

    def _start(
        self, req: Request, form: Mapping[str, str], name: str, prod_repo: str, to: str
    ) -> Reply:
        """The confirmed rollback: one execution per confirmation, however often posted."""
        origin = req.headers.get("origin")
        host = req.headers.get("host", "")
        if origin and origin not in (f"http://{host}", f"https://{host}"):
            return self._message(403, "Request not accepted", "The form came from another site.")
        here, key, token = form.get("from", ""), form.get("key", ""), form.get("csrf", "")
        signed = self._token(name, to, here, key)
        if not re.fullmatch(r"[0-9a-f]{16}", key) or not hmac.compare_digest(
            token.encode(), signed.encode()
        ):
            return self._message(
                403,
                "Request not accepted",
                "The confirmation token is missing or wrong; nothing was changed.",
                back=True,
            )
        arn = start_rollback(self.stack, prod_repo, to or None, expected=here or None, key=key)
        execution = arn.rsplit(":", 1)[-1]
        return Reply(303, b"", {**HEADERS, "Location": self._execution_url(execution)})
