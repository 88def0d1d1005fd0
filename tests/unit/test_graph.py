"""The state machine graph: layout and rendering from the real ASL definitions."""

from __future__ import annotations

import itertools
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import pytest

from image_cicd.console.graph import (
    GraphvizMissing,
    edges,
    layout,
    render_svg,
    render_text,
    slug,
)
from image_cicd.console.history import StateRun, states_of

MACHINES = Path(__file__).resolve().parents[2] / "statemachines"
SVG = "{http://www.w3.org/2000/svg}"


def definition(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((MACHINES / f"{name}.asl.json").read_text())
    return data


@pytest.fixture(params=["promotion", "rollback"])
def machine(request: pytest.FixtureRequest) -> dict[str, Any]:
    return definition(request.param)


def overlaps(a: Any, b: Any) -> bool:
    return not (
        a.x + a.width <= b.x
        or b.x + b.width <= a.x
        or a.y + a.height <= b.y
        or b.y + b.height <= a.y
    )


def test_layout_places_every_state_without_overlaps(machine: dict[str, Any]) -> None:
    plan = layout(machine)

    assert set(plan.positions) == set(machine["States"])
    boxes = [*plan.positions.values(), *plan.junctions.values()]
    for i, a in enumerate(boxes):
        assert a.x >= 0
        assert a.x + a.width <= plan.width
        assert a.y >= 0
        assert a.y + a.height <= plan.height
        for b in boxes[i + 1 :]:
            assert not overlaps(a, b), (a.name, b.name)
    assert plan.main[0] == machine["StartAt"]
    top = min(box.y for box in plan.positions.values())
    assert plan.positions[machine["StartAt"]].y == top


def test_layout_is_deterministic(machine: dict[str, Any]) -> None:
    assert layout(machine) == layout(json.loads(json.dumps(machine)))


def test_edges_go_down_except_the_loop(machine: dict[str, Any]) -> None:
    plan = layout(machine)
    boxes = {**plan.positions, **plan.junctions}
    for edge in plan.edges:
        source, target = boxes[edge.source], boxes[edge.target]
        if edge.back:
            assert target.y < source.y, edge
        else:
            assert target.y > source.y, edge


def test_every_choice_and_catch_is_an_edge() -> None:
    promotion = definition("promotion")
    found = {(e.source, e.target, e.kind) for e in edges(promotion)}

    assert ("Tests finished?", "Wait for tests", "choice") in found
    assert ("Tests finished?", "Wait for PROD approval", "choice") in found
    assert ("Tests finished?", "Tests failed", "default") in found
    assert ("Wait for TEST approval", "TEST approval rejected", "catch") in found
    assert ("Wait for TEST approval", "TEST approval expired", "catch") in found
    assert ("Check tests", "Tests finished?", "next") in found
    labels = {(e.source, e.target): e.label for e in edges(promotion) if e.kind == "catch"}
    assert labels[("Wait for TEST approval", "TEST approval rejected")] == "ApprovalRejected"
    assert labels[("Wait for TEST approval", "TEST approval expired")] == "States.Timeout"
    for name, spec in promotion["States"].items():
        targets = [spec.get("Next"), spec.get("Default")]
        targets += [c["Next"] for c in spec.get("Choices", [])]
        targets += [c["Next"] for c in spec.get("Catch", [])]
        for target in filter(None, targets):
            assert any(e.source == name and e.target == target for e in edges(promotion))


def test_the_test_loop_is_drawn_as_a_back_edge() -> None:
    plan = layout(definition("promotion"))
    [loop] = [e for e in plan.edges if e.back]
    assert (loop.source, loop.target) == ("Check tests", "Tests finished?")
    svg = render_svg(definition("promotion"), {}, [])
    root = ElementTree.fromstring(svg)  # noqa: S314 - our own output
    [drawn] = [p for p in root.iter(f"{SVG}path") if "loop" in (p.get("class") or "").split()]
    assert (drawn.get("data-from"), drawn.get("data-to")) == ("Check tests", "Tests finished?")
    assert "↺ loop back" in svg


MAIN_PATH = {
    "promotion": [
        "Receive input",
        "Resolve repository",
        "Already promoted?",
        "Wait for TEST approval",
        "Copy to TEST",
        "Run tests",
        "Tests finished?",
        "Wait for PROD approval",
        "Promote to PROD",
        "Notify success",
        "Promoted",
    ],
    "rollback": ["Receive input", "Roll back PROD", "Notify rollback", "Rolled back"],
}


@pytest.mark.parametrize("name", sorted(MAIN_PATH))
def test_the_main_path_runs_straight_down(name: str) -> None:
    plan = layout(definition(name))

    assert list(plan.main) == MAIN_PATH[name]
    for upper, lower in itertools.pairwise(plan.main):
        a, b = plan.positions[upper], plan.positions[lower]
        assert b.y >= a.y + a.height, (upper, lower)
        assert abs(b.centre - a.centre) <= 2, (upper, lower)


@pytest.mark.parametrize("name", ["promotion", "rollback"])
def test_at_most_one_error_edge_into_each_target(name: str) -> None:
    catches = [e for e in layout(definition(name)).edges if e.kind == "catch"]
    into = [(e.target, e.label) for e in catches]
    assert len(into) == len(set(into))


def test_the_states_all_catches_are_one_on_error_edge() -> None:
    machine = definition("promotion")
    plan = layout(machine)

    sources = tuple(
        s
        for s, spec in machine["States"].items()
        for c in spec.get("Catch", [])
        if c["Next"] == "Prepare failure"
    )
    assert len(sources) == 7
    [edge] = [e for e in plan.edges if e.target == "Prepare failure" and e.kind == "catch"]
    assert edge.group == sources
    assert edge.label == "States.ALL"
    assert edge.source in plan.junctions
    svg = render_svg(machine, {}, [])
    assert svg.count('data-kind="catch" data-from="on error (7 states)"') == 1
    assert "⚠ on error · 7 states" in svg


def test_a_catch_taken_is_drawn_on_its_own_on_the_path() -> None:
    machine = definition("promotion")
    path = [
        "Receive input",
        "Resolve repository",
        "Already promoted?",
        "Wait for TEST approval",
        "Copy to TEST",
        "Prepare failure",
        "Notify failure",
    ]
    plan = layout(machine, path=path)

    [own] = [e for e in plan.edges if (e.source, e.target) == ("Copy to TEST", "Prepare failure")]
    assert own.kind == "catch"
    [group] = [e for e in plan.edges if e.group]
    assert "Copy to TEST" not in group.group
    assert len(group.group) == 6
    svg = render_svg(machine, {}, path)
    assert 'class="edge taken" data-kind="catch" data-from="Copy to TEST"' in svg
    assert 'id="on-error-prepare-failure"' in svg


def _run(name: str, kind: str, status: str, at: int, seconds: float | None) -> StateRun:
    start = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=at)
    end = start + timedelta(seconds=seconds) if seconds is not None else None
    return StateRun(name, kind, status, entered=start, exited=end)  # type: ignore[arg-type]


