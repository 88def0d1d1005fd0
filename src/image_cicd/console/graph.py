"""A state machine drawn from its ASL definition, with each state's status.

Pure functions, no external libraries:

- `edges(definition)`: every transition — `Next`, each `Choices[].Next`, `Default`
  and `Catch` (labelled with the error names it catches).
- `layout(definition)`: a deterministic layered layout. Layers are longest paths from
  `StartAt` (loops are broken where a depth-first walk finds them); edges that skip
  layers are routed through the layers in between, and states are ordered inside a
  layer to cross as few edges as this simple method finds.
- `render_svg(definition, states, path)`: a standalone SVG with a legend; every state
  is a `<g id="state-<slug>" data-status="...">`, every edge a `<path data-kind=...>`,
  and the path the execution took is drawn darker.
- `render_text(definition, states, path)`: the same for a terminal.

`states` and `path` are what `image_cicd.console.history.states_of` / `view` return.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from html import escape
from typing import Any, Literal

from image_cicd.console.history import StateRun

__all__ = [
    "STATUS_COLOURS",
    "Box",
    "Edge",
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
COLUMN_GAP = 34.0
LAYER_GAP = 56.0
DUMMY_WIDTH = 8.0
MARGIN = 24.0
LEGEND_HEIGHT = 44.0

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


@dataclass(frozen=True)
class Box:
    """A state's box: top-left corner, size, and its layer and column."""

    name: str
    x: float
    y: float
    width: float
    height: float
    layer: int
    column: int

    @property
    def centre(self) -> float:
        return self.x + self.width / 2


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    kind: EdgeKind
    label: str
    back: bool  # goes up: a loop
    points: tuple[tuple[float, float], ...]


@dataclass(frozen=True)
class Layout:
    positions: dict[str, Box]
    edges: list[Edge] = field(default_factory=list)
    width: float = 0.0
    height: float = 0.0
    layers: int = 0


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


def _crossings(layers: Sequence[Sequence[str]], links: Sequence[tuple[str, str]]) -> int:
    where = {n: (i, j) for i, layer in enumerate(layers) for j, n in enumerate(layer)}
    by_layer: dict[int, list[tuple[int, int]]] = {}
    for a, b in links:
        (la, pa), (_, pb) = where[a], where[b]
        by_layer.setdefault(la, []).append((pa, pb))
    total = 0
    for pairs in by_layer.values():
        for i, (a1, b1) in enumerate(pairs):
            for a2, b2 in pairs[i + 1 :]:
                if (a1 - a2) * (b1 - b2) < 0:
                    total += 1
    return total


def _is_dummy(node: str) -> bool:
    return node.startswith("\0")


def _width(node: str) -> float:
    return DUMMY_WIDTH if _is_dummy(node) else BOX_WIDTH


def _gap(a: str, b: str) -> float:
    """Distance between the centres of neighbours in a layer."""
    extra = COLUMN_GAP / 2 if _is_dummy(a) or _is_dummy(b) else COLUMN_GAP
    return _width(a) / 2 + _width(b) / 2 + extra


def _place_layer(
    layer: Sequence[str],
    x: dict[str, float],
    want: Mapping[str, float],
    priority: Mapping[str, int],
) -> None:
    """Move each node towards `want`, highest priority first; lower-priority nodes are
    pushed aside, higher-priority ones are never moved (Sugiyama's priority method)."""
    count = len(layer)
    pos = [x[n] for n in layer]
    fixed = [False] * count
    for j in sorted(range(count), key=lambda j: (-priority[layer[j]], j)):
        target = want[layer[j]]
        for k in range(count):
            if not fixed[k]:
                continue
            low, high = min(j, k), max(j, k)
            span = sum(_gap(layer[q], layer[q + 1]) for q in range(low, high))
            target = max(target, pos[k] + span) if k < j else min(target, pos[k] - span)
        pos[j] = target
        fixed[j] = True
        for q in range(j - 1, -1, -1):
            pos[q] = min(pos[q], pos[q + 1] - _gap(layer[q], layer[q + 1]))
        for q in range(j + 1, count):
            pos[q] = max(pos[q], pos[q - 1] + _gap(layer[q - 1], layer[q]))
    for n, value in zip(layer, pos, strict=True):
        x[n] = value


