"""template.yaml and the state machines, checked without AWS.

Fn::ForEach is expanded by image_cicd.local.template (the module the local deployer uses), so
these tests see the resources CloudFormation would create for the given parameters.
"""

from __future__ import annotations

import fnmatch
import json
import re
from pathlib import Path
from typing import Any

import pytest
from support.policies import as_list, attached_statements

from image_cicd.local.template import (
    TemplateError,
    alphanumeric,
    expand,
    load_template,
    parameter_values,
)
from image_cicd.promotion import payloads

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE_PATH = ROOT / "template.yaml"
ASL = {
    "PromotionStateMachine": ROOT / "statemachines" / "promotion.asl.json",
    "RollbackStateMachine": ROOT / "statemachines" / "rollback.asl.json",
}
CODE_PIPELINE_ACTION_LIMIT_SECONDS = 7 * 24 * 3600
ECR_ARN_PREFIX = "arn:<AWS::Partition>:ecr:<AWS::Region>:<AWS::AccountId>:"

ECR_READ = {
    "ecr:BatchGetImage",
    "ecr:GetDownloadUrlForLayer",
    "ecr:BatchCheckLayerAvailability",
    "ecr:DescribeImages",
    "ecr:DescribeImageScanFindings",
    "ecr:DescribeRepositories",
    "ecr:ListImages",
}
ECR_WRITE = {
    "ecr:PutImage",
    "ecr:InitiateLayerUpload",
    "ecr:UploadLayerPart",
    "ecr:CompleteLayerUpload",
}
# SAM policy templates used by the functions and what they allow (none touches ECR).
POLICY_TEMPLATE_ACTIONS = {
    "DynamoDBCrudPolicy": {"dynamodb:"},
    "DynamoDBReadPolicy": {"dynamodb:"},
    "SNSPublishMessagePolicy": {"sns:Publish"},
    "StepFunctionsCallbackPolicy": {"states:SendTask"},
    "LambdaInvokePolicy": {"lambda:InvokeFunction"},
}
# Actions that have no resource-level permissions, so "*" is the only possible resource.
STAR_ALLOWED_FOR_FUNCTIONS = {
    "ecr:GetAuthorizationToken",
    "inspector2:ListFindings",
    "inspector2:ListCoverage",
}
STAR_ALLOWED_FOR_STATE_MACHINES = {
    "logs:CreateLogDelivery",
    "logs:GetLogDelivery",
    "logs:UpdateLogDelivery",
    "logs:DeleteLogDelivery",
    "logs:ListLogDeliveries",
    "logs:PutResourcePolicy",
    "logs:DescribeResourcePolicies",
    "logs:DescribeLogGroups",
}

FUNCTIONS = {
    "ResolveRepoFunction": "resolve-repo",
    "WaitForApprovalFunction": "wait-for-approval",
    "ApprovalApiFunction": "approval-api",
    "RetagAndCopyManifestFunction": "retag-and-copy-manifest",
    "RunTestsFunction": "run-tests",
    "PromoteToProdFunction": "promote-to-prod",
    "RollbackFunction": "rollback",
    "NotifyFunction": "notify",
    "ExecutionEndedFunction": "execution-ended",
}
STAGE_WRITERS = {
    "RetagAndCopyManifestFunction": "TestPrefix",
    "PromoteToProdFunction": "ProdPrefix",
    "RollbackFunction": "ProdPrefix",
}
PROMOTION_STATES = [
    "Resolve repository",
    "Wait for TEST approval",
    "Copy to TEST",
    "Run tests",
    "Tests finished?",
    "Wait for tests",
    "Check tests",
    "Wait for PROD approval",
    "Promote to PROD",
    "Notify success",
    "Promoted",
    "Notify failure",
    "Promotion failed",
]
ROLLBACK_STATES = ["Roll back PROD", "Notify rollback", "Notify failure", "Rollback failed"]
RAW = load_template(TEMPLATE_PATH)
CUSTOM = {
    "DevPrefix": "team/dev",
    "TestPrefix": "team/test",
    "ProdPrefix": "team/prod",
    "Repositories": "api,web-ui",
}


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    return load_template(TEMPLATE_PATH)


@pytest.fixture(scope="module")
def template(raw: dict[str, Any]) -> dict[str, Any]:
    return expand(raw)


def resources_of(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in template["Resources"].items() if v["Type"] == kind}


