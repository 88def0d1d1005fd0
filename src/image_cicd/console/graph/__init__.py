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

from image_cicd.console.graph.layout import Box, Edge, GraphvizMissing, Layout, layout
from image_cicd.console.graph.shape import (
    STATUS_COLOURS,
    Transition,
    edges,
    format_seconds,
    slug,
    status_key,
    status_label,
)
from image_cicd.console.graph.svg import render_svg
from image_cicd.console.graph.text import render_text

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