def layout(definition: Mapping[str, Any]) -> Layout:
    """Positions of every state (and the route of every edge) for `definition`.

    Deterministic: the same definition always gives the same layout.
    """
    specs: Mapping[str, Any] = {
        n: s for n, s in definition.get("States", {}).items() if isinstance(s, Mapping)
    }
    names = list(specs)
    if not names:
        return Layout(positions={}, width=2 * MARGIN, height=2 * MARGIN + LEGEND_HEIGHT)
    start = definition.get("StartAt")
    transitions = edges(definition)
    spine = _spine(names, start, specs, transitions)
    spine_next = dict(itertools.pairwise(spine))

    # Walk order: the main line first, then other Next/Choice edges, then Catch.
    out: dict[str, list[str]] = {n: [] for n in names}
    for t in sorted(
        transitions,
        key=lambda t: (spine_next.get(t.source) != t.target, t.kind == "catch"),
    ):
        out[t.source].append(t.target)
    order, back = _walk(names, start, out)
    rank = {n: i for i, n in enumerate(order)}

    # Longest-path layers along the forward edges (a DAG once loops are cut).
    preds: dict[str, list[str]] = {n: [] for n in names}
    for t in transitions:
        if (t.source, t.target) not in back and t.source != t.target:
            preds[t.target].append(t.source)
    layer_of: dict[str, int] = {}
    topo = _topological(names, preds, order)
    for name in topo:
        layer_of[name] = max((layer_of[p] + 1 for p in preds[name]), default=0)

    # Every edge becomes a chain from its upper to its lower end, with one routing
    # point per layer it passes (loops are drawn upwards along their chain).
    nodes_in: list[list[str]] = [[] for _ in range(max(layer_of.values()) + 1)]
    for name in sorted(names, key=lambda n: rank[n]):
        nodes_in[layer_of[name]].append(name)
    key: dict[str, float] = {n: float(rank[n]) for n in names}
    chains: list[tuple[Transition, list[str], bool]] = []
    links: list[tuple[str, str]] = []
    spine_nodes = set(spine)
    spine_pairs = set(itertools.pairwise(spine))
    for number, t in enumerate(transitions):
        if t.source == t.target:
            continue
        upward = (t.source, t.target) in back
        upper, lower = (t.target, t.source) if upward else (t.source, t.target)
        chain = [upper]
        for level in range(layer_of[upper] + 1, layer_of[lower]):
            dummy = f"\0{number}:{level}"
            key[dummy] = rank[upper] + 0.5
            nodes_in[level].append(dummy)
            chain.append(dummy)
        chain.append(lower)
        if (t.source, t.target) in spine_pairs and t.kind != "catch":
            spine_pairs.discard((t.source, t.target))
            spine_nodes.update(chain)
        links.extend(itertools.pairwise(chain))
        chains.append((t, chain, upward))
    layers = [sorted(layer, key=lambda n: key[n]) for layer in nodes_in]

    # Order inside layers: barycentre sweeps, keeping the order with fewest crossings.
    above: dict[str, list[str]] = {}
    below: dict[str, list[str]] = {}
    for a, b in links:
        below.setdefault(a, []).append(b)
        above.setdefault(b, []).append(a)
    best = [list(layer) for layer in layers]
    best_crossings = _crossings(best, links)
    for sweep in range(8):
        downward = sweep % 2 == 0
        indices = range(1, len(layers)) if downward else range(len(layers) - 2, -1, -1)
        for i in indices:
            ref = {n: j for j, n in enumerate(layers[i - 1] if downward else layers[i + 1])}
            neighbours = above if downward else below
            scored = []
            for j, n in enumerate(layers[i]):
                linked = [ref[m] for m in neighbours.get(n) or [] if m in ref]
                scored.append((sum(linked) / len(linked) if linked else float(j), j, n))
            layers[i] = [n for _, _, n in sorted(scored)]
        crossings = _crossings(layers, links)
        if crossings < best_crossings:
            best, best_crossings = [list(layer) for layer in layers], crossings
    layers = best
    improved = True
    while improved:  # transpose: swap neighbours while that removes crossings
        improved = False
        for layer in layers:
            for j in range(len(layer) - 1):
                layer[j], layer[j + 1] = layer[j + 1], layer[j]
                crossings = _crossings(layers, links)
                if crossings < best_crossings:
                    best_crossings, improved = crossings, True
                else:
                    layer[j], layer[j + 1] = layer[j + 1], layer[j]

    # x: the main line is a straight column; routing points keep long edges straight;
    # every other state moves towards the middle of its neighbours.
    priority = {n: 3 if n in spine_nodes else 2 if _is_dummy(n) else 1 for n in key}
    x: dict[str, float] = {}
    for layer in layers:
        at = 0.0
        for j, n in enumerate(layer):
            at += _gap(layer[j - 1], n) if j else 0.0
            x[n] = at
    for sweep in range(7):
        downward = sweep % 2 == 0
        indices = range(1, len(layers)) if downward else range(len(layers) - 2, -1, -1)
        neighbours = above if downward else below
        for i in indices:
            want = {}
            for n in layers[i]:
                close = neighbours.get(n) or []
                if n in spine_nodes:
                    close = [m for m in close if m in spine_nodes] or close
                want[n] = sum(x[m] for m in close) / len(close) if close else x[n]
            _place_layer(layers[i], x, want, priority)
    left = min(x[n] - _width(n) / 2 for n in x)
    right = max(x[n] + _width(n) / 2 for n in x)

    def shift(value: float) -> float:
        return round(value - left + MARGIN, 1)

    row = BOX_HEIGHT + LAYER_GAP
    top = MARGIN + LEGEND_HEIGHT
    positions: dict[str, Box] = {}
    for i, layer in enumerate(layers):
        for j, n in enumerate(layer):
            if not _is_dummy(n):
                positions[n] = Box(
                    n, shift(x[n] - BOX_WIDTH / 2), top + i * row, BOX_WIDTH, BOX_HEIGHT, i, j
                )
    positions = {n: positions[n] for n in names}

    # Ports: the edges at a box's bottom (top) side are spread out, ordered by where
    # they go, so they do not cross right at the box.
    bottom: dict[str, list[tuple[float, int]]] = {}
    tops: dict[str, list[tuple[float, int]]] = {}
    for index, (_, chain, _) in enumerate(chains):
        bottom.setdefault(chain[0], []).append((x[chain[1]], index))
        tops.setdefault(chain[-1], []).append((x[chain[-2]], index))

    def port(box: Box, slots: list[tuple[float, int]], index: int) -> float:
        """Towards where the edge goes, at least 12 px from the next port."""
        reach = box.width / 2 - 18
        spots = [
            (min(reach, max(-reach, (shift(toward) - box.centre) * 0.3)), i) for toward, i in slots
        ]
        spots.sort()
        placed: list[float] = []
        for offset, _ in spots:
            placed.append(max(offset, placed[-1] + 12) if placed else offset)
        overflow = max(0.0, placed[-1] - reach)
        k = [i for _, i in spots].index(index)
        return round(box.centre + placed[k] - overflow, 1)

    routed: list[Edge] = []
    for index, (t, chain, upward) in enumerate(chains):
        high, low = positions[chain[0]], positions[chain[-1]]
        points: list[tuple[float, float]] = [
            (port(high, bottom[chain[0]], index), high.y + high.height)
        ]
        for dummy in chain[1:-1]:
            level_top = top + int(dummy.rsplit(":", 1)[1]) * row
            points += [(shift(x[dummy]), level_top), (shift(x[dummy]), level_top + BOX_HEIGHT)]
        points.append((port(low, tops[chain[-1]], index), low.y))
        if upward:
            points.reverse()
        routed.append(Edge(t.source, t.target, t.kind, t.label, upward, tuple(points)))
    for t in transitions:
        if t.source == t.target:
            box = positions[t.source]
            loop = ((box.x + box.width, box.y + 14), (box.x + box.width, box.y + 36))
            routed.append(Edge(t.source, t.target, t.kind, t.label, True, loop))

    width = right - left + 2 * MARGIN
    height = 2 * MARGIN + LEGEND_HEIGHT + len(layers) * row - LAYER_GAP
    return Layout(positions, routed, round(width, 1), round(height, 1), len(layers))


