"""End to end: the `image-cicd` command against a real embedded stack.

The stack runs in this process (registry and moto as child processes, the trigger
path and approval endpoint in threads); the commands find it through its state
file, exactly as they do after `image-cicd local up`.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
import requests
from click.testing import CliRunner
from support.cli import cli, ok

from image_cicd.aws.stack import DeployedStack
from image_cicd.cli.main import main
from image_cicd.local.stack import LocalStack
from image_cicd.promotion.versions import VersionScheme, read_stage
from image_cicd.registry.synthetic import SyntheticImage, build_image, push_image


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    params = {"Repositories": "repo-1,repo-2,repo-3,repo-4,repo-5,repo-6,repo-7,repo-8"}
    with LocalStack(tmp_path_factory.mktemp("e2e"), parameters=params) as running:
        yield running


def run_count(stack: LocalStack) -> int:
    assert stack.runner is not None
    return len(stack.runner.runs)


def wait_runs(stack: LocalStack, count: int, timeout: float = 120) -> list[str]:
    """Execution names of the first `count` pipeline runs, once they have started."""
    assert stack.runner is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = stack.runner.runs[:count]
        if len(runs) == count and all(r.execution_arn for r in runs):
            return [r.execution_name for r in runs]
        time.sleep(0.1)
    raise AssertionError(f"expected {count} pipeline runs, have {stack.runner.runs}")


def show(stack: LocalStack, execution: str) -> dict:
    return json.loads(ok(stack, "show", execution, "--json"))


def wait_show(stack: LocalStack, execution: str, until: str, timeout: float = 120) -> dict:
    """`show` until the execution waits for an approval ("waiting") or has ended."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        shown = show(stack, execution)
        if until == "waiting" and shown["approval_link"]:
            return shown
        if until == "ended" and shown["status"] != "RUNNING":
            return shown
        time.sleep(0.2)
    raise AssertionError(f"{execution} did not reach {until}: {shown}")


def test_push_trigger_approve_promote_and_roll_back(stack: LocalStack, t: DeployedStack) -> None:
    before = run_count(stack)
    pushed = json.loads(ok(stack, "push", "ecr-dev/repo-1:latest", "--size", "2MB", "--json"))
    [execution] = wait_runs(stack, before + 1)[before:]

    shown = wait_show(stack, execution, "waiting")
    page = requests.get(shown["approval_link"], timeout=30)  # a GET shows, never decides
    assert page.status_code == 200
    assert pushed["digest"] in page.text
    assert show(stack, execution)["approval_link"] == shown["approval_link"]
    assert t.ledger.list_approvals("PENDING")[0].execution == execution

    out = ok(stack, "approve", execution, "--as", "ana@example.com", "--comment", "ok")
    assert "TEST approved by ana@example.com: ecr-test/repo-1 v0.1 (estimate)" in out
    shown = wait_show(stack, execution, "waiting")
    states = {s["name"]: s["status"] for s in shown["states"]}
    assert states["Run tests"] == "succeeded"
    ok(stack, "approve", execution, "--as", "ana@example.com")
    assert wait_show(stack, execution, "ended")["status"] == "SUCCEEDED"

    repos = {r["repository"]: r for r in json.loads(ok(stack, "repos", "--json"))}
    assert repos["ecr-prod/repo-1"]["latest"] == pushed["digest"]
    assert repos["ecr-prod/repo-1"]["latest_version"] == "v0.1"
    assert repos["ecr-test/repo-1"]["versions"] == {"v0.1": pushed["digest"]}

    # a second image, then roll PROD back to the first
    before = run_count(stack)
    second = json.loads(ok(stack, "push", "ecr-dev/repo-1:latest", "--size", "1MB", "--json"))
    [execution] = wait_runs(stack, before + 1)[before:]
    wait_show(stack, execution, "waiting")
    ok(stack, "approve", execution, "--as", "bo")
    wait_show(stack, execution, "waiting")
    ok(stack, "approve", execution, "--as", "bo")
    assert wait_show(stack, execution, "ended")["status"] == "SUCCEEDED"
    assert read_stage(t.registry, "ecr-prod/repo-1", VersionScheme()).latest == second["digest"]

    out = ok(stack, "rollback", "ecr-prod/repo-1", "--yes")
    assert out.strip() == "Rollback from v0.2 to v0.1"
    state = read_stage(t.registry, "ecr-prod/repo-1", VersionScheme())
    assert (state.latest, state.current) == (pushed["digest"], "v0.1")
    listed = json.loads(ok(stack, "executions", "--json"))
    assert listed[0]["kind"] == "rollback"
    assert listed[0]["status"] == "SUCCEEDED"


