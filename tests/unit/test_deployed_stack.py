"""A stack deployed on AWS is found from its CloudFormation outputs (moto's CFN)."""

from __future__ import annotations

import json

import boto3
import pytest
from moto import mock_aws

from image_cicd.aws.stack import StackError, from_cloudformation

TEMPLATE = {
    "Parameters": {"RegistryUrl": {"Type": "String", "Default": ""}},
    "Resources": {"Topic": {"Type": "AWS::SNS::Topic"}},
    "Outputs": {
        "RepositoryNames": {"Value": "repo-1,repo-2"},
        "DevPrefix": {"Value": "ecr-dev"},
        "TestPrefix": {"Value": "ecr-test"},
        "ProdPrefix": {"Value": "ecr-prod"},
        "LedgerTableName": {"Value": "ledger"},
        "PromotionStateMachineArn": {"Value": "arn:aws:states:eu-west-1:1:stateMachine:p"},
        "RollbackStateMachineArn": {"Value": "arn:aws:states:eu-west-1:1:stateMachine:r"},
        "ApprovalBaseUrl": {"Value": "https://abc.execute-api.eu-west-1.amazonaws.com/"},
    },
}


def test_outputs_and_registry_come_from_the_stack() -> None:
    with mock_aws():
        boto3.client("cloudformation", region_name="eu-west-1").create_stack(
            StackName="image-cicd",
            TemplateBody=json.dumps(TEMPLATE),
            Parameters=[{"ParameterKey": "RegistryUrl", "ParameterValue": "http://r:5000"}],
        )

        target = from_cloudformation("image-cicd", region="eu-west-1")

        assert target.repositories == ["repo-1", "repo-2"]
        assert target.stage_repository("repo-2", "PROD") == "ecr-prod/repo-2"
        assert target.promotion_arn.endswith(":stateMachine:p")
        assert target.registry.base_url == "http://r:5000"
        assert target.ledger.table_name == "ledger"
        with pytest.raises(StackError, match="no output Nope"):
            target.output("Nope")


def test_an_unknown_stack_is_a_clear_error() -> None:
    with mock_aws(), pytest.raises(StackError, match="cannot read stack nope"):
        from_cloudformation("nope", region="eu-west-1")


def test_the_version_format_output_gives_the_scheme() -> None:
    from image_cicd.aws.stack import DeployedStack
    from image_cicd.registry.client import RegistryClient

    target = DeployedStack(
        "s", {"VersionFormat": "release-{minor}"}, lambda _s: None, RegistryClient("x")
    )
    assert target.scheme.next_after(["release-4"]) == "release-5"
    assert (
        DeployedStack("s", {}, lambda _s: None, RegistryClient("x")).scheme.format
        == "v{major}.{minor}"
    )
