"""Deploy `template.yaml` onto the embedded stack, through the service APIs.

moto's CloudFormation cannot do it (no CodePipeline, no HTTP APIs, no
DefinitionSubstitutions, state machines invisible to the executing mode), so this
reads the template itself: expands `Fn::ForEach` for the given parameters, resolves
the intrinsic functions, and creates each resource of a type it knows. A type with
no local counterpart is listed with the reason; a type it does not know is reported
by name — never skipped silently.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from image_cicd.local.aws import LocalAws

# Re-exported: the region and account the local stack deploys into, and the deployer's error
from image_cicd.local.intrinsics import ACCOUNT as ACCOUNT
from image_cicd.local.intrinsics import REGION as REGION
from image_cicd.local.intrinsics import DeployError as DeployError
from image_cicd.local.intrinsics import Resolver
from image_cicd.local.lambda_runtime import FunctionSpec
from image_cicd.local.template import expand, load_template, parameter_values

# Types that exist on AWS for reasons the local stack does not have.
NOT_NEEDED = {
    "AWS::IAM::Role": "the local stack enforces no IAM (the policies are checked by tests/infra)",
    "AWS::Logs::LogGroup": "logs are files in the state directory",
    "AWS::IAM::ManagedPolicy": "the local stack enforces no IAM (as for AWS::IAM::Role)",
    "AWS::S3::Bucket": "the pipeline runner keeps imageDetail.json in the state directory",
    "AWS::S3::BucketPolicy": "no S3 locally",
    "AWS::Lambda::Permission": "the local stack enforces no resource policies",
}
CREATED = (
    "AWS::DynamoDB::Table",
    "AWS::SNS::Topic",
    "AWS::SNS::Subscription",
    "AWS::SSM::Parameter",
    "AWS::Serverless::LayerVersion",
    "AWS::Serverless::Function",
    "AWS::Serverless::StateMachine",
    "AWS::Serverless::HttpApi",
    "AWS::Events::Rule",
    "AWS::CodePipeline::Pipeline",
)


@dataclass
class Pipeline:
    """What the local pipeline runner needs from a CodePipeline definition."""

    name: str
    source_repository: str
    image_tag: str
    state_machine_arn: str
    execution_name_prefix: str
    input_file: str
    execution_mode: str


@dataclass
class Rule:
    """An EventBridge rule with one target: a pipeline, or a state machine (with the
    target's InputTransformer)."""

    name: str
    event_pattern: dict[str, Any]
    pipeline: str = ""  # the target pipeline's name
    state_machine_arn: str = ""
    input_paths: dict[str, str] = field(default_factory=dict)
    input_template: str = ""
    function: str = ""  # a Lambda function target's name: invoked with the event


@dataclass
class Route:
    method: str
    path: str  # /approvals/{id}
    function: str  # function name


@dataclass
class Deployment:
    """What the deployer created, by logical id, and the stack's outputs."""

    stack_name: str
    parameters: dict[str, Any]
    tables: dict[str, str] = field(default_factory=dict)
    parameters_stored: dict[str, str] = field(default_factory=dict)
    topics: dict[str, str] = field(default_factory=dict)
    subscriptions: dict[str, str] = field(default_factory=dict)
    layers: dict[str, str] = field(default_factory=dict)
    functions: dict[str, str] = field(default_factory=dict)
    state_machines: dict[str, str] = field(default_factory=dict)
    http_apis: dict[str, list[Route]] = field(default_factory=dict)
    rules: dict[str, Rule] = field(default_factory=dict)
    pipelines: dict[str, Pipeline] = field(default_factory=dict)
    not_needed: dict[str, str] = field(default_factory=dict)
    unsupported: dict[str, str] = field(default_factory=dict)
    skipped_by_condition: list[str] = field(default_factory=list)
    outputs: dict[str, str] = field(default_factory=dict)

    @property
    def created(self) -> set[str]:
        return {
            *self.tables,
            *self.parameters_stored,
            *self.topics,
            *self.subscriptions,
            *self.layers,
            *self.functions,
            *self.state_machines,
            *self.http_apis,
            *self.rules,
            *self.pipelines,
        }


def _physical(
    resources: Mapping[str, Any], stack: str, api_url: str, name_of: Callable[[Any], Any]
) -> tuple[dict[str, str], dict[tuple[str, str], str]]:
    """Names and ARNs of every resource, known before any is created.

    A resource's name is its Name/TableName/TopicName property when that resolves
    from parameters alone (as names in this template do), else `<stack>-<logical id>`.
    """
    refs: dict[str, str] = {}
    attrs: dict[tuple[str, str], str] = {}
    arn = f"arn:aws:{{}}:{REGION}:{ACCOUNT}:{{}}"
    for logical, res in resources.items():
        kind = res.get("Type", "")
        props = res.get("Properties") or {}
        try:
            name = name_of(props.get("Name") or props.get("TableName") or props.get("TopicName"))
        except DeployError:
            name = None
        physical = name if isinstance(name, str) and name else f"{stack}-{logical}"
        if kind == "AWS::DynamoDB::Table":
            refs[logical] = physical
            attrs[(logical, "Arn")] = arn.format("dynamodb", f"table/{physical}")
        elif kind == "AWS::SNS::Topic":
            refs[logical] = arn.format("sns", physical)
            attrs[(logical, "TopicArn")] = refs[logical]
            attrs[(logical, "TopicName")] = physical
        elif kind == "AWS::Serverless::Function":
            refs[logical] = physical
            attrs[(logical, "Arn")] = arn.format("lambda", f"function:{physical}")
        elif kind == "AWS::Serverless::StateMachine":
            refs[logical] = arn.format("states", f"stateMachine:{physical}")
            attrs[(logical, "Arn")] = refs[logical]
            attrs[(logical, "Name")] = physical
        elif kind == "AWS::Serverless::HttpApi":
            refs[logical] = logical  # the API id; see `localize` in deploy()
            attrs[(logical, "ApiEndpoint")] = api_url
        elif kind in ("AWS::CodePipeline::Pipeline", "AWS::SSM::Parameter"):
            refs[logical] = physical
        else:
            refs[logical] = physical
            attrs[(logical, "Arn")] = arn.format("local", f"{logical}/{physical}")
    return refs, attrs


def check_parameters(template: Mapping[str, Any], values: Mapping[str, Any]) -> None:
    """Refuse parameter values as CloudFormation would: constraints, then Rules."""
    problems = []
    for name, spec in (template.get("Parameters") or {}).items():
        if name not in values:
            problems.append(f"{name}: no value and no default")
            continue
        value = values[name]
        items = value if isinstance(value, list) else [value]
        hint = spec.get("ConstraintDescription", "")
        for item in items:
            text = str(item)
            if "AllowedPattern" in spec and not re.fullmatch(spec["AllowedPattern"], text):
                problems.append(f"{name}={text!r} does not match {spec['AllowedPattern']} {hint}")
            if "AllowedValues" in spec and text not in [str(v) for v in spec["AllowedValues"]]:
                problems.append(f"{name}={text!r} is not one of {spec['AllowedValues']}")
            if "MaxLength" in spec and len(text) > int(spec["MaxLength"]):
                problems.append(f"{name} is longer than {spec['MaxLength']} characters")
            if spec.get("Type") == "Number":
                try:
                    number = float(text)
                except ValueError:
                    problems.append(f"{name}={text!r} is not a number")
                    continue
                if "MinValue" in spec and number < float(spec["MinValue"]):
                    problems.append(f"{name}={text} is below MinValue {spec['MinValue']}")
                if "MaxValue" in spec and number > float(spec["MaxValue"]):
                    problems.append(f"{name}={text} is above MaxValue {spec['MaxValue']}")
    if not problems:
        resolver = Resolver({}, values, "check", {}, {})
        for rule in (template.get("Rules") or {}).values():
            for assertion in rule.get("Assertions", []):
                if not resolver.value(assertion["Assert"]):
                    problems.append(assertion.get("AssertDescription", "a Rule failed"))
    if problems:
        raise DeployError("parameters refused: " + "; ".join(problems))


# AWS's length limits of the names this template sets (CloudFormation refuses longer).
NAME_LIMITS = {
    "AWS::CodePipeline::Pipeline": 100,
    "AWS::Serverless::StateMachine": 80,
    "AWS::SSM::Parameter": 1011,
    "AWS::Serverless::LayerVersion": 140,
}


def check_names(resources: Mapping[str, Any], names: Mapping[str, str], stack_name: str) -> None:
    """Refuse names longer than AWS allows (e.g. a stack name too long for its pipelines)."""
    problems = [
        f"{logical}: the name {names[logical]!r} has {len(names[logical])} characters, "
        f"{res['Type']} allows {NAME_LIMITS[res['Type']]}"
        for logical, res in resources.items()
        if res.get("Type") in NAME_LIMITS and len(names[logical]) > NAME_LIMITS[res["Type"]]
    ]
    if problems:
        raise DeployError(
            f"stack {stack_name!r}: names too long (docs/operations.md, names and their "
            "limits): " + "; ".join(problems)
        )


def deploy(
    aws: LocalAws,
    project_dir: Path,
    *,
    stack_name: str = "image-cicd",
    parameters: Mapping[str, Any] | None = None,
    api_url: str = "http://127.0.0.1",
    template_file: str = "template.yaml",
) -> Deployment:
    """Create the template's resources in the local AWS; `api_url` serves the HTTP APIs."""
    template = load_template(project_dir / template_file)
    expanded = expand(template, parameters)
    params = parameter_values(template, parameters)
    check_parameters(template, params)
    resources: dict[str, Any] = expanded.get("Resources") or {}
    names = Resolver(expanded, params, stack_name, {}, {})
    refs, attrs = _physical(resources, stack_name, api_url, names.value)
    resolver = Resolver(expanded, params, stack_name, refs, attrs)
    check_names(
        {k: v for k, v in resources.items() if resolver.conditions.get(v.get("Condition"), True)},
        {logical: attrs.get((logical, "Name"), ref) for logical, ref in refs.items()},
        stack_name,
    )
    # AWS's endpoint form of an HTTP API (as the template builds it with Fn::Sub)
    # becomes the local server's URL.
    api_hosts = [
        f"https://{logical}.execute-api.{REGION}.amazonaws.com"
        for logical, res in resources.items()
        if res.get("Type") == "AWS::Serverless::HttpApi"
    ]
    local_api = api_url.rstrip("/")
    out = Deployment(stack_name=stack_name, parameters=dict(params))
    globals_fn = (expanded.get("Globals") or {}).get("Function") or {}

    def localize(text: Any) -> Any:
        if isinstance(text, str):
            for host in api_hosts:
                text = text.replace(host, local_api)
        return text

    ordered = sorted(resources.items(), key=lambda kv: _order(kv[1].get("Type", "")))
    for logical, res in ordered:
        kind = res.get("Type", "")
        if "Condition" in res and not resolver.conditions.get(res["Condition"], False):
            out.skipped_by_condition.append(logical)
            continue
        if kind in NOT_NEEDED:
            out.not_needed[logical] = kind
            continue
        if kind not in CREATED:
            out.unsupported[logical] = kind
            continue
        props = resolver.value(res.get("Properties") or {})
        if kind == "AWS::DynamoDB::Table":
            create_table(aws.client("dynamodb"), refs[logical], props)
            out.tables[logical] = refs[logical]
        elif kind == "AWS::SSM::Parameter":
            aws.client("ssm").put_parameter(
                Name=refs[logical], Value=props["Value"], Type=props.get("Type", "String")
            )
            out.parameters_stored[logical] = refs[logical]
        elif kind == "AWS::SNS::Topic":
            aws.client("sns").create_topic(Name=attrs[(logical, "TopicName")])
            out.topics[logical] = refs[logical]
        elif kind == "AWS::SNS::Subscription":
            sub = aws.client("sns").subscribe(
                TopicArn=props["TopicArn"], Protocol=props["Protocol"], Endpoint=props["Endpoint"]
            )
            out.subscriptions[logical] = sub["SubscriptionArn"]
        elif kind == "AWS::Serverless::LayerVersion":
            out.layers[logical] = str((project_dir / props["ContentUri"]).resolve())
            refs[logical] = out.layers[logical]
        elif kind == "AWS::Serverless::Function":
            defaults = resolver.value(globals_fn)
            merged = {**defaults, **props}
            env = {
                **((defaults.get("Environment") or {}).get("Variables") or {}),
                **((props.get("Environment") or {}).get("Variables") or {}),
            }
            spec = FunctionSpec(
                name=refs[logical],
                code_dir=(project_dir / merged["CodeUri"]).resolve(),
                handler=merged.get("Handler", "app.lambda_handler"),
                layer_dirs=[Path(p) for p in merged.get("Layers", [])],
                environment={k: str(localize(v)) for k, v in env.items()},
                timeout_seconds=float(merged.get("Timeout", 3)),
                memory_mb=int(merged.get("MemorySize", 128)),
            )
            aws.deploy_function(spec)
            out.functions[logical] = refs[logical]
            for event in (props.get("Events") or {}).values():
                if event.get("Type") == "HttpApi":
                    ep = event["Properties"]
                    out.http_apis.setdefault(ep["ApiId"], []).append(
                        Route(ep["Method"].upper(), ep["Path"], refs[logical])
                    )
        elif kind == "AWS::Serverless::StateMachine":
            definition = (project_dir / props["DefinitionUri"]).read_text()
            subs = {k: str(v) for k, v in (props.get("DefinitionSubstitutions") or {}).items()}
            missing = sorted(set(re.findall(r"\$\{([A-Za-z0-9_]+)\}", definition)) - set(subs))
            if missing:
                raise DeployError(f"{logical}: no DefinitionSubstitutions for {missing}")
            for key, value in subs.items():
                definition = definition.replace("${" + key + "}", value)
            aws.client("stepfunctions").create_state_machine(
                name=attrs[(logical, "Name")],
                definition=definition,
                roleArn=aws.ensure_role(f"{stack_name}-states"),
                type=props.get("Type", "STANDARD"),
            )
            out.state_machines[logical] = refs[logical]
        elif kind == "AWS::Serverless::HttpApi":
            out.http_apis.setdefault(logical, [])
        elif kind == "AWS::Events::Rule":
            out.rules[logical] = _rule(refs[logical], props)
        elif kind == "AWS::CodePipeline::Pipeline":
            out.pipelines[logical] = _pipeline(props)
    out.outputs = {
        name: str(localize(resolver.value(spec["Value"])))
        for name, spec in (expanded.get("Outputs") or {}).items()
        if resolver.conditions.get(spec.get("Condition"), True)
    }
    return out


def _order(kind: str) -> int:
    """Tables and topics first, functions before the machines that call them."""
    order = {t: i for i, t in enumerate(CREATED)}
    return order.get(kind, len(order))


def create_table(ddb: Any, name: str, props: Mapping[str, Any]) -> None:
    """Create table ``name`` with DynamoDB client ``ddb`` from a template's Properties
    (the parts moto honours: keys, indexes, billing mode, time to live)."""
    args: dict[str, Any] = {
        "TableName": name,
        "AttributeDefinitions": props["AttributeDefinitions"],
        "KeySchema": props["KeySchema"],
        "BillingMode": props.get("BillingMode", "PAY_PER_REQUEST"),
    }
    if props.get("GlobalSecondaryIndexes"):
        args["GlobalSecondaryIndexes"] = props["GlobalSecondaryIndexes"]
    ddb.create_table(**args)
    ttl = props.get("TimeToLiveSpecification")
    if ttl:
        ddb.update_time_to_live(TableName=name, TimeToLiveSpecification=ttl)


def _rule(name: str, props: Mapping[str, Any]) -> Rule:
    (target,) = props["Targets"]
    arn = str(target["Arn"])
    if ":codepipeline:" in arn:
        return Rule(name, props["EventPattern"], pipeline=arn.rsplit(":", 1)[-1])
    if ":states:" in arn:
        transformer = target.get("InputTransformer") or {}
        return Rule(
            name,
            props["EventPattern"],
            state_machine_arn=arn,
            input_paths=dict(transformer.get("InputPathsMap") or {}),
            input_template=str(transformer.get("InputTemplate") or ""),
        )
    if ":lambda:" in arn:
        return Rule(name, props["EventPattern"], function=arn.rsplit(":", 1)[-1])
    raise DeployError(f"rule {name}: no local runner for the target {arn}")


def _pipeline(props: Mapping[str, Any]) -> Pipeline:
    source: dict[str, Any] = {}
    invoke: dict[str, Any] = {}
    for stage in props["Stages"]:
        for action in stage["Actions"]:
            type_id = action["ActionTypeId"]
            if type_id["Provider"] == "ECR":
                source = action["Configuration"]
            elif type_id["Provider"] == "StepFunctions":
                invoke = action["Configuration"]
            else:
                raise DeployError(f"pipeline {props['Name']}: no local runner for {type_id}")
    if not source or not invoke:
        raise DeployError(
            f"pipeline {props['Name']}: needs an ECR source and a StepFunctions action"
        )
    if invoke.get("InputType") != "FilePath":
        raise DeployError(f"pipeline {props['Name']}: only InputType FilePath is run locally")
    return Pipeline(
        name=props["Name"],
        source_repository=source["RepositoryName"],
        image_tag=source.get("ImageTag", "latest"),
        state_machine_arn=invoke["StateMachineArn"],
        execution_name_prefix=invoke.get("ExecutionNamePrefix", ""),
        input_file=invoke.get("Input", "imageDetail.json"),
        execution_mode=props.get("ExecutionMode", "SUPERSEDED"),
    )
