"""The graph as a standalone SVG, from web/templates/graph/state_graph.svg (autoescaped:
no name, label or error becomes markup)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from image_cicd.console.graph.layout import MARGIN, Edge, layout
from image_cicd.console.graph.shape import (
    STATUS_COLOURS,
    fit,
    path_pairs,
    slug,
    slugs,
    status_key,
    status_label,
    timing,
)
from image_cicd.console.history import StateRun
from image_cicd.web import render

_EDGE_PLAIN = "#aab2bf"
_EDGE_TAKEN = "#1d2330"


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
            {
                "x": at,
                "fill": "",
                "stroke": colour,
                "width": width,
                "dash": dash,
                "label": label,
            }
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
    took = timing(run)
    if took:
        meta.append(took)
    if spec.get("End") or kind in ("Succeed", "Fail"):
        meta.append("end")
    return " · ".join(meta)


def _edge_view(edge: Edge, is_taken: bool) -> dict[str, Any]:
    label = "↺ loop back" if edge.back else edge.label
    source = f"on error ({len(edge.group)} states)" if edge.group else edge.source
    text = fit(label, 34)
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
    ids = slugs(list(plan.positions))
    taken = path_pairs(path)
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
                "label": fit(name, 25),
                "meta": fit(_meta(kind, spec, run, name in grouped), 32),
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
