"""See it and click it: the local console and the approval pages in a real browser,
against a real embedded stack (moto's ASL interpreter, the Lambda handlers, the
registry). Each test uses its own repository.
"""

from __future__ import annotations

import html
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import pytest
import requests
from playwright.sync_api import expect
from support.stacks import arn_of

from image_cicd.approvals.decisions import approval_link
from image_cicd.aws.operations import approve, pending_approval, start_promotion
from image_cicd.aws.operations import wait_finished as finished
from image_cicd.aws.stack import DeployedStack
from image_cicd.aws.stepfunctions import execution_arn_for
from image_cicd.local.stack import LocalStack
from image_cicd.promotion.versions import VersionScheme, read_stage
from image_cicd.registry.synthetic import SyntheticImage, build_image, push_image

pytestmark = pytest.mark.browser

XSS = "<script>alert(1)</script>"
XSS_NAME = "<img src=x onerror=alert(2)>"


# ------------------------------------------------------------------- helpers


def push(t: DeployedStack, name: str) -> SyntheticImage:
    image = build_image(layers=1, layer_size=4_000)
    push_image(t.registry, f"ecr-dev/{name}", image, tags=["candidate"])
    return image


def history(t: DeployedStack, execution: str) -> list[str]:
    """The execution's events in short, for failure messages."""
    sfn = t.client("stepfunctions")
    events = sfn.get_execution_history(executionArn=arn_of(t, execution))["events"]
    return [
        e["type"] + ": " + str(next((v for k, v in e.items() if k.endswith("Details")), ""))[:300]
        for e in events
    ]


def stage(t: DeployedStack, repository: str) -> tuple[dict[str, str], str | None]:
    state = read_stage(t.registry, repository, VersionScheme())
    return state.versions, state.latest


def waiting_for_test(t: DeployedStack, name: str) -> tuple[str, SyntheticImage, str]:
    """Push, start a promotion; (execution, image, approval link) once it waits."""
    image = push(t, name)
    execution = start_promotion(t, f"ecr-dev/{name}", image.digest).rsplit(":", 1)[-1]
    approval = pending_approval(t, execution, wait_seconds=90)
    assert approval is not None, f"no TEST approval request: {history(t, execution)}"
    return execution, image, approval_link(t.output("ApprovalBaseUrl"), approval.approval_id)


def inbox_message(stack: LocalStack, execution: str, timeout: float = 30) -> dict[str, Any]:
    """The approvals topic's message about `execution` (SNS delivers asynchronously)."""
    deadline = time.monotonic() + timeout
    while True:
        for message in stack.inbox.messages():
            if "ApprovalsTopic" in message["topic"] and execution in message["message"]:
                return message
        assert time.monotonic() < deadline, f"no approval message for {execution}"
        time.sleep(0.2)


def links_on(page: Any) -> set[str]:
    """Absolute URLs of every link on the page (HTML and SVG `<a>`, `<link>`)."""
    hrefs = page.eval_on_selector_all(
        "a[href], link[href]", "els => els.map(e => e.getAttribute('href'))"
    )
    return {urljoin(page.url, h) for h in hrefs if h and not h.startswith("#")}


def rollbacks(t: DeployedStack) -> list[str]:
    sfn = t.client("stepfunctions")
    return [e["name"] for e in sfn.list_executions(stateMachineArn=t.rollback_arn)["executions"]]


# --------------------------------------------------------------------- tests


def test_approve_from_the_inbox_and_watch_the_graph(
    t: DeployedStack, stack: LocalStack, console: str, page: Any
) -> None:
    execution, image, _ = waiting_for_test(t, "repo-1")
    inbox_message(stack, execution)

    page.goto(f"{console}/approvals")
    row = page.locator(f'#pending tr[data-execution="{execution}"]')
    expect(row).to_be_visible()
    expect(row).to_contain_text("v0.1 (estimate)")
    expect(page.locator("#inbox")).to_contain_text(execution)
    row.locator("a.approval-link").click()

    expect(page.locator("h1")).to_have_text("Promote to TEST?")
    facts = page.locator("dl").first
    expect(facts).to_contain_text(image.digest)
    expect(facts).to_contain_text("ecr-test/repo-1")
    expect(page.locator("dt", has_text=re.compile("^Stage$")).locator("+ dd")).to_have_text("TEST")
    page.fill("#approve-approver", "ana@example.com")
    page.fill("#approve-comment", "looks good")
    page.click("button.approve")
    expect(page.locator("h1")).to_have_text("TEST approved")

    page.goto(f"{console}/executions/{execution}")
    expect(page.locator("#state-wait-for-test-approval")).to_have_attribute(
        "data-status", "succeeded"
    )
    # The page follows the running execution by itself.
    expect(page.locator("#state-copy-to-test")).to_have_attribute(
        "data-status", re.compile("running|succeeded"), timeout=60_000
    )
    expect(
        page.locator('path.edge.taken[data-from="Wait for TEST approval"][data-to="Copy to TEST"]')
    ).to_have_count(1)

    page.locator("#state-wait-for-test-approval").click()
    details = page.locator("#details")
    expect(details).to_have_attribute("data-state", "Wait for TEST approval")
    expect(details.locator("pre.output")).to_contain_text("ana@example.com")

    page.goto(f"{console}/approvals")
    decided = page.locator(f'#decided tr[data-execution="{execution}"]')
    expect(decided).to_have_attribute("data-decision", "APPROVED")
    expect(decided).to_contain_text("ana@example.com")
    expect(decided.locator("td.comment")).to_have_text("looks good")


