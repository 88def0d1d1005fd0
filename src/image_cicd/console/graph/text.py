"""The graph's shape for a terminal."""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping, Sequence
from typing import Any

from image_cicd.console.graph.shape import (
    Transition,
    is_grouped,
    read_shape,
    status_label,
    timing,
)
from image_cicd.console.history import StateRun


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
    shape = read_shape(definition, path)
    on_path = set(path)
    main = set(shape.main)
    grouped = {name for sources in shape.groups.values() for name in sources}
    leaving: dict[str, list[Transition]] = {}
    for t in shape.transitions:
        if not is_grouped(shape, t):
            leaving.setdefault(t.source, []).append(t)
    lines: list[str] = []
    shown: set[str] = set()

    def state_line(name: str, prefix: str) -> None:
        run = states.get(name)
        status = run.status if run is not None else "not reached"
        notes = [timing(run)]
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
