"""The local console: what the Step Functions console shows on AWS, for the embedded
stack — executions of both state machines, each with its graph and per-state
status, the approval inbox, and the repositories with a rollback button.

A request handler for `StackServer.mount`:

    stack.server.mount("/", Console(deployed_stack(stack.info), stack.inbox))

Server-side rendered HTML, no external assets, every value escaped. GET and HEAD
never change anything; the only action (rollback) is a POST with a confirmation
step and a CSRF token.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlencode

from image_cicd.approvals.decisions import approval_link, version_label
from image_cicd.aws.operations import start_rollback
from image_cicd.aws.stack import DeployedStack
from image_cicd.console.graph import format_seconds, render_svg, status_key, status_label
from image_cicd.console.history import ExecutionView, StateRun, view
from image_cicd.ledger.records import ApprovalRequest, Promotion
from image_cicd.ledger.store import LedgerError
from image_cicd.local.server import Inbox, Reply, Request
from image_cicd.promotion.errors import cause_text
from image_cicd.promotion.versions import StageState, read_stage
from image_cicd.stages import STAGES

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
_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; {script}"
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
STATUSES = ("RUNNING", "SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED")
MAX_BODY = 16 * 1024
MAX_ROWS = 200
_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
_URL = re.compile(r"https?://[^\s<>\"']+")

_CSS = """
:root { color-scheme: light; --fg:#1d2330; --muted:#5b6474; --bg:#f4f6fa; --card:#fff;
  --line:#dde2ea; --ok:#1a7f37; --bad:#c62828; --warn:#9a6700; --run:#2457c5;
  --accent:#2457c5; }
* { box-sizing:border-box; }
body { margin:0; background:var(--bg); color:var(--fg);
  font:14px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif; }
header.top { background:#1d2330; color:#fff; display:flex; align-items:center; gap:28px;
  padding:0 24px; height:52px; }
header.top .brand { font-weight:700; font-size:16px; letter-spacing:.2px; }
header.top .brand small { font-weight:400; color:#aab3c5; margin-left:8px; font-size:13px; }
header.top nav { display:flex; gap:4px; }
header.top nav a { color:#cfd6e4; text-decoration:none; padding:6px 12px; border-radius:6px; }
header.top nav a:hover { background:#2c3445; color:#fff; }
header.top nav a.active { background:#3a4459; color:#fff; }
main { max-width:1720px; margin:24px auto; padding:0 24px; }
h1 { font-size:21px; margin:0 0 4px; overflow-wrap:anywhere; }
h2 { font-size:16px; margin:0 0 12px; }
.sub { color:var(--muted); margin:0 0 16px; }
.card { background:var(--card); border:1px solid var(--line); border-radius:10px;
  padding:18px 22px; margin-bottom:18px; }
table { width:100%; border-collapse:collapse; }
th, td { text-align:left; padding:8px 10px; border-bottom:1px solid var(--line);
  vertical-align:top; }
th { color:var(--muted); font-weight:600; font-size:12px; text-transform:uppercase;
  letter-spacing:.4px; }
tr:last-child td { border-bottom:0; }
a { color:var(--accent); }
code, pre { font:12.5px/1.45 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace; }
pre { background:#f6f8fb; border:1px solid var(--line); border-radius:6px; padding:10px;
  overflow:auto; max-height:420px; white-space:pre-wrap; overflow-wrap:anywhere; margin:4px 0 0; }
.badge { display:inline-block; padding:1px 9px; border-radius:999px; font-size:12px;
  font-weight:600; border:1px solid currentColor; white-space:nowrap; }
.s-SUCCEEDED, .s-succeeded, .s-APPROVED, .s-ALREADY_PROMOTED { color:var(--ok); }
.s-FAILED, .s-TIMED_OUT, .s-ABORTED, .s-failed, .s-REJECTED { color:var(--bad); }
.s-RUNNING, .s-running { color:var(--run); }
.s-waiting, .s-PENDING, .s-EXPIRED, .s-SUPERSEDED, .s-caught { color:var(--warn); }
.s-not-reached { color:var(--muted); }
.muted { color:var(--muted); }
.filters { display:flex; gap:12px; align-items:end; flex-wrap:wrap; margin-bottom:14px; }
.filters label { display:flex; flex-direction:column; font-size:12px; color:var(--muted); gap:3px; }
select, input[type=text] { padding:6px 8px; border:1px solid var(--line); border-radius:6px;
  font:inherit; background:#fff; color:inherit; min-width:160px; }
button, .button { padding:7px 14px; border:0; border-radius:6px; background:var(--accent);
  color:#fff; font:inherit; font-weight:600; cursor:pointer; text-decoration:none;
  display:inline-block; }
button.danger { background:var(--bad); }
button.plain, .button.plain { background:#e9edf3; color:var(--fg); }
.exec { display:grid; grid-template-columns:minmax(0,1fr) 380px; gap:18px; align-items:start; }
@media (max-width:1200px) { .exec { grid-template-columns:1fr; } }
.graph { overflow:auto; padding:8px; }
.graph svg { max-width:100%; height:auto; display:block; margin:0 auto; }
.graph a.state-link { cursor:pointer; }
.graph a.state-link:hover rect { filter:brightness(0.96); }
.panel { position:sticky; top:16px; }
dl { display:grid; grid-template-columns:max-content 1fr; gap:6px 16px; margin:0; }
dt { color:var(--muted); }
dd { margin:0; overflow-wrap:anywhere; }
.notice { border-left:4px solid var(--warn); background:#fffbea; padding:10px 14px;
  border-radius:6px; margin:0 0 16px; }
.notice.bad { border-color:var(--bad); background:#fff1f1; }
.steps td { padding:5px 8px; }
.chips { display:flex; flex-wrap:wrap; gap:6px; }
.chip { border:1px solid var(--line); border-radius:6px; padding:2px 8px; background:#f8f9fb;
  white-space:nowrap; }
.chip.latest { border-color:var(--ok); background:#e9f6ec; }
.repo-grid { display:grid; grid-template-columns:repeat(auto-fill,minmax(600px,1fr)); gap:18px; }
.repo table { table-layout:fixed; }
.repo th:nth-child(1) { width:70px; } .repo th:nth-child(2) { width:150px; }
.repo th:nth-child(3) { width:170px; }
.chip.tag { border-style:dashed; }
.rollback { display:flex; gap:10px; align-items:end; margin-top:12px; padding-top:12px;
  border-top:1px dashed var(--line); }
.rollback label { display:flex; flex-direction:column; font-size:12px; color:var(--muted);
  gap:3px; }
.message { border-top:1px solid var(--line); padding:12px 0; }
.message:first-of-type { border-top:0; }
.empty { color:var(--muted); padding:8px 0; }
"""

_POLL_JS = """
(function () {
  var body = document.body, url = body.getAttribute("data-poll");
  if (!url) { return; }
  var seen = body.getAttribute("data-fingerprint");
  function check() {
    fetch(url, {cache: "no-store", credentials: "same-origin"})
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (d) {
        if (d && d.fingerprint !== seen) { window.location.reload(); }
        else { window.setTimeout(check, %(ms)d); }
      })
      .catch(function () { window.setTimeout(check, %(ms)d); });
  }
  window.setTimeout(check, %(ms)d);
})();
"""


def _e(value: object) -> str:
    return escape(str(value), quote=True)


def _time(value: datetime | None) -> str:
    if value is None:
        return ""
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _short(digest: str | None) -> str:
    if not digest:
        return ""
    algo, _, hexpart = digest.partition(":")
    return f"{algo}:{hexpart[:12]}" if hexpart else digest[:19]


def _badge(status: str, text: str | None = None) -> str:
    return f'<span class="badge s-{_e(status_key(status))}">{_e(text or status)}</span>'


def _pretty(text: str | None, limit: int = 20_000) -> str:
    if text is None:
        return ""
    try:
        shown = json.dumps(json.loads(text), indent=2, sort_keys=False)
    except ValueError:
        shown = text
    return shown if len(shown) <= limit else shown[:limit] + "\n… (truncated)"


def _linkify(text: str) -> str:
    """Escape, then make http(s) URLs links (their text is already escaped)."""
    escaped = _e(text)
    return _URL.sub(lambda m: f'<a href="{m.group(0)}" rel="noreferrer">{m.group(0)}</a>', escaped)


def _duration(started: datetime | None, stopped: datetime | None) -> str:
    if started is None:
        return ""
    end = stopped or datetime.now(UTC)
    return format_seconds(max(0.0, (end - started).total_seconds()))


@dataclass
class _Row:
    name: str
    workflow: str  # promotion | rollback
    status: str
    repository: str
    digest: str | None
    versions: str
    started: datetime | None
    stopped: datetime | None
    waiting: str | None = None  # the stage whose approval it waits for
    outcome: str | None = None  # the ledger's SUPERSEDED or ALREADY_PROMOTED


class Console:
    """The console's pages, as a `server.Handler` (`Request` -> `Reply`).

    `target` is the stack (`image_cicd.local.stack.deployed_stack(info)`), `inbox` the
    stack's SNS inbox (its messages are shown on the approvals page).
    """

    def __init__(
        self,
        target: DeployedStack,
        inbox: Inbox | None = None,
        *,
        prefix: str = "",
        refresh_seconds: float = 2.0,
        secret: bytes | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.target = target
        self.inbox = inbox
        self.prefix = prefix.rstrip("/")
        self.scheme = target.scheme
        self.refresh_ms = max(250, int(refresh_seconds * 1000))
        self._secret = secret or secrets.token_bytes(32)
        self._now = now
        self._definitions: dict[str, dict[str, Any]] = {}

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
            reply = self._page(
                500,
                "Something went wrong",
                "",
                f'<section class="card"><h1>Something went wrong</h1>'
                f"<p>{_e(type(exc).__name__)}: {_e(exc)}</p></section>",
            )
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
        title: str,
        active: str,
        body: str,
        *,
        script: str | None = None,
        body_attrs: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Reply:
        nonce = secrets.token_urlsafe(16) if script else None
        nav = "".join(
            f'<a href="{_e(self._url(href))}"{" class=active" if key == active else ""}>'
            f"{_e(label)}</a>"
            for key, href, label in (
                ("executions", "/", "Executions"),
                ("approvals", "/approvals", "Approvals"),
                ("repositories", "/repositories", "Repositories"),
            )
        )
        attrs = "".join(f' {k}="{_e(v)}"' for k, v in (body_attrs or {}).items())
        script_html = f'<script nonce="{nonce}">{script}</script>' if script else ""
        document = (
            "<!doctype html>\n"
            '<html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            '<meta name="robots" content="noindex, nofollow">'
            f"<title>{_e(title)} · image-cicd console</title><style>{_CSS}</style></head>"
            f"<body{attrs}>"
            f'<header class="top"><span class="brand">image-cicd'
            f"<small>{_e(self.target.name)}</small></span><nav>{nav}</nav></header>"
            f"<main>{body}</main>{script_html}</body></html>\n"
        )
        csp = _CSP.format(script=f"script-src 'nonce-{nonce}'; " if nonce else "")
        return Reply(
            status, document, {**HEADERS, "Content-Security-Policy": csp, **(headers or {})}
        )

    def _message(self, status: int, title: str, text: str, extra: str = "") -> Reply:
        body = f'<section class="card"><h1>{_e(title)}</h1><p>{_e(text)}</p>{extra}</section>'
        return self._page(status, title, "", body)

    def _not_allowed(self, allow: str) -> Reply:
        reply = self._message(405, "Method not allowed", f"This page answers {allow} only.")
        reply.headers["Allow"] = allow
        return reply

    # ------------------------------------------------------------ executions

    def _sfn(self) -> Any:
        return self.target.client("stepfunctions")

    def _list(self, machine: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {"stateMachineArn": machine, "maxResults": 1000}
        while True:
            page = self._sfn().list_executions(**kwargs)
            found.extend(page.get("executions", []))
            if not page.get("nextToken"):
                return found
            kwargs["nextToken"] = page["nextToken"]

    def _promotions(self) -> dict[str, Promotion]:
        ledger = self.target.ledger
        found: dict[str, Promotion] = {}
        for name in self.target.repositories:
            try:
                for promotion in ledger.promotions_for(name, limit=MAX_ROWS):
                    found[promotion.execution] = promotion
            except LedgerError:
                continue
        return found

    def _pending(self) -> dict[str, ApprovalRequest]:
        return {a.execution: a for a in self.target.ledger.list_approvals("PENDING")}

    def rows(self) -> list[_Row]:
        """Executions of both state machines, newest first."""
        promotions = self._promotions()
        pending = self._pending()
        rows: list[_Row] = []
        for item in self._list(self.target.promotion_arn):
            promotion = promotions.get(item["name"])
            if promotion is not None:
                repository, digest = promotion.repository, promotion.digest
                versions = " · ".join(
                    f"{stage} {version}"
                    for stage, version in (
                        ("TEST", promotion.test_version),
                        ("PROD", promotion.prod_version),
                    )
                    if version
                )
            else:
                data = self._input(item["executionArn"])
                repository = str(data.get("repository", "")).rsplit("/", 1)[-1]
                digest, versions = str(data.get("digest") or ""), ""
            approval = pending.get(item["name"])
            rows.append(
                _Row(
                    item["name"],
                    "promotion",
                    item["status"],
                    repository,
                    digest,
                    versions,
                    item.get("startDate"),
                    item.get("stopDate"),
                    approval.stage if approval and item["status"] == "RUNNING" else None,
                    promotion.outcome
                    if promotion is not None
                    and promotion.outcome in ("SUPERSEDED", "ALREADY_PROMOTED")
                    else None,
                )
            )
        for item in self._list(self.target.rollback_arn):
            data = self._input(item["executionArn"])
            desc = self._sfn().describe_execution(executionArn=item["executionArn"])
            output = json.loads(desc.get("output") or "{}").get("rollback") or {}
            versions = (
                f"{output.get('from')} → {output.get('to')}"
                if output.get("from")
                else (f"to {data['to']}" if data.get("to") else "to the previous version")
            )
            rows.append(
                _Row(
                    item["name"],
                    "rollback",
                    item["status"],
                    str(data.get("repository", "")).rsplit("/", 1)[-1],
                    output.get("digest"),
                    versions,
                    item.get("startDate"),
                    item.get("stopDate"),
                )
            )
        epoch = datetime.min.replace(tzinfo=UTC)
        rows.sort(key=lambda r: r.started or epoch, reverse=True)
        return rows

    def _input(self, arn: str) -> dict[str, Any]:
        try:
            desc = self._sfn().describe_execution(executionArn=arn)
            data = json.loads(desc.get("input") or "{}")
        except Exception:
            return {}
        return data if isinstance(data, dict) else {}

    def executions_page(self, query: Mapping[str, str]) -> Reply:
        repository = query.get("repository", "")
        status = query.get("status", "")
        workflow = query.get("workflow", "")
        rows = [
            r
            for r in self.rows()
            if (not repository or r.repository == repository)
            and (not status or r.status == status)
            and (not workflow or r.workflow == workflow)
        ][:MAX_ROWS]

        def options(values: Iterable[str], chosen: str, every: str) -> str:
            items = [f'<option value="">{_e(every)}</option>']
            items += [
                f'<option value="{_e(v)}"{" selected" if v == chosen else ""}>{_e(v)}</option>'
                for v in values
            ]
            return "".join(items)

        filters = (
            f'<form method="get" action="{_e(self._url("/"))}" class="filters">'
            f'<label>Repository<select name="repository">'
            f"{options(self.target.repositories, repository, 'all repositories')}</select></label>"
            f'<label>Status<select name="status">{options(STATUSES, status, "any status")}'
            "</select></label>"
            f'<label>Workflow<select name="workflow">'
            f"{options(('promotion', 'rollback'), workflow, 'both')}</select></label>"
            '<button type="submit">Filter</button>'
            f'<a class="button plain" href="{_e(self._url("/"))}">Clear</a></form>'
        )
        body_rows = []
        for r in rows:
            waiting = (
                f' <span class="badge s-waiting">waiting for {_e(r.waiting)} approval</span>'
                if r.waiting
                else ""
            )
            if r.outcome:
                label = "superseded" if r.outcome == "SUPERSEDED" else "already promoted"
                waiting += f" {_badge(r.outcome, label)}"
            body_rows.append(
                f'<tr data-execution="{_e(r.name)}" data-status="{_e(r.status)}" '
                f'data-repository="{_e(r.repository)}">'
                f"<td>{_badge(r.status)}{waiting}</td>"
                f'<td><a href="{_e(self._execution_url(r.name))}"><code>{_e(r.name)}</code></a>'
                f'<div class="muted">{_e(r.workflow)}</div></td>'
                f"<td>{_e(r.repository)}</td>"
                f'<td><code title="{_e(r.digest or "")}">{_e(_short(r.digest))}</code></td>'
                f"<td>{_e(r.versions)}</td>"
                f"<td>{_e(_time(r.started))}</td>"
                f"<td>{_e(_duration(r.started, r.stopped))}</td></tr>"
            )
        table = (
            "<table><thead><tr><th>Status</th><th>Execution</th><th>Repository</th>"
            "<th>Digest</th><th>Versions</th><th>Started (UTC)</th><th>Duration</th></tr>"
            f"</thead><tbody>{''.join(body_rows)}</tbody></table>"
            if body_rows
            else '<p class="empty">No executions match.</p>'
        )
        body = (
            '<h1>Executions</h1><p class="sub">Promotions and rollbacks, newest first.</p>'
            f'<section class="card">{filters}{table}</section>'
        )
        return self._page(200, "Executions", "executions", body)

    # -------------------------------------------------------------- execution

    def _definition(self, machine: str) -> dict[str, Any]:
        if machine not in self._definitions:
            desc = self._sfn().describe_state_machine(stateMachineArn=machine)
            self._definitions[machine] = json.loads(desc["definition"])
        return self._definitions[machine]

    def _find(self, name: str) -> tuple[str, str] | None:
        """(execution ARN, state machine ARN) of an execution name, if it exists."""
        if not _NAME.match(name):
            return None
        for machine in (self.target.promotion_arn, self.target.rollback_arn):
            arn = machine.replace(":stateMachine:", ":execution:") + ":" + name
            try:
                self._sfn().describe_execution(executionArn=arn)
            except Exception:  # noqa: S112 - not this machine's
                continue
            return arn, machine
        return None

    @staticmethod
    def _fingerprint(ex: ExecutionView, approval: ApprovalRequest | None) -> str:
        data: list[Any] = [ex.status, ex.path]
        data.append([(s.name, s.status, s.retries) for s in ex.states.values()])
        data.append(approval.approval_id if approval else None)
        return hashlib.sha256(json.dumps(data, default=str).encode()).hexdigest()[:20]

    def _load(self, name: str) -> tuple[ExecutionView, dict[str, Any], str, ApprovalRequest | None]:
        found = self._find(name)
        if found is None:
            raise KeyError(name)
        arn, machine = found
        definition = self._definition(machine)
        ex = view(self._sfn(), arn, definition)
        approval = None
        if ex.status == "RUNNING" and ex.waiting:
            approval = self._pending().get(ex.name)
        return ex, definition, machine, approval

    def execution_json(self, name: str) -> Reply:
        try:
            ex, _, _, approval = self._load(name)
        except KeyError:
            return Reply(
                404, '{"error":"not found"}', {**HEADERS, "Content-Type": "application/json"}
            )
        data = {
            "name": ex.name,
            "status": ex.status,
            "fingerprint": self._fingerprint(ex, approval),
            "path": ex.path,
            "states": {s.name: s.status for s in ex.states.values()},
            "approval": (
                approval_link(self.target.output("ApprovalBaseUrl"), approval.approval_id)
                if approval
                else None
            ),
        }
        return Reply(200, json.dumps(data), {**HEADERS, "Content-Type": "application/json"})

    def execution_page(self, name: str, selected: str | None) -> Reply:
        try:
            ex, definition, machine, approval = self._load(name)
        except KeyError:
            return self._message(404, "No such execution", f"There is no execution {name!r}.")
        link = (
            approval_link(self.target.output("ApprovalBaseUrl"), approval.approval_id)
            if approval
            else None
        )
        if selected not in ex.states:
            waiting = ex.waiting
            selected = waiting[0].name if waiting else (ex.path[-1] if ex.path else None)
        workflow = "rollback" if machine == self.target.rollback_arn else "promotion"
        svg = render_svg(
            definition,
            ex.states,
            ex.path,
            link=lambda state: self._execution_url(ex.name, state),
            selected=selected,
            title=f"{workflow} {ex.name}",
        )
        notice = ""
        if link and approval is not None:
            notice = (
                f'<p class="notice" id="approval-notice">Waiting for <strong>'
                f"{_e(approval.stage)}</strong> approval of <code>{_e(_short(approval.digest))}"
                f"</code> &rarr; <code>{_e(approval.target_repository)}</code>. "
                f'<a id="approval-link" href="{_e(link)}">Open the approval page</a></p>'
            )
        elif ex.error:
            notice = (
                f'<p class="notice bad"><strong>{_e(ex.error)}</strong>: '
                f"{_e(cause_text(ex.cause))}</p>"
            )
        facts = self._facts(ex, workflow)
        header = (
            f'<h1>{_e(ex.name)} {_badge(ex.status)}</h1><p class="sub">{_e(workflow)} · '
            f"started {_e(_time(ex.started))} UTC · {_e(_duration(ex.started, ex.stopped))}"
            f"{' so far' if ex.status == 'RUNNING' else ''}</p>"
        )
        panel = self._details(ex, selected, definition, link)
        steps = "".join(
            f'<tr><td>{i + 1}</td><td><a href="{_e(self._execution_url(ex.name, n))}">'
            f"{_e(n)}</a></td><td>{_badge(ex.states[n].status, status_label(ex.states[n].status))}"
            f"</td><td>{_e(format_seconds(ex.states[n].seconds))}</td></tr>"
            for i, n in enumerate(dict.fromkeys(ex.path))
            if n in ex.states
        )
        body = (
            f"{header}{notice}"
            '<div class="exec">'
            f'<section class="card graph" id="graph">{svg}</section>'
            f'<aside class="panel">{panel}'
            f'<section class="card">{facts}</section>'
            '<section class="card"><h2>Path taken</h2>'
            f'<table class="steps"><tbody>{steps}</tbody></table></section></aside>'
            "</div>"
        )
        running = ex.status == "RUNNING"
        attrs = {
            "data-execution-status": ex.status,
            "data-fingerprint": self._fingerprint(ex, approval),
        }
        if running:
            attrs["data-poll"] = self._url(f"/executions/{quote(ex.name, safe='')}.json")
        return self._page(
            200,
            ex.name,
            "executions",
            body,
            script=_POLL_JS % {"ms": self.refresh_ms} if running else None,
            body_attrs=attrs,
        )

    def _facts(self, ex: ExecutionView, workflow: str) -> str:
        rows: list[tuple[str, str]] = []
        if workflow == "promotion":
            try:
                promotion: Promotion | None = self.target.ledger.get_promotion(ex.name)
            except LedgerError:
                promotion = None
            repository = promotion.repository if promotion else ex.input.get("repository", "")
            digest = promotion.digest if promotion else ex.input.get("digest", "")
            rows += [
                ("Repository", _e(repository)),
                ("Digest", f"<code>{_e(digest)}</code>"),
            ]
            if promotion is not None:
                rows += [
                    ("TEST version", _e(promotion.test_version or "—")),
                    ("PROD version", _e(promotion.prod_version or "—")),
                    ("Outcome", _badge(promotion.outcome)),
                ]
                if promotion.reason:
                    rows.append(("Reason", _e(promotion.reason)))
                for a in promotion.approvals:
                    who = f"{a.approver or 'unknown'} · {_time(a.decided_at)} UTC"
                    note = f"<br><q>{_e(a.comment)}</q>" if a.comment else ""
                    rows.append((f"{a.stage} approval", f"{_badge(a.decision)} {_e(who)}{note}"))
                if promotion.tests is not None:
                    rows.append(
                        (
                            "Tests",
                            _badge(
                                "SUCCEEDED" if promotion.tests.passed else "FAILED",
                                "passed" if promotion.tests.passed else "failed",
                            )
                            + f" {_e(promotion.tests.summary)}",
                        )
                    )
        else:
            output = (ex.output or {}).get("rollback") or {}
            rows += [
                ("Repository", _e(ex.input.get("repository", ""))),
                ("Asked for", _e(ex.input.get("to") or "the previous version")),
            ]
            if ex.input.get("from"):
                rows.append(("Only from", _e(ex.input["from"])))
            if output:
                rows += [
                    ("Result", _e(output.get("message", ""))),
                    ("Digest", f"<code>{_e(output.get('digest', ''))}</code>"),
                ]
        dl = "".join(f"<dt>{_e(k)}</dt><dd>{v}</dd>" for k, v in rows)
        return f"<h2>Execution</h2><dl>{dl}</dl>"

    def _details(
        self,
        ex: ExecutionView,
        selected: str | None,
        definition: Mapping[str, Any],
        link: str | None,
    ) -> str:
        if selected is None:
            return (
                '<section class="card" id="details"><p class="empty">Select a state.</p></section>'
            )
        run: StateRun = ex.states[selected]
        spec = definition.get("States", {}).get(selected, {})
        rows = [
            ("Status", _badge(run.status, status_label(run.status))),
            ("Type", _e(run.type or spec.get("Type", ""))),
        ]
        if run.entered:
            rows.append(("Entered", f"{_e(_time(run.entered))} UTC"))
        if run.exited:
            rows.append(("Exited", f"{_e(_time(run.exited))} UTC"))
        if run.seconds is not None:
            rows.append(("Duration", _e(format_seconds(run.seconds))))
        elif run.entered and ex.status == "RUNNING":
            rows.append(("Running for", _e(_duration(run.entered, None))))
        if run.visits > 1:
            rows.append(("Visits", _e(run.visits)))
        if run.retries:
            rows.append(("Retries", _e(run.retries)))
        if spec.get("Retry"):
            retry = "; ".join(
                ", ".join(str(e) for e in r.get("ErrorEquals") or [])
                + f" (x{r.get('MaxAttempts', 3)})"
                for r in spec["Retry"]
            )
            rows.append(("Retry policy", _e(retry)))
        if spec.get("Catch"):
            catch = "; ".join(
                ", ".join(str(e) for e in c.get("ErrorEquals") or []) + f" → {c.get('Next')}"
                for c in spec["Catch"]
            )
            rows.append(("Catch", _e(catch)))
        if run.status == "waiting" and link:
            rows.append(
                (
                    "Approval",
                    f'<a class="approval-link" href="{_e(link)}">open the approval page</a>',
                )
            )
        if run.error:
            rows.append(("Error", f"<strong>{_e(run.error)}</strong>"))
        if run.cause:
            rows.append(("Cause", _e(cause_text(run.cause))))
        dl = "".join(f"<dt>{_e(k)}</dt><dd>{v}</dd>" for k, v in rows)
        blocks = "".join(
            f"<h2 style='margin-top:14px'>{label}</h2><pre class='{cls}'>{_e(_pretty(text))}</pre>"
            for label, cls, text in (
                ("Input", "input", run.input),
                ("Output", "output", run.output),
            )
            if text is not None
        )
        return (
            f'<section class="card" id="details" data-state="{_e(selected)}">'
            f"<h2>{_e(selected)}</h2><dl>{dl}</dl>{blocks}</section>"
        )

    # -------------------------------------------------------------- approvals

    def approvals_page(self) -> Reply:
        approvals = self.target.ledger.list_approvals()
        base = self.target.output("ApprovalBaseUrl")
        pending = [a for a in approvals if a.status == "PENDING"]
        decided = [a for a in approvals if a.status != "PENDING"]
        pending_rows = "".join(
            f'<tr data-approval="{_e(a.approval_id)}" data-execution="{_e(a.execution)}">'
            f"<td>{_e(a.stage)}</td>"
            f"<td><code>{_e(a.repository)}</code> &rarr; <code>{_e(a.target_repository)}</code>"
            f'</td><td><code title="{_e(a.digest)}">{_e(_short(a.digest))}</code></td>'
            f"<td>{_e(version_label(a))}</td><td>{_e(_time(a.created_at))}</td>"
            f"<td>{_e(_time(a.expires_at))}</td>"
            f'<td><a href="{_e(self._execution_url(a.execution))}">execution</a></td>'
            f'<td><a class="approval-link" href="{_e(approval_link(base, a.approval_id))}">'
            "Open approval page</a></td></tr>"
            for a in pending
        )
        decided_rows = "".join(
            f'<tr data-approval="{_e(a.approval_id)}" data-execution="{_e(a.execution)}" '
            f'data-decision="{_e(a.status)}">'
            f"<td>{_e(a.stage)}</td><td><code>{_e(a.target_repository)}</code></td>"
            f'<td><code title="{_e(a.digest)}">{_e(_short(a.digest))}</code></td>'
            f"<td>{_badge(a.status)}</td>"
            f"<td>{_e(a.decided_by or (f'by {a.superseded_by}' if a.superseded_by else ''))}</td>"
            f'<td class="comment">{_e(a.comment or "")}</td>'
            f"<td>{_e(_time(a.decided_at or a.expires_at))}</td>"
            f'<td><a href="{_e(self._execution_url(a.execution))}">execution</a></td></tr>'
            for a in decided
        )
        messages = list(reversed(self.inbox.messages())) if self.inbox is not None else []
        message_html = "".join(self._message_html(m) for m in messages[:MAX_ROWS])
        body = (
            '<h1>Approvals</h1><p class="sub">What waits for a decision, what was decided, '
            "and the messages the approvals and notifications topics delivered.</p>"
            '<section class="card" id="pending"><h2>Waiting for a decision</h2>'
            + (
                "<table><thead><tr><th>Stage</th><th>Image</th><th>Digest</th><th>Version</th>"
                "<th>Requested</th><th>Expires</th><th></th><th></th></tr></thead>"
                f"<tbody>{pending_rows}</tbody></table>"
                if pending_rows
                else '<p class="empty">Nothing waits for approval.</p>'
            )
            + "</section>"
            '<section class="card" id="decided"><h2>Decided</h2>'
            + (
                "<table><thead><tr><th>Stage</th><th>Target</th><th>Digest</th><th>Decision</th>"
                "<th>By</th><th>Comment</th><th>When (UTC)</th><th></th></tr></thead>"
                f"<tbody>{decided_rows}</tbody></table>"
                if decided_rows
                else '<p class="empty">No decisions yet.</p>'
            )
            + "</section>"
            '<section class="card" id="inbox"><h2>Inbox (SNS messages)</h2>'
            + (message_html or '<p class="empty">No messages yet.</p>')
            + "</section>"
        )
        return self._page(200, "Approvals", "approvals", body)

    def _message_html(self, m: dict[str, Any]) -> str:
        """One inbox message. What this stack cannot have sent (another topic, or a link
        outside its approval endpoint) is marked unverified and its links are not links."""
        topic, text = str(m.get("topic", "")), str(m.get("message", ""))
        outputs = self.target.outputs
        topics = {outputs.get("ApprovalsTopicArn"), outputs.get("NotificationsTopicArn")} - {None}
        base = outputs.get("ApprovalBaseUrl") or ""
        own = topic in topics and all(base and u.startswith(base) for u in _URL.findall(text))
        mark = (
            ""
            if own
            else ' <span class="badge s-failed" title="another topic, or links to other hosts'
            " than this stack's approval endpoint\">unverified: not from this stack</span>"
        )
        return (
            f'<div class="message" data-topic="{_e(topic.rsplit(":", 1)[-1])}" '
            f'data-verified="{"true" if own else "false"}">'
            f"<strong>{_e(m.get('subject') or '(no subject)')}</strong>{mark} "
            f'<span class="muted">{_e(topic.rsplit(":", 1)[-1])} · {_e(m.get("at", ""))}</span>'
            f"<pre>{_linkify(text) if own else _e(text)}</pre></div>"
        )

    # ----------------------------------------------------------- repositories

    def _stage(self, repository: str) -> StageState | None:
        try:
            return read_stage(self.target.registry, repository, self.scheme)
        except Exception:
            log.warning("cannot read %s", repository, exc_info=True)
            return None

    def repositories_page(self) -> Reply:
        cards = []
        for name in self.target.repositories:
            rows = []
            prod: StageState | None = None
            for stage in STAGES:
                repository = self.target.stage_repository(name, stage)
                state = self._stage(repository)
                if stage == "PROD":
                    prod = state
                rows.append(self._stage_row(stage, repository, state))
            form = self._rollback_form(name, prod)
            cards.append(
                f'<section class="card repo" data-name="{_e(name)}"><h2>{_e(name)}</h2>'
                "<table><thead><tr><th>Stage</th><th>Repository</th><th>latest</th>"
                "<th>Versions and tags</th></tr></thead>"
                f"<tbody>{''.join(rows)}</tbody></table>{form}"
                "</section>"
            )
        body = (
            '<h1>Repositories</h1><p class="sub">Every repository in each stage: its version '
            "tags, the digest each points to, and where <code>latest</code> points.</p>"
            f'<div class="repo-grid">{"".join(cards)}</div>'
        )
        return self._page(200, "Repositories", "repositories", body)

    def _other_tags(self, repository: str, state: StageState, limit: int = 8) -> dict[str, str]:
        """Tags that are neither versions nor `latest` (e.g. DEV's pushed tags)."""
        try:
            tags = self.target.registry.list_tags(repository)
        except Exception:
            return {}
        others = [
            t
            for t in tags
            if t != "latest" and t not in state.versions and not self.scheme.parse(t)
        ][:limit]
        found: dict[str, str] = {}
        for tag in others:
            try:
                head = self.target.registry.head_manifest(repository, tag)
            except Exception:  # noqa: S112 - a tag deleted meanwhile is left out
                continue
            if head is not None:
                found[tag] = head.digest
        return found

    def _stage_row(self, stage: str, repository: str, state: StageState | None) -> str:
        if state is None:
            return (
                f'<tr data-stage="{stage}" data-repository="{_e(repository)}"><td>{stage}</td>'
                f"<td><code>{_e(repository)}</code></td>"
                '<td colspan="2" class="muted">registry unavailable</td></tr>'
            )
        current = state.current
        if state.latest is None:
            latest = '<span class="muted">—</span>'
        else:
            latest = (
                f"<strong>{_e(current)}</strong> " if current else ""
            ) + f'<code title="{_e(state.latest)}">{_e(_short(state.latest))}</code>'
        chips = "".join(
            f'<span class="chip{" latest" if state.versions[v] == state.latest else ""}" '
            f'data-version="{_e(v)}" title="{_e(state.versions[v])}">{_e(v)} '
            f"<code>{_e(_short(state.versions[v]))}</code></span>"
            for v in reversed(state.ordered())
        )
        chips += "".join(
            f'<span class="chip tag{" latest" if digest == state.latest else ""}" '
            f'data-tag="{_e(tag)}" title="{_e(digest)}">{_e(tag)} '
            f"<code>{_e(_short(digest))}</code></span>"
            for tag, digest in self._other_tags(repository, state).items()
        )
        return (
            f'<tr data-stage="{stage}" data-repository="{_e(repository)}" '
            f'data-latest="{_e(current or "")}"><td>{stage}</td>'
            f"<td><code>{_e(repository)}</code></td><td>{latest}</td>"
            f'<td><div class="chips">{chips or "<span class=muted>none</span>"}</div></td></tr>'
        )

    def _older(self, state: StageState) -> list[str]:
        """Versions older than the one `latest` points at, oldest first."""
        key = self.scheme.parse(state.current) if state.current else None
        if key is None:
            return []
        return [v for v in state.ordered() if (self.scheme.parse(v) or (0, 0)) < key]

    def _rollback_form(self, name: str, prod: StageState | None) -> str:
        """The versions `latest` can move to; only named ones if it is at an untagged
        digest (moved outside the tool: there is no "previous" version)."""
        if prod is None or prod.latest is None:
            return ""
        others = [v for v in reversed(prod.ordered()) if prod.versions[v] != prod.latest]
        if not others:
            return ""
        older = self._older(prod)
        first = f'<option value="">the previous version ({_e(older[-1])})</option>' if older else ""
        choices = "".join(f'<option value="{_e(v)}">{_e(v)}</option>' for v in others)
        return (
            f'<form method="post" action="{_e(self._url("/repositories/rollback"))}" '
            'class="rollback">'
            f'<input type="hidden" name="repository" value="{_e(name)}">'
            "<label><span>Move PROD <code>latest</code> to</span>"
            f'<select name="to">{first}{choices}</select></label>'
            '<button type="submit" class="danger">Roll back…</button></form>'
        )

    # -------------------------------------------------------------- rollback

    def _token(self, repository: str, to: str, here: str, key: str) -> str:
        message = f"rollback\n{repository}\n{to}\n{here}\n{key}".encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()

    def rollback(self, req: Request) -> Reply:
        """POST: first a confirmation page, then (confirm=yes + token) the rollback.

        The confirmation carries where `latest` was (`from`) and a key of its own that
        names the execution: posting it again, at once or later, starts nothing new
        and shows the same execution. The rollback moves `latest` only if it is still
        at `from` (else LatestMoved, shown on the execution's page).
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
        if name not in self.target.repositories:
            return self._message(400, "Unknown repository", f"No repository named {name!r}.")
        if to and self.scheme.parse(to) is None:
            return self._message(400, "Not a version", f"{to!r} is not a version tag.")
        prod_repo = self.target.stage_repository(name, "PROD")
        if form.get("confirm") == "yes":
            return self._start(req, form, name, prod_repo, to)
        state = self._stage(prod_repo)
        if state is None:
            return self._message(503, "Registry unavailable", f"Cannot read {prod_repo}.")
        current = state.current
        if to:
            target = to if to in state.versions else None
        else:
            older = self._older(state)
            target = older[-1] if older else None
        if state.latest is None or target is None or state.versions.get(target) == state.latest:
            return self._message(
                409,
                "Nothing to roll back",
                f"{prod_repo} runs {current or 'no versioned image'}; there is no "
                f"{to or 'older version'} to roll back to.",
                f'<p><a href="{_e(self._url("/repositories"))}">Back to repositories</a></p>',
            )
        return self._confirm(name, prod_repo, to, target, state)

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
                f'<p><a href="{_e(self._url("/repositories"))}">Back to repositories</a></p>',
            )
        arn = start_rollback(self.target, prod_repo, to or None, expected=here or None, key=key)
        execution = arn.rsplit(":", 1)[-1]
        reply = Reply(303, b"", {**HEADERS, "Location": self._execution_url(execution)})
        return reply

    def _confirm(self, name: str, prod_repo: str, to: str, target: str, state: StageState) -> Reply:
        title = f"Roll back {prod_repo}?"
        latest = state.latest or ""
        here, key = state.current or latest, secrets.token_hex(8)
        where = f"<strong>{_e(state.current)}</strong>" if state.current else "an untagged image"
        body = (
            f'<section class="card" id="confirm"><h1>{_e(title)}</h1>'
            f"<p><code>latest</code> of <code>{_e(prod_repo)}</code> moves from "
            f'{where} <code title="{_e(latest)}">{_e(_short(latest))}</code> '
            f"to <strong>{_e(target)}</strong> <code>{_e(_short(state.versions[target]))}</code>."
            " Nothing is deleted; the rollback state machine does it and records the release."
            "</p>"
            f'<form method="post" action="{_e(self._url("/repositories/rollback"))}">'
            f'<input type="hidden" name="repository" value="{_e(name)}">'
            f'<input type="hidden" name="to" value="{_e(to)}">'
            f'<input type="hidden" name="from" value="{_e(here)}">'
            f'<input type="hidden" name="key" value="{key}">'
            '<input type="hidden" name="confirm" value="yes">'
            f'<input type="hidden" name="csrf" value="{_e(self._token(name, to, here, key))}">'
            f'<button type="submit" class="danger">Roll back to {_e(target)}</button> '
            f'<a class="button plain" href="{_e(self._url("/repositories"))}">Cancel</a>'
            "</form></section>"
        )
        return self._page(200, title, "repositories", body)
