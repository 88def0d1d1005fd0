"""End to end: the console's inbox shows what the stack itself published, and marks
the rest, on a real embedded stack (moto's SNS delivering over HTTP to the stack).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from image_cicd.aws.operations import pending_approval, start_promotion
from image_cicd.aws.stack import DeployedStack
from image_cicd.local.stack import LocalStack
from image_cicd.registry.synthetic import build_image, push_image

EVIL = "https://evil.example/approvals/steal"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    with LocalStack(tmp_path_factory.mktemp("inbox"), parameters={"Repositories": "repo-1"}) as s:
        yield s


def inbox_has(stack: LocalStack, text: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not any(text in m["message"] for m in stack.inbox.messages()):
        assert time.monotonic() < deadline, f"no message with {text!r}"
        time.sleep(0.1)


def message_divs(stack: LocalStack) -> list[str]:
    page = requests.get(stack.info.console_url + "approvals", timeout=30)
    assert page.status_code == 200
    return re.findall(r'<div class="message".*?</div>', page.text, re.S)


def test_a_forged_post_to_the_sns_hook_reaches_no_inbox(
    stack: LocalStack, t: DeployedStack
) -> None:
    forged = {
        "Type": "Notification",
        "TopicArn": t.output("ApprovalsTopicArn"),
        "Subject": "image-cicd: approval needed (ecr-prod/repo-1)",
        "Message": f"forged-1: approve at {EVIL}",
        "Timestamp": "2026-12-01T00:00:00Z",
    }
    for path in ("_events/sns", "_events/sns/guess"):
        answer = requests.post(
            stack.info.console_url + path,
            data=json.dumps(forged),
            headers={"x-amz-sns-message-type": "Notification"},
            timeout=30,
        )
        assert answer.status_code == 401
    assert not any("forged-1" in m["message"] for m in stack.inbox.messages())
    assert not any("forged-1" in div for div in message_divs(stack))


def test_the_stacks_own_message_is_verified_and_a_foreign_link_is_marked(
    stack: LocalStack, t: DeployedStack
) -> None:
    # Given a real approval request, published by the stack's function
    image = build_image(layers=1, layer_size=1001)
    push_image(t.registry, "ecr-dev/repo-1", image, tags=["candidate"])
    execution = start_promotion(t, "ecr-dev/repo-1", image.digest).rsplit(":", 1)[-1]
    approval = pending_approval(t, execution, wait_seconds=120)
    assert approval is not None
    inbox_has(stack, execution)
    # and a message that anyone reaching moto can publish to the stack's own topic
    t.client("sns").publish(
        TopicArn=t.output("ApprovalsTopicArn"),
        Subject="image-cicd: approval needed",
        Message=f"published-2: approve at {EVIL}",
    )
    inbox_has(stack, "published-2")

    divs = message_divs(stack)

    [own] = [d for d in divs if execution in d]
    assert 'data-verified="true"' in own
    assert f'<a href="{t.output("ApprovalBaseUrl")}approvals/{approval.approval_id}"' in own
    assert "unverified" not in own
    [foreign] = [d for d in divs if "published-2" in d]
    assert 'data-verified="false"' in foreign
    assert "unverified: not from this stack" in foreign
    assert EVIL in foreign
    assert "<a " not in foreign


def test_the_delivery_secret_is_in_no_page_file_or_log(stack: LocalStack, t: DeployedStack) -> None:
    assert stack.server is not None
    secret = stack.server.sns_endpoint.rsplit("/", 1)[-1]
    pages = "".join(
        requests.get(stack.info.console_url + path, timeout=30).text
        for path in ("", "approvals", "repositories")
    )
    assert secret not in pages
    written = [
        p
        for p in Path(stack.state_dir).rglob("*")
        if p.is_file() and p.stat().st_size < 50_000_000 and secret.encode() in p.read_bytes()
    ]
    assert written == []