def resolve(value: Any, params: dict[str, str | list[str]]) -> Any:
    """Resolve Ref/Fn::Sub/Fn::Join of parameters; resources become <Name> / <Name.Attr>."""
    if isinstance(value, dict) and len(value) == 1:
        ((fn, arg),) = value.items()
        if fn == "Ref":
            if arg in params:
                return params[arg]
            return f"<{arg}>"
        if fn == "Fn::GetAtt":
            return f"<{arg[0]}.{arg[1]}>"
        if fn == "Fn::Join":
            return str(arg[0]).join(resolve(arg[1], params))
        if fn == "Fn::Select":
            return resolve(arg[1], params)[int(resolve(arg[0], params))]
        if fn == "Fn::FindInMap":
            mapping, key, attribute = (resolve(a, params) for a in arg)
            return RAW["Mappings"][mapping][key][attribute]
        if fn == "Fn::Sub":
            text, variables = (arg, {}) if isinstance(arg, str) else (arg[0], arg[1])

            def one(match: re.Match[str]) -> str:
                name = match.group(1)
                if name in variables:
                    return str(resolve(variables[name], params))
                if name in params:
                    return str(params[name])
                return f"<{name}>"

            return re.sub(r"\$\{([A-Za-z0-9:.]+)\}", one, text)
    if isinstance(value, dict):
        return {key: resolve(item, params) for key, item in value.items()}
    if isinstance(value, list):
        return [resolve(item, params) for item in value]
    return value


def statements(properties: dict[str, Any]) -> list[dict[str, Any]]:
    """A SAM resource's inline statements and those of the managed policies it attaches
    (policy templates excluded)."""
    return attached_statements(expand(RAW), properties)