def test_rejection_leaves_prod_untouched(stack: LocalStack, t: DeployedStack) -> None:
    before = run_count(stack)
    ok(stack, "push", "ecr-dev/repo-2:latest", "--size", "1MB")
    [execution] = wait_runs(stack, before + 1)[before:]
    wait_show(stack, execution, "waiting")
    ok(stack, "approve", execution, "--as", "ana")
    wait_show(stack, execution, "waiting")

    out = ok(stack, "approve", execution, "--reject", "--as", "cy", "--comment", "not today")

    assert "PROD rejected by cy" in out
    shown = wait_show(stack, execution, "ended")
    assert (shown["status"], shown["error"]) == ("FAILED", "ApprovalRejected")
    assert t.registry.list_tags("ecr-prod/repo-2") == []
    assert read_stage(t.registry, "ecr-test/repo-2", VersionScheme()).current == "v0.1"


def test_only_a_dev_push_of_the_trigger_tag_starts_the_pipeline(
    stack: LocalStack, t: DeployedStack
) -> None:
    before = run_count(stack)
    image = build_image(layers=1, layer_size=1000)
    push_image(t.registry, "ecr-test/repo-3", image, tags=["latest"])
    push_image(t.registry, "ecr-prod/repo-3", image, tags=["latest"])
    push_image(t.registry, "ecr-dev/repo-3", image, tags=["candidate"])
    push_image(t.registry, "ecr-dev/unlisted", image, tags=["latest"])
    # A control push that does trigger: the registry delivers notifications in order,
    # so once its run exists, every push above has been seen (and ignored).
    control = build_image(layers=1, layer_size=1001)
    push_image(t.registry, "ecr-dev/repo-3", control, tags=["latest"])

    [execution] = wait_runs(stack, before + 1)[before:]

    time.sleep(0.5)
    assert run_count(stack) == before + 1
    assert stack.runner is not None
    detail = Path(
        stack.state_dir,
        "pipelines",
        stack.runner.runs[before].pipeline,
        stack.runner.runs[before].run_id,
        "imageDetail.json",
    )
    assert json.loads(detail.read_text())["ImageDigest"] == control.digest
    wait_show(stack, execution, "waiting")
    ok(stack, "approve", execution, "--reject", "--as", "test")