def _topological(
    names: Sequence[str], preds: Mapping[str, Sequence[str]], order: Sequence[str]
) -> list[str]:
    """Kahn's algorithm, ties broken by walk order (deterministic)."""
    rank = {n: i for i, n in enumerate(order)}
    waiting = {n: len(set(preds[n])) for n in names}
    succs: dict[str, set[str]] = {n: set() for n in names}
    for n in names:
        for p in set(preds[n]):
            succs[p].add(n)
    ready = sorted((n for n in names if waiting[n] == 0), key=lambda n: rank[n])
    result: list[str] = []
    while ready:
        n = ready.pop(0)
        result.append(n)
        for m in sorted(succs[n], key=lambda m: rank[m]):
            waiting[m] -= 1
            if waiting[m] == 0:
                ready.append(m)
        ready.sort(key=lambda n: rank[n])
    return result


# ---------------------------------------------------------------------- rendering


def _e(value: object) -> str:
    return escape(str(value), quote=True)


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


def _curve(points: Sequence[tuple[float, float]]) -> str:
    """Vertical cubic segments through the points (straight down through layers)."""
    (x0, y0), rest = points[0], points[1:]
    parts = [f"M{x0:g},{y0:g}"]
    for x1, y1 in rest:
        if x1 == x0:
            parts.append(f"L{x1:g},{y1:g}")
        else:
            dy = (y1 - y0) / 2
            parts.append(f"C{x0:g},{y0 + dy:g} {x1:g},{y1 - dy:g} {x1:g},{y1:g}")
        x0, y0 = x1, y1
    return " ".join(parts)