def policy_templates(properties: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [
        (name, args)
        for policy in as_list(properties.get("Policies", []))
        if isinstance(policy, dict) and "Statement" not in policy and "Ref" not in policy
        for name, args in policy.items()
    ]


def placeholders(path: Path) -> set[str]:
    return set(re.findall(r"\$\{([A-Za-z0-9]+)\}", path.read_text(encoding="utf-8")))


# --------------------------------------------------------------------------- ForEach


@pytest.mark.parametrize(
    "repositories", [["repo-1", "repo-2", "repo-3"], ["repo-1", "repo-2", "repo-3", "repo-4"]]
)
def test_one_rule_and_one_pipeline_per_repository(
    raw: dict[str, Any], repositories: list[str]
) -> None:
    # Given a repository list (the second one is the default)
    params = {} if len(repositories) == 4 else {"Repositories": ",".join(repositories)}
    # When the template is expanded
    template = expand(raw, params)
    # Then there is exactly one trigger rule and one pipeline per repository
    rules = resources_of(template, "AWS::Events::Rule")
    per_repository = {k for k, v in rules.items() if v.get("Condition") == "IsPipelineMode"}
    pipelines = resources_of(template, "AWS::CodePipeline::Pipeline")
    assert per_repository == {f"TriggerRule{alphanumeric(r)}" for r in repositories}
    # (and the rule on the promotion's own ends, ExecutionEndedRule)
    assert set(rules) - per_repository == {"DirectTriggerRule", "ExecutionEndedRule"}
    assert {v["Condition"] for v in pipelines.values()} == {"IsPipelineMode"}
    assert set(pipelines) == {f"Pipeline{alphanumeric(r)}" for r in repositories}
    assert not any(k.startswith("Fn::ForEach") for k in template["Resources"])


def test_rules_match_pushes_of_the_trigger_tag_to_dev_only(raw: dict[str, Any]) -> None:
    params = parameter_values(raw, {**CUSTOM, "TriggerTag": "release"})
    template = expand(raw, params)
    for repo in ["api", "web-ui"]:
        rule = template["Resources"][f"TriggerRule{alphanumeric(repo)}"]["Properties"]
        pattern = resolve(rule["EventPattern"], params)
        assert pattern["source"] == ["aws.ecr"]
        assert pattern["detail-type"] == ["ECR Image Action"]
        assert pattern["detail"] == {
            "action-type": ["PUSH"],
            "result": ["SUCCESS"],
            "repository-name": [f"team/dev/{repo}"],
            "image-tag": ["release"],
        }
        (target,) = rule["Targets"]
        pipeline = template["Resources"][f"Pipeline{alphanumeric(repo)}"]["Properties"]
        arn = resolve(target["Arn"], params)
        assert arn.endswith(f":codepipeline:<AWS::Region>:<AWS::AccountId>:<AWS::StackName>-{repo}")
        assert arn.endswith(":" + resolve(pipeline["Name"], params))
        assert target["RoleArn"] == {"Fn::GetAtt": ["TriggerRole", "Arn"]}
        # one role for every rule: it starts the stack's pipelines (named <stack>-<name>)
        role = template["Resources"]["TriggerRole"]["Properties"]
        (policy,) = role["Policies"]
        (statement,) = policy["PolicyDocument"]["Statement"]
        assert statement["Action"] == "codepipeline:StartPipelineExecution"
        assert fnmatch.fnmatchcase(arn, resolve(statement["Resource"], params))


def test_pipelines_are_v2_parallel_and_hand_image_detail_to_the_state_machine(
    raw: dict[str, Any],
) -> None:
    params = parameter_values(raw, CUSTOM)
    template = expand(raw, params)
    for repo in ["api", "web-ui"]:
        pipeline = template["Resources"][f"Pipeline{alphanumeric(repo)}"]["Properties"]
        assert pipeline["PipelineType"] == "V2"
        # PARALLEL: a push never waits behind another image's approval (docs/architecture.md)
        assert pipeline["ExecutionMode"] == "PARALLEL"
        assert pipeline["ArtifactStore"] == {"Type": "S3", "Location": {"Ref": "ArtifactBucket"}}
        source, promote = pipeline["Stages"]
        (source_action,) = source["Actions"]
        assert source_action["ActionTypeId"]["Provider"] == "ECR"
        config = resolve(source_action["Configuration"], params)
        assert config == {"RepositoryName": f"team/dev/{repo}", "ImageTag": "latest"}
        (invoke,) = promote["Actions"]
        assert invoke["ActionTypeId"] == {
            "Category": "Invoke",
            "Owner": "AWS",
            "Provider": "StepFunctions",
            "Version": "1",
        }
        assert invoke["Configuration"] == {
            "StateMachineArn": {"Ref": "PromotionStateMachine"},
            "InputType": "FilePath",
            "Input": "imageDetail.json",
            "ExecutionNamePrefix": repo,
        }
        assert invoke["InputArtifacts"] == source_action["OutputArtifacts"]
        assert pipeline["RoleArn"] == {"Fn::GetAtt": ["PipelineRole", "Arn"]}
    # one role for every pipeline: DEV images only, the promotion state machine only
    role = template["Resources"]["PipelineRole"]["Properties"]
    granted: dict[str, set[str]] = {}
    for statement in role["Policies"][0]["PolicyDocument"]["Statement"]:
        for resource in as_list(resolve(statement["Resource"], params)):
            assert resource != "*"
            for action in as_list(statement["Action"]):
                granted.setdefault(action, set()).add(resource)
            if "ecr:" in str(statement["Action"]):
                assert resource.endswith(":repository/team/dev/*")
    machine = "<PromotionStateMachine>"
    # the Step Functions invoke action reads the machine's type before it starts it
    assert granted["states:DescribeStateMachine"] == {machine}
    assert granted["states:StartExecution"] == {machine}
    assert granted["states:DescribeExecution"] == {
        "arn:<AWS::Partition>:states:<AWS::Region>:<AWS::AccountId>:execution:"
        "<PromotionStateMachine.Name>:*"
    }


# --------------------------------------------------------------------------- IAM


@pytest.mark.parametrize("overrides", [{}, CUSTOM])
def test_no_function_writes_outside_its_stage(
    raw: dict[str, Any], overrides: dict[str, str]
) -> None:
    params = parameter_values(raw, overrides)
    template = expand(raw, params)
    prefixes = {p: str(params[p]) for p in ("DevPrefix", "TestPrefix", "ProdPrefix")}
    functions = resources_of(template, "AWS::Serverless::Function")
    assert set(functions) == set(FUNCTIONS)
    for name, function in functions.items():
        for statement in statements(function["Properties"]):
            assert statement["Effect"] == "Allow"
            actions = set(as_list(statement["Action"]))
            resources = as_list(resolve(statement["Resource"], params))
            if "*" in resources:
                assert actions <= STAR_ALLOWED_FOR_FUNCTIONS, f"{name}: {actions} on *"
            if actions & ECR_WRITE:
                # Then only the stage writers write, and only their own stage
                assert name in STAGE_WRITERS, f"{name} may not write to any repository"
                stage = prefixes[STAGE_WRITERS[name]]
                assert resources == [f"{ECR_ARN_PREFIX}repository/{stage}/*"]
            if actions & ECR_READ:
                for resource in resources:
                    namespace = resource.split(":repository/", 1)[1]
                    assert namespace.removesuffix("/*") in prefixes.values(), resource
            if any(a.startswith("ecr:") for a in actions):
                assert actions <= ECR_READ | ECR_WRITE | STAR_ALLOWED_FOR_FUNCTIONS
        for template_name, _ in policy_templates(function["Properties"]):
            assert template_name in POLICY_TEMPLATE_ACTIONS, f"{name}: review {template_name}"


# What each function may do in the registry, per stage (the least privilege its code
# path needs): reads, writes, and wait-for-approval's manifests and tags only.
ECR_GRANTS = {
    "ResolveRepoFunction": {"read": {"dev", "test", "prod"}},
    "WaitForApprovalFunction": {"tags": {"test", "prod"}},
    "RetagAndCopyManifestFunction": {"read": {"dev", "test"}, "write": {"test"}},
    "RunTestsFunction": {"read": {"test"}},
    "PromoteToProdFunction": {"read": {"test", "prod"}, "write": {"prod"}},
    "RollbackFunction": {"read": {"prod"}, "write": {"prod"}},
}


def test_each_function_gets_exactly_its_stages_registry_grants(raw: dict[str, Any]) -> None:
    params = parameter_values(raw, CUSTOM)
    template = expand(raw, params)
    kinds = {"read": ECR_READ, "write": ECR_WRITE, "tags": {"ecr:BatchGetImage", "ecr:ListImages"}}
    for name in FUNCTIONS:
        granted: dict[str, set[str]] = {}
        for statement in statements(template["Resources"][name]["Properties"]):
            for action in as_list(statement["Action"]):
                if action.startswith("ecr:") and action != "ecr:GetAuthorizationToken":
                    for resource in as_list(resolve(statement["Resource"], params)):
                        stage = resource.removeprefix(f"{ECR_ARN_PREFIX}repository/team/")
                        granted.setdefault(action, set()).add(stage.removesuffix("/*"))
        expected: dict[str, set[str]] = {}
        for kind, stages in ECR_GRANTS.get(name, {}).items():
            for action in kinds[kind]:
                expected[action] = expected.get(action, set()) | stages
        assert granted == expected, name
    # every generated stage policy is attached to some function
    attached = {
        policy["Ref"]
        for function in resources_of(template, "AWS::Serverless::Function").values()
        for policy in function["Properties"].get("Policies", [])
        if isinstance(policy, dict) and set(policy) == {"Ref"}
    }
    assert attached == set(resources_of(template, "AWS::IAM::ManagedPolicy"))


def test_only_promote_to_prod_and_rollback_write_prod(raw: dict[str, Any]) -> None:
    params = parameter_values(raw, CUSTOM)
    template = expand(raw, params)
    writers = set()
    for name, function in resources_of(template, "AWS::Serverless::Function").items():
        for statement in statements(function["Properties"]):
            resources = as_list(resolve(statement["Resource"], params))
            if set(as_list(statement["Action"])) & ECR_WRITE and any(
                ":repository/team/prod/" in r for r in resources
            ):
                writers.add(name)
    assert writers == {"PromoteToProdFunction", "RollbackFunction"}


def test_no_wildcard_resource_on_any_write(template: dict[str, Any]) -> None:
    params = parameter_values(template)
    kinds = ("AWS::Serverless::Function", "AWS::Serverless::StateMachine")
    for kind in kinds:
        allowed = (
            STAR_ALLOWED_FOR_FUNCTIONS if "Function" in kind else STAR_ALLOWED_FOR_STATE_MACHINES
        )
        for name, resource in resources_of(template, kind).items():
            for statement in statements(resource["Properties"]):
                if "*" in as_list(resolve(statement["Resource"], params)):
                    assert set(as_list(statement["Action"])) <= allowed, name
    for name, role in resources_of(template, "AWS::IAM::Role").items():
        for policy in role["Properties"]["Policies"]:
            for statement in policy["PolicyDocument"]["Statement"]:
                assert "*" not in as_list(statement["Resource"]), name


def test_the_approval_api_may_only_answer_the_promotion_state_machine(
    template: dict[str, Any],
) -> None:
    machine = template["Resources"]["PromotionStateMachine"]["Properties"]
    api = template["Resources"]["ApprovalApiFunction"]["Properties"]
    callbacks = [a for n, a in policy_templates(api) if n == "StepFunctionsCallbackPolicy"]
    assert callbacks == [{"StateMachineName": machine["Name"]}]


def test_run_tests_may_start_only_the_stacks_test_state_machines(
    template: dict[str, Any],
) -> None:
    function = template["Resources"]["RunTestsFunction"]["Properties"]
    states = [
        s
        for s in statements(function)
        if any(a.startswith("states:") for a in as_list(s["Action"]))
    ]
    resources = {r for s in states for r in as_list(resolve(s["Resource"], {}))}
    assert resources == {
        "arn:<AWS::Partition>:states:<AWS::Region>:<AWS::AccountId>:"
        "stateMachine:<AWS::StackName>-tests-*",
        "arn:<AWS::Partition>:states:<AWS::Region>:<AWS::AccountId>:"
        "execution:<AWS::StackName>-tests-*:*",
    }


def test_state_machines_invoke_only_their_functions(template: dict[str, Any]) -> None:
    expected = {
        "PromotionStateMachine": {
            "ResolveRepoFunction",
            "WaitForApprovalFunction",
            "RetagAndCopyManifestFunction",
            "RunTestsFunction",
            "PromoteToProdFunction",
            "NotifyFunction",
        },
        "RollbackStateMachine": {"RollbackFunction", "NotifyFunction"},
    }
    for name, functions in expected.items():
        properties = template["Resources"][name]["Properties"]
        invoked = {
            args["FunctionName"]["Ref"]
            for policy, args in policy_templates(properties)
            if policy == "LambdaInvokePolicy"
        }
        assert invoked == functions


# --------------------------------------------------------------------------- functions


def test_every_function_has_its_code_directory_and_a_log_group(template: dict[str, Any]) -> None:
    for name, directory in FUNCTIONS.items():
        function = template["Resources"][name]["Properties"]
        assert function["CodeUri"] == f"functions/{directory}/"
        # The stack creates the log group and names it in LoggingConfig, so Lambda never
        # creates /aws/lambda/<function> by itself (no race, nothing left behind).
        log_group = template["Resources"][f"{name}LogGroup"]["Properties"]
        name_of_group = resolve(log_group["LogGroupName"], {})
        assert name_of_group == f"/aws/lambda/<AWS::StackName>/{directory}"
        assert log_group["RetentionInDays"] == {"Ref": "LogRetentionDays"}
        assert function["LoggingConfig"] == {"LogGroup": {"Ref": f"{name}LogGroup"}}


def test_functions_get_the_contract_environment(template: dict[str, Any]) -> None:
    contract = (ROOT / "docs" / "contracts.md").read_text(encoding="utf-8")
    section = contract.split("## Function environment", 1)[1].split("\n## ", 1)[0]
    names = set(re.findall(r"`([A-Z][A-Z_]+)`", section))
    variables = set(template["Globals"]["Function"]["Environment"]["Variables"])
    for name in FUNCTIONS:
        own = template["Resources"][name]["Properties"].get("Environment", {})
        variables |= set(own.get("Variables", {}))
    assert names <= variables, f"missing: {names - variables}"
    assert variables - names <= {"POWERTOOLS_METRICS_NAMESPACE"}
    assert template["Globals"]["Function"]["Runtime"] == "python3.12"
    assert template["Globals"]["Function"]["Tracing"] == "Active"
    assert template["Globals"]["Function"]["Layers"] == [{"Ref": "CoreLayer"}]


def test_superseding_is_a_parameter_only_wait_for_approval_reads(
    template: dict[str, Any],
) -> None:
    parameter = template["Parameters"]["SupersedeWaitingPromotions"]
    assert (parameter["Default"], parameter["AllowedValues"]) == ("true", ["true", "false"])
    for name in FUNCTIONS:
        variables = (
            template["Resources"][name]["Properties"].get("Environment", {}).get("Variables", {})
        )
        if name == "WaitForApprovalFunction":
            assert variables["SUPERSEDE_WAITING_PROMOTIONS"] == {
                "Ref": "SupersedeWaitingPromotions"
            }
        else:
            assert "SUPERSEDE_WAITING_PROMOTIONS" not in variables


def test_the_core_layer_is_built_from_src(template: dict[str, Any]) -> None:
    layer = template["Resources"]["CoreLayer"]
    assert layer["Metadata"]["BuildMethod"] == "makefile"  # layer/Makefile, test_layer.py
    content = ROOT / layer["Properties"]["ContentUri"]
    requirements = (content / "requirements.txt").read_text(encoding="utf-8")
    assert {"requests", "aws-lambda-powertools", "pydantic", "jinja2"} <= {
        re.split(r"[<>=~\[ ]", line)[0].strip()
        for line in requirements.splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert (content / "image_cicd").is_dir()
    # the approval pages' templates and stylesheet ship beside the code
    web = content / "image_cicd" / "web"
    assert (web / "templates" / "approvals" / "approval.html").is_file()
    assert (web / "static" / "style.css").is_file()


def test_the_approval_api_routes(template: dict[str, Any]) -> None:
    events = template["Resources"]["ApprovalApiFunction"]["Properties"]["Events"]
    routes = {(e["Properties"]["Method"], e["Properties"]["Path"]) for e in events.values()}
    assert routes == {("GET", "/approvals/{id}"), ("POST", "/approvals/{id}")}
    assert all(e["Type"] == "HttpApi" for e in events.values())
    api = template["Resources"]["ApprovalApi"]["Properties"]
    assert api["DefaultRouteSettings"]["ThrottlingRateLimit"] > 0


# --------------------------------------------------------------------------- data


def test_the_ledger_table_is_the_contract_table(template: dict[str, Any]) -> None:
    table = template["Resources"]["LedgerTable"]["Properties"]
    assert table["BillingMode"] == "PAY_PER_REQUEST"
    assert {(a["AttributeName"], a["AttributeType"]) for a in table["AttributeDefinitions"]} == {
        ("pk", "S"),
        ("sk", "S"),
        ("gsi1pk", "S"),
        ("gsi1sk", "S"),
    }
    assert table["KeySchema"] == [
        {"AttributeName": "pk", "KeyType": "HASH"},
        {"AttributeName": "sk", "KeyType": "RANGE"},
    ]
    (gsi,) = table["GlobalSecondaryIndexes"]
    assert gsi["IndexName"] == "gsi1"
    assert gsi["KeySchema"] == [
        {"AttributeName": "gsi1pk", "KeyType": "HASH"},
        {"AttributeName": "gsi1sk", "KeyType": "RANGE"},
    ]
    assert gsi["Projection"] == {"ProjectionType": "ALL"}
    assert table["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}
    assert table["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True
    assert table["SSESpecification"]["SSEEnabled"] is True


def test_topics_are_encrypted_and_subscriptions_optional(template: dict[str, Any]) -> None:
    for topic in ("ApprovalsTopic", "NotificationsTopic"):
        assert template["Resources"][topic]["Properties"]["KmsMasterKeyId"] == "alias/aws/sns"
    subscriptions = resources_of(template, "AWS::SNS::Subscription")
    assert {s["Condition"] for s in subscriptions.values()} == {
        "HasApprovalEmail",
        "HasNotificationEmail",
    }


def test_outputs(template: dict[str, Any]) -> None:
    assert {
        "ApprovalBaseUrl",
        "PromotionStateMachineArn",
        "RollbackStateMachineArn",
        "ApprovalsTopicArn",
        "NotificationsTopicArn",
        "LedgerTableName",
        "RepositoryNames",
        "DevPrefix",
        "TestPrefix",
        "ProdPrefix",
    } <= set(template["Outputs"])


# --------------------------------------------------------------------------- time budget


def test_two_approvals_and_the_tests_always_fit_in_the_pipeline_action_limit(
    raw: dict[str, Any],
) -> None:
    approval = raw["Parameters"]["ApprovalTimeoutSeconds"]
    tests = raw["Parameters"]["TestTimeoutSeconds"]
    assert approval["Type"] == tests["Type"] == "Number"
    assert approval["MinValue"] >= 60
    assert tests["MinValue"] >= 60
    worst = 2 * approval["MaxValue"] + tests["MaxValue"]
    assert worst <= CODE_PIPELINE_ACTION_LIMIT_SECONDS
    # and the defaults are accepted values
    assert approval["MinValue"] <= approval["Default"] <= approval["MaxValue"]
    assert tests["MinValue"] <= tests["Default"] <= tests["MaxValue"]
    promotion = json.loads(ASL["PromotionStateMachine"].read_text(encoding="utf-8"))
    assert promotion["TimeoutSeconds"] <= CODE_PIPELINE_ACTION_LIMIT_SECONDS


def evaluate_rule(expression: Any, params: dict[str, str | list[str]]) -> Any:
    """Evaluate the Rules functions this template uses (And, Not, Equals, Ref)."""
    if isinstance(expression, dict) and len(expression) == 1:
        ((fn, arg),) = expression.items()
        if fn == "Ref":
            return params[arg]
        if fn == "Fn::And":
            return all(evaluate_rule(a, params) for a in arg)
        if fn == "Fn::Or":
            return any(evaluate_rule(a, params) for a in arg)
        if fn == "Fn::Not":
            return not evaluate_rule(arg[0], params)
        if fn == "Fn::Equals":
            return evaluate_rule(arg[0], params) == evaluate_rule(arg[1], params)
        raise AssertionError(f"unexpected rule function {fn}")
    return expression


@pytest.mark.parametrize(
    ("overrides", "accepted"),
    [
        ({}, True),
        (CUSTOM, True),
        ({"TestPrefix": "ecr-dev"}, False),
        ({"ProdPrefix": "ecr-test"}, False),
        ({"TriggerTag": ""}, False),
    ],
)
def test_rules_refuse_parameters_that_break_the_design(
    raw: dict[str, Any], overrides: dict[str, str], accepted: bool
) -> None:
    params = parameter_values(raw, overrides)
    results = [
        evaluate_rule(assertion["Assert"], params)
        for rule in raw["Rules"].values()
        for assertion in rule["Assertions"]
    ]
    assert all(results) is accepted


# --------------------------------------------------------------------------- state machines


@pytest.mark.parametrize("machine", sorted(ASL))
def test_substitutions_are_defined_and_used(template: dict[str, Any], machine: str) -> None:
    substitutions = template["Resources"][machine]["Properties"]["DefinitionSubstitutions"]
    assert placeholders(ASL[machine]) == set(substitutions)
    uri = template["Resources"][machine]["Properties"]["DefinitionUri"]
    assert ROOT / uri == ASL[machine]


def test_state_names_read_like_the_design() -> None:
    promotion = json.loads(ASL["PromotionStateMachine"].read_text(encoding="utf-8"))
    rollback = json.loads(ASL["RollbackStateMachine"].read_text(encoding="utf-8"))
    # The first state wraps the input, any JSON, into an object (its Catch needs one).
    for machine, first in ((promotion, "Resolve repository"), (rollback, "Roll back PROD")):
        assert machine["StartAt"] == "Receive input"
        assert machine["States"]["Receive input"] == {
            "Type": "Pass",
            "Comment": machine["States"]["Receive input"]["Comment"],
            "Parameters": {"input.$": "$"},
            "Next": first,
        }
        assert machine["States"][first]["Parameters"]["Payload"]["input.$"] == "$.input"
    assert set(PROMOTION_STATES) <= set(promotion["States"])
    assert set(ROLLBACK_STATES) <= set(rollback["States"])
    assert promotion["States"]["Promoted"]["Type"] == "Succeed"
    assert promotion["States"]["Promotion failed"]["Type"] == "Fail"


def _reaches(states: dict[str, Any], start: str, kind: str) -> bool:
    seen: set[str] = set()
    todo = [start]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        state = states[name]
        if state["Type"] == kind:
            return True
        todo.extend(
            [state[k] for k in ("Next", "Default") if k in state]
            + [c["Next"] for c in state.get("Catch", []) + state.get("Choices", [])]
        )
    return False


@pytest.mark.parametrize("machine", sorted(ASL))
def test_every_task_is_retried_and_caught(machine: str) -> None:
    states: dict[str, Any] = json.loads(ASL[machine].read_text(encoding="utf-8"))["States"]
    for name, state in states.items():
        if state["Type"] != "Task":
            continue
        catches = state["Catch"]
        assert catches[-1]["ErrorEquals"] == ["States.ALL"], name
        assert state["Retry"], name
        if state["Resource"].startswith("arn:aws:states:::lambda:invoke"):
            assert state["Parameters"]["FunctionName"].startswith("${")
            assert state["Parameters"]["Payload"]["execution.$"] == "$$.Execution.Name"
            # (the retry values: test_retries.py, against docs/contracts.md "Retries")
        if name.startswith("Notify") or name.startswith("Alert"):
            continue  # the notification path itself ends in Succeed or Fail either way
        # Then a failure goes through the failure notification to a Fail state
        assert catches[-1]["Next"] == "Prepare failure", name
        assert _reaches(states, "Notify failure", "Fail")
        if state["Resource"] == "arn:aws:states:::lambda:invoke":
            ((_key, value),) = state["ResultSelector"].items()
            assert value == "$.Payload", name
        if "RegistryUnavailable" not in json.dumps(state["Retry"]):
            assert state["Resource"].endswith(".waitForTaskToken"), name


def test_approvals_wait_for_a_token_with_the_plans_timeout_and_catch_expiry_first() -> None:
    states = json.loads(ASL["PromotionStateMachine"].read_text(encoding="utf-8"))["States"]
    for stage in ("TEST", "PROD"):
        state = states[f"Wait for {stage} approval"]
        assert state["Resource"] == "arn:aws:states:::lambda:invoke.waitForTaskToken"
        assert state["TimeoutSecondsPath"] == "$.plan.approval_timeout_seconds"
        payload = state["Parameters"]["Payload"]
        assert payload["task_token.$"] == "$$.Task.Token"
        assert payload["stage"] == stage
        assert state["ResultPath"] == f"$.approvals.{stage.lower()}"
        first, second = state["Catch"][0], state["Catch"][1]
        assert first["ErrorEquals"] == ["States.Timeout"]
        assert states[first["Next"]]["Parameters"]["error"] == "ApprovalExpired"
        assert states[first["Next"]]["Parameters"]["outcome"] == "EXPIRED"
        assert second["ErrorEquals"] == ["ApprovalRejected"]
        assert states[second["Next"]]["Parameters"]["outcome"] == "REJECTED"


def test_the_test_poll_loop() -> None:
    states = json.loads(ASL["PromotionStateMachine"].read_text(encoding="utf-8"))["States"]
    choice = states["Tests finished?"]
    assert {(c["StringEquals"], c["Next"]) for c in choice["Choices"]} == {
        ("RUNNING", "Wait for tests"),
        ("PASSED", "Wait for PROD approval"),
    }
    assert _reaches(states, choice["Default"], "Fail")
    assert states["Wait for tests"]["Next"] == "Check tests"
    assert states["Check tests"]["Next"] == "Tests finished?"
    assert states["Run tests"]["Parameters"]["Payload"]["action"] == "start"
    assert states["Check tests"]["Parameters"]["Payload"]["action"] == "poll"


# --------------------------------------------------------------------------- the expander


def test_expand_replaces_identifiers_in_keys_values_and_refs() -> None:
    template: dict[str, Any] = {
        "Parameters": {"Names": {"Type": "CommaDelimitedList", "Default": "a-b, c"}},
        "Resources": {
            "Fn::ForEach::Loop": [
                "N",
                {"Ref": "Names"},
                {
                    "Thing&{N}": {
                        "Type": "X",
                        "Properties": {
                            "Name": {"Fn::Sub": "${AWS::StackName}-${N}"},
                            "Same": {"Ref": "N"},
                            "Other": {"Fn::GetAtt": [{"Fn::Sub": "Thing&{N}"}, "Arn"]},
                        },
                    }
                },
            ]
        },
    }
    expanded = expand(template)
    assert expanded["Resources"]["Thingab"]["Properties"] == {
        "Name": {"Fn::Sub": "${AWS::StackName}-a-b"},
        "Same": "a-b",
        "Other": {"Fn::GetAtt": [{"Fn::Sub": "Thingab"}, "Arn"]},
    }
    assert set(expanded["Resources"]) == {"Thingab", "Thingc"}
    assert "Fn::ForEach::Loop" in template["Resources"]  # the input is not modified


def test_expand_handles_nested_loops_and_literal_collections() -> None:
    template: dict[str, Any] = {
        "Outputs": {
            "Fn::ForEach::Outer": [
                "A",
                ["x", "y"],
                {"Fn::ForEach::Inner": ["B", ["1", "2"], {"O${A}${B}": {"Value": "${A}/${B}"}}]},
            ]
        }
    }
    outputs = expand(template)["Outputs"]
    assert outputs == {
        "Ox1": {"Value": "x/1"},
        "Ox2": {"Value": "x/2"},
        "Oy1": {"Value": "y/1"},
        "Oy2": {"Value": "y/2"},
    }


@pytest.mark.parametrize(
    "loop",
    [
        ["N", ["a-1", "a1"], {"R&{N}": {}}],  # both become Ra1
        ["N", ["a"], {"Fixed": {}}],  # output key without the identifier
        ["N", {"Ref": "Missing"}, {"R${N}": {}}],
        ["N", "a,b", {"R${N}": {}}],
        ["N-1", ["a"], {"R${N-1}": {}}],
    ],
)
def test_expand_refuses_malformed_loops(loop: list[Any]) -> None:
    with pytest.raises(TemplateError):
        expand({"Resources": {"Fn::ForEach::L": loop}})


def test_unknown_parameters_are_refused(raw: dict[str, Any]) -> None:
    with pytest.raises(TemplateError):
        expand(raw, {"Repository": "x"})


def test_load_template_keeps_the_format_version_a_string(raw: dict[str, Any]) -> None:
    assert raw["AWSTemplateFormatVersion"] == "2010-09-09"
    assert raw["Transform"] == ["AWS::LanguageExtensions", "AWS::Serverless-2016-10-31"]


# --------------------------------------------------------------------------- events

EVENT_STATES = {
    "resolve-repo-image-detail.json": ("PromotionStateMachine", "Resolve repository"),
    "resolve-repo-direct.json": ("PromotionStateMachine", "Resolve repository"),
    "wait-for-approval-test.json": ("PromotionStateMachine", "Wait for TEST approval"),
    "wait-for-approval-prod.json": ("PromotionStateMachine", "Wait for PROD approval"),
    "retag-and-copy-manifest.json": ("PromotionStateMachine", "Copy to TEST"),
    "run-tests-start.json": ("PromotionStateMachine", "Run tests"),
    "run-tests-poll.json": ("PromotionStateMachine", "Check tests"),
    "promote-to-prod.json": ("PromotionStateMachine", "Promote to PROD"),
    "notify-success.json": ("PromotionStateMachine", "Notify success"),
    "notify-failure.json": ("PromotionStateMachine", "Notify failure"),
    "rollback.json": ("RollbackStateMachine", "Roll back PROD"),
    "notify-rollback.json": ("RollbackStateMachine", "Notify rollback"),
}


def load_event(name: str) -> dict[str, Any]:
    data = json.loads((ROOT / "events" / name).read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


@pytest.mark.parametrize(("event", "where"), sorted(EVENT_STATES.items()))
def test_function_events_have_the_payload_keys_of_their_state(
    event: str, where: tuple[str, str]
) -> None:
    machine, state = where
    states = json.loads(ASL[machine].read_text(encoding="utf-8"))["States"]
    payload = states[state]["Parameters"]["Payload"]
    assert set(load_event(event)) == {key.removesuffix(".$") for key in payload}


def test_every_function_and_both_machines_have_sample_events() -> None:
    names = {p.name for p in (ROOT / "events").glob("*.json")}
    for directory in FUNCTIONS.values():
        assert any(n.startswith(directory) for n in names), directory
    assert {"promotion-input-image-detail.json", "promotion-input-direct.json"} <= names
    assert {"rollback-input.json", "rollback-input-to.json"} <= names
    for name in ("approval-api-get.json", "approval-api-post.json"):
        event = load_event(name)
        assert event["version"] == "2.0"
        assert event["pathParameters"]["id"]
        assert event["routeKey"].endswith(" /approvals/{id}")


def test_function_events_parse_with_the_handlers_models() -> None:
    models = {
        "resolve-repo-image-detail.json": payloads.ResolveTask,
        "resolve-repo-direct.json": payloads.ResolveTask,
        "wait-for-approval-test.json": payloads.ApprovalTask,
        "wait-for-approval-prod.json": payloads.ApprovalTask,
        "retag-and-copy-manifest.json": payloads.CopyTask,
        "run-tests-start.json": payloads.TestsTask,
        "run-tests-poll.json": payloads.TestsTask,
        "promote-to-prod.json": payloads.CopyTask,
        "notify-success.json": payloads.NotifyTask,
        "notify-failure.json": payloads.NotifyTask,
        "notify-rollback.json": payloads.NotifyTask,
        "rollback.json": payloads.RollbackTask,
    }
    for name, model in models.items():
        model.model_validate(load_event(name))
    for name in ("resolve-repo-image-detail.json", "resolve-repo-direct.json"):
        payloads.PromotionRequest.parse(load_event(name)["input"])
