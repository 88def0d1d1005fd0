"""HTML pages of the approval endpoint: complete documents, no external assets.

Every value is escaped with ``html.escape``. Suggested HTTP statuses:
approval and result pages 200, already decided 409, expired or superseded 410, not
found 404, bad request 400, unavailable 503. Send them with ``Cache-Control: no-store`` and
``Referrer-Policy: no-referrer``.
"""

from __future__ import annotations

from datetime import datetime
from html import escape

from image_cicd.approvals.decisions import (
    FIELD_APPROVER,
    FIELD_COMMENT,
    FIELD_CSRF,
    FIELD_DECISION,
    MAX_APPROVER,
    MAX_COMMENT,
    describe_current,
    describe_tests,
    describe_version,
    next_step,
)
from image_cicd.ledger.records import ApprovalRequest, TestResults

__all__ = [
    "already_decided_page",
    "approval_page",
    "bad_request_page",
    "expired_page",
    "not_found_page",
    "result_page",
    "superseded_page",
    "unavailable_page",
]

_CSS = """
:root { color-scheme: light dark; --fg:#1d2330; --muted:#5b6474; --bg:#f4f6fa; --card:#fff;
  --line:#dde2ea; --ok:#1a7f37; --bad:#c62828; --warn:#9a6700; --accent:#2457c5; }
@media (prefers-color-scheme: dark) { :root { --fg:#e6e9ef; --muted:#9aa3b2; --bg:#11151c;
  --card:#1a1f29; --line:#2c3340; --ok:#3fb950; --bad:#f85149; --warn:#d29922;
  --accent:#6d9eff; } }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--fg);
  font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif; }
main { max-width:760px; margin:40px auto; padding:0 16px; }
.card { background:var(--card); border:1px solid var(--line); border-radius:10px;
  padding:24px 28px; margin-bottom:16px; }
h1 { font-size:22px; margin:0 0 4px; }
.sub { color:var(--muted); margin:0 0 18px; }
dl { display:grid; grid-template-columns:max-content 1fr; gap:8px 18px; margin:0; }
dt { color:var(--muted); }
dd { margin:0; overflow-wrap:anywhere; }
code { font:13px/1.4 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace; }
.badge { display:inline-block; padding:1px 8px; border-radius:999px; font-size:12px;
  font-weight:600; border:1px solid currentColor; }
.ok { color:var(--ok); } .bad { color:var(--bad); } .warn { color:var(--warn); }
ul.checks { margin:6px 0 0; padding-left:18px; }
.forms { display:grid; grid-template-columns:1fr 1fr; gap:16px; }
@media (max-width:640px) { .forms { grid-template-columns:1fr; } }
form h2 { font-size:16px; margin:0 0 12px; }
label { display:block; font-size:13px; color:var(--muted); margin:10px 0 4px; }
input[type=text], textarea { width:100%; padding:8px 10px; border:1px solid var(--line);
  border-radius:6px; background:transparent; color:inherit; font:inherit; }
textarea { min-height:72px; resize:vertical; }
button { margin-top:14px; width:100%; padding:10px; border:0; border-radius:6px;
  color:#fff; font-family:inherit; font-size:15px; font-weight:600; cursor:pointer; }
button.approve { background:var(--ok); } button.reject { background:var(--bad); }
.notice { border-left:4px solid var(--warn); padding:8px 12px; margin:0 0 16px; }
.foot { color:var(--muted); font-size:13px; }
"""


def _e(value: object) -> str:
    return escape(str(value), quote=True)


def _time(value: datetime | None) -> str:
    return f"{value:%Y-%m-%d %H:%M:%S} UTC" if value is not None else "unknown time"


def _document(title: str, body: str) -> str:
    return (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="robots" content="noindex, nofollow">'
        '<meta name="referrer" content="no-referrer">'
        f"<title>{_e(title)} · image-cicd</title><style>{_CSS}</style></head>"
        f"<body><main>{body}</main></body></html>\n"
    )


