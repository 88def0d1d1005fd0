"""Scale and AWS limits of template.yaml, checked without AWS (issue 8, sections 3 and 4).

* resources per stack (CloudFormation: 500) for 200 repositories in both trigger modes,
  counted after the SAM transform (each serverless resource's generated resources);
* every function's environment (Lambda: 4 KB in all) with every parameter at its bound;
* the test poll loop's execution history (Step Functions: 25,000 events) in the worst
  case the parameters' bounds allow;
* no `${Repo}` / `&{Repo}` inside property values; names within AWS's length limits.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from image_cicd.local.template import FOREACH_PREFIX, expand, load_template, parameter_values
from image_cicd.promotion.checks import poll_tests
from image_cicd.promotion.payloads import TestRun
from image_cicd.promotion.settings import RepositoryTests

ROOT = Path(__file__).resolve().parents[2]
PROMOTION = ROOT / "statemachines" / "promotion.asl.json"
CLOUDFORMATION_MAX_RESOURCES = 500
LAMBDA_MAX_ENVIRONMENT_BYTES = 4096
STEP_FUNCTIONS_MAX_HISTORY_EVENTS = 25_000
CLOUDFORMATION_MAX_PARAMETER_BYTES = 4096
# Longest accepted names (docs/operations.md "Names and their limits").
MAX_REPOSITORY_NAME = 43  # <name>-<36-character id> <= 80 (execution names)
MAX_STACK_NAME = 56  # <stack>-<name> <= 100 (pipeline names)
# Upper bounds for what is not a parameter: a physical name or ARN CloudFormation
# generates (Ref / GetAtt of a resource), and the pseudo parameters.
RESOURCE_VALUE_BYTES = 256
PSEUDO = {
    "AWS::StackName": "s" * MAX_STACK_NAME,
    "AWS::Region": "ap-southeast-3",
    "AWS::AccountId": "123456789012",
    "AWS::Partition": "aws-us-gov",
    "AWS::URLSuffix": "amazonaws.com.cn",
}


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    return load_template(ROOT / "template.yaml")


def repositories(count: int, length: int = MAX_REPOSITORY_NAME) -> list[str]:
    return [f"r{i:03d}-" + "x" * (length - 5) for i in range(count)]


def evaluate(expression: Any, params: dict[str, Any], conditions: dict[str, Any]) -> Any:
    if isinstance(expression, dict) and len(expression) == 1:
        ((fn, arg),) = expression.items()
        if fn == "Ref":
            return params[arg]
        if fn == "Condition":
            return evaluate(conditions[arg], params, conditions)
        if fn == "Fn::And":
            return all(evaluate(a, params, conditions) for a in arg)
        if fn == "Fn::Or":
            return any(evaluate(a, params, conditions) for a in arg)
        if fn == "Fn::Not":
            return not evaluate(arg[0], params, conditions)
        if fn == "Fn::Equals":
            return evaluate(arg[0], params, conditions) == evaluate(arg[1], params, conditions)
        raise AssertionError(f"unexpected condition function {fn}")
    return expression


def deployed(raw: dict[str, Any], overrides: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The resources CloudFormation creates for these parameters (conditions applied)."""
    params = parameter_values(raw, overrides)
    template = expand(raw, params)
    conditions = template.get("Conditions") or {}
    return {
        name: resource
        for name, resource in template["Resources"].items()
        if "Condition" not in resource
        or evaluate(conditions[resource["Condition"]], params, conditions)
    }


