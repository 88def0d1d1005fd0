"""Wait for approval: record the request (task token in the ledger) and publish its link.

The task token is never logged: the event is not logged and the model hides it.
"""

from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.utilities.parser import parse
from aws_lambda_powertools.utilities.typing import LambdaContext

from image_cicd.aws.stepfunctions import StepFunctionsNotifier
from image_cicd.aws.wiring import client, services
from image_cicd.promotion.payloads import ApprovalTask
from image_cicd.promotion.steps import request_approval

logger, tracer, metrics = Logger(), Tracer(), Metrics()


@logger.inject_lambda_context(correlation_id_path="execution")
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    task = parse(event=event, model=ApprovalTask)
    tests = task.tests.results() if task.tests else None
    request = request_approval(
        services(),
        task.plan,
        task.stage,
        task.task_token,
        notifier=StepFunctionsNotifier(client("stepfunctions")),
        tests=tests,
    )
    logger.info(
        "approval requested",
        extra={
            "stage": task.stage,
            "expires_at": request["expires_at"],
            "superseded": request["superseded"],
            "not_superseded": request["not_superseded"],
        },
    )
    # Not the approval id: the answer lands in the execution history, and the id
    # (with the page's form) is enough to decide.
    return {"expires_at": request["expires_at"]}