def _tests_html(tests: TestResults | None) -> str:
    if tests is None:
        return "not run"
    lines = describe_tests(tests)
    css = "ok" if tests.passed else "bad"
    items = "".join(
        f'<li><span class="{"ok" if check.passed else "bad"}">'
        f"{'passed' if check.passed else 'failed'}</span> {_e(check.name)}"
        + (f" &mdash; {_e(check.detail)}" if check.detail else "")
        + "</li>"
        for check in tests.checks
    )
    head = lines[0].split(" ", 1)
    rest = f" {_e(head[1])}" if len(head) > 1 else ""
    checks = f'<ul class="checks">{items}</ul>' if items else ""
    return f'<span class="badge {css}">{_e(head[0])}</span>{rest}{checks}'


def _current_html(approval: ApprovalRequest) -> str:
    if approval.current is None:
        return _e(describe_current(approval))
    version = _e(approval.current.version or "untagged")
    return f"{version} <code>{_e(approval.current.digest)}</code>"


def _facts(approval: ApprovalRequest) -> str:
    rows = [
        ("Repository", f"<code>{_e(approval.repository)}</code>"),
        ("Digest", f"<code>{_e(approval.digest)}</code>"),
        ("Stage", _e(approval.stage)),
        ("Target repository", f"<code>{_e(approval.target_repository)}</code>"),
        ("Version", _e(describe_version(approval))),
        (f"{approval.stage} runs now", _current_html(approval)),
    ]
    if approval.stage == "PROD" or approval.tests is not None:
        rows.append(("Tests", _tests_html(approval.tests)))
    rows.append(("Expires", _e(_time(approval.expires_at))))
    rows.append(("Execution", f"<code>{_e(approval.execution)}</code>"))
    return "<dl>" + "".join(f"<dt>{_e(k)}</dt><dd>{v}</dd>" for k, v in rows) + "</dl>"


def _form(decision: str, label: str, css: str, csrf: str, comment_label: str) -> str:
    return (
        f'<form method="post" class="card" autocomplete="on">'
        f"<h2>{_e(label)}</h2>"
        f'<input type="hidden" name="{FIELD_DECISION}" value="{_e(decision)}">'
        f'<input type="hidden" name="{FIELD_CSRF}" value="{_e(csrf)}">'
        f'<label for="{css}-approver">Name or e-mail</label>'
        f'<input type="text" id="{css}-approver" name="{FIELD_APPROVER}" required '
        f'maxlength="{MAX_APPROVER}" autocomplete="email">'
        f'<label for="{css}-comment">{_e(comment_label)}</label>'
        f'<textarea id="{css}-comment" name="{FIELD_COMMENT}" maxlength="{MAX_COMMENT}">'
        "</textarea>"
        f'<button type="submit" class="{css}">{_e(label)}</button>'
        "</form>"
    )


def approval_page(approval: ApprovalRequest, csrf: str, *, notice: str | None = None) -> str:
    """The page behind the link: the facts and the Approve / Reject forms (POST)."""
    title = f"Promote to {approval.stage}?"
    notice_html = f'<p class="notice">{_e(notice)}</p>' if notice else ""
    body = (
        f'<section class="card"><h1>{_e(title)}</h1>'
        f'<p class="sub">Approving continues with {_e(next_step(approval))}.</p>'
        f"{notice_html}{_facts(approval)}</section>"
        '<div class="forms">'
        + _form("APPROVED", "Approve", "approve", csrf, "Comment (optional)")
        + _form("REJECTED", "Reject", "reject", csrf, "Reason (optional)")
        + "</div>"
        '<p class="foot">Opening this page changes nothing; only the buttons decide.</p>'
    )
    return _document(title, body)


