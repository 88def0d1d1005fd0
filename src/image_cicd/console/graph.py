"""A state machine drawn from its ASL definition, with each state's status.

- `edges(definition)`: every transition — `Next`, each `Choices[].Next`, `Default`
  and `Catch` (labelled with the error names it catches).
- `layout(definition)`: positions from Graphviz `dot` (the `graphviz` Debian package,
  run as a subprocess; only the console and the CLI draw graphs, Lambda never does).
  Drawn as the Step Functions console draws it: the main path (`StartAt` to a Succeed
  state along Next/Choices/Default) one straight column, branches beside it, the poll
  loop an edge back up. A Catch that several states share (the `States.ALL` → one
  failure handler) is one "on error" box with one edge to its target, not an edge
  from every state; the states it covers are in its tooltip and marked `⚠` in their
  boxes. A catch the execution took is drawn on its own, as part of the path.
- `render_svg(definition, states, path)`: a standalone SVG with a legend, from the
  template web/templates/graph/state_graph.svg (autoescaped); every state is a
  `<g id="state-<slug>" data-status="...">`, every edge a `<path data-kind=...>`, and
  the path the execution took is drawn darker. Names never reach `dot` (nodes are
  `n0, n1, …`, labels are placeholders of the right length).
- `render_text(definition, states, path)`: the shape for a terminal — the main path
  top to bottom, each branch indented under the state it leaves, joins and the loop
  back marked.

`states` and `path` are what `image_cicd.console.history.states_of` / `view` return.
"""

from __future__ import annotations

import functools
import itertools
import json
import re
import shutil
import subprocess
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from image_cicd.console.history import StateRun
from image_cicd.web import render

__all__ = [
    "STATUS_COLOURS",
    "Box",
    "Edge",
    "GraphvizMissing",
    "Layout",
    "Transition",
    "edges",
    "format_seconds",
    "layout",
    "render_svg",
    "render_text",
    "slug",
    "status_key",
    "status_label",
]

EdgeKind = Literal["next", "choice", "default", "catch"]

BOX_WIDTH = 178.0
BOX_HEIGHT = 46.0
JUNCTION_WIDTH = 150.0
JUNCTION_HEIGHT = 24.0
MARGIN = 24.0
LEGEND_HEIGHT = 44.0
POINTS_PER_INCH = 72.0  # dot's unit; one point is drawn as one pixel

# status -> (fill, stroke, text colour)
STATUS_COLOURS: dict[str, tuple[str, str, str]] = {
    "succeeded": ("#e3f4e7", "#1a7f37", "#0f3d1c"),
    "failed": ("#fde7e7", "#c62828", "#5c1010"),
    "caught": ("#fff0de", "#c96a00", "#5a3000"),
    "running": ("#e6efff", "#2457c5", "#0f2a66"),
    "waiting": ("#fff6c7", "#9a6700", "#4d3300"),
    "not reached": ("#f5f6f8", "#b3bac6", "#6b7383"),
}
_LABELS = {"waiting": "waiting for approval"}
_EDGE_PLAIN = "#aab2bf"
_EDGE_TAKEN = "#1d2330"


def status_label(status: str) -> str:
    """The words for a status ("waiting" is "waiting for approval")."""
    return _LABELS.get(status, status)


def status_key(status: str) -> str:
    """A status as an attribute value or CSS class: `not reached` -> `not-reached`."""
    return status.replace(" ", "-")


def slug(name: str) -> str:
    """`Wait for TEST approval` -> `wait-for-test-approval` (for element ids)."""
    text = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return text or "state"


def _slugs(names: Sequence[str]) -> dict[str, str]:
    """A unique slug per state name, in definition order."""
    taken: dict[str, int] = {}
    result: dict[str, str] = {}
    for name in names:
        base = slug(name)
        count = taken.get(base, 0) + 1
        taken[base] = count
        result[name] = base if count == 1 else f"{base}-{count}"
    return result


# --------------------------------------------------------------------------- edges


@dataclass(frozen=True)
class Transition:
    source: str
    target: str
    kind: EdgeKind
    label: str = ""


_OPERATORS = {
    "Equals": "=",
    "LessThanEquals": "≤",
    "GreaterThanEquals": "≥",
    "LessThan": "<",
    "GreaterThan": ">",
    "Matches": "~",
}