def after_sam_transform(resource: dict[str, Any]) -> int:
    """How many CloudFormation resources the SAM transform makes of one resource."""
    kind, props = resource["Type"], resource.get("Properties") or {}
    if kind == "AWS::Serverless::Function":
        events = (props.get("Events") or {}).values()
        unknown = {e["Type"] for e in events} - {"HttpApi"}
        assert not unknown, f"count what SAM generates for {unknown} events"
        # the function, its role (no Role given), one Lambda permission per HttpApi route
        return 1 + ("Role" not in props) + len(events)
    if kind == "AWS::Serverless::StateMachine":
        assert not props.get("Events"), "count what SAM generates for state machine events"
        return 1 + ("Role" not in props)
    if kind == "AWS::Serverless::HttpApi":
        return 2  # the API and its $default stage
    if kind == "AWS::Serverless::Api":
        raise AssertionError("count the REST API's deployment and stage")
    return 1


def count(raw: dict[str, Any], overrides: dict[str, Any]) -> int:
    return sum(after_sam_transform(r) for r in deployed(raw, overrides).values())


# --------------------------------------------------------------------------- resources


@pytest.mark.parametrize("mode", ["Pipeline", "Direct"])
def test_the_stack_holds_200_repositories(raw: dict[str, Any], mode: str) -> None:
    mode_given = {} if mode == "Pipeline" else {"TriggerMode": mode}  # Pipeline: the default
    names = repositories(200, 8)
    # The list is one CloudFormation parameter value: at most 4,096 bytes.
    assert len(",".join(names).encode()) <= CLOUDFORMATION_MAX_PARAMETER_BYTES
    total = count(raw, {"Repositories": names, **mode_given})
    assert total <= CLOUDFORMATION_MAX_RESOURCES, f"{mode}: {total} resources"


def test_the_documented_200_names_fit_in_one_parameter_value() -> None:
    # docs/operations.md: 200 names of 19 characters on average fit; repo-1..repo-200 too
    assert len(",".join(repositories(200, 19)).encode()) <= CLOUDFORMATION_MAX_PARAMETER_BYTES
    assert len(",".join(repositories(200, 20)).encode()) > CLOUDFORMATION_MAX_PARAMETER_BYTES
    assert len(",".join(f"repo-{n}" for n in range(1, 201)).encode()) == 1691


def test_test_config_is_limited_to_what_a_parameter_holds(raw: dict[str, Any]) -> None:
    assert raw["Parameters"]["TestConfig"]["MaxLength"] == CLOUDFORMATION_MAX_PARAMETER_BYTES


def test_pipeline_mode_costs_two_resources_per_repository_and_direct_mode_none(
    raw: dict[str, Any],
) -> None:
    one = {"Repositories": ["a"]}
    two = {"Repositories": ["a", "b"]}
    assert count(raw, {**two, "TriggerMode": "Pipeline"}) - count(raw, one) <= 2
    assert count(raw, {**two, "TriggerMode": "Direct"}) == count(
        raw, {**one, "TriggerMode": "Direct"}
    )


# --------------------------------------------------------------------------- environment


def bounded_parameters(raw: dict[str, Any]) -> dict[str, Any]:
    """Every parameter at its largest accepted value (lists: 200 longest names)."""
    values: dict[str, Any] = {}
    for name, spec in raw["Parameters"].items():
        if spec["Type"] == "CommaDelimitedList":
            values[name] = repositories(200)
        elif spec["Type"] == "Number":
            values[name] = str(spec.get("MaxValue", max(spec.get("AllowedValues", [0]))))
        elif "AllowedValues" in spec:
            values[name] = max((str(v) for v in spec["AllowedValues"]), key=len)
        else:
            values[name] = "x" * int(spec.get("MaxLength", CLOUDFORMATION_MAX_PARAMETER_BYTES))
    # TestConfig at its MaxLength (above) is in no function's environment.
    return values


