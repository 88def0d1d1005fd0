"""The pages are templates: escaping is the default in every template (console and
approval pages, rendered through the real templates), no Python module of the
package holds page markup or an escape helper, and the console serves the one
stylesheet and script from the package."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from markupsafe import Markup
from test_approvals import make_approval

from image_cicd.console.app import Console
from image_cicd.console.history import ExecutionView, StateRun
from image_cicd.console.queries import Execution, Row, StageRow
from image_cicd.ledger.records import ApprovalRecord, Promotion, RollbackPlan
from image_cicd.promotion.versions import StageState, VersionScheme
from image_cicd.web import STATIC_TYPES, static_file
from image_cicd.web.http import Request

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "image_cicd"
EVIL = '<script>alert("x")</script>'
ESCAPED = "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;"
T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
SCHEME = VersionScheme()


@dataclass
class _Stack:
    """What the console reads of a stack to lay out a page (its name, its versions)."""

    name: str
    scheme: VersionScheme


def _console() -> Console:
    return Console(_Stack(EVIL, SCHEME), secret=b"k" * 32)  # type: ignore[arg-type]


def _execution(workflow: str) -> Execution:
    run = StateRun(
        EVIL, EVIL, "failed", T0, T0, input=EVIL, output=EVIL, error=EVIL, cause=EVIL, visits=2
    )
    view = ExecutionView(
        EVIL,
        EVIL,
        "FAILED",
        T0,
        T0,
        {"repository": EVIL, "to": EVIL, "from": EVIL, "digest": EVIL},
        {"rollback": {"message": EVIL, "digest": EVIL}},
        EVIL,
        EVIL,
        {EVIL: run},
        [EVIL],
    )
    definition = {
        "States": {
            EVIL: {
                "Type": EVIL,
                "Retry": [{"ErrorEquals": [EVIL]}],
                "Catch": [{"ErrorEquals": [EVIL], "Next": EVIL}],
            }
        }
    }
    approval = make_approval(text=EVIL)
    promotion = Promotion(
        execution=EVIL,
        repository=EVIL,
        digest=EVIL,
        started_at=T0,
        test_version=EVIL,
        prod_version=EVIL,
        tests=approval.tests,
        outcome="FAILED",
        reason=EVIL,
        approvals=[
            ApprovalRecord(
                approval_id=EVIL,
                stage="TEST",
                decision="REJECTED",
                approver=EVIL,
                comment=EVIL,
                decided_at=T0,
            )
        ],
    )
    return Execution(view, definition, workflow, approval, promotion)


def _pages() -> dict[str, str]:
    """Every console page, with EVIL in every value it prints."""
    console = _console()
    approval = make_approval(text=EVIL)
    state = StageState(EVIL, {"v0.1": EVIL, "v0.2": "sha256:" + "a" * 64}, EVIL, SCHEME)
    pages: dict[str, Any] = {
        "executions": console._page(
            200,
            "executions.html",
            EVIL,
            rows=[Row(EVIL, EVIL, "RUNNING", EVIL, EVIL, EVIL, T0, T0, EVIL, "SUPERSEDED")],
            chosen={"repository": EVIL, "status": EVIL, "workflow": EVIL},
            repositories=[EVIL],
            statuses=[EVIL],
        ),
        "approvals": console._page(
            200,
            "approvals.html",
            EVIL,
            pending=[approval.model_copy(update={"status": "PENDING"})],
            decided=[approval],
            messages=[
                {
                    "topic": EVIL,
                    "subject": EVIL,
                    "at": EVIL,
                    "verified": verified,
                    "parts": [(EVIL, False), ("https://a/" + EVIL, True)],
                }
                for verified in (True, False)
            ],
            approval_link=lambda a: EVIL,
        ),
        "repositories": console._page(
            200,
            "repositories.html",
            EVIL,
            repositories=[
                {
                    "name": EVIL,
                    "previous": EVIL,
                    "choices": [EVIL],
                    "stages": [
                        StageRow(EVIL, EVIL, state, {EVIL: EVIL}),
                        StageRow(EVIL, EVIL, None),
                    ],
                }
            ],
        ),
        "confirm": console._page(
            200,
            "confirm.html",
            EVIL,
            plan=RollbackPlan(EVIL, EVIL, EVIL, EVIL, EVIL),
            name=EVIL,
            to=EVIL,
            here=EVIL,
            key=EVIL,
            csrf=EVIL,
        ),
        "message": console._message(400, EVIL, EVIL, back=True),
    }
    for workflow in ("promotion", "rollback"):
        pages[f"execution-{workflow}"] = console._page(
            200,
            "execution.html",
            EVIL,
            script=True,
            body_attrs={"data-poll": EVIL},
            execution=_execution(workflow),
            link=EVIL,
            selected=EVIL,
            svg=Markup("<svg></svg>"),
            path=[EVIL],
        )
    return {name: reply.body.decode() for name, reply in pages.items()}


@pytest.mark.parametrize("name", sorted(_pages()))
def test_every_console_page_escapes_every_value_it_prints(name: str) -> None:
    page = _pages()[name]

    assert 'alert("x")' not in page
    scripts = re.findall(r"<script\b[^>]*>", page)
    assert scripts in ([], ['<script src="/static/console.js">'])
    assert page.count(ESCAPED) >= 2  # the title and the page's own values


def test_a_value_is_escaped_in_attributes_too() -> None:
    page = _pages()["confirm"]
    fields = re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', page)
    assert dict(fields)["csrf"] == ESCAPED


def test_no_module_of_the_package_holds_page_markup_or_an_escape_helper() -> None:
    markup = re.compile(r"<(html|div|table|style|script|form|section|body)\b", re.I)
    escaper = re.compile(r"from html import escape|html\.escape\(")
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.relative_to(PACKAGE).as_posix().startswith("console/graph"):  # its SVG
            continue
        text = path.read_text(encoding="utf-8")
        found += [f"{path.name}: {m.group(0)}" for m in markup.finditer(text)]
        found += [f"{path.name}: html.escape" for _ in escaper.finditer(text)]
    assert found == []


def test_the_console_serves_the_one_stylesheet_and_script_from_the_package() -> None:
    console = _console()
    for name, kind in STATIC_TYPES.items():
        reply = console(Request("GET", f"/static/{name}", "", {}, b"", "127.0.0.1"))
        assert (reply.status, reply.headers["Content-Type"], reply.body) == (
            200,
            kind,
            static_file(name),
        )
        assert reply.headers["X-Content-Type-Options"] == "nosniff"
        assert console(Request("POST", f"/static/{name}", "", {}, b"", "127.0.0.1")).status == 405
    assert console(Request("GET", "/static/../app.py", "", {}, b"", "127.0.0.1")).status == 404
    page = console(Request("GET", "/nowhere", "", {}, b"", "127.0.0.1"))
    csp = page.headers["Content-Security-Policy"]
    assert "style-src 'self';" in csp
    assert "unsafe-inline" not in csp
    assert '<link rel="stylesheet" href="/static/style.css">' in page.body.decode()


def test_the_approval_pages_inline_the_same_stylesheet_and_load_nothing() -> None:
    from image_cicd.approvals import pages

    page = pages.not_found_page()
    assert f"<style>{static_file('style.css').decode()}</style>" in page
    assert not re.search(r"<(link|script|img)\b", page)


@dataclass(frozen=True)
class _Head:
    digest: str


class _Registry:
    """Tags of each repository (a fake below the console and the core's planning)."""

    def __init__(self, tags: dict[str, dict[str, str]]) -> None:
        self.tags = tags

    def list_tags(self, repository: str) -> list[str]:
        return list(self.tags.get(repository, {}))

    def head_manifest(self, repository: str, tag: str) -> _Head | None:
        digest = self.tags.get(repository, {}).get(tag)
        return _Head(digest) if digest else None


@dataclass
class _RollbackStack(_Stack):
    registry: _Registry
    repositories: tuple[str, ...] = ("repo-1",)

    def stage_repository(self, name: str, stage: str) -> str:
        return f"ecr-{stage.lower()}/{name}"


def _preview(tags: dict[str, str], to: str = "") -> tuple[int, str]:
    stack = _RollbackStack("s", SCHEME, _Registry({"ecr-prod/repo-1": tags}))
    console = Console(stack)  # type: ignore[arg-type]
    body = f"repository=repo-1&to={to}".encode()
    reply = console(Request("POST", "/repositories/rollback", "", {}, body, "127.0.0.1"))
    return reply.status, reply.body.decode()


def test_the_rollback_preview_is_the_cores_plan() -> None:
    one, two = "sha256:" + "1" * 64, "sha256:" + "2" * 64

    status, page = _preview({"v0.1": one, "v0.2": two, "latest": two})
    assert status == 200
    assert "from <strong>v0.2</strong>" in page
    assert "to <strong>v0.1</strong>" in page

    # what plan_rollback refuses, it refuses in its own words, and nothing is offered
    for tags, to, words in (
        ({"v0.1": one, "latest": one}, "", "ecr-prod/repo-1 is at v0.1: no older version"),
        ({"v0.1": one, "latest": one}, "v0.9", "has no version v0.9 (versions: v0.1)"),
        ({"v0.1": one, "latest": one}, "v0.1", "ecr-prod/repo-1:latest is already at v0.1"),
        ({"v0.1": one}, "", "has no &#39;latest&#39; tag: nothing runs there"),
        ({"v0.1": one, "latest": two}, "", "which has no version tag"),
    ):
        status, page = _preview(tags, to)
        assert status == 409, page
        assert words in page
        assert 'name="csrf"' not in page
