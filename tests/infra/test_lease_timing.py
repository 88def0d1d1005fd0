"""The lock's lease and wait fit the functions that take the lock (src/image_cicd/aws/wiring.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from image_cicd.aws.wiring import LEASE_SECONDS, LOCK_WAIT_SECONDS
from image_cicd.local.template import load_template

TEMPLATE_PATH = Path(__file__).resolve().parents[2] / "template.yaml"
# The functions whose core takes a repository's lock (versions.promote, rollback).
LOCKING = ["RetagAndCopyManifestFunction", "PromoteToProdFunction", "RollbackFunction"]


@pytest.mark.parametrize("function", LOCKING)
def test_a_dead_holders_lease_ends_within_a_waiters_wait_within_the_timeout(
    function: str,
) -> None:
    template = load_template(TEMPLATE_PATH)
    properties = template["Resources"][function]["Properties"]
    timeout = properties.get("Timeout", template["Globals"]["Function"]["Timeout"])
    # A waiter takes a dead holder's lock over instead of failing with LockBusy,
    assert LEASE_SECONDS < LOCK_WAIT_SECONDS
    # and gives up (LockBusy, retried) with time left to report it, before it is killed.
    assert timeout / 2 > LOCK_WAIT_SECONDS
