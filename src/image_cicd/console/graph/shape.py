"""What a state machine's graph is made of, read from its ASL definition: every
transition, the main path, the loop, and the catches several states share; the
status words and colours and the timing texts both drawings use."""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from image_cicd.console.history import StateRun

EdgeKind = Literal["next", "choice", "default", "catch"]

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


def slugs(names: Sequence[str]) -> dict[str, str]:
    """A unique slug per state name, in definition order."""
    taken: dict[str, int] = {}
    result: dict[str, str] = {}
    for name in names:
        base = slug(name)
        count = taken.get(base, 0) + 1
        taken[base] = count
        result[name] = base if count == 1 else f"{base}-{count}"
    return result


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


@dataclass(frozen=True)
class Shape:
    """What the layout and the terminal drawing both need: the main path, the loops,
    and which catches are shared (one "on error" group per target and error names)."""

    specs: Mapping[str, Mapping[str, Any]]
    transitions: list[Transition]
    main: tuple[str, ...]
    back: frozenset[tuple[str, str]]
    groups: dict[tuple[str, str], tuple[str, ...]]  # (target, errors) -> sources


def read_shape(definition: Mapping[str, Any], keep: Sequence[str] = ()) -> Shape:
    """`keep`: a path taken; a catch on it is drawn on its own, not in a group."""
    specs = {n: s for n, s in definition.get("States", {}).items() if isinstance(s, Mapping)}
    names = list(specs)
    start = definition.get("StartAt")
    transitions = edges(definition)
    main = _spine(names, start, specs, transitions)
    main_next = dict(itertools.pairwise(main))
    out: dict[str, list[str]] = {n: [] for n in names}
    for t in sorted(
        transitions,
        key=lambda t: (main_next.get(t.source) != t.target, t.kind == "catch"),
    ):
        out[t.source].append(t.target)
    _, back = _walk(names, start, out)
    taken = set(itertools.pairwise(keep))
    shared: dict[tuple[str, str], list[str]] = {}
    for t in transitions:
        if t.kind == "catch" and (t.source, t.target) not in taken:
            shared.setdefault((t.target, t.label), []).append(t.source)
    groups = {key: tuple(sources) for key, sources in shared.items() if len(sources) > 1}
    return Shape(specs, transitions, tuple(main), frozenset(back), groups)


def is_grouped(shape: Shape, t: Transition) -> bool:
    return t.kind == "catch" and t.source in shape.groups.get((t.target, t.label), ())


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


def fit(text: str, limit: int) -> str:
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


def timing(run: StateRun | None) -> str:
    if run is None or run.entered is None:
        return ""
    if run.seconds is not None:
        return format_seconds(run.seconds)
    return f"since {_clock(run.entered)}"


def path_pairs(path: Sequence[str]) -> set[tuple[str, str]]:
    return set(itertools.pairwise(path))