def test_link_scanners_decide_nothing(
    t: DeployedStack, stack: LocalStack, console: str, page: Any
) -> None:
    execution, _, link = waiting_for_test(t, "repo-4")
    message = inbox_message(stack, execution)
    approval = pending_approval(t, execution)
    assert approval is not None
    before = rollbacks(t)

    urls = set(re.findall(r"https?://[^\s<>\"']+", message["message"]))
    assert link in urls
    page.goto(link)
    expect(page.locator("h1")).to_have_text("Promote to TEST?")
    urls |= links_on(page)
    urls.add(page.url)
    for path in ("/", "/approvals", "/repositories", f"/executions/{execution}"):
        page.goto(console + path)
        urls |= {u for u in links_on(page) if urlsplit(u).netloc == urlsplit(console).netloc}

    for url in sorted(urls):
        for method in ("GET", "HEAD"):
            answer = requests.request(method, url, timeout=30, allow_redirects=True)
            assert answer.status_code < 500, f"{method} {url}: {answer.status_code}"
            fetched = page.request.fetch(url, method=method)
            assert fetched.status < 500, f"browser {method} {url}: {fetched.status}"

    sfn = t.client("stepfunctions")
    assert sfn.describe_execution(executionArn=arn_of(t, execution))["status"] == "RUNNING"
    assert t.ledger.get_approval(approval.approval_id).status == "PENDING"
    assert rollbacks(t) == before
    page.goto(f"{console}/executions/{execution}")
    expect(page.locator("#state-wait-for-test-approval")).to_have_attribute(
        "data-status", "waiting"
    )
    expect(page.locator("#approval-link")).to_have_attribute("href", link)


def test_reject_shows_the_path_to_the_rejection(t: DeployedStack, console: str, page: Any) -> None:
    prod_before = stage(t, "ecr-prod/repo-2")
    execution, _, link = waiting_for_test(t, "repo-2")

    page.goto(link)
    page.fill("#reject-approver", "bo@example.com")
    page.fill("#reject-comment", "wrong base image")
    page.click("button.reject")
    expect(page.locator("h1")).to_have_text("TEST rejected")
    assert finished(t, arn_of(t, execution), timeout=90)["error"] == "ApprovalRejected"

    page.goto(f"{console}/executions/{execution}")
    expect(page.locator("body")).to_have_attribute("data-execution-status", "FAILED")
    expect(page.locator("#state-test-approval-rejected")).to_have_attribute(
        "data-status", "succeeded"
    )
    expect(page.locator("#state-promotion-failed")).to_have_attribute("data-status", "failed")
    expect(page.locator("#state-copy-to-test")).to_have_attribute("data-status", "not-reached")
    for source, target_ in (
        ("Wait for TEST approval", "TEST approval rejected"),
        ("TEST approval rejected", "Notify failure"),
        ("Notify failure", "Promotion failed"),
    ):
        edge = page.locator(f'path.edge.taken[data-from="{source}"][data-to="{target_}"]')
        expect(edge).to_have_count(1)
    catch = page.locator(
        'path.edge[data-kind="catch"][data-from="Wait for TEST approval"]'
        '[data-to="TEST approval rejected"]'
    )
    expect(catch).to_have_attribute("stroke-dasharray", re.compile(r"\d"))
    expect(page.locator(".notice.bad")).to_contain_text("ApprovalRejected")
    assert stage(t, "ecr-prod/repo-2") == prod_before == ({}, None)
    assert stage(t, "ecr-test/repo-2") == ({}, None)


