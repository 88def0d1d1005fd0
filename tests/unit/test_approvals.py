"""Approval ids, CSRF tokens, messages, forms and pages (no AWS)."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser

import pytest

from image_cicd.approvals import pages
from image_cicd.approvals.decisions import (
    InvalidRequest,
    approval_link,
    check_csrf,
    csrf_token,
    format_message,
    new_approval_id,
    new_approval_request,
    parse_decision_form,
    version_label,
)
from image_cicd.ledger.records import ApprovalRequest, CheckResult, ImageRef, TestResults
from image_cicd.stages import Destination

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
TOKEN = "AQCEAAAAKgAAAAMAAAAAAAAAAf-secret-task-token"
EVIL = '<script>alert("x")</script>'


def make_approval(stage: Destination = "PROD", text: str | None = None) -> ApprovalRequest:
    t = text
    approval = new_approval_request(
        execution=t or "exec-1",
        stage=stage,
        repository=t or "ecr-test/repo-1",
        target_repository=t or "ecr-prod/repo-1",
        digest=t or "sha256:" + "ab" * 32,
        task_token=TOKEN,
        timeout=timedelta(hours=24),
        now=T0,
        version=t or "v0.4",
        current=ImageRef(version=t or "v0.3", digest=t or "sha256:" + "cd" * 32),
        tests=TestResults(
            passed=False,
            summary=t or "1 check failed",
            checks=[
                CheckResult(name=t or "manifest", passed=True, detail=t or "2 platforms"),
                CheckResult(name=t or "no-root", passed=False, detail=t or "runs as root"),
            ],
        ),
    )
    if text is None:
        return approval
    return approval.model_copy(
        update={
            "status": "APPROVED",
            "decided_by": text,
            "decided_at": T0,
            "comment": text,
            "source_ip": text,
            "user_agent": text,
        }
    )


# ----------------------------------------------------------- ids and tokens


def test_approval_ids_are_unguessable_and_unique() -> None:
    ids = {new_approval_id() for _ in range(2000)}
    assert len(ids) == 2000
    for approval_id in ids:
        assert re.fullmatch(r"[A-Za-z0-9_-]{43}", approval_id)  # 256 random bits, URL-safe


def test_csrf_token_is_bound_to_its_approval() -> None:
    one, other = make_approval(), make_approval()
    token = csrf_token(one)

    assert check_csrf(one, token)
    assert not check_csrf(other, token)
    assert not check_csrf(other.model_copy(update={"approval_id": one.approval_id}), token)
    assert not check_csrf(one, token[:-1] + ("A" if token[-1] != "A" else "B"))
    assert not check_csrf(one, "")
    assert not check_csrf(one, None)
    assert csrf_token(one) == token  # stable for the page and its POST


def test_secrets_stay_out_of_repr_and_json() -> None:
    approval = make_approval()
    secret = approval.csrf_secret.get_secret_value()
    for text in (repr(approval), str(approval), approval.model_dump_json()):
        assert TOKEN not in text
        assert secret not in text


def test_approval_link() -> None:
    assert approval_link("https://x.example/", "abc") == "https://x.example/approvals/abc"
    assert approval_link("https://x.example/prod", "a-b_c") == (
        "https://x.example/prod/approvals/a-b_c"
    )


# ------------------------------------------------------------------ message


def test_message_has_the_facts_and_link_but_no_token() -> None:
    approval = make_approval()
    link = approval_link("https://approve.example", approval.approval_id)

    subject, body = format_message(approval, link)

    assert TOKEN not in subject + body
    assert approval.csrf_secret.get_secret_value() not in body
    assert link in body
    for fact in (
        "ecr-test/repo-1",
        "ecr-prod/repo-1",
        approval.digest,
        "PROD",
        "v0.4",
        "v0.3",
        "sha256:" + "cd" * 32,
        "FAILED",
        "no-root: runs as root",
        "2026-03-02 09:00",
    ):
        assert fact in body
    assert len(subject) <= 100
    assert subject.isascii()
    assert "\n" not in subject
    assert "PROD" in subject


def test_test_message_for_first_release() -> None:
    approval = make_approval("TEST").model_copy(update={"current": None, "tests": None})
    _subject, body = format_message(approval, "https://a/approvals/x")
    assert "nothing yet" in body
    assert "Tests:" not in body
    long = approval.model_copy(update={"repository": "ecr-dev/" + "r" * 200})
    assert len(format_message(long, "https://a")[0]) == 100


def test_a_version_not_yet_assigned_is_worded_as_an_estimate_everywhere() -> None:
    estimate = make_approval()
    subject, body = format_message(estimate, "https://a/approvals/x")
    page = pages.approval_page(estimate, csrf_token(estimate))

    assert subject.endswith("-> PROD as v0.4 (estimate)")
    worded = (
        "next version (estimate): v0.4 - assigned when the image is copied to "
        "ecr-prod/repo-1; a promotion copied there first takes it"
    )
    assert f"Version:         {worded}\n" in body
    assert f"<dt>Version</dt><dd>{worded}</dd>" in page
    assert "will get" not in page


def test_the_short_version_label_marks_an_estimate() -> None:
    estimate = make_approval()
    assert version_label(estimate) == "v0.4 (estimate)"
    assert version_label(estimate.model_copy(update={"version_assigned": True})) == "v0.4"
    assert version_label(estimate.model_copy(update={"version": None})) == ""


def test_a_version_the_digest_has_already_is_stated_as_it_is() -> None:
    kept = make_approval().model_copy(update={"version_assigned": True})
    subject, body = format_message(kept, "https://a/approvals/x")
    page = pages.approval_page(kept, csrf_token(kept))

    assert subject.endswith("-> PROD as v0.4")
    worded = "v0.4 (it has this version in ecr-prod/repo-1 already)"
    assert f"Version:         {worded}\n" in body
    assert f"<dt>Version</dt><dd>{worded}</dd>" in page
    assert "estimate" not in subject + body + page


# -------------------------------------------------------------------- forms


def test_parse_decision_form() -> None:
    form = parse_decision_form(
        "decision=APPROVED&approver=+Ann+%3Cann%40example.com%3E+&comment=ok%0D%0Ago&csrf=t"
    )
    assert (form.decision, form.approver, form.comment, form.csrf) == (
        "APPROVED",
        "Ann <ann@example.com>",
        "ok\ngo",
        "t",
    )
    assert parse_decision_form({"decision": "reject", "approver": "b", "csrf": "t"}).decision == (
        "REJECTED"
    )
    assert parse_decision_form("decision=REJECTED&approver=b&comment=&csrf=t").comment is None


@pytest.mark.parametrize(
    "body",
    [
        "decision=MAYBE&approver=a&csrf=t",
        "decision=APPROVED&approver=+&csrf=t",
        "decision=APPROVED&approver=a",
        "decision=APPROVED&decision=REJECTED&approver=a&csrf=t",
        "decision=APPROVED&approver=a%00b&csrf=t",
        "decision=APPROVED&approver=" + "a" * 201 + "&csrf=t",
    ],
)
def test_bad_forms_are_rejected(body: str) -> None:
    with pytest.raises(InvalidRequest):
        parse_decision_form(body)


# -------------------------------------------------------------------- pages


class _Forms(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.forms: list[dict[str, str]] = []
        self.inputs: list[dict[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "form":
            self.forms.append({k: v or "" for k, v in attrs})
        if tag in ("input", "textarea", "button"):
            self.inputs.append({"tag": tag, **dict(attrs)})


def test_approval_page_offers_two_post_forms_with_csrf() -> None:
    approval = make_approval()
    token = csrf_token(approval)
    parser = _Forms()

    parser.feed(pages.approval_page(approval, token))

    assert len(parser.forms) == 2
    assert all(form["method"] == "post" and "action" not in form for form in parser.forms)
    decisions = [i["value"] for i in parser.inputs if i.get("name") == "decision"]
    assert decisions == ["APPROVED", "REJECTED"]
    assert [i["value"] for i in parser.inputs if i.get("name") == "csrf"] == [token, token]
    approvers = [i for i in parser.inputs if i.get("name") == "approver"]
    assert len(approvers) == 2
    assert all("required" in i for i in approvers)
    assert [i["tag"] for i in parser.inputs if i.get("name") == "comment"] == ["textarea"] * 2


def test_pages_show_the_facts() -> None:
    approval = make_approval()
    page = pages.approval_page(approval, csrf_token(approval))
    for fact in ("ecr-test/repo-1", "ecr-prod/repo-1", approval.digest, "v0.4", "v0.3", "no-root"):
        assert fact in page
    assert TOKEN not in page

    decided = approval.model_copy(
        update={"status": "APPROVED", "decided_by": "ann", "decided_at": T0}
    )
    assert "Approved</span> by ann" in pages.result_page(decided)
    assert "promoting the image to ecr-prod/repo-1" in pages.result_page(decided)
    assert "2026-03-01 09:00:00 UTC" in pages.already_decided_page(decided)
    rejected = decided.model_copy(update={"status": "REJECTED"})
    assert "Rejected</span> by ann" in pages.result_page(rejected)


PAGES: dict[str, Callable[[ApprovalRequest], str]] = {
    "approval": lambda a: pages.approval_page(a, EVIL, notice=EVIL),
    "result": pages.result_page,
    "result-rejected": lambda a: pages.result_page(a.model_copy(update={"status": "REJECTED"})),
    "already-decided": pages.already_decided_page,
    "expired": pages.expired_page,
    "bad-request": lambda a: pages.bad_request_page(EVIL),
    "unavailable": lambda a: pages.unavailable_page(EVIL),
    "not-found": lambda a: pages.not_found_page(),
}


@pytest.mark.parametrize("name", PAGES)
def test_pages_escape_every_value(name: str) -> None:
    page = PAGES[name](make_approval(text=EVIL))

    assert page.startswith("<!doctype html>")
    assert "<script" not in page.lower()
    assert 'alert("x")' not in page
    assert TOKEN not in page
    if name not in ("not-found",):
        assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in page
