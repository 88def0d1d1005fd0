"""Positions from Graphviz `dot` (the `graphviz` Debian package, run as a subprocess;
only the console and the CLI draw graphs, Lambda never does). State names never
reach `dot`: nodes are `n0, n1, …`, labels placeholders of the right length."""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from image_cicd.console.graph.shape import (
    EdgeKind,
    Shape,
    Transition,
    is_grouped,
    read_shape,
)

BOX_WIDTH = 178.0
BOX_HEIGHT = 46.0
JUNCTION_WIDTH = 150.0
JUNCTION_HEIGHT = 24.0
MARGIN = 24.0
LEGEND_HEIGHT = 44.0
POINTS_PER_INCH = 72.0  # dot's unit; one point is drawn as one pixel


class GraphvizMissing(RuntimeError):
    """Graphviz `dot` is not installed (or failed): the graph cannot be laid out."""


@dataclass(frozen=True)
class Box:
    """A state's box (or an "on error" box): top-left corner and size."""

    name: str
    x: float
    y: float
    width: float
    height: float

    @property
    def centre(self) -> float:
        return self.x + self.width / 2

    @property
    def middle(self) -> float:
        return self.y + self.height / 2


@dataclass(frozen=True)
class Edge:
    source: str  # a state, or the "on error" box of `group`
    target: str
    kind: EdgeKind
    label: str
    back: bool  # goes back up: the loop
    points: tuple[tuple[float, float], ...]  # a cubic B-spline, then the arrow's tip
    label_at: tuple[float, float] | None = None
    group: tuple[str, ...] = ()  # the states an "on error" edge stands for


@dataclass(frozen=True)
class Layout:
    positions: dict[str, Box]
    edges: list[Edge] = field(default_factory=list)
    width: float = 0.0
    height: float = 0.0
    main: tuple[str, ...] = ()  # the main path, top to bottom
    junctions: dict[str, Box] = field(default_factory=dict)  # "on error" boxes


def _inches(points: float) -> str:
    return f"{points / POINTS_PER_INCH:.3f}"


def _placeholder(text: str) -> str:
    """Label space for dot without handing it the text: as many `n`s as characters."""
    return "n" * min(len(text), 34)


_Drawn = Transition | tuple[str, str]  # a transition, or a group's (target, errors)


def _dot_source(shape: Shape) -> tuple[str, dict[str, str], list[_Drawn]]:
    """The graph in the DOT language, the DOT id of every state and junction, and
    what each DOT edge is, in the order they are written (dot's edge ids)."""
    ids = {name: f"n{i}" for i, name in enumerate(shape.specs)}
    main = set(shape.main)
    main_pairs = set(itertools.pairwise(shape.main))
    lines = [
        "digraph g {",
        "graph [rankdir=TB, nodesep=0.45, ranksep=0.42, splines=spline, newrank=true];",
        f"node [shape=box, fixedsize=true, width={_inches(BOX_WIDTH)}, "
        f'height={_inches(BOX_HEIGHT)}, label=""];',
        "edge [fontsize=10.5, arrowsize=0.7];",
    ]
    lines += [f"{ids[n]} [group=main];" if n in main else f"{ids[n]};" for n in shape.specs]
    order: list[_Drawn] = []
    into: dict[str, int] = {}
    for t in shape.transitions:
        if not is_grouped(shape, t):
            into[t.target] = into.get(t.target, 0) + 1
    for t in shape.transitions:
        if is_grouped(shape, t):
            continue
        attrs = [f'label="{_placeholder(t.label or "loop")}"'] if t.label else []
        if (t.source, t.target) in shape.back:
            attrs = ['label="nnnnnnnnn"']  # room for "↺ loop back"
        if (t.source, t.target) in main_pairs and t.kind != "catch":
            attrs.append("weight=20")
        if into[t.target] > 2 and t.target not in main:
            attrs.append("samehead=join")  # many edges into one handler meet at one point
        attrs.append(f"id=e{len(order)}")
        lines.append(f"{ids[t.source]} -> {ids[t.target]} [{', '.join(attrs)}];")
        order.append(t)
    for number, ((target, label), sources) in enumerate(shape.groups.items()):
        junction = f"j{number}"
        ids[f"\0{number}"] = junction
        lines.append(
            f"{junction} [width={_inches(JUNCTION_WIDTH)}, height={_inches(JUNCTION_HEIGHT)}];"
        )
        lines += [f"{ids[s]} -> {junction} [style=invis, weight=0];" for s in sources]
        lines.append(
            f'{junction} -> {ids[target]} [label="{_placeholder(label)}", id=e{len(order)}];'
        )
        order.append((target, label))
    lines.append("}")
    return "\n".join(lines), ids, order