def test_markup_in_a_comment_is_shown_as_text(
    t: DeployedStack, console: str, page: Any, dialogs: list[str]
) -> None:
    execution, _, link = waiting_for_test(t, "repo-3")

    page.goto(link)
    page.fill("#reject-approver", XSS_NAME)
    page.fill("#reject-comment", XSS)
    page.click("button.reject")
    expect(page.locator("h1")).to_have_text("TEST rejected")
    expect(page.locator("main")).to_contain_text(XSS)
    expect(page.locator("main")).to_contain_text(XSS_NAME)
    expect(page.locator("main script, main img")).to_have_count(0)

    page.goto(f"{console}/approvals")
    row = page.locator(f'#decided tr[data-execution="{execution}"]')
    expect(row.locator("td.comment")).to_have_text(XSS)
    expect(row).to_contain_text(XSS_NAME)
    expect(page.locator("script, img")).to_have_count(0)

    page.goto(f"{console}/executions/{execution}")
    expect(page.locator("main")).to_contain_text(XSS)
    expect(page.locator("main script, main img")).to_have_count(0)
    assert dialogs == []


def test_roll_back_from_the_repositories_page(t: DeployedStack, console: str, page: Any) -> None:
    old, new = build_image(layers=1, layer_size=3_000), build_image(layers=1, layer_size=3_000)
    push_image(t.registry, "ecr-prod/repo-5", old, tags=["v0.1"])
    push_image(t.registry, "ecr-prod/repo-5", new, tags=["v0.2", "latest"])
    before = rollbacks(t)

    page.goto(f"{console}/repositories")
    card = page.locator('section.repo[data-name="repo-5"]')
    prod = card.locator('tr[data-stage="PROD"]')
    expect(prod).to_have_attribute("data-latest", "v0.2")
    card.locator("form.rollback button").click()

    confirm = page.locator("#confirm")
    expect(confirm.locator("h1")).to_have_text("Roll back ecr-prod/repo-5?")
    expect(confirm).to_contain_text("from v0.2")
    assert rollbacks(t) == before, "the first POST only asks for confirmation"
    confirm.locator("button[type=submit]").click()

    expect(page).to_have_url(re.compile(r"/executions/rollback-repo-5-[0-9a-f]+$"))
    expect(page.locator("body")).to_have_attribute(
        "data-execution-status", "SUCCEEDED", timeout=60_000
    )
    expect(page.locator("#state-rolled-back")).to_have_attribute("data-status", "succeeded")
    page.goto(f"{console}/repositories")
    expect(prod).to_have_attribute("data-latest", "v0.1")
    assert stage(t, "ecr-prod/repo-5") == ({"v0.1": old.digest, "v0.2": new.digest}, old.digest)
    page.goto(f"{console}/?workflow=rollback&repository=repo-5")
    expect(page.locator("tbody tr")).to_have_count(1)
    expect(page.locator("tbody tr")).to_contain_text("v0.2 → v0.1")


def test_rollback_needs_a_post_a_confirmation_and_its_token(t: DeployedStack, console: str) -> None:
    before = rollbacks(t)
    assert requests.get(f"{console}/repositories/rollback", timeout=30).status_code == 405
    form = {"repository": "repo-5", "to": "", "confirm": "yes"}
    for token in ("", "0" * 64):
        answer = requests.post(
            f"{console}/repositories/rollback",
            data={**form, "csrf": token},
            timeout=30,
            allow_redirects=False,
        )
        assert answer.status_code in (403, 409), answer.text
    unknown = requests.post(
        f"{console}/repositories/rollback", data={"repository": "nope"}, timeout=30
    )
    assert unknown.status_code == 400
    assert rollbacks(t) == before


def prod_versions(t: DeployedStack, name: str, count: int) -> list[SyntheticImage]:
    """PROD of `name` with versions v0.1..v0.<count>, latest at the newest."""
    images = [build_image(layers=1, layer_size=3_000 + n) for n in range(count)]
    for n, image in enumerate(images, 1):
        tags = [f"v0.{n}", "latest"] if n == count else [f"v0.{n}"]
        push_image(t.registry, f"ecr-prod/{name}", image, tags=tags)
    return images


def confirmation_form(console: str, name: str, to: str = "") -> dict[str, str]:
    """The hidden fields of the confirmation page's form (what its button posts)."""
    page = requests.post(
        f"{console}/repositories/rollback", data={"repository": name, "to": to}, timeout=30
    )
    assert page.status_code == 200, page.text
    fields = re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', page.text)
    return {key: html.unescape(value) for key, value in fields}


