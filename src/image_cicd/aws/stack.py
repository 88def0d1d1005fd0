"""A deployed stack as the CLI sees it: outputs, AWS clients and its registry.

On AWS the outputs come from CloudFormation (`--stack NAME`); the embedded stack
writes the same outputs, resolved from the same template, into its state file.
Everything after that is one code path.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from image_cicd.ledger.store import Ledger
from image_cicd.promotion.versions import VersionScheme
from image_cicd.registry.client import RegistryClient
from image_cicd.stages import Stage


class StackError(Exception):
    pass


@dataclass
class DeployedStack:
    name: str
    outputs: dict[str, str]
    client: Callable[[str], Any]
    registry: RegistryClient

    def output(self, key: str) -> str:
        try:
            return self.outputs[key]
        except KeyError:
            raise StackError(f"stack {self.name} has no output {key}") from None

    @property
    def repositories(self) -> list[str]:
        return [r for r in self.output("RepositoryNames").split(",") if r]

    def stage_repository(self, name: str, stage: Stage) -> str:
        prefix = {"DEV": "DevPrefix", "TEST": "TestPrefix", "PROD": "ProdPrefix"}[stage]
        return f"{self.output(prefix)}/{name}"

    @property
    def scheme(self) -> VersionScheme:
        return VersionScheme(self.outputs.get("VersionFormat") or VersionScheme().format)

    @property
    def ledger(self) -> Ledger:
        return Ledger(self.output("LedgerTableName"), self.client("dynamodb"))

    @property
    def promotion_arn(self) -> str:
        return self.output("PromotionStateMachineArn")

    @property
    def rollback_arn(self) -> str:
        return self.output("RollbackStateMachineArn")


def from_cloudformation(stack_name: str, region: str | None = None) -> DeployedStack:
    """A stack deployed with `sam deploy`: outputs and parameters from CloudFormation."""
    import boto3

    from image_cicd.registry.connect import registry_from_url

    session = boto3.session.Session(region_name=region)
    try:
        stack = session.client("cloudformation").describe_stacks(StackName=stack_name)["Stacks"][0]
    except Exception as exc:
        raise StackError(f"cannot read stack {stack_name}: {exc}") from exc
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
    params = {p["ParameterKey"]: p.get("ParameterValue", "") for p in stack.get("Parameters", [])}
    return DeployedStack(
        name=stack_name,
        outputs=outputs,
        client=lambda service: session.client(service),  # type: ignore[call-overload]
        registry=registry_from_url(params.get("RegistryUrl", ""), session.client("ecr")),
    )
