"""A real embedded stack with the local console mounted, and a real headless Chromium
(Debian's, at /usr/bin/chromium; never a downloaded one) driven by Playwright.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from image_cicd.aws.stack import DeployedStack
from image_cicd.console.app import Console
from image_cicd.local.stack import LocalStack, deployed_stack

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "browser"
CHROMIUM = Path(os.environ.get("IMAGE_CICD_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
REPOS = [f"repo-{n}" for n in range(1, 10)]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    parameters = {"Repositories": ",".join(REPOS)}
    with LocalStack(tmp_path_factory.mktemp("console-stack"), parameters=parameters) as running:
        assert running.server is not None
        if not any(prefix == "/" for prefix, _ in running.server.extra):
            running.server.mount("/", Console(deployed_stack(running.info), running.inbox))
        yield running


@pytest.fixture(scope="module")
def t(stack: LocalStack) -> DeployedStack:
    return deployed_stack(stack.info)


@pytest.fixture(scope="module")
def console(stack: LocalStack) -> str:
    """The console's base URL, without a trailing slash."""
    return stack.info.console_url.rstrip("/")


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.fail(f"no Chromium at {CHROMIUM}: run scripts/ensure-system-packages.sh chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"report_{report.when}", report)


@pytest.fixture
def dialogs() -> list[str]:
    """Every JavaScript dialog (alert, confirm, prompt) any page opened."""
    return []


@pytest.fixture
def page(browser: Any, request: pytest.FixtureRequest, dialogs: list[str]) -> Iterator[Any]:
    """A fresh browser context and page; a dialog fails the test, a failure is kept
    as a screenshot under test-artifacts/browser/."""
    from playwright.sync_api import expect

    expect.set_options(timeout=30_000)
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    page = context.new_page()
    page.set_default_timeout(30_000)

    def on_dialog(dialog: Any) -> None:
        dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()

    page.on("dialog", on_dialog)
    yield page
    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(Exception):  # best effort: the test failed already
            page.screenshot(path=str(ARTIFACTS / f"FAILED-{request.node.name}.png"), full_page=True)
    context.close()
    assert not dialogs, f"a page opened a JavaScript dialog: {dialogs}"


@pytest.fixture
def screenshot() -> Callable[..., Path]:
    """`screenshot(page, name)`: a full-page PNG in test-artifacts/browser/; with
    IMAGE_CICD_UPDATE_SCREENSHOTS=1 (`make screenshots`) also copied to
    docs/screenshots/, the README's pictures, unless `docs=False`."""

    def save(page: Any, name: str, *, docs: bool = True) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / name
        page.screenshot(path=str(path), full_page=True)
        if docs and os.environ.get("IMAGE_CICD_UPDATE_SCREENSHOTS") == "1":
            target_dir = ROOT / "docs" / "screenshots"
            target_dir.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target_dir / name)
        return path

    return save
