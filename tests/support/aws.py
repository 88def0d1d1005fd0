"""moto's in-process AWS for the tests, with fake credentials and no endpoint override."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from moto import mock_aws

REGION = "us-east-1"
FAKE_CREDENTIALS = {
    "AWS_DEFAULT_REGION": REGION,
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
}


@contextmanager
def moto_aws(
    env: pytest.MonkeyPatch, config: dict[str, Any] | None = None, region: str = REGION
) -> Iterator[None]:
    """Inside: every boto3 client talks to moto in this process (``config`` is moto's),
    with fake credentials in ``env``; AWS_ENDPOINT_URL (the local stack's) is unset so
    that no client is sent elsewhere."""
    for name, value in {**FAKE_CREDENTIALS, "AWS_DEFAULT_REGION": region}.items():
        env.setenv(name, value)
    env.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws(config=config):
        yield
