"""CloudFormation's intrinsic functions (Ref, Fn::GetAtt, Fn::Sub, Fn::If, ...) and
pseudo parameters, evaluated against the local stack's values for `deployer`."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

REGION = "us-east-1"
ACCOUNT = "123456789012"


class DeployError(RuntimeError):
    pass


class Resolver:
    """Evaluates the intrinsic functions the template uses, against local values."""

    def __init__(
        self,
        template: Mapping[str, Any],
        params: Mapping[str, Any],
        stack_name: str,
        refs: Mapping[str, str],
        attrs: Mapping[tuple[str, str], str],
    ) -> None:
        self.params = params
        self.refs = refs
        self.attrs = attrs
        self.pseudo = {
            "AWS::Region": REGION,
            "AWS::AccountId": ACCOUNT,
            "AWS::StackName": stack_name,
            "AWS::Partition": "aws",
            "AWS::URLSuffix": "amazonaws.com",
            "AWS::NoValue": None,
        }
        self.conditions: dict[str, bool] = {}
        for name, expr in (template.get("Conditions") or {}).items():
            self.conditions[name] = bool(self.value(expr))

    def ref(self, name: str) -> Any:
        for table in (self.params, self.pseudo, self.refs):
            if name in table:
                return table[name]
        raise DeployError(f"Ref to unknown name {name!r}")

    def value(self, node: Any) -> Any:
        if isinstance(node, list):
            return [v for v in (self.value(n) for n in node) if v is not _NO_VALUE]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            ((key, arg),) = node.items()
            handler = self._functions.get(key)
            if handler is not None:
                return handler(self, arg)
        out = {}
        for key, val in node.items():
            resolved = self.value(val)
            if resolved is not _NO_VALUE:
                out[key] = resolved
        return out

    def _ref(self, arg: Any) -> Any:
        value = self.ref(str(self.value(arg)))
        return _NO_VALUE if value is None else value

    def _get_att(self, arg: Any) -> Any:
        if isinstance(arg, str):
            arg = arg.split(".", 1)
        logical, attr = str(self.value(arg[0])), str(self.value(arg[1]))
        try:
            return self.attrs[(logical, attr)]
        except KeyError:
            raise DeployError(f"Fn::GetAtt {logical}.{attr} has no local value") from None

    def _sub(self, arg: Any) -> str:
        text, names = (arg, {}) if isinstance(arg, str) else (arg[0], self.value(arg[1]))

        def one(match: re.Match[str]) -> str:
            name = match.group(1)
            if name.startswith("!"):
                return "${" + name[1:] + "}"
            if name in names:
                return str(names[name])
            if "." in name:
                logical, attr = name.split(".", 1)
                return str(self._get_att([logical, attr]))
            value = self.ref(name)
            return ",".join(value) if isinstance(value, list) else str(value)

        return re.sub(r"\$\{([^}]+)\}", one, text)

    def _join(self, arg: Any) -> str:
        sep, items = arg
        values = self.value(items)
        return str(sep).join(str(v) for v in values)

    def _if(self, arg: Any) -> Any:
        name, yes, no = arg
        return self.value(yes if self.conditions[name] else no)

    def _equals(self, arg: Any) -> bool:
        a, b = (self.value(x) for x in arg)
        return bool(a == b)

    def _not(self, arg: Any) -> bool:
        return not self.value(arg[0])

    def _and(self, arg: Any) -> bool:
        return all(self.value(x) for x in arg)

    def _or(self, arg: Any) -> bool:
        return any(self.value(x) for x in arg)

    def _condition(self, arg: Any) -> bool:
        return self.conditions[str(arg)]

    def _select(self, arg: Any) -> Any:
        index, items = arg
        return self.value(items)[int(self.value(index))]

    def _split(self, arg: Any) -> list[str]:
        sep, text = arg
        return str(self.value(text)).split(sep)

    _functions: dict[str, Callable[[Resolver, Any], Any]] = {
        "Ref": _ref,
        "Fn::GetAtt": _get_att,
        "Fn::Sub": _sub,
        "Fn::Join": _join,
        "Fn::If": _if,
        "Fn::Equals": _equals,
        "Fn::Not": _not,
        "Fn::And": _and,
        "Fn::Or": _or,
        "Condition": _condition,
        "Fn::Select": _select,
        "Fn::Split": _split,
    }


_NO_VALUE: Any = object()
