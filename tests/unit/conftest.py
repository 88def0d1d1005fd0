"""Fixtures of the unit tests: an in-process moto DynamoDB, a fresh ledger on it, and the
handler loader of the handler tests (support.handlers)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from support.aws import REGION, moto_aws
from support.handlers import load as load  # the handler tests' loader fixture
from support.ledger_table import create_ledger_table

from image_cicd.ledger.store import Ledger


@pytest.fixture(scope="module")
def dynamodb() -> Iterator[Any]:
    """One in-process moto DynamoDB for the module (a client is slow to build)."""
    with pytest.MonkeyPatch.context() as env, moto_aws(env):
        yield boto3.client("dynamodb", region_name=REGION)


@pytest.fixture
def ledger(dynamodb: Any) -> Ledger:
    """A fresh ledger table per test."""
    return Ledger(create_ledger_table(dynamodb, f"ledger-{uuid.uuid4().hex}"), dynamodb)
