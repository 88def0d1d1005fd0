"""Each function's policies allow what its code path calls, and no more.

The local stack enforces no IAM, so these checks are what stands between a
missing permission and an AccessDenied on AWS.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from support.policies import attached_statements

from image_cicd.local.template import expand, load_template

TEMPLATE = expand(load_template(Path(__file__).resolve().parents[2] / "template.yaml"))
LOCK = {"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem"}


def statements(function: str) -> list[dict[str, Any]]:
    """Inline statements and those of the managed policies the function attaches."""
    return attached_statements(TEMPLATE, TEMPLATE["Resources"][function]["Properties"])


def actions(function: str, service: str) -> set[str]:
    found: set[str] = set()
    for statement in statements(function):
        acts = statement["Action"]
        found |= {a for a in ([acts] if isinstance(acts, str) else acts) if a.startswith(service)}
    return found


@pytest.mark.parametrize(
    ("function", "needed"),
    [
        # resolve records an already promoted digest's outcome (UpdateItem) and looks
        # for promotions of the same digest under way (Query)
        (
            "ResolveRepoFunction",
            {"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:Query"},
        ),
        # superseding: the waiting requests (Query), their promotions' start (GetItem),
        # the conditional SUPERSEDED (UpdateItem)
        (
            "WaitForApprovalFunction",
            {"dynamodb:PutItem", "dynamodb:GetItem", "dynamodb:UpdateItem", "dynamodb:Query"},
        ),
        ("ApprovalApiFunction", {"dynamodb:GetItem", "dynamodb:UpdateItem"}),
        ("RetagAndCopyManifestFunction", LOCK),
        ("RunTestsFunction", {"dynamodb:GetItem", "dynamodb:UpdateItem"}),
        ("PromoteToProdFunction", LOCK | {"dynamodb:Query"}),
        ("RollbackFunction", LOCK | {"dynamodb:Query"}),
        ("NotifyFunction", {"dynamodb:GetItem", "dynamodb:UpdateItem", "dynamodb:Query"}),
        ("ExecutionEndedFunction", {"dynamodb:GetItem", "dynamodb:UpdateItem", "dynamodb:Query"}),
    ],
)
def test_ledger_actions_are_exactly_what_the_function_uses(function: str, needed: set[str]) -> None:
    assert actions(function, "dynamodb:") == needed


def test_wait_for_approval_may_fail_the_tasks_of_the_promotions_it_supersedes() -> None:
    [statement] = [s for s in statements("WaitForApprovalFunction") if s.get("Sid") == "Supersede"]
    assert statement["Action"] == "states:SendTaskFailure"
    assert statement["Resource"] == {
        "Fn::Sub": "arn:${AWS::Partition}:states:${AWS::Region}:${AWS::AccountId}"
        ":stateMachine:${AWS::StackName}-promotion"
    }
    assert actions("WaitForApprovalFunction", "states:") == {"states:SendTaskFailure"}


@pytest.mark.parametrize(
    ("function", "uses_registry"),
    [
        ("ResolveRepoFunction", True),
        ("WaitForApprovalFunction", True),
        ("RetagAndCopyManifestFunction", True),
        ("RunTestsFunction", True),
        ("PromoteToProdFunction", True),
        ("RollbackFunction", True),
        ("ApprovalApiFunction", False),
        ("NotifyFunction", False),
        ("ExecutionEndedFunction", False),
    ],
)
def test_only_functions_that_read_images_get_a_registry_token(
    function: str, uses_registry: bool
) -> None:
    ecr = actions(function, "ecr:")
    assert ("ecr:GetAuthorizationToken" in ecr) is uses_registry
    if uses_registry:
        assert {"ecr:BatchGetImage", "ecr:ListImages"} <= ecr  # manifests and tags


def test_only_the_promotion_machines_unnotified_ends_invoke_the_execution_ended_function() -> None:
    resources = TEMPLATE["Resources"]
    rule = resources["ExecutionEndedRule"]["Properties"]
    assert rule["EventPattern"] == {
        "source": ["aws.states"],
        "detail-type": ["Step Functions Execution Status Change"],
        "detail": {
            "status": ["ABORTED", "TIMED_OUT", "FAILED"],
            "stateMachineArn": [{"Ref": "PromotionStateMachine"}],
        },
    }
    [target] = rule["Targets"]
    assert target["Arn"] == {"Fn::GetAtt": ["ExecutionEndedFunction", "Arn"]}
    permissions = [
        r["Properties"]
        for r in resources.values()
        if r["Type"] == "AWS::Lambda::Permission"
        and r["Properties"]["FunctionName"] == {"Ref": "ExecutionEndedFunction"}
    ]
    assert permissions == [
        {
            "Action": "lambda:InvokeFunction",
            "FunctionName": {"Ref": "ExecutionEndedFunction"},
            "Principal": "events.amazonaws.com",
            "SourceArn": {"Fn::GetAtt": ["ExecutionEndedRule", "Arn"]},
        }
    ]
    # It finishes ledger records and expires approvals; it never touches images.
    assert actions("ExecutionEndedFunction", "ecr:") == set()
    assert actions("ExecutionEndedFunction", "states:") == set()


SSM_ARN = "arn:${AWS::Partition}:ssm:${AWS::Region}:${AWS::AccountId}:parameter"


@pytest.mark.parametrize(
    ("function", "parameters"),
    [
        ("ResolveRepoFunction", {"repositories"}),
        ("RollbackFunction", {"repositories"}),
        ("RunTestsFunction", {"repositories", "test-config"}),
        ("WaitForApprovalFunction", set()),
        ("ApprovalApiFunction", set()),
        ("RetagAndCopyManifestFunction", set()),
        ("PromoteToProdFunction", set()),
        ("NotifyFunction", set()),
    ],
)
def test_ssm_parameters_are_read_by_the_functions_whose_environment_names_them(
    function: str, parameters: set[str]
) -> None:
    granted = {
        statement["Resource"]["Fn::Sub"].removeprefix(f"{SSM_ARN}/image-cicd/${{AWS::StackName}}/")
        for statement in statements(function)
        if statement["Action"] == "ssm:GetParameter"
    }
    assert granted == parameters
    assert actions(function, "ssm:") <= {"ssm:GetParameter"}
    env = TEMPLATE["Resources"][function]["Properties"].get("Environment", {}).get("Variables", {})
    named = {k for k in env if k.endswith("_PARAMETER")}
    assert named == {f"{p.upper().replace('-', '_')}_PARAMETER" for p in parameters}


def test_run_tests_may_read_enhanced_scanning_findings_from_inspector() -> None:
    # ECR's DescribeImageScanFindings on a registry with enhanced scanning (aws/ecr.py)
    assert actions("RunTestsFunction", "inspector2:") == {
        "inspector2:ListFindings",
        "inspector2:ListCoverage",
    }