def test_a_push_starts_at_once_and_supersedes_the_older_image_waiting_for_test(
    stack: LocalStack, t: DeployedStack
) -> None:
    before = run_count(stack)
    first, second = build_image(layers=1, layer_size=500), build_image(layers=1, layer_size=501)
    push_image(t.registry, "ecr-dev/repo-4", first, tags=["latest"])
    [name_one] = wait_runs(stack, before + 1)[before:]
    link_one = wait_show(stack, name_one, "waiting")["approval_link"]

    push_image(t.registry, "ecr-dev/repo-4", second, tags=["latest"])

    [_, name_two] = wait_runs(stack, before + 2)[before:]
    shown_two = wait_show(stack, name_two, "waiting")
    assert shown_two["status"] == "RUNNING"
    assert shown_two["approval_link"] != link_one
    ended = wait_show(stack, name_one, "ended")
    assert (ended["status"], ended["error"]) == ("FAILED", "PromotionSuperseded")
    sfn = t.client("stepfunctions")
    assert stack.runner is not None
    one, two = stack.runner.runs[before : before + 2]
    first_desc = sfn.describe_execution(executionArn=one.execution_arn)
    second_desc = sfn.describe_execution(executionArn=two.execution_arn)
    assert second_desc["startDate"] < first_desc["stopDate"]  # not queued behind the first
    inputs = [json.loads(d["input"])["ImageDigest"] for d in (first_desc, second_desc)]
    assert inputs == [first.digest, second.digest]  # each run pinned its own digest

    promotion = t.ledger.get_promotion(name_one)
    assert promotion.outcome == "SUPERSEDED"
    assert name_two in (promotion.reason or "")
    [note] = [
        m for m in stack.inbox.messages() if f"Promotion {name_one}: SUPERSEDED" in m["message"]
    ]
    assert name_two in note["message"]
    page = requests.get(link_one, timeout=30)
    assert page.status_code == 410
    assert "Superseded by a newer image" in page.text
    assert name_two in page.text
    assert second.digest in page.text
    console = requests.get(stack.info.console_url, timeout=30).text
    row = console.split(f'data-execution="{name_one}"', 1)[1].split("</tr>", 1)[0]
    assert "superseded" in row
    assert t.registry.list_tags("ecr-test/repo-4") == []  # the first image copied nothing

    ok(stack, "approve", name_two, "--reject", "--as", "test")
    assert wait_show(stack, name_two, "ended")["error"] == "ApprovalRejected"


def test_pushing_an_image_prod_already_runs_ends_as_already_promoted(
    stack: LocalStack, t: DeployedStack
) -> None:
    image = build_image(layers=1, layer_size=700)
    before = run_count(stack)
    push_image(t.registry, "ecr-dev/repo-5", image, tags=["latest"])
    [execution] = wait_runs(stack, before + 1)[before:]
    for _stage in ("TEST", "PROD"):
        wait_show(stack, execution, "waiting")
        ok(stack, "approve", execution, "--as", "ana")
    assert wait_show(stack, execution, "ended")["status"] == "SUCCEEDED"
    asked = len(t.ledger.list_approvals())

    push_image(t.registry, "ecr-dev/repo-5", image, tags=["latest"])  # the same image again

    [_, again] = wait_runs(stack, before + 2)[before:]
    shown = wait_show(stack, again, "ended")
    assert shown["status"] == "SUCCEEDED"
    assert shown["approval_link"] is None
    states = {s["name"]: s["status"] for s in shown["states"]}
    assert states["Already promoted"] == "succeeded"
    assert len(t.ledger.list_approvals()) == asked  # nobody was asked
    promotion = t.ledger.get_promotion(again)
    assert promotion.outcome == "ALREADY_PROMOTED"
    assert promotion.reason == f"PROD already runs {image.digest} as v0.1"
    assert not [m for m in stack.inbox.messages() if again in m["message"]]
    assert read_stage(t.registry, "ecr-prod/repo-5", VersionScheme()).versions == {
        "v0.1": image.digest
    }


def test_status_and_a_second_up(stack: LocalStack) -> None:
    status = json.loads(ok(stack, "local", "status", "--json"))
    assert status["running"] is True
    assert status["console_url"] == stack.info.console_url
    again = cli(stack, "local", "up")
    assert again.exit_code == 1
    assert "already running" in again.output


def test_errors_are_one_clear_line(stack: LocalStack) -> None:
    for args, message in [
        (("show", "no-such-execution"), "no execution named 'no-such-execution'"),
        (("rollback", "ecr-prod/nope", "--yes"), "is not a PROD repository"),
        (("push", "Bad/Name"), "not a valid repository name"),
        (("approve", "no-such-execution", "--as", "x"), "no execution named 'no-such-execution'"),
    ]:
        result = cli(stack, *args)
        assert result.exit_code != 0
        assert message in result.output
        assert "Traceback" not in result.output


def test_rollback_menu_asks_and_confirms(stack: LocalStack, t: DeployedStack) -> None:
    result = CliRunner().invoke(
        main, ["--state-dir", str(stack.state_dir), "rollback"], input="9\n2\nn\n"
    )
    assert "1) ecr-prod/repo-1" in result.output
    assert "Move ecr-prod/repo-2:latest to the previous version?" in result.output
    assert result.exit_code == 1  # declined: Aborted
    assert re.search(r"Aborted", result.output)


