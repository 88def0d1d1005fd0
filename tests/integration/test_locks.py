"""Lease locks on the ledger table (moto) and in-process."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from support.aws import moto_aws
from support.ledger_table import create_ledger_table

from image_cicd.promotion.locks import DynamoDBLocker, LeaseLost, LockBusy, ThreadLocker

TABLE = "ledger"
KEY = "ecr-prod/repo-1"


class SerializedClient:
    """A DynamoDB client whose calls run one at a time.

    DynamoDB applies each conditional write atomically; moto's in-process backend
    does not guard against two threads interleaving inside one call. Serialising
    the calls gives moto DynamoDB's per-request atomicity, and nothing more: the
    locker's own waiting, conditions and releases still race for real.
    """

    def __init__(self, client: Any) -> None:
        self._client = client
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._client, name)
        if not callable(attribute):
            return attribute

        def call(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                return attribute(*args, **kwargs)

        return call


class FakeClock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def dynamodb(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    with moto_aws(monkeypatch):
        client = boto3.client("dynamodb", region_name="us-east-1")
        create_ledger_table(client, TABLE)
        yield SerializedClient(client)


@pytest.fixture
def locker(dynamodb: Any) -> Callable[..., DynamoDBLocker]:
    def make(**options: Any) -> DynamoDBLocker:
        options.setdefault("poll_seconds", 0.01)
        return DynamoDBLocker(TABLE, dynamodb, **options)

    return make


def lock_owner(dynamodb: Any, key: str = KEY) -> str | None:
    item = dynamodb.get_item(
        TableName=TABLE, Key={"pk": {"S": f"LOCK#{key}"}, "sk": {"S": "LOCK"}}
    ).get("Item")
    return item["owner"]["S"] if item else None


def test_lock_excludes_concurrent_holders(locker: Callable[..., DynamoDBLocker]) -> None:
    counter = {"value": 0}
    errors: list[BaseException] = []

    def work() -> None:
        mine = locker(wait_seconds=60)
        try:
            for _ in range(3):
                with mine.hold(KEY) as lease:
                    seen = counter["value"]
                    time.sleep(0.005)  # invite a lost update if exclusion fails
                    lease.check()
                    counter["value"] = seen + 1
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert counter["value"] == 24


def test_lock_item_follows_contract(dynamodb: Any, locker: Callable[..., DynamoDBLocker]) -> None:
    clock = FakeClock()
    with locker(clock=clock, lease_seconds=60, owner="exec-1").hold(KEY) as lease:
        item = dynamodb.get_item(
            TableName=TABLE, Key={"pk": {"S": f"LOCK#{KEY}"}, "sk": {"S": "LOCK"}}
        )["Item"]
        assert item["owner"]["S"] == lease.owner
        assert lease.owner.startswith("exec-1:")
        assert float(item["lease_until"]["N"]) == pytest.approx(clock.now + 60)
        assert int(item["expires_at"]["N"]) > clock.now + 60  # TTL cleans up later
        assert lease.expires_at == pytest.approx(clock.now + 60)
    assert lock_owner(dynamodb) is None


def test_different_keys_do_not_block(locker: Callable[..., DynamoDBLocker]) -> None:
    with locker().hold("ecr-prod/repo-1"), locker(wait_seconds=0).hold("ecr-prod/repo-2"):
        pass


def test_busy_lock_raises_lock_busy_naming_key_and_holder(
    locker: Callable[..., DynamoDBLocker],
) -> None:
    with (
        locker(owner="first").hold(KEY) as held,
        pytest.raises(LockBusy) as busy,
        locker(wait_seconds=0.1).hold(KEY),
    ):
        pytest.fail("acquired a held lock")
    assert busy.value.key == KEY
    assert busy.value.holder == held.owner
    assert KEY in str(busy.value)
    assert held.owner in str(busy.value)


def test_expired_lease_is_taken_over(dynamodb: Any, locker: Callable[..., DynamoDBLocker]) -> None:
    clock = FakeClock()
    first = locker(clock=clock, lease_seconds=10)
    second = locker(clock=clock, lease_seconds=10, wait_seconds=0)

    stale_hold = first.hold(KEY)
    stale = stale_hold.__enter__()
    clock.now += 11  # the first holder stalls past its lease
    with second.hold(KEY) as fresh:
        assert lock_owner(dynamodb) == fresh.owner
        with pytest.raises(LeaseLost):
            stale.check()
        with pytest.raises(LeaseLost):
            stale.renew()
        fresh.check()
    with pytest.raises(LeaseLost):
        stale_hold.__exit__(None, None, None)


def test_release_of_lost_lease_keeps_new_holders_lock(
    dynamodb: Any, locker: Callable[..., DynamoDBLocker]
) -> None:
    clock = FakeClock()
    first = locker(clock=clock, lease_seconds=10)
    second = locker(clock=clock, lease_seconds=10, wait_seconds=0)

    stale_hold = first.hold(KEY)
    stale = stale_hold.__enter__()
    clock.now += 11
    fresh_hold = second.hold(KEY)
    fresh = fresh_hold.__enter__()

    with pytest.raises(LeaseLost, match="lost before release"):
        stale_hold.__exit__(None, None, None)

    assert stale.released
    assert lock_owner(dynamodb) == fresh.owner
    fresh.check()
    fresh_hold.__exit__(None, None, None)
    assert lock_owner(dynamodb) is None


def test_an_error_inside_a_lost_lease_is_the_error_reported(
    dynamodb: Any, locker: Callable[..., DynamoDBLocker]
) -> None:
    clock = FakeClock()
    first = locker(clock=clock, lease_seconds=10)
    second = locker(clock=clock, lease_seconds=10, wait_seconds=0)

    def work_that_fails_after_the_lease_was_taken_over() -> None:
        with first.hold(KEY):
            clock.now += 11
            with second.hold(KEY):
                raise KeyError("the real failure")

    with pytest.raises(KeyError, match="the real failure"):
        work_that_fails_after_the_lease_was_taken_over()

    assert lock_owner(dynamodb) is None


def test_renew_extends_the_lease(locker: Callable[..., DynamoDBLocker]) -> None:
    clock = FakeClock()
    holder = locker(clock=clock, lease_seconds=10)
    other = locker(clock=clock, lease_seconds=10, wait_seconds=0)
    with holder.hold(KEY) as lease:
        clock.now += 8
        lease.renew()
        assert lease.expires_at == pytest.approx(clock.now + 10)
        clock.now += 8  # past the original lease, within the renewed one
        lease.check()
        with pytest.raises(LockBusy), other.hold(KEY):
            pytest.fail("took over a renewed lease")


def test_expired_lease_fails_check_even_without_takeover(
    locker: Callable[..., DynamoDBLocker],
) -> None:
    clock = FakeClock()
    with locker(clock=clock, lease_seconds=10).hold(KEY) as lease:
        clock.now += 10
        with pytest.raises(LeaseLost, match="expired"):
            lease.check()
    # Nobody took it over, so the release itself succeeds.


def test_a_heartbeat_keeps_a_working_holders_short_lease(
    dynamodb: Any, locker: Callable[..., DynamoDBLocker]
) -> None:
    holder = locker(lease_seconds=0.6)  # renewed every 0.2 s while held
    other = locker(lease_seconds=0.6, wait_seconds=0)
    with holder.hold(KEY) as lease:
        acquired_until = lease.expires_at
        time.sleep(1.8)  # three leases long: the holder works, it does not die
        lease.check()
        assert lease.expires_at > acquired_until
        with pytest.raises(LockBusy), other.hold(KEY):
            pytest.fail("took over a lease its live holder keeps renewing")
    assert lock_owner(dynamodb) is None


def test_a_heartbeat_that_finds_the_lease_taken_over_makes_check_fail(
    locker: Callable[..., DynamoDBLocker],
) -> None:
    clock = FakeClock()
    stalled = locker(clock=clock, lease_seconds=10, heartbeat_seconds=0.02)
    stalled_hold = stalled.hold(KEY)
    lease = stalled_hold.__enter__()
    clock.now += 11  # the holder stalled past its lease (its beats too)
    with locker(clock=clock, lease_seconds=10, wait_seconds=0).hold(KEY):
        deadline = time.monotonic() + 10
        while lease.lost is None and time.monotonic() < deadline:
            time.sleep(0.01)
        with pytest.raises(LeaseLost, match="expired or was taken over"):
            lease.check()
    with pytest.raises(LeaseLost, match="lost before release"):
        stalled_hold.__exit__(None, None, None)


@pytest.mark.parametrize("heartbeat", [0, -1, 10, 11])
def test_a_heartbeat_must_beat_within_the_lease(
    locker: Callable[..., DynamoDBLocker], heartbeat: float
) -> None:
    with pytest.raises(ValueError, match="heartbeat_seconds"):
        locker(lease_seconds=10, heartbeat_seconds=heartbeat)


def test_thread_locker_excludes_and_times_out() -> None:
    locker = ThreadLocker(wait_seconds=60)
    counter = {"value": 0}

    def work() -> None:
        for _ in range(3):
            with locker.hold(KEY) as lease:
                seen = counter["value"]
                time.sleep(0.002)
                lease.check()
                counter["value"] = seen + 1

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert counter["value"] == 24

    impatient = ThreadLocker(wait_seconds=0.05)
    with impatient.hold(KEY) as held:
        result: list[BaseException] = []

        def contend() -> None:
            try:
                with impatient.hold(KEY):
                    pass
            except LockBusy as busy:
                result.append(busy)

        thread = threading.Thread(target=contend)
        thread.start()
        thread.join()
        assert len(result) == 1
        assert held.owner in str(result[0])
    with pytest.raises(LeaseLost):
        held.check()