def _rule_label(rule: Mapping[str, Any], index: int) -> str:
    """A short text for a Choice rule: `status = RUNNING`."""
    variable = str(rule.get("Variable", ""))
    tail = re.split(r"[.\[\]$]+", variable.strip("$."))[-1] if variable else ""
    for key, value in rule.items():
        if key in ("Variable", "Next", "Comment") or not isinstance(key, str):
            continue
        if key == "IsPresent" or key.startswith("Is"):
            return f"{tail} {key[2:].lower()}" if value else f"{tail} not {key[2:].lower()}"
        for suffix, symbol in _OPERATORS.items():
            if key.endswith(suffix) or key.endswith(suffix + "Path"):
                shown = value if isinstance(value, str) else repr(value).lower()
                return f"{tail} {symbol} {shown}".strip()
    return f"rule {index + 1}"


def edges(definition: Mapping[str, Any]) -> list[Transition]:
    """Every transition of the definition, in definition order (unknown targets skipped)."""
    states: Mapping[str, Any] = definition.get("States", {})
    found: list[Transition] = []
    for name, spec in states.items():
        if not isinstance(spec, Mapping):
            continue
        candidates: list[Transition] = []
        if isinstance(spec.get("Next"), str):
            candidates.append(Transition(name, spec["Next"], "next"))
        for index, rule in enumerate(spec.get("Choices") or []):
            if isinstance(rule, Mapping) and isinstance(rule.get("Next"), str):
                candidates.append(
                    Transition(name, rule["Next"], "choice", _rule_label(rule, index))
                )
        if isinstance(spec.get("Default"), str):
            candidates.append(Transition(name, spec["Default"], "default", "default"))
        for catcher in spec.get("Catch") or []:
            if isinstance(catcher, Mapping) and isinstance(catcher.get("Next"), str):
                errors = ", ".join(str(e) for e in catcher.get("ErrorEquals") or [])
                candidates.append(Transition(name, catcher["Next"], "catch", errors))
        found.extend(t for t in candidates if t.target in states)
    return found


# -------------------------------------------------------------------------- layout


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


@dataclass(frozen=True)
class _Shape:
    """What the layout and the terminal drawing both need: the main path, the loops,
    and which catches are shared (one "on error" group per target and error names)."""

    specs: Mapping[str, Mapping[str, Any]]
    transitions: list[Transition]
    main: tuple[str, ...]
    back: frozenset[tuple[str, str]]
    groups: dict[tuple[str, str], tuple[str, ...]]  # (target, errors) -> sources


def _shape(definition: Mapping[str, Any], keep: Sequence[str] = ()) -> _Shape:
    """`keep`: a path taken; a catch on it is drawn on its own, not in a group."""
    specs = {n: s for n, s in definition.get("States", {}).items() if isinstance(s, Mapping)}
    names = list(specs)
    start = definition.get("StartAt")
    transitions = edges(definition)
    main = _spine(names, start, specs, transitions)
    main_next = dict(itertools.pairwise(main))
    out: dict[str, list[str]] = {n: [] for n in names}
    for t in sorted(
        transitions, key=lambda t: (main_next.get(t.source) != t.target, t.kind == "catch")
    ):
        out[t.source].append(t.target)
    _, back = _walk(names, start, out)
    taken = set(itertools.pairwise(keep))
    shared: dict[tuple[str, str], list[str]] = {}
    for t in transitions:
        if t.kind == "catch" and (t.source, t.target) not in taken:
            shared.setdefault((t.target, t.label), []).append(t.source)
    groups = {key: tuple(sources) for key, sources in shared.items() if len(sources) > 1}
    return _Shape(specs, transitions, tuple(main), frozenset(back), groups)


def _grouped(shape: _Shape, t: Transition) -> bool:
    return t.kind == "catch" and t.source in shape.groups.get((t.target, t.label), ())


def _inches(points: float) -> str:
    return f"{points / POINTS_PER_INCH:.3f}"


def _placeholder(text: str) -> str:
    """Label space for dot without handing it the text: as many `n`s as characters."""
    return "n" * min(len(text), 34)


_Drawn = Transition | tuple[str, str]  # a transition, or a group's (target, errors)


def _dot_source(shape: _Shape) -> tuple[str, dict[str, str], list[_Drawn]]:
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
        if not _grouped(shape, t):
            into[t.target] = into.get(t.target, 0) + 1
    for t in shape.transitions:
        if _grouped(shape, t):
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


@functools.lru_cache(maxsize=64)
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
    shape = _shape(definition, path)
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


