"""Approval API: GET /approvals/{id} shows the page, POST decides (API Gateway HTTP API)."""

from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from botocore.exceptions import BotoCoreError, ClientError

from image_cicd.approvals import endpoint
from image_cicd.aws.stepfunctions import StepFunctionsNotifier
from image_cicd.aws.wiring import client, services

logger, tracer, metrics = Logger(), Tracer(), Metrics()
app = APIGatewayHttpResolver()


def _page(page: endpoint.Page) -> Response[str]:
    status, html = page
    return Response(status_code=status, body=html, headers=dict(endpoint.HEADERS))


@app.get("/approvals/<approval_id>")
def show(approval_id: str) -> Response[str]:
    return _page(endpoint.show(services().ledger, approval_id))


def aws_unreachable(error: Exception) -> Response[str]:
    """DynamoDB could not be reached (a decision in progress was undone): try again."""
    logger.warning("AWS unreachable", extra={"error": type(error).__name__})
    return _page(endpoint.unavailable())


app.exception_handler([ClientError, BotoCoreError])(aws_unreachable)


@app.post("/approvals/<approval_id>")
def submit(approval_id: str) -> Response[str]:
    event = app.current_event
    page = endpoint.submit(
        services().ledger,
        StepFunctionsNotifier(client("stepfunctions")),
        approval_id,
        event.body or "",
        base64_encoded=bool(event.is_base64_encoded),
        source_ip=event.request_context.http.source_ip,
        user_agent=event.request_context.http.user_agent,
    )
    metrics.add_metric(name=f"ApprovalPost{page[0]}", unit=MetricUnit.Count, value=1)
    logger.info("decision posted", extra={"status": page[0]})
    return _page(page)


@logger.inject_lambda_context(correlation_id_path="requestContext.requestId")
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