@pytest.mark.parametrize(("name", "posts"), [("repo-7", 2), ("repo-8", 3)])
def test_a_confirmation_posted_several_times_rolls_back_once(
    t: DeployedStack, console: str, name: str, posts: int
) -> None:
    # Given PROD at v0.3 and the confirmation page promising v0.3 -> v0.2
    images = prod_versions(t, name, 3)
    prod = f"ecr-prod/{name}"
    form = confirmation_form(console, name)
    assert form["from"] == "v0.3"

    # When its form is posted several times at once (a double click, a resend)
    barrier = threading.Barrier(posts)

    def post(_: int) -> requests.Response:
        barrier.wait()
        return requests.post(
            f"{console}/repositories/rollback", data=form, timeout=60, allow_redirects=False
        )

    with ThreadPoolExecutor(posts) as pool:
        answers = list(pool.map(post, range(posts)))

    # Then every post is shown the same execution, and PROD moved once, as promised
    assert [a.status_code for a in answers] == [303] * posts, [a.text for a in answers]
    locations = {a.headers["Location"] for a in answers}
    assert len(locations) == 1
    execution = locations.pop().rsplit("/", 1)[-1]
    started = [n for n in rollbacks(t) if n.startswith(f"rollback-{name}-")]
    assert started == [execution]
    arn = execution_arn_for(t.rollback_arn, execution)
    assert finished(t, arn)["status"] == "SUCCEEDED"
    assert stage(t, prod)[1] == images[1].digest
    assert [(r.kind, r.version) for r in t.ledger.releases(prod)] == [("ROLLBACK", "v0.2")]

    # And posting it again later starts nothing new either
    late = requests.post(
        f"{console}/repositories/rollback", data=form, timeout=60, allow_redirects=False
    )
    assert (late.status_code, late.headers.get("Location")) == (303, answers[0].headers["Location"])
    assert [n for n in rollbacks(t) if n.startswith(f"rollback-{name}-")] == [execution]
    assert stage(t, prod)[1] == images[1].digest
    assert len(t.ledger.releases(prod)) == 1


def test_roll_back_by_name_when_latest_was_moved_outside_the_tool(
    t: DeployedStack, console: str, page: Any
) -> None:
    # Given PROD's latest moved by hand to an image without a version tag
    images = prod_versions(t, "repo-9", 2)
    stray = build_image(layers=1, layer_size=3_100)
    push_image(t.registry, "ecr-prod/repo-9", stray, tags=["latest"])

    # Then the repositories page offers the named versions (there is no "previous" one)
    page.goto(f"{console}/repositories")
    card = page.locator('section.repo[data-name="repo-9"]')
    expect(card.locator("form.rollback select option")).to_have_text(["v0.2", "v0.1"])
    card.locator("form.rollback select").select_option("v0.1")
    card.locator("form.rollback button").click()

    # And the confirmation says what is there now, and the rollback moves it
    confirm = page.locator("#confirm")
    expect(confirm).to_contain_text(stray.digest[:19])
    expect(confirm).to_contain_text("to v0.1")
    confirm.locator("button[type=submit]").click()
    expect(page).to_have_url(re.compile(r"/executions/rollback-repo-9-[0-9a-f]+$"))
    expect(page.locator("body")).to_have_attribute(
        "data-execution-status", "SUCCEEDED", timeout=60_000
    )
    assert stage(t, "ecr-prod/repo-9")[1] == images[0].digest
    assert [(r.kind, r.version) for r in t.ledger.releases("ecr-prod/repo-9")] == [
        ("ROLLBACK", "v0.1")
    ]


def test_screenshots(
    t: DeployedStack, console: str, page: Any, screenshot: Callable[..., Path]
) -> None:
    execution, _, _ = waiting_for_test(t, "repo-6")
    approve(t, execution, "APPROVED", "ana@example.com", "tested in staging")
    prod = pending_approval(t, execution, wait_seconds=90)
    assert prod is not None, "no PROD approval request"
    page.set_viewport_size({"width": 1680, "height": 1000})

    page.goto(f"{console}/executions/{execution}")
    expect(page.locator("#state-wait-for-prod-approval")).to_have_attribute(
        "data-status", "waiting"
    )
    expect(page.locator("#state-run-tests")).to_have_attribute("data-status", "succeeded")
    screenshot(page, "console-graph.png")

    page.locator("#approval-link").click()
    expect(page.locator("h1")).to_have_text("Promote to PROD?")
    page.set_viewport_size({"width": 1000, "height": 900})
    screenshot(page, "approval-page.png")

    page.set_viewport_size({"width": 1680, "height": 1000})
    page.goto(f"{console}/repositories")
    expect(
        page.locator('section.repo[data-name="repo-6"] tr[data-stage="TEST"]')
    ).to_have_attribute("data-latest", "v0.1")
    screenshot(page, "repositories.png")
    page.goto(f"{console}/")
    screenshot(page, "console-executions.png", docs=False)
    page.goto(f"{console}/approvals")
    screenshot(page, "console-approvals.png", docs=False)
    artifacts = Path(__file__).resolve().parents[2] / "test-artifacts" / "browser"
    for name in ("console-graph.png", "approval-page.png", "repositories.png"):
        assert (artifacts / name).stat().st_size > 10_000