def _walk(
    names: Sequence[str], start: str | None, out: Mapping[str, Sequence[str]]
) -> tuple[list[str], set[tuple[str, str]]]:
    """Depth-first from StartAt (then any unreached state): discovery order, back edges."""
    order: list[str] = []
    back: set[tuple[str, str]] = set()
    colour: dict[str, int] = {}  # 1 on the stack, 2 done
    roots = ([start] if start is not None and start in names else []) + list(names)
    for root in roots:
        if root in colour:
            continue
        colour[root] = 1
        order.append(root)
        stack: list[tuple[str, int]] = [(root, 0)]
        while stack:
            node, index = stack[-1]
            if index >= len(out[node]):
                colour[node] = 2
                stack.pop()
                continue
            stack[-1] = (node, index + 1)
            nxt = out[node][index]
            state = colour.get(nxt, 0)
            if state == 1:
                back.add((node, nxt))
            elif state == 0:
                colour[nxt] = 1
                order.append(nxt)
                stack.append((nxt, 0))
    return order, back


def _spine(
    names: Sequence[str],
    start: str | None,
    specs: Mapping[str, Any],
    transitions: Sequence[Transition],
) -> list[str]:
    """The main line: the longest path along Next/Choices/Default from StartAt,
    preferring one that ends in a Succeed state (drawn as a straight column)."""
    if start is None or start not in names:
        return []
    normal: dict[str, list[str]] = {n: [] for n in names}
    for t in transitions:
        if t.kind != "catch" and t.target not in normal[t.source]:
            normal[t.source].append(t.target)
    _, back = _walk(names, start, normal)
    best: dict[str, tuple[tuple[int, int], list[str]]] = {}

    def end_rank(name: str) -> int:
        kind = specs[name].get("Type")
        return 2 if kind == "Succeed" else 0 if kind == "Fail" else 1

    for name in reversed(_walk(names, start, normal)[0]):  # successors before predecessors
        options = [
            ((best[m][0][0], best[m][0][1] + 1), [name, *best[m][1]])
            for m in normal[name]
            if (name, m) not in back and m in best
        ]
        choice = ((end_rank(name), 1), [name])
        for option in options:
            if option[0] > choice[0]:
                choice = option
        best[name] = choice
    return best[start][1]


# ---------------------------------------------------------------------- rendering


