"""Build the services a function needs from its environment, once per process.

The only module (with `config`) that knows where settings and clients come from:
boto3 picks up `AWS_ENDPOINT_URL` like any AWS SDK, so the same wiring serves AWS
and the embedded local stack.
"""

from __future__ import annotations

import functools
from typing import Any

import boto3

from image_cicd.config import Settings
from image_cicd.ledger import Ledger
from image_cicd.locks import DynamoDBLocker
from image_cicd.registry.connect import registry_from_url
from image_cicd.workflow import Services


@functools.cache
def client(service: str) -> Any:
    return boto3.client(service)  # type: ignore[call-overload]


@functools.cache
def services() -> Services:
    settings = Settings.from_env()
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
        # Waits for a lease well inside every function's timeout, so that LockBusy
        # (which the state machines retry) is raised before the function is killed.
        locker=DynamoDBLocker(settings.ledger_table, dynamodb, lease_seconds=300, wait_seconds=45),
        publish=publish,
    )
