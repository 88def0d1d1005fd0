"""End to end: execution names in the CLI. `show`, `graph` and `approve` take any
unique prefix of a name (as git takes one of a commit); nothing cuts a name when the
output is not a terminal; the columns of `show` line up."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from support.cli import cli, ok
from support.stacks import local_stack, wait_for

from image_cicd.aws.stack import DeployedStack
from image_cicd.local.stack import LocalStack
from image_cicd.registry.synthetic import build_image, push_image

REPOSITORIES = ("names-repo-one", "names-repo-two")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    params = {"Repositories": ",".join(REPOSITORIES)}
    with local_stack(tmp_path_factory.mktemp("names"), params) as running:
        yield running


def waiting(stack: LocalStack, name: str) -> dict:
    return wait_for(
        lambda: (shown := json.loads(ok(stack, "show", name, "--json")))["approval_link"] and shown,
        f"{name} to wait for an approval",
    )


@pytest.fixture(scope="module")
def names(stack: LocalStack, t: DeployedStack) -> list[str]:
    """The two executions, one per repository, each waiting for its TEST approval."""
    runner = stack.runner
    assert runner is not None
    for repository in REPOSITORIES:
        push_image(t.registry, f"ecr-dev/{repository}", build_image(layers=1), tags=["latest"])
    runs = wait_for(
        lambda: len(runner.runs) == 2 and all(r.execution_arn for r in runner.runs) and runner.runs,
        "two pipeline runs",
    )
    found = sorted(r.execution_name for r in runs)
    for name in found:
        waiting(stack, name)
    return found


def test_show_graph_and_approve_take_a_unique_prefix(stack: LocalStack, names: list[str]) -> None:
    name = names[0]
    prefix = name[: len("names-repo-one-") + 6]
    assert not names[1].startswith(prefix)
    assert json.loads(ok(stack, "show", prefix, "--json"))["name"] == name
    assert ok(stack, "show", prefix).splitlines()[0].startswith(name)
    assert ok(stack, "graph", prefix).splitlines()[0].startswith(f"{name}  ")
    out = ok(stack, "approve", prefix, "--as", "ana")
    assert out.startswith("TEST approved by ana: ecr-test/names-repo-one ")


def test_an_ambiguous_prefix_is_one_line_naming_the_candidates(
    stack: LocalStack, names: list[str]
) -> None:
    common = "names-repo-"
    assert all(name.startswith(common) for name in names)
    for args in (("show", common), ("graph", common), ("approve", common, "--as", "x")):
        result = cli(stack, *args)
        assert result.exit_code == 1, result.output
        assert result.output == (
            f"Error: 'names-repo-' is ambiguous: it begins 2 executions: {names[0]}, {names[1]}\n"
        )
    assert json.loads(ok(stack, "show", names[1], "--json"))["approval_link"]  # undecided


def test_no_name_is_cut_when_the_output_is_not_a_terminal(
    stack: LocalStack, names: list[str]
) -> None:
    table = ok(stack, "executions").splitlines()
    for name in names:
        assert any(name in line for line in table), table
    listed = json.loads(ok(stack, "executions", "--json"))
    assert sorted(e["name"] for e in listed) == names


def test_the_status_column_of_show_lines_up(stack: LocalStack, names: list[str]) -> None:
    shown = json.loads(ok(stack, "show", names[1], "--json"))
    statuses = {s["status"] for s in shown["states"]}
    assert {"succeeded", "waiting"} <= statuses  # rows of different colours
    rows = ok(stack, "show", names[1]).splitlines()[1:]
    rows = [row for row in rows if row.startswith("  ")]
    assert len(rows) == len(set(shown["path"]))
    columns = {len(row) - len(row[2:].split(" ", 1)[1].lstrip()) for row in rows}
    assert len(columns) == 1, "\n".join(rows)