def prod_versions(t: DeployedStack, name: str, count: int) -> list[SyntheticImage]:
    """PROD of `name` with versions v0.1..v0.<count>, latest at the newest."""
    images = [build_image(layers=1, layer_size=5_000 + n) for n in range(count)]
    for n, image in enumerate(images, 1):
        tags = [f"v0.{n}", "latest"] if n == count else [f"v0.{n}"]
        push_image(t.registry, f"ecr-prod/{name}", image, tags=tags)
    return images


def test_rollback_to_a_named_version_after_latest_was_moved_by_hand(
    stack: LocalStack, t: DeployedStack
) -> None:
    images = prod_versions(t, "repo-6", 2)
    stray = build_image(layers=1, layer_size=5_100)
    push_image(t.registry, "ecr-prod/repo-6", stray, tags=["latest"])

    refused = cli(stack, "rollback", "ecr-prod/repo-6", "--yes")
    assert refused.exit_code == 1
    assert "LatestUntagged" in refused.output
    assert stray.digest in refused.output
    assert "--to" in refused.output
    assert read_stage(t.registry, "ecr-prod/repo-6", VersionScheme()).latest == stray.digest

    out = ok(stack, "rollback", "ecr-prod/repo-6", "--to", "v0.1", "--yes")
    assert stray.digest in out
    assert out.strip().endswith("to v0.1")
    assert read_stage(t.registry, "ecr-prod/repo-6", VersionScheme()).latest == images[0].digest
    assert [(r.kind, r.version) for r in t.ledger.releases("ecr-prod/repo-6")] == [
        ("ROLLBACK", "v0.1")
    ]