def _loop(points: Sequence[tuple[float, float]]) -> str:
    (x0, y0), (x1, y1) = points[0], points[-1]
    bulge = max(x0, x1) + 48
    return f"M{x0:g},{y0:g} C{bulge:g},{y0:g} {bulge:g},{y1:g} {x1 + 2:g},{y1:g}"


def _label_at(edge: Edge) -> tuple[float, float]:
    if edge.source == edge.target:
        (x0, y0), (_, y1) = edge.points[0], edge.points[-1]
        return x0 + 40, (y0 + y1) / 2
    (x0, y0), (x1, y1) = edge.points[0], edge.points[1]
    return (x0 + x1) / 2, y0 + (y1 - y0) * 0.45


def _legend() -> tuple[str, float]:
    items = [*STATUS_COLOURS.items()]
    parts = []
    at = MARGIN
    for status, (fill, stroke, _) in items:
        label = status_label(status)
        parts.append(
            f'<rect x="{at:g}" y="{MARGIN:g}" width="14" height="14" rx="3" fill="{fill}" '
            f'stroke="{stroke}" stroke-width="1.5"/>'
            f'<text x="{at + 20:g}" y="{MARGIN + 11.5:g}" font-size="12" fill="#3d4554">'
            f"{_e(label)}</text>"
        )
        at += 20 + 6.8 * len(label) + 22
    y = MARGIN + 7
    parts.append(
        f'<path d="M{at:g},{y:g} h26" stroke="{_EDGE_TAKEN}" stroke-width="2.5"/>'
        f'<text x="{at + 32:g}" y="{MARGIN + 11.5:g}" font-size="12" fill="#3d4554">path taken'
        "</text>"
    )
    at += 32 + 6.8 * 10 + 22
    parts.append(
        f'<path d="M{at:g},{y:g} h26" stroke="{_EDGE_PLAIN}" stroke-width="1.5" '
        f'stroke-dasharray="5 4"/>'
        f'<text x="{at + 32:g}" y="{MARGIN + 11.5:g}" font-size="12" fill="#3d4554">'
        "Catch (error names)</text>"
    )
    at += 32 + 6.8 * 19 + 22
    parts.append(
        f'<text x="{at:g}" y="{MARGIN + 11.5:g}" font-size="12" fill="#3d4554">↻ Retry</text>'
    )
    return f'<g class="legend">{"".join(parts)}</g>', at + 6.8 * 7