def _fit(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def format_seconds(value: float | None) -> str:
    """`2.8s`, `3m 05s`, `2h 10m` (empty for None)."""
    if value is None:
        return ""
    if value < 60:
        return f"{value:.1f}s"
    minutes, secs = divmod(int(value), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def _clock(value: datetime | None) -> str:
    return f"{value:%H:%M:%S}" if value is not None else ""


def _timing(run: StateRun | None) -> str:
    if run is None or run.entered is None:
        return ""
    if run.seconds is not None:
        return format_seconds(run.seconds)
    return f"since {_clock(run.entered)}"


def _path_pairs(path: Sequence[str]) -> set[tuple[str, str]]:
    return set(itertools.pairwise(path))


def _legend() -> tuple[list[dict[str, Any]], float]:
    """The legend's items left to right (a status box, a line, or text) and its width."""
    items: list[dict[str, Any]] = []
    at = MARGIN
    for status, (fill, stroke, _) in STATUS_COLOURS.items():
        label = status_label(status)
        items.append({"x": at, "fill": fill, "stroke": stroke, "label": label})
        at += 20 + 6.8 * len(label) + 22
    for label, colour, width, dash in (
        ("path taken", _EDGE_TAKEN, 2.5, False),
        ("Catch (error names)", _EDGE_PLAIN, 1.5, True),
    ):
        items.append(
            {"x": at, "fill": "", "stroke": colour, "width": width, "dash": dash, "label": label}
        )
        at += 32 + 6.8 * len(label) + 22
    note = "↻ Retry  ⚠ in an 'on error' box"
    items.append({"x": at, "fill": "", "stroke": "", "label": note})
    return items, round(at + 6.8 * len(note), 1)


def _d(points: Sequence[tuple[float, float]]) -> str:
    """dot's spline (start, then three points per cubic segment) and a line to the tip."""
    (x0, y0), rest = points[0], points[1:]
    parts = [f"M{x0:g},{y0:g}"]
    usable = len(rest) - len(rest) % 3
    for i in range(0, usable, 3):
        parts.append("C" + " ".join(f"{x:g},{y:g}" for x, y in rest[i : i + 3]))
    parts += [f"L{x:g},{y:g}" for x, y in rest[usable:]]
    return " ".join(parts)


def _tooltip(name: str, status: str, spec: Mapping[str, Any], run: StateRun | None) -> str:
    lines = [f"{name}: {status_label(status)}"]
    if spec.get("Retry"):
        lines.append(
            "Retry: "
            + "; ".join(
                ", ".join(str(e) for e in r.get("ErrorEquals") or [])
                + f" x{r.get('MaxAttempts', 3)}"
                for r in spec["Retry"]
                if isinstance(r, Mapping)
            )
        )
    for catcher in spec.get("Catch") or []:
        if isinstance(catcher, Mapping):
            errors = ", ".join(str(e) for e in catcher.get("ErrorEquals") or [])
            lines.append(f"Catch: {errors} → {catcher.get('Next')}")
    if run is not None and run.error:
        lines.append(f"{run.error}")
    return "\n".join(lines)


def _meta(kind: str, spec: Mapping[str, Any], run: StateRun | None, grouped: bool) -> str:
    meta = [kind + (" ↻" if spec.get("Retry") else "") + (" ⚠" if grouped else "")]
    if run is not None and run.retries:
        meta.append(f"retried {run.retries}x")
    if run is not None and run.visits > 1:
        meta.append(f"{run.visits} visits")
    timing = _timing(run)
    if timing:
        meta.append(timing)
    if spec.get("End") or kind in ("Succeed", "Fail"):
        meta.append("end")
    return " · ".join(meta)


def _edge_view(edge: Edge, is_taken: bool) -> dict[str, Any]:
    label = "↺ loop back" if edge.back else edge.label
    source = f"on error ({len(edge.group)} states)" if edge.group else edge.source
    text = _fit(label, 34)
    return {
        "classes": "edge" + (" taken" if is_taken else "") + (" loop" if edge.back else ""),
        "kind": edge.kind,
        "source": source,
        "target": edge.target,
        "sources": " | ".join(edge.group),
        "d": _d(edge.points),
        "colour": _EDGE_TAKEN if is_taken else _EDGE_PLAIN,
        "width": 2.5 if is_taken else 1.5,
        "dash": edge.kind == "catch",
        "marker": "taken" if is_taken else "plain",
        "title": f"{source} → {edge.target}" + (f": {label}" if label else ""),
        "label": {
            "x": edge.label_at[0],
            "y": edge.label_at[1],
            "w": round(6.1 * len(text) + 8, 1),
            "text": text,
            "tone": "#8a4b00" if edge.kind == "catch" else "#3d4554",
        }
        if label and edge.label_at is not None
        else None,
    }


def render_svg(
    definition: Mapping[str, Any],
    states: Mapping[str, StateRun],
    path: Sequence[str],
    *,
    link: Callable[[str], str] | None = None,
    selected: str | None = None,
    title: str | None = None,
) -> str:
    """The graph as a standalone SVG document, from web/templates/graph/state_graph.svg
    (autoescaped: no name, label or error becomes markup).

    `link(name)` makes each state a link (e.g. to its details); `selected` outlines
    one state. Raises `GraphvizMissing` without Graphviz `dot`.
    """
    plan = layout(definition, path=path)
    specs: Mapping[str, Any] = definition.get("States", {})
    ids = _slugs(list(plan.positions))
    taken = _path_pairs(path)
    on_path = set(path)
    grouped = {name for edge in plan.edges for name in edge.group}
    legend, legend_width = _legend()
    boxes = []
    for name, box in plan.positions.items():
        run = states.get(name)
        status = run.status if run is not None else "not reached"
        fill, stroke, ink = STATUS_COLOURS.get(status, STATUS_COLOURS["not reached"])
        spec = specs.get(name, {})
        kind = str(spec.get("Type", run.type if run else ""))
        classes = f"state status-{status_key(status)}"
        classes += (" on-path" if name in on_path else "") + (" main" if name in plan.main else "")
        boxes.append(
            {
                "slug": ids[name],
                "classes": classes,
                "name": name,
                "status": status_key(status),
                "type": kind,
                "title": _tooltip(name, status, spec, run),
                "link": link(name) if link is not None else "",
                "selected": name == selected,
                "x": box.x,
                "y": box.y,
                "width": box.width,
                "height": box.height,
                "rx": 22 if kind in ("Succeed", "Fail") else 8,
                "fill": fill,
                "stroke": stroke,
                "ink": ink,
                "thick": 2.5 if name in on_path else 1.2,
                "label": _fit(name, 25),
                "meta": _fit(_meta(kind, spec, run, name in grouped), 32),
            }
        )
    junctions = [
        {
            "slug": slug(edge.target),
            "target": edge.target,
            "sources": " | ".join(edge.group),
            "count": len(edge.group),
            "title": f"on {edge.label} from {len(edge.group)} states:\n"
            + "\n".join(f"  {n}" for n in edge.group),
            "x": plan.junctions[edge.source].x,
            "y": plan.junctions[edge.source].y,
            "width": plan.junctions[edge.source].width,
            "height": plan.junctions[edge.source].height,
        }
        for edge in plan.edges
        if edge.group
    ]
    return render(
        "graph/state_graph.svg",
        width=max(plan.width, legend_width + MARGIN),
        height=plan.height,
        title=title or definition.get("Comment") or "state machine",
        markers=[("plain", _EDGE_PLAIN), ("taken", _EDGE_TAKEN)],
        top=MARGIN,
        legend=legend,
        edges=[
            _edge_view(e, (e.source, e.target) in taken)
            for e in sorted(plan.edges, key=lambda e: (e.source, e.target) in taken)
        ],
        junctions=junctions,
        states=boxes,
    )


def _plain(text: str) -> str:
    """Terminal-safe: control and format characters (an escape sequence in a state
    name from the ASL, an error from outside) are shown, not sent to the terminal."""
    return "".join(
        ch.encode("unicode_escape").decode() if unicodedata.category(ch)[0] == "C" else ch
        for ch in text
    )


def render_text(
    definition: Mapping[str, Any], states: Mapping[str, StateRun], path: Sequence[str]
) -> str:
    """The graph's shape for a terminal, one line per state with its status, timing,
    retries and error (`*`: on the path taken). The main path runs down the left; a
    branch is indented under the state it leaves (`├ <label> →`); a branch that
    reaches a state shown elsewhere says `→ <state> (above)` / `(below)`, the loop
    `↺ loop back to <state>`; shared catches ("on error") come last, once each."""
    shape = _shape(definition, path)
    on_path = set(path)
    main = set(shape.main)
    grouped = {name for sources in shape.groups.values() for name in sources}
    leaving: dict[str, list[Transition]] = {}
    for t in shape.transitions:
        if not _grouped(shape, t):
            leaving.setdefault(t.source, []).append(t)
    lines: list[str] = []
    shown: set[str] = set()

    def state_line(name: str, prefix: str) -> None:
        run = states.get(name)
        status = run.status if run is not None else "not reached"
        notes = [_timing(run)]
        if run is not None and run.retries:
            notes.append(f"retried {run.retries}x")
        if run is not None and run.visits > 1:
            notes.append(f"{run.visits} visits")
        if run is not None and run.error:
            notes.append(_plain(run.error))
        marker = "*" if name in on_path else " "
        flag = " ⚠" if name in grouped else ""
        lines.append(
            f"{marker} {status_label(status):<20} {prefix}{_plain(name)}{flag}  "
            + "  ".join(n for n in notes if n)
        )

    def note_line(prefix: str, text: str) -> None:
        lines.append(f"  {'':<20} {prefix}{text}")

    def branches(name: str, primary: str | None, depth: int, trail: list[str]) -> None:
        for t in leaving.get(name, []):
            if t.target != primary:
                label = _plain(t.label or t.kind)
                chain(t.target, depth, f"{'   ' * (depth - 1)}├ {label} → ", trail)

    def chain(name: str, depth: int, head: str, trail: list[str]) -> None:
        """`name` and the states after it (Next, else Default, else a choice)."""
        trail = list(trail)
        current: str | None = name
        prefix = head
        while current is not None:
            if current in trail:
                note_line(prefix, f"↺ loop back to {_plain(current)}")
                return
            if current in shown or current in main:
                where = "above" if current in shown else "below"
                note_line(prefix, f"→ {_plain(current)} ({where})")
                return
            shown.add(current)
            trail.append(current)
            state_line(current, prefix)
            prefix = "   " * depth
            out = leaving.get(current, [])
            nexts = [t for t in out if t.kind == "next"] + [t for t in out if t.kind != "catch"]
            primary = nexts[0].target if nexts else None
            branches(current, primary, depth + 1, trail)
            current = primary

    for index, name in enumerate(shape.main):
        shown.add(name)
        state_line(name, "")
        following = shape.main[index + 1] if index + 1 < len(shape.main) else None
        branches(name, following, 1, list(shape.main[: index + 1]))
    for (target, label), sources in shape.groups.items():
        names = ", ".join(_plain(s) for s in sources)
        note_line("", f"⚠ on error {_plain(label)} from {len(sources)} states: {names}")
        chain(target, 1, "└ ", [])
    for name in shape.specs:
        if name not in shown:
            chain(name, 0, "", [])
    return "\n".join(line.rstrip() for line in lines) + "\n"