def length_of(value: Any, params: dict[str, Any]) -> str:
    """The value with every parameter at its bound and every resource at 256 bytes."""
    if isinstance(value, str | int | float):
        return str(value)
    assert isinstance(value, dict), value
    assert len(value) == 1, value
    ((fn, arg),) = value.items()
    if fn == "Ref":
        if arg in params:
            found = params[arg]
            return ",".join(found) if isinstance(found, list) else str(found)
        return PSEUDO.get(arg, "r" * RESOURCE_VALUE_BYTES)
    if fn == "Fn::GetAtt":
        return "r" * RESOURCE_VALUE_BYTES
    if fn == "Fn::Join":
        items = arg[1] if isinstance(arg[1], list) else [arg[1]]
        return str(arg[0]).join(length_of(i, params) for i in items)
    if fn == "Fn::Sub":
        text, variables = (arg, {}) if isinstance(arg, str) else (arg[0], arg[1])

        def one(match: re.Match[str]) -> str:
            name = match.group(1)
            if name in variables:
                return length_of(variables[name], params)
            return length_of({"Ref": name}, params) if "." not in name else "r" * 256

        return re.sub(r"\$\{([A-Za-z0-9:.]+)\}", one, text)
    raise AssertionError(f"unexpected function {fn} in an environment value")


def environments(raw: dict[str, Any], params: dict[str, Any]) -> dict[str, dict[str, str]]:
    template = expand(raw, params)
    shared = template["Globals"]["Function"].get("Environment", {}).get("Variables", {})
    out = {}
    for name, resource in template["Resources"].items():
        if resource["Type"] == "AWS::Serverless::Function":
            own = resource["Properties"].get("Environment", {}).get("Variables", {})
            out[name] = {k: length_of(v, params) for k, v in {**shared, **own}.items()}
    return out


def test_every_function_environment_fits_in_4_kb_with_200_repositories_and_tests(
    raw: dict[str, Any],
) -> None:
    params = bounded_parameters(raw)
    sizes = {
        name: len(json.dumps(variables, separators=(",", ":")))
        for name, variables in environments(raw, params).items()
    }
    assert {"ResolveRepoFunction", "RunTestsFunction", "RollbackFunction"} <= set(sizes)
    too_big = {name: size for name, size in sizes.items() if size > LAMBDA_MAX_ENVIRONMENT_BYTES}
    assert not too_big, f"environments over 4 KB: {too_big}"


def test_test_config_reaches_only_run_tests_through_its_parameter(raw: dict[str, Any]) -> None:
    template = expand(raw)
    text = json.dumps(template["Globals"])
    assert "TestConfig" not in text
    assert "Repositories" not in text
    readers = set()
    for name, resource in template["Resources"].items():
        if resource["Type"] == "AWS::Serverless::Function":
            own = json.dumps(resource["Properties"].get("Environment", {}))
            assert '"TestConfig"' not in own, name
            if "TestConfigParameter" in own:
                readers.add(name)
    assert readers == {"RunTestsFunction"}
    parameter = template["Resources"]["TestConfigParameter"]
    assert parameter["Type"] == "AWS::SSM::Parameter"
    assert parameter["Properties"]["Value"] == {"Ref": "TestConfig"}


# --------------------------------------------------------------------------- history


def _events(state: dict[str, Any]) -> int:
    """History events one visit of a state writes, its retries at their worst."""
    kind = state["Type"]
    if kind == "Task":
        # Entered, Scheduled, Started, (Submitted), Succeeded, Exited; each retry
        # adds Failed, Scheduled, Started, (Submitted).
        retries = sum(r.get("MaxAttempts", 3) for r in state.get("Retry", []))
        return 6 + 4 * retries
    if kind in ("Pass", "Choice", "Wait", "Succeed", "Fail"):
        return 2
    raise AssertionError(f"count the history events of a {kind} state")


def _cycles(states: dict[str, Any]) -> set[frozenset[str]]:
    def successors(name: str) -> list[str]:
        state = states[name]
        nexts = [state[k] for k in ("Next", "Default") if k in state]
        return nexts + [c["Next"] for c in state.get("Catch", []) + state.get("Choices", [])]

    found: set[frozenset[str]] = set()

    def walk(name: str, path: list[str]) -> None:
        if name in path:
            found.add(frozenset(path[path.index(name) :]))
            return
        for nxt in successors(name):
            walk(nxt, [*path, name])

    walk(next(iter(states)), [])
    for start in states:
        walk(start, [])
    return found