def render_svg(
    definition: Mapping[str, Any],
    states: Mapping[str, StateRun],
    path: Sequence[str],
    *,
    link: Callable[[str], str] | None = None,
    selected: str | None = None,
    title: str | None = None,
) -> str:
    """The graph as a standalone SVG document (all text escaped).

    `link(name)` makes each state a link (e.g. to its details); `selected` outlines
    one state.
    """
    plan = layout(definition)
    specs: Mapping[str, Any] = definition.get("States", {})
    ids = _slugs(list(plan.positions))
    taken = _path_pairs(path)
    on_path = set(path)
    legend, legend_width = _legend()
    width = max(plan.width, legend_width + MARGIN)
    out: list[str] = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="state-graph" role="img" '
        f'width="{width:g}" height="{plan.height:g}" viewBox="0 0 {width:g} {plan.height:g}" '
        'font-family="system-ui,-apple-system,Segoe UI,Roboto,sans-serif">',
        f"<title>{_e(title or definition.get('Comment') or 'state machine')}</title>",
        "<defs>"
        + "".join(
            f'<marker id="arrow-{name}" viewBox="0 0 10 10" refX="9" refY="5" '
            f'markerUnits="userSpaceOnUse" markerWidth="9" markerHeight="9" orient="auto">'
            f'<path d="M0,0 L10,5 L0,10 z" fill="{colour}"/></marker>'
            for name, colour in (("plain", _EDGE_PLAIN), ("taken", _EDGE_TAKEN))
        )
        + "</defs>",
        legend,
    ]
    labels: list[str] = []
    for edge in sorted(plan.edges, key=lambda e: (e.source, e.target) in taken):
        is_taken = (edge.source, edge.target) in taken
        colour = _EDGE_TAKEN if is_taken else _EDGE_PLAIN
        dash = ' stroke-dasharray="5 4"' if edge.kind == "catch" else ""
        d = _loop(edge.points) if edge.source == edge.target else _curve(edge.points)
        out.append(
            f'<path class="edge{" taken" if is_taken else ""}" data-kind="{edge.kind}" '
            f'data-from="{_e(edge.source)}" data-to="{_e(edge.target)}" d="{d}" fill="none" '
            f'stroke="{colour}" stroke-width="{2.5 if is_taken else 1.5}"{dash} '
            f'marker-end="url(#arrow-{"taken" if is_taken else "plain"})">'
            f"<title>{_e(edge.source)} → {_e(edge.target)}"
            f"{': ' + _e(edge.label) if edge.label else ''}</title></path>"
        )
        if edge.label:
            lx, ly = _label_at(edge)
            text = _fit(edge.label, 34)
            w = 6.1 * len(text) + 8
            tone = "#8a4b00" if edge.kind == "catch" else "#3d4554"
            labels.append(
                f'<g class="edge-label" data-kind="{edge.kind}">'
                f'<rect x="{lx - w / 2:g}" y="{ly - 8:g}" width="{w:g}" height="15" rx="3" '
                f'fill="#ffffff" fill-opacity="0.92"/>'
                f'<text x="{lx:g}" y="{ly + 3.5:g}" font-size="10.5" text-anchor="middle" '
                f'fill="{tone}">{_e(text)}</text></g>'
            )
    out.extend(labels)
    for name, box in plan.positions.items():
        run = states.get(name)
        status = run.status if run is not None else "not reached"
        fill, stroke, ink = STATUS_COLOURS.get(status, STATUS_COLOURS["not reached"])
        spec = specs.get(name, {})
        kind = str(spec.get("Type", run.type if run else ""))
        meta = [kind + (" ↻" if spec.get("Retry") else "")]
        if run is not None and run.retries:
            meta.append(f"retried {run.retries}x")
        if run is not None and run.visits > 1:
            meta.append(f"{run.visits} visits")
        timing = _timing(run)
        if timing:
            meta.append(timing)
        if spec.get("End") or kind in ("Succeed", "Fail"):
            meta.append("end")
        tooltip = [f"{name}: {status_label(status)}"]
        if spec.get("Retry"):
            tooltip.append(
                "Retry: "
                + "; ".join(
                    ", ".join(str(e) for e in r.get("ErrorEquals") or [])
                    + f" x{r.get('MaxAttempts', 3)}"
                    for r in spec["Retry"]
                    if isinstance(r, Mapping)
                )
            )
        if run is not None and run.error:
            tooltip.append(f"{run.error}")
        thick = 2.5 if name in on_path else 1.2
        rx = 22 if kind in ("Succeed", "Fail") else 8
        shape = (
            f'<rect x="{box.x:g}" y="{box.y:g}" width="{box.width:g}" height="{box.height:g}" '
            f'rx="{rx}" fill="{fill}" stroke="{stroke}" stroke-width="{thick}"/>'
        )
        if kind == "Choice":
            shape += (
                f'<path d="M{box.x + 12:g},{box.y + box.height / 2:g} l7,-7 l7,7 l-7,7 z" '
                f'fill="none" stroke="{stroke}" stroke-width="1.3"/>'
            )
        if name == selected:
            shape = (
                f'<rect x="{box.x - 4:g}" y="{box.y - 4:g}" width="{box.width + 8:g}" '
                f'height="{box.height + 8:g}" rx="{rx + 3}" fill="none" stroke="#2457c5" '
                f'stroke-width="2" stroke-dasharray="4 3"/>' + shape
            )
        group = (
            f'<g id="state-{ids[name]}" class="state status-{status_key(status)}'
            f'{" on-path" if name in on_path else ""}" data-state="{_e(name)}" '
            f'data-status="{status_key(status)}" data-type="{_e(kind)}">'
            f"<title>{_e(chr(10).join(tooltip))}</title>{shape}"
            f'<text x="{box.centre:g}" y="{box.y + 19:g}" text-anchor="middle" font-size="12.5" '
            f'font-weight="600" fill="{ink}">{_e(_fit(name, 25))}</text>'
            f'<text x="{box.centre:g}" y="{box.y + 35:g}" text-anchor="middle" font-size="10.5" '
            f'fill="{ink}" fill-opacity="0.8">{_e(_fit(" · ".join(meta), 32))}</text></g>'
        )
        if link is not None:
            group = f'<a href="{_e(link(name))}" class="state-link">{group}</a>'
        out.append(group)
    out.append("</svg>")
    return "\n".join(out)


def render_text(
    definition: Mapping[str, Any], states: Mapping[str, StateRun], path: Sequence[str]
) -> str:
    """One line per state — the path taken first, in order, then the rest of the
    definition — with its status, timing, retries and error."""
    names = list(dict.fromkeys([*path, *definition.get("States", {}), *states]))
    width = max((len(n) for n in names), default=0)
    on_path = set(path)
    lines = []
    for name in names:
        run = states.get(name)
        status = run.status if run is not None else "not reached"
        notes = [_timing(run)]
        if run is not None and run.retries:
            notes.append(f"retried {run.retries}x")
        if run is not None and run.visits > 1:
            notes.append(f"{run.visits} visits")
        if run is not None and run.error:
            notes.append(run.error)
        marker = "*" if name in on_path else " "
        lines.append(
            f"{marker} {status_label(status):<20} {name:<{width}}  "
            + "  ".join(n for n in notes if n)
        )
    return "\n".join(line.rstrip() for line in lines) + "\n"
