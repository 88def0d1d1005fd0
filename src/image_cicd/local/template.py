"""Read ``template.yaml`` the way CloudFormation does, without AWS.

Two things are needed by the infrastructure tests and by the local deployer:

* :func:`load_template` parses a CloudFormation/SAM template in YAML (or JSON) with
  the short-form intrinsic tags (``!Ref``, ``!Sub``, ``!GetAtt`` ...) turned into
  their long form (``{"Ref": ...}``, ``{"Fn::Sub": ...}``, ``{"Fn::GetAtt": [...]}``),
  and without YAML 1.1 surprises (``2010-09-09`` stays a string).
* :func:`expand` applies the part of the ``AWS::LanguageExtensions`` transform this
  project uses: every ``Fn::ForEach::<Loop>`` key, wherever it appears in the
  ``Conditions``, ``Resources`` and ``Outputs`` sections (including inside resource
  properties, and nested loops), is replaced by one copy of its fragment per item of
  the collection, with ``${Identifier}`` replaced by the item and ``&{Identifier}``
  by the item without its non-alphanumeric characters, in keys and in every string
  value, and ``{"Ref": Identifier}`` replaced by the item.

The collection is a literal list or a ``Ref`` to a ``CommaDelimitedList`` (or
``List<...>``) parameter, whose value comes from ``parameters`` or the parameter's
``Default``. Nothing else of the transform (``Fn::Length``, ``Fn::ToJsonString``,
``DeletionPolicy`` intrinsics) is evaluated.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "FOREACH_PREFIX",
    "TemplateError",
    "alphanumeric",
    "expand",
    "load_template",
    "parameter_values",
]

FOREACH_PREFIX = "Fn::ForEach::"
_EXPANDABLE_SECTIONS = ("Conditions", "Resources", "Outputs")

# Short-form tag -> long-form key. ``!GetAtt`` and ``!Condition`` are special-cased.
_FUNCTIONS = (
    "And",
    "Base64",
    "Cidr",
    "Equals",
    "FindInMap",
    "GetAZs",
    "If",
    "ImportValue",
    "Join",
    "Length",
    "Not",
    "Or",
    "Select",
    "Split",
    "Sub",
    "ToJsonString",
    "Transform",
    "ValueOf",
    "ValueOfAll",
    "RefAll",
    "Contains",
    "EachMemberEquals",
    "EachMemberIn",
)


class TemplateError(ValueError):
    """The template cannot be read or expanded."""


class _CfnLoader(yaml.SafeLoader):
    """SafeLoader with CloudFormation tags and without implicit timestamps."""


# No YAML 1.1 timestamps: ``AWSTemplateFormatVersion: 2010-09-09`` must stay a string.
_CfnLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _construct(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    if isinstance(node, yaml.ScalarNode):
        return loader.construct_scalar(node)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node, deep=True)
    raise TemplateError(f"unsupported YAML node {node!r}")  # pragma: no cover


def _long_form(name: str) -> Any:
    def constructor(loader: yaml.SafeLoader, node: yaml.Node) -> dict[str, Any]:
        return {name: _construct(loader, node)}

    return constructor


def _get_att(loader: yaml.SafeLoader, node: yaml.Node) -> dict[str, Any]:
    value = _construct(loader, node)
    if isinstance(value, str):
        resource, _, attribute = value.partition(".")
        return {"Fn::GetAtt": [resource, attribute]}
    return {"Fn::GetAtt": value}


_CfnLoader.add_constructor("!Ref", _long_form("Ref"))
_CfnLoader.add_constructor("!Condition", _long_form("Condition"))
_CfnLoader.add_constructor("!GetAtt", _get_att)
for _name in _FUNCTIONS:
    _CfnLoader.add_constructor(f"!{_name}", _long_form(f"Fn::{_name}"))


def load_template(path: str | Path) -> dict[str, Any]:
    """Parse a CloudFormation template (YAML or JSON) into plain dicts and lists."""
    text = Path(path).read_text(encoding="utf-8")
    data = yaml.load(text, Loader=_CfnLoader)  # noqa: S506 - SafeLoader subclass
    if not isinstance(data, dict):
        raise TemplateError(f"{path}: a template is a mapping at the top level")
    return data


def alphanumeric(value: str) -> str:
    """What ``&{Identifier}`` becomes: the value without non-alphanumeric characters."""
    return re.sub(r"[^A-Za-z0-9]", "", value)


def parameter_values(
    template: Mapping[str, Any], parameters: Mapping[str, str | Sequence[str]] | None = None
) -> dict[str, str | list[str]]:
    """Effective parameter values: the given ones, else the template's defaults.

    List parameters (``CommaDelimitedList``, ``List<...>``) become lists of stripped
    strings; everything else stays a string. A parameter without a value and without a
    default is left out.
    """
    given = dict(parameters or {})
    declared: Mapping[str, Any] = template.get("Parameters") or {}
    unknown = set(given) - set(declared)
    if unknown:
        raise TemplateError(f"unknown parameters: {', '.join(sorted(unknown))}")
    values: dict[str, str | list[str]] = {}
    for name, spec in declared.items():
        if name in given:
            raw: Any = given[name]
        elif "Default" in spec:
            raw = spec["Default"]
        else:
            continue
        is_list = str(spec.get("Type", "String")).startswith(("CommaDelimitedList", "List<"))
        if is_list:
            items = raw.split(",") if isinstance(raw, str) else [str(item) for item in raw]
            values[name] = [item.strip() for item in items if item.strip()]
        else:
            if not isinstance(raw, str | int | float):
                raise TemplateError(f"parameter {name} must be a string, got {raw!r}")
            values[name] = str(raw)
    return values


def expand(
    template: Mapping[str, Any], parameters: Mapping[str, str | Sequence[str]] | None = None
) -> dict[str, Any]:
    """Return a copy of ``template`` with every ``Fn::ForEach`` expanded.

    ``parameters`` overrides the parameters' defaults (lists may be given as a list
    or as a comma-separated string). Raises :class:`TemplateError` on malformed loops,
    on collections that are not lists, and when two expansions produce the same key.
    """
    values = parameter_values(template, parameters)
    result: dict[str, Any] = copy.deepcopy(dict(template))
    for section in _EXPANDABLE_SECTIONS:
        if section in result and isinstance(result[section], dict):
            result[section] = _expand_node(result[section], values, section)
    return result


def _expand_node(node: Any, values: Mapping[str, str | list[str]], where: str) -> Any:
    if isinstance(node, list):
        return [_expand_node(item, values, where) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if isinstance(key, str) and key.startswith(FOREACH_PREFIX):
            for new_key, new_value in _expand_loop(key, value, values, where).items():
                _put(out, new_key, new_value, where)
        else:
            _put(out, key, _expand_node(value, values, f"{where}.{key}"), where)
    return out


def _put(out: dict[str, Any], key: str, value: Any, where: str) -> None:
    if key in out:
        raise TemplateError(f"{where}: Fn::ForEach produces the key {key!r} twice")
    out[key] = value


def _expand_loop(
    key: str, loop: Any, values: Mapping[str, str | list[str]], where: str
) -> dict[str, Any]:
    name = key[len(FOREACH_PREFIX) :]
    if not (isinstance(loop, list) and len(loop) == 3):
        raise TemplateError(f"{where}.{key}: expected [Identifier, Collection, Fragment]")
    identifier, collection, fragment = loop
    if not isinstance(identifier, str) or not re.fullmatch(r"[A-Za-z0-9]+", identifier):
        raise TemplateError(f"{where}.{key}: the identifier must be alphanumeric")
    if not isinstance(fragment, dict):
        raise TemplateError(f"{where}.{key}: the fragment must be a mapping")
    markers = (f"${{{identifier}}}", f"&{{{identifier}}}")
    for fragment_key in fragment:
        if not str(fragment_key).startswith(FOREACH_PREFIX) and not any(
            marker in str(fragment_key) for marker in markers
        ):
            raise TemplateError(
                f"{where}.{key}: the output key {fragment_key!r} must contain "
                f"{markers[0]} or {markers[1]}"
            )
    items = _collection(collection, values, f"{where}.{key}")
    out: dict[str, Any] = {}
    for item in items:
        substituted = _substitute(fragment, identifier, item)
        expanded = _expand_node(substituted, values, f"{where}.{name}[{item}]")
        for new_key, new_value in expanded.items():
            _put(out, new_key, new_value, where)
    return out


def _collection(collection: Any, values: Mapping[str, str | list[str]], where: str) -> list[str]:
    if isinstance(collection, list):
        return [str(item) for item in collection]
    if isinstance(collection, dict) and set(collection) == {"Ref"}:
        name = collection["Ref"]
        if name not in values:
            raise TemplateError(f"{where}: the collection refers to {name!r}, which has no value")
        value = values[name]
        if not isinstance(value, list):
            raise TemplateError(f"{where}: the collection {name!r} is not a list parameter")
        return list(value)
    raise TemplateError(f"{where}: unsupported collection {collection!r}")


def _substitute(node: Any, identifier: str, item: str) -> Any:
    if isinstance(node, str):
        return node.replace(f"${{{identifier}}}", item).replace(
            f"&{{{identifier}}}", alphanumeric(item)
        )
    if isinstance(node, list):
        return [_substitute(child, identifier, item) for child in node]
    if isinstance(node, dict):
        if set(node) == {"Ref"} and node["Ref"] == identifier:
            return item
        return {
            _substitute(key, identifier, item): _substitute(value, identifier, item)
            for key, value in node.items()
        }
    return node