class _AlwaysRunning:
    def start(self, arn: str, name: str, payload: dict[str, Any]) -> str:
        raise AssertionError("not started here")

    def status(self, execution_arn: str) -> tuple[str, str]:
        return "RUNNING", ""

    def stop(self, execution_arn: str, cause: str) -> None:
        return None


def worst_case_polls(timeout_seconds: int) -> int:
    """Polls of a test machine that never ends, from the shortest accepted interval."""
    (shortest,) = [
        m.ge for m in RepositoryTests.model_fields["poll_seconds"].metadata if hasattr(m, "ge")
    ]
    run = TestRun(
        passed=False,
        status="RUNNING",
        summary="",
        checks=[],
        execution_arn="arn",
        poll_seconds=shortest,
        started_at=0.0,
    )
    now, polls = 0.0, 0
    while run.status == "RUNNING":
        now += run.poll_seconds  # Wait for tests
        polls += 1  # Check tests
        run = poll_tests(run, _AlwaysRunning(), timeout_seconds=timeout_seconds, now=now)
        assert polls < 10**6
    return polls


def test_the_test_poll_loop_stays_under_the_history_limit_in_the_worst_case(
    raw: dict[str, Any],
) -> None:
    definition = json.loads(PROMOTION.read_text(encoding="utf-8"))
    states = definition["States"]
    loop = {"Tests finished?", "Wait for tests", "Check tests"}
    # the poll loop is the only cycle: every other state is visited at most once
    assert _cycles(states) == {frozenset(loop)}
    per_poll = sum(_events(states[name]) for name in loop)
    once = sum(_events(state) for name, state in states.items() if name not in loop)
    polls = worst_case_polls(int(raw["Parameters"]["TestTimeoutSeconds"]["MaxValue"]))
    worst = 2 + once + polls * per_poll  # ExecutionStarted, ExecutionSucceeded/Failed
    assert worst < STEP_FUNCTIONS_MAX_HISTORY_EVENTS, f"{polls} polls, {worst} events"
    assert states["Wait for tests"]["SecondsPath"] == "$.tests.run.poll_seconds"


# --------------------------------------------------------------------------- portability


def _strings(node: Any) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, list):
        return [s for item in node for s in _strings(item)]
    if isinstance(node, dict):
        return [s for key, value in node.items() for s in (*_strings(key), *_strings(value))]
    return []


def test_the_loop_identifier_appears_only_in_logical_ids(raw: dict[str, Any]) -> None:
    loops = [(k, v) for k, v in raw["Resources"].items() if k.startswith(FOREACH_PREFIX)]
    assert loops
    for _key, (identifier, _collection, fragment) in loops:
        markers = (f"${{{identifier}}}", f"&{{{identifier}}}")
        for logical, resource in fragment.items():
            assert any(m in logical for m in markers), logical
            properties = resource.get("Properties", {})
            found = [s for s in _strings(properties) if any(m in s for m in markers)]
            assert not found, f"{logical}: {found} (use !Ref {identifier} or a known name)"


# --------------------------------------------------------------------------- names


def test_the_longest_accepted_names_fit_aws_limits(raw: dict[str, Any]) -> None:
    pattern = raw["Parameters"]["Repositories"]["AllowedPattern"]
    longest = "a" * MAX_REPOSITORY_NAME
    assert re.fullmatch(pattern, longest)
    assert not re.fullmatch(pattern, longest + "a")
    assert len(f"{longest}-{'0' * 36}") <= 80  # CodePipeline: <prefix>-<execution id>
    stack = PSEUDO["AWS::StackName"]
    assert len(f"{stack}-{longest}") <= 100  # pipeline names
    assert len(f"{stack}-promotion") <= 80  # state machine names
    assert len(f"{stack}-rollback") <= 80
