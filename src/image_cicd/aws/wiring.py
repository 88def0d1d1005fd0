"""Build the services a function needs from its environment, once per process.

The only module (with `promotion.settings`) that knows where settings and clients come from:
boto3 picks up `AWS_ENDPOINT_URL` like any AWS SDK, so the same wiring serves AWS
and the embedded local stack.
"""

from __future__ import annotations

import functools
from typing import Any

import boto3
from botocore.exceptions import ClientError

from image_cicd.aws.ecr import EcrScanFindings
from image_cicd.aws.stepfunctions import StepFunctionsTestMachines
from image_cicd.ledger.store import Ledger
from image_cicd.promotion.checks import CheckPorts
from image_cicd.promotion.errors import ConfigurationError
from image_cicd.promotion.locks import DynamoDBLocker
from image_cicd.promotion.settings import Settings
from image_cicd.promotion.steps import Services
from image_cicd.registry.connect import registry_from_url

# LEASE_SECONDS < LOCK_WAIT_SECONDS < the timeout of every function that takes a lock
# (tests/infra/test_lease_timing.py): a holder renews its lease by a heartbeat while it
# lives; a dead holder's lease runs out within LEASE_SECONDS, which a waiter outlasts and
# takes over; LockBusy (which the state machines retry) means a live holder, and is
# raised before the waiting function is killed.
LEASE_SECONDS = 15
LOCK_WAIT_SECONDS = 45


@functools.cache
def client(service: str) -> Any:
    return boto3.client(service)  # type: ignore[call-overload]


def parameter(name: str) -> str:
    """An SSM parameter's value: the configuration too large for a function's environment."""
    try:
        return str(client("ssm").get_parameter(Name=name)["Parameter"]["Value"])
    except ClientError as exc:
        raise ConfigurationError(f"cannot read the SSM parameter {name}: {exc}") from exc


@functools.cache
def services() -> Services:
    # Once per process: the parameters are read at the first invocation only.
    settings = Settings.from_env(load=parameter)
    dynamodb = client("dynamodb")
    sns = client("sns")

    def publish(topic_arn: str, subject: str, message: str) -> None:
        if topic_arn:
            sns.publish(TopicArn=topic_arn, Subject=subject, Message=message)

    return Services(
        settings=settings,
        connect=lambda: registry_from_url(
            settings.registry_url, None if settings.registry_url else client("ecr")
        ),
        ledger=Ledger(settings.ledger_table, dynamodb),
        locker=DynamoDBLocker(
            settings.ledger_table,
            dynamodb,
            lease_seconds=LEASE_SECONDS,
            wait_seconds=LOCK_WAIT_SECONDS,
        ),
        publish=publish,
    )


@functools.cache
def check_ports() -> CheckPorts:
    """The Run tests step's ports: ECR's scan findings and the repositories' test machines."""
    return CheckPorts(
        scans=EcrScanFindings(client("ecr")),
        machines=StepFunctionsTestMachines(client("stepfunctions")),
    )
