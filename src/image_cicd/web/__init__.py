"""The pages' templates and their one stylesheet and script, as package data.

`render` fills a template of templates/ through one Jinja2 environment whose
autoescape is on for every template: a value is escaped unless a template marks it
otherwise, so no page has to remember to escape. static/ holds style.css (the
console serves it at /static/style.css, the approval pages inline it: they load
nothing) and console.js (the console's only script).
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup

__all__ = ["STATIC_TYPES", "render", "static_file"]

STATIC_TYPES = {
    "style.css": "text/css; charset=utf-8",
    "console.js": "text/javascript; charset=utf-8",
}


@cache
def static_file(name: str) -> bytes:
    """One of static/ (a name of STATIC_TYPES), as shipped with the package."""
    if name not in STATIC_TYPES:
        raise KeyError(name)
    return files(__package__).joinpath("static", name).read_bytes()


def _stylesheet() -> Markup:
    """The stylesheet's text, inlined by the approval pages (our file, not a value)."""
    return Markup(static_file("style.css").decode("utf-8"))  # noqa: S704 - our own file


@cache
def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader(__package__, "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.globals["stylesheet"] = _stylesheet
    return env


def render(template: str, **context: Any) -> str:
    """templates/`template` filled with `context`, every value escaped."""
    return _environment().get_template(template).render(**context)
