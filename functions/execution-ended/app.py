"""Execution ended: a promotion stopped, timed out or failed without its Notify step.

Target of the EventBridge rule on "Step Functions Execution Status Change" events of
the promotion state machine (Step Functions runs no Catch when an execution is
stopped or times out).
"""

from typing import Any, Literal

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.parser import BaseModel, parse
from aws_lambda_powertools.utilities.parser.models import EventBridgeModel
from aws_lambda_powertools.utilities.typing import LambdaContext

from image_cicd.aws.wiring import services
from image_cicd.promotion.steps import execution_ended

logger, tracer, metrics = Logger(), Tracer(), Metrics()


class StatusChange(BaseModel):
    name: str
    status: Literal["ABORTED", "TIMED_OUT", "FAILED"]
    error: str | None = None
    cause: str | None = None


class StatusChangeEvent(EventBridgeModel):
    detail: StatusChange


@logger.inject_lambda_context(correlation_id_path="detail.name")
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any] | None:
    change = parse(event=event, model=StatusChangeEvent).detail
    sent = execution_ended(services(), change.name, change.status, change.error, change.cause)
    if sent is not None:
        metrics.add_metric(name=f"Promotion{change.status.title()}", unit=MetricUnit.Count, value=1)
    logger.info("execution ended", extra={"status": change.status, "recorded": sent is not None})
    return sent