def _run_dot(source: str) -> dict[str, Any]:
    dot = shutil.which("dot")
    if dot is None:
        raise GraphvizMissing(
            "the graph needs Graphviz 'dot', which is not installed "
            "(Debian: apt-get install graphviz)"
        )
    done = subprocess.run(  # the fixed program, the graph on stdin
        [dot, "-Tjson0"], input=source, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        first = (done.stderr.strip().splitlines() or ["no message"])[0]
        raise GraphvizMissing(f"Graphviz 'dot' failed: {first}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def _point(text: str) -> tuple[float, float]:
    x, y = text.split(",")[-2:]
    return float(x), float(y)


def layout(definition: Mapping[str, Any], *, path: Sequence[str] = ()) -> Layout:
    """Positions of every state (and the route of every edge) for `definition`.

    Deterministic: the same definition always gives the same layout. `path`: the
    path an execution took (its catches are drawn on their own).
    """
    shape = read_shape(definition, path)
    if not shape.specs:
        return Layout(positions={}, width=2 * MARGIN, height=2 * MARGIN + LEGEND_HEIGHT)
    source, ids, order = _dot_source(shape)
    drawn = _run_dot(source)
    _, _, right, top = (float(v) for v in drawn["bb"].split(","))
    names = {dot_id: name for name, dot_id in ids.items()}
    above = MARGIN + LEGEND_HEIGHT

    def place(x: float, y: float) -> tuple[float, float]:  # dot's y grows upwards
        return round(x + MARGIN, 1), round(top - y + above, 1)

    positions: dict[str, Box] = {}
    junctions: dict[str, Box] = {}
    for obj in drawn.get("objects", []):
        name = names[obj["name"]]
        cx, cy = place(*_point(obj["pos"]))
        w = float(obj["width"]) * POINTS_PER_INCH
        h = float(obj["height"]) * POINTS_PER_INCH
        box = Box(name, round(cx - w / 2, 1), round(cy - h / 2, 1), w, h)
        (junctions if name.startswith("\0") else positions)[name] = box
    junction_of = {key: f"\0{i}" for i, key in enumerate(shape.groups)}
    routed: list[Edge] = []
    for drawn_edge in drawn.get("edges", []):
        if "id" not in drawn_edge:
            continue  # an invisible edge that only ranks an "on error" box
        what = order[int(drawn_edge["id"][1:])]
        parts = drawn_edge["pos"].split()
        tip = [place(*_point(p)) for p in parts if p.startswith("e,")]
        spline = [place(*_point(p)) for p in parts if not p.startswith(("e,", "s,"))]
        points = tuple(spline + tip)
        at = place(*_point(drawn_edge["lp"])) if "lp" in drawn_edge else None
        if isinstance(what, Transition):
            back = (what.source, what.target) in shape.back
            routed.append(Edge(what.source, what.target, what.kind, what.label, back, points, at))
        else:
            target, label = what
            group = shape.groups[what]
            routed.append(Edge(junction_of[what], target, "catch", label, False, points, at, group))
    positions = {n: positions[n] for n in shape.specs}
    return Layout(
        positions,
        routed,
        round(right + 2 * MARGIN, 1),
        round(top + 2 * MARGIN + LEGEND_HEIGHT, 1),
        shape.main,
        junctions,
    )