def rejected_at_test() -> tuple[dict[str, StateRun], list[str]]:
    path = [
        "Resolve repository",
        "Already promoted?",
        "Wait for TEST approval",
        "TEST approval rejected",
        "Notify failure",
        "Promotion failed",
    ]
    spec = definition("promotion")["States"]
    states = {n: StateRun(n, s["Type"]) for n, s in spec.items()}
    states["Resolve repository"] = _run("Resolve repository", "Task", "succeeded", 0, 2.5)
    states["Already promoted?"] = _run("Already promoted?", "Choice", "succeeded", 3, 0)
    states["Wait for TEST approval"] = _run("Wait for TEST approval", "Task", "caught", 3, 40)
    states["Wait for TEST approval"].error = "ApprovalRejected"
    states["TEST approval rejected"] = _run("TEST approval rejected", "Pass", "succeeded", 44, 0)
    states["Notify failure"] = _run("Notify failure", "Task", "succeeded", 44, 1.2)
    states["Promotion failed"] = _run("Promotion failed", "Fail", "failed", 46, None)
    return states, path


def test_svg_has_a_box_per_state_with_its_status_and_the_path() -> None:
    states, path = rejected_at_test()
    svg = render_svg(definition("promotion"), states, path)

    root = ElementTree.fromstring(svg)  # noqa: S314 - our own output
    groups = {g.get("data-state"): g for g in root.iter(f"{SVG}g") if g.get("data-state")}
    assert set(groups) == set(definition("promotion")["States"])
    assert groups["Wait for TEST approval"].get("id") == "state-wait-for-test-approval"
    assert groups["Wait for TEST approval"].get("data-status") == "caught"
    assert groups["Promotion failed"].get("data-status") == "failed"
    assert groups["Copy to TEST"].get("data-status") == "not-reached"
    taken = {
        (p.get("data-from"), p.get("data-to"))
        for p in root.iter(f"{SVG}path")
        if "taken" in (p.get("class") or "")
    }
    assert taken == set(itertools.pairwise(path))
    catches = [p for p in root.iter(f"{SVG}path") if p.get("data-kind") == "catch"]
    assert catches
    assert all(p.get("stroke-dasharray") for p in catches)
    assert "ApprovalRejected" in svg
    assert "waiting for approval" in svg  # the legend


