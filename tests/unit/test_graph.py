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

from image_cicd.console.graph import edges, layout, render_svg, render_text, slug
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
    boxes = list(plan.positions.values())
    for i, a in enumerate(boxes):
        assert a.x >= 0
        assert a.x + a.width <= plan.width
        assert a.y >= 0
        assert a.y + a.height <= plan.height
        for b in boxes[i + 1 :]:
            assert not overlaps(a, b), (a.name, b.name)
    assert plan.positions[machine["StartAt"]].layer == 0


def test_layout_is_deterministic(machine: dict[str, Any]) -> None:
    assert layout(machine) == layout(json.loads(json.dumps(machine)))


def test_layers_follow_the_transitions(machine: dict[str, Any]) -> None:
    plan = layout(machine)
    for edge in plan.edges:
        source, target = plan.positions[edge.source], plan.positions[edge.target]
        if edge.back:
            assert target.layer < source.layer, edge
        else:
            assert target.layer > source.layer, edge


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


def test_the_main_line_is_one_column() -> None:
    plan = layout(definition("promotion"))
    main = [
        "Receive input",
        "Resolve repository",
        "Already promoted?",
        "Wait for TEST approval",
        "Copy to TEST",
        "Run tests",
    ]
    assert len({plan.positions[n].x for n in main}) == 1
    assert [plan.positions[n].layer for n in main] == [0, 1, 2, 3, 4, 5]


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

    ElementTree.fromstring(svg)  # noqa: S314 - well-formed
    assert "<b>" not in svg
    assert "&lt;b&gt;&amp;start" in svg
    assert "&lt;Err&gt;" in svg
    assert "say &quot;hi&quot;" in svg
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


def test_text_lists_the_path_first_with_status_and_timing() -> None:
    states, path = rejected_at_test()
    text = render_text(definition("promotion"), states, path)

    lines = text.splitlines()
    assert len(lines) == len(definition("promotion")["States"])
    assert [line.split()[-1] for line in lines[:1]] == ["2.5s"]
    assert "Already promoted?" in lines[1]
    assert "caught" in lines[2]
    assert "ApprovalRejected" in lines[2]
    assert "failed" in lines[5]
    assert "Promotion failed" in lines[5]
    assert "not reached" in text
    assert all(line.startswith("*") for line in lines[: len(path)])


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
    assert "running" in render_text(machine, states, path).splitlines()[0]
