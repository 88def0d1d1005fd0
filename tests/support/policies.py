"""The IAM statements a SAM resource gets from template.yaml: its inline statements and
those of the AWS::IAM::ManagedPolicy resources its Policies attach by Ref (policy
templates such as SNSPublishMessagePolicy are not statements and are left out)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def attached_statements(
    template: Mapping[str, Any], properties: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """Every statement of ``properties["Policies"]``, managed policies followed."""
    resources = template["Resources"]
    out: list[dict[str, Any]] = []
    for policy in as_list(properties.get("Policies", [])):
        if isinstance(policy, dict) and "Statement" in policy:
            out.extend(as_list(policy["Statement"]))
        elif isinstance(policy, dict) and set(policy) == {"Ref"}:
            managed = resources[policy["Ref"]]
            assert managed["Type"] == "AWS::IAM::ManagedPolicy", policy
            out.extend(as_list(managed["Properties"]["PolicyDocument"]["Statement"]))
    return out