def test_svg_escapes_names_and_labels() -> None:
    hostile = {
        "StartAt": "<b>&start",
        "States": {
            "<b>&start": {
                "Type": "Task",
                "Next": 'say "hi"',
                "Catch": [{"ErrorEquals": ["<Err>"], "Next": 'say "hi"'}],
            },
            'say "hi"': {"Type": "Succeed"},
        },
    }
    svg = render_svg(hostile, {}, [], link=lambda n: f"?state={n}")

    root = ElementTree.fromstring(svg)  # noqa: S314 - well-formed
    assert "<b>" not in svg
    assert "&lt;b&gt;&amp;start" in svg
    assert "&lt;Err&gt;" in svg
    assert 'say "hi"' not in svg
    named = {g.get("data-state") for g in root.iter(f"{SVG}g") if g.get("data-state")}
    assert named == {"<b>&start", 'say "hi"'}
    links = {a.get("href") for a in root.iter(f"{SVG}a")}
    assert links == {"?state=<b>&start", '?state=say "hi"'}
    assert re.search(r'id="state-b-start"', svg)


def test_slugs_are_unique() -> None:
    machine = {
        "StartAt": "A b",
        "States": {"A b": {"Type": "Pass", "Next": "a-b"}, "a-b": {"Type": "Succeed"}},
    }
    svg = render_svg(machine, {}, [])
    assert 'id="state-a-b"' in svg
    assert 'id="state-a-b-2"' in svg
    assert slug("Wait for PROD approval") == "wait-for-prod-approval"


def _tree(text: str) -> list[tuple[str, str, str]]:
    """(marker, status, tree part) per line: the status column is 20 wide."""
    return [(line[0], line[2:22].strip(), line[23:]) for line in text.splitlines()]


def test_text_shows_the_main_path_the_branches_and_the_loop() -> None:
    states, path = rejected_at_test()
    machine = definition("promotion")
    text = render_text(machine, states, path)
    rows = _tree(text)

    named = [tree for _, status, tree in rows if status]
    names = [re.sub(r"^[ │├└]*(?:.* → )?", "", t).split("  ")[0].removesuffix(" ⚠") for t in named]
    assert sorted(names) == sorted(machine["States"])  # each state once
    main = [n for n, t in zip(names, named, strict=True) if not t.startswith((" ", "├", "└"))]
    assert main == MAIN_PATH["promotion"]
    trees = [tree for _, _, tree in rows]
    choice = next(i for i, t in enumerate(trees) if t.startswith("Already promoted?"))
    below = trees[choice + 1]
    assert below == "├ already_promoted not null → Already promoted"
    check = next(i for i, t in enumerate(trees) if t.strip().startswith("Check tests"))
    assert trees[check].startswith("   ")  # inside the branch of Tests finished?
    assert trees[check + 1].strip() == "↺ loop back to Tests finished?"
    assert any(
        t.startswith("⚠ on error States.ALL from 7 states: Resolve repository") for t in trees
    )
    assert "└ Prepare failure" in trees
    [waiting] = [r for r in rows if r[2].startswith("Wait for TEST approval")]
    assert waiting[0] == "*"
    assert waiting[1] == "caught"
    assert "ApprovalRejected" in waiting[2]
    [resolved] = [r for r in rows if r[2].startswith("Resolve repository")]
    assert resolved[2].endswith("2.5s")


def test_text_shows_control_characters_instead_of_sending_them() -> None:
    machine = {
        "StartAt": "A\x1b[31mred",
        "States": {"A\x1b[31mred": {"Type": "Succeed"}},
    }
    text = render_text(machine, {}, [])
    assert "\x1b" not in text
    assert "A\\x1b[31mred" in text


def test_works_on_states_from_a_history() -> None:
    machine = definition("rollback")
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    events = [
        {"id": 1, "type": "ExecutionStarted", "timestamp": t0},
        {
            "id": 2,
            "type": "TaskStateEntered",
            "timestamp": t0,
            "stateEnteredEventDetails": {"name": "Roll back PROD", "input": "{}"},
        },
    ]
    states, path = states_of(machine, events, "RUNNING")

    svg = render_svg(machine, states, path)
    assert 'data-status="running"' in svg
    [line] = [x for x in render_text(machine, states, path).splitlines() if "Roll back PROD" in x]
    assert "running" in line


def test_without_dot_the_svg_fails_with_one_clear_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no dot on it
    machine = {"StartAt": "Only", "States": {"Only": {"Type": "Succeed", "Comment": "no dot"}}}

    with pytest.raises(GraphvizMissing) as failure:
        render_svg(machine, {}, [])
    assert str(failure.value) == (
        "the graph needs Graphviz 'dot', which is not installed (Debian: apt-get install graphviz)"
    )
    assert "Only" in render_text(machine, {}, [])  # the terminal shape needs no dot