def test_rollback_changes_nothing_when_prod_moved_while_confirming(
    stack: LocalStack, t: DeployedStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    images = prod_versions(t, "repo-7", 3)
    prod = "ecr-prod/repo-7"
    asked: list[str] = []

    def someone_else_rolls_back_meanwhile(text: str, *_args: object, **_kwargs: object) -> bool:
        asked.append(text)
        manifest = t.registry.get_manifest(prod, images[1].digest)
        t.registry.put_manifest(prod, "latest", manifest)
        return True

    monkeypatch.setattr(click, "confirm", someone_else_rolls_back_meanwhile)
    result = cli(stack, "rollback", prod)

    assert asked == [f"Move {prod}:latest from v0.3 to the previous version?"]
    assert result.exit_code == 1
    assert "LatestMoved" in result.output
    assert "v0.2" in result.output
    assert read_stage(t.registry, prod, VersionScheme()).latest == images[1].digest
    assert t.ledger.releases(prod) == []


def test_status_without_a_stack(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["--state-dir", str(tmp_path), "local", "status"])
    assert result.exit_code == 1
    assert "no local stack is running" in result.output
    result = CliRunner().invoke(main, ["--state-dir", str(tmp_path), "repos"])
    assert result.exit_code == 1
    assert "image-cicd local up" in result.output


def test_graph_in_the_terminal_and_as_svg(
    stack: LocalStack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = run_count(stack)
    ok(stack, "push", "ecr-dev/repo-8:latest", "--size", "1MB")
    [promotion] = wait_runs(stack, before + 1)[before:]
    wait_show(stack, promotion, "waiting")

    text = ok(stack, "graph", promotion)
    assert "Resolve repository" in text
    assert "succeeded" in text
    assert re.search(r"^\* waiting for approval +Wait for TEST approval", text, re.M)
    # the shape, not a list: the main path down the left, branches indented, the loop
    trees = [line[23:] for line in text.splitlines()[1:]]
    main_path = [t.split("  ")[0].removesuffix(" ⚠") for t in trees if t[:1] not in " ├└⚠"]
    assert main_path[:3] == ["Receive input", "Resolve repository", "Already promoted?"]
    assert main_path[-4:] == [
        "Wait for PROD approval",
        "Promote to PROD",
        "Notify success",
        "Promoted",
    ]
    assert "Tests finished?" in main_path
    assert "├ already_promoted not null → Already promoted" in trees
    assert any(t.startswith("├ status = RUNNING → Wait for tests") for t in trees)
    assert "↺ loop back to Tests finished?" in [t.strip() for t in trees]
    assert any(t.startswith("⚠ on error States.ALL from 7 states:") for t in trees)
    assert "└ Prepare failure" in trees
    svg_file = tmp_path / "graph.svg"
    ok(stack, "graph", promotion, "--svg", str(svg_file))
    svg = svg_file.read_text()
    assert svg.startswith("<svg")
    assert 'id="state-resolve-repository"' in svg
    assert 'data-status="succeeded"' in svg

    monkeypatch.setenv("PATH", str(tmp_path))  # no Graphviz on it
    missing = cli(stack, "graph", promotion, "--svg", str(tmp_path / "none.svg"))
    assert missing.exit_code == 1
    assert missing.output == (
        "Error: the graph needs Graphviz 'dot', which is not installed "
        "(Debian: apt-get install graphviz)\n"
    )
    assert not (tmp_path / "none.svg").exists()
    assert "Resolve repository" in ok(stack, "graph", promotion)  # the terminal needs no dot


def test_up_with_a_parameter_that_cannot_work_is_refused(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main,
        ["--state-dir", str(tmp_path), "local", "up", "-p", "ApprovalTimeoutSeconds=9999999"],
    )
    assert result.exit_code == 1
    assert "ApprovalTimeoutSeconds=9999999 is above MaxValue 259200" in result.output
    assert not (tmp_path / "stack.json").exists()


def test_the_stack_server_answers_only_its_own_host_and_no_browser_feeds_events(
    stack: LocalStack,
) -> None:
    url = stack.info.console_url
    rebound = requests.get(url, headers={"Host": "evil.example:80"}, timeout=30)
    assert rebound.status_code == 421
    before = run_count(stack)
    forged = requests.post(
        f"{url}_events/registry",
        data=b'{"events": []}',
        headers={"Origin": "https://evil.example"},
        timeout=30,
    )
    assert forged.status_code == 403
    assert run_count(stack) == before
    assert requests.get(url, timeout=30).status_code == 200


def test_a_forged_registry_delivery_promotes_nothing(stack: LocalStack, t: DeployedStack) -> None:
    # Given a DEV image that was only ever tagged feature-x
    before = run_count(stack)
    image = build_image(layers=1, layer_size=1002)
    push_image(t.registry, "ecr-dev/repo-3", image, tags=["feature-x"])
    forged = {
        "events": [
            {
                "id": "forged-1",
                "timestamp": "2026-12-01T00:00:00Z",
                "action": "push",
                "target": {
                    "mediaType": image.manifest.media_type,
                    "digest": image.digest,
                    "size": len(image.manifest.data),
                    "repository": "ecr-dev/repo-3",
                    "tag": "latest",
                },
            }
        ]
    }

    # When someone on this machine posts a push of it as `latest` (without the secret
    # the registry's own deliveries carry)
    forgery = requests.post(f"{stack.info.console_url}_events/registry", json=forged, timeout=30)

    # Then it is refused and starts nothing; the registry's real deliveries still do
    assert forgery.status_code == 401
    control = build_image(layers=1, layer_size=1003)
    push_image(t.registry, "ecr-dev/repo-3", control, tags=["latest"])
    [execution] = wait_runs(stack, before + 1)[before:]
    time.sleep(0.5)
    assert run_count(stack) == before + 1
    assert stack.runner is not None
    run = stack.runner.runs[before]
    detail = stack.state_dir / "pipelines" / run.pipeline / run.run_id / "imageDetail.json"
    assert json.loads(detail.read_text())["ImageDigest"] == control.digest
    wait_show(stack, execution, "waiting")
    ok(stack, "approve", execution, "--reject", "--as", "test")
