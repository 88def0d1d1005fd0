"""Copy to TEST: DEV@digest -> TEST, exact bytes, a new version tag, latest moved."""

from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.parser import parse
from aws_lambda_powertools.utilities.typing import LambdaContext

from image_cicd.aws.wiring import services
from image_cicd.promotion.payloads import CopyTask
from image_cicd.promotion.steps import copy_to_stage

logger, tracer, metrics = Logger(), Tracer(), Metrics()


@logger.inject_lambda_context(correlation_id_path="execution")
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    task = parse(event=event, model=CopyTask)
    copied = copy_to_stage(services(), task.plan, "TEST")
    metrics.add_metric(name="BlobsMounted", unit=MetricUnit.Count, value=copied.blobs_mounted)
    metrics.add_metric(name="BytesCopied", unit=MetricUnit.Bytes, value=copied.bytes_moved)
    if copied.mounts_refused:
        logger.warning(
            "streamed instead of mounting",
            extra={"blobs": copied.mounts_refused, "reason": copied.mount_refused_reason},
        )
    logger.info(
        "copied to TEST", extra={"repository": copied.repository, "version": copied.version}
    )
    return copied.model_dump(mode="json")