def result_page(approval: ApprovalRequest) -> str:
    """After a decision was recorded and handed to the workflow."""
    who = approval.decided_by or "unknown"
    if approval.status == "APPROVED":
        title = f"{approval.stage} approved"
        line = (
            f'<span class="ok">Approved</span> by {_e(who)} &mdash; the workflow moves on to '
            f"{_e(next_step(approval))}."
        )
    else:
        title = f"{approval.stage} rejected"
        line = (
            f'<span class="bad">Rejected</span> by {_e(who)} &mdash; the promotion stops; '
            f"<code>{_e(approval.target_repository)}</code> is left as it was."
        )
    comment = f'<p class="sub">Comment: {_e(approval.comment)}</p>' if approval.comment else ""
    body = (
        f'<section class="card"><h1>{_e(title)}</h1><p>{line}</p>{comment}'
        f"{_facts(approval)}</section>"
    )
    return _document(title, body)


def already_decided_page(approval: ApprovalRequest) -> str:
    """A second click: shows who decided, how and when (HTTP 409)."""
    decision = approval.status.lower()
    css = "ok" if approval.status == "APPROVED" else "bad"
    title = "Already decided"
    comment = f'<p class="sub">Comment: {_e(approval.comment)}</p>' if approval.comment else ""
    body = (
        f'<section class="card"><h1>{title}</h1>'
        f'<p>This request was already <span class="{css}">{_e(decision)}</span> by '
        f"{_e(approval.decided_by or 'unknown')} at {_e(_time(approval.decided_at))}. "
        "Nothing was changed.</p>"
        f"{comment}{_facts(approval)}</section>"
    )
    return _document(title, body)


def expired_page(approval: ApprovalRequest | None = None) -> str:
    """The approval timed out; the workflow has stopped (HTTP 410)."""
    title = "This approval has expired"
    if approval is None:
        detail = "<p>The workflow no longer waits for this decision.</p>"
    else:
        detail = (
            f"<p>The request to promote to {_e(approval.stage)} expired at "
            f"{_e(_time(approval.expires_at))}; the promotion stopped and "
            f"<code>{_e(approval.target_repository)}</code> was not changed. "
            "Push or start the promotion again to get a new request.</p>"
            f"{_facts(approval)}"
        )
    body = f'<section class="card"><h1>{title}</h1>{detail}</section>'
    return _document(title, body)


def superseded_page(approval: ApprovalRequest) -> str:
    """A newer image of the repository took this request's place (HTTP 410)."""
    title = "Superseded by a newer image"
    body = (
        f'<section class="card"><h1>{title}</h1>'
        f"<p>This request to promote to {_e(approval.stage)} was superseded at "
        f"{_e(_time(approval.decided_at))} by the promotion "
        f"<code>{_e(approval.superseded_by or 'unknown')}</code> of a newer image, "
        f"<code>{_e(approval.superseded_by_digest or 'unknown')}</code>, which now waits "
        f"for this approval instead. This promotion stopped; nothing more was copied and "
        f"<code>{_e(approval.target_repository)}</code> was not changed by it.</p>"
        f"{_facts(approval)}</section>"
    )
    return _document(title, body)


def not_found_page() -> str:
    """Unknown or malformed approval id (HTTP 404)."""
    title = "Approval not found"
    body = (
        f'<section class="card"><h1>{title}</h1>'
        "<p>There is no approval request at this address. Check that the link was "
        "copied completely; old requests are removed after some time.</p></section>"
    )
    return _document(title, body)


def bad_request_page(message: str) -> str:
    """A malformed or tampered request (HTTP 400)."""
    title = "Request not accepted"
    body = (
        f'<section class="card"><h1>{title}</h1><p>{_e(message)}</p>'
        "<p>Nothing was changed. Go back, reload the approval page and try again.</p>"
        "</section>"
    )
    return _document(title, body)


def unavailable_page(message: str = "The workflow could not be reached.") -> str:
    """The decision could not be delivered; nothing was recorded (HTTP 503)."""
    title = "Please try again"
    body = (
        f'<section class="card"><h1>{title}</h1><p>{_e(message)}</p>'
        "<p>Your decision was not recorded. Try again in a moment.</p></section>"
    )
    return _document(title, body)
