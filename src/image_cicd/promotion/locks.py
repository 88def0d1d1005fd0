"""Per-key lease locks.

``DynamoDBLocker`` serialises work across processes and machines with a
conditional write on the ledger table (item ``pk=LOCK#<key>, sk=LOCK``). The lease
is short (``lease_seconds``) and a heartbeat thread renews it every
``heartbeat_seconds`` while the holder works, so a lock is held for as long as its
holder lives, and a holder that dies (a killed Lambda sandbox, a lost machine)
leaves a lease that expires within ``lease_seconds``, after which another caller
takes over. A heartbeat that finds the lease lost makes the next ``check()`` raise
LeaseLost. ``ThreadLocker`` does the same inside one process without DynamoDB.

Usage::

    with locker.hold("ecr-prod/repo-1") as lease:
        ...            # compute the next version
        lease.check()  # before the write that must be exclusive
        ...
"""

from __future__ import annotations

import contextlib
import math
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import TYPE_CHECKING, Protocol

from botocore.exceptions import ClientError

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

__all__ = ["DynamoDBLocker", "Lease", "LeaseLost", "LockBusy", "Locker", "ThreadLocker"]

#: Lock items are deleted by DynamoDB TTL this long after their lease ran out.
CLEANUP_AFTER_SECONDS = 3600


class LeaseLost(Exception):
    """The lease expired or another owner took the lock over."""


class LockBusy(Exception):
    """The lock could not be acquired within the wait time."""

    def __init__(self, key: str, holder: str | None, waited: float) -> None:
        self.key = key
        self.holder = holder
        self.waited = waited
        super().__init__(
            f"lock {key!r} is held by {holder or 'an unknown owner'}; "
            f"gave up after waiting {waited:.1f}s"
        )


class _LeaseBackend(Protocol):
    def _check(self, lease: Lease) -> None: ...
    def _renew(self, lease: Lease) -> float: ...


class Lease:
    """A held lock: ``key``, a unique ``owner`` token and ``expires_at`` (epoch s)."""

    def __init__(self, key: str, owner: str, expires_at: float, backend: _LeaseBackend) -> None:
        self.key = key
        self.owner = owner
        self.expires_at = expires_at
        self.released = False
        self.lost: str | None = None  # why a heartbeat found the lease gone
        self._backend = backend

    def check(self) -> None:
        """Raise LeaseLost unless this lease is still held."""
        if self.released:
            raise LeaseLost(f"lease on {self.key!r} was released")
        if self.lost is not None:
            raise LeaseLost(self.lost)
        self._backend._check(self)

    def renew(self) -> None:
        """Extend the lease by the locker's lease time; LeaseLost if it was lost."""
        if self.released:
            raise LeaseLost(f"lease on {self.key!r} was released")
        self.expires_at = self._backend._renew(self)

    def __repr__(self) -> str:
        return f"Lease(key={self.key!r}, owner={self.owner!r}, expires_at={self.expires_at})"


class Locker(Protocol):
    def hold(self, key: str) -> AbstractContextManager[Lease]: ...


def _owner_token(owner: str | None) -> str:
    suffix = uuid.uuid4().hex[:16]
    return f"{owner}:{suffix}" if owner else suffix


class DynamoDBLocker(Locker):
    """Lease locks in the ledger table."""

    def __init__(
        self,
        table_name: str,
        client: DynamoDBClient,
        *,
        lease_seconds: float = 15,
        wait_seconds: float = 30,
        poll_seconds: float = 0.2,
        heartbeat_seconds: float | None = None,
        owner: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if heartbeat_seconds is None:
            heartbeat_seconds = lease_seconds / 3  # two beats may fail before it expires
        if not 0 < heartbeat_seconds < lease_seconds:
            raise ValueError(
                f"heartbeat_seconds ({heartbeat_seconds}) must be above 0 and below "
                f"lease_seconds ({lease_seconds})"
            )
        self.table_name = table_name
        self.client = client
        self.lease_seconds = lease_seconds
        self.heartbeat_seconds = heartbeat_seconds
        self.wait_seconds = wait_seconds
        self.poll_seconds = poll_seconds
        self.owner = owner
        self.clock = clock

    @staticmethod
    def _pk(key: str) -> str:
        return f"LOCK#{key}"

    def _num(self, value: float) -> str:
        return f"{value:.6f}"

    @contextmanager
    def hold(self, key: str) -> Iterator[Lease]:
        lease = self._acquire(key)
        stop = threading.Event()
        beat = threading.Thread(
            target=self._heartbeat, args=(lease, stop), name=f"lease {key}", daemon=True
        )
        beat.start()
        try:
            yield lease
        except BaseException:
            stop.set()
            beat.join()
            # The error in flight is the one to report, not a lease lost meanwhile.
            with contextlib.suppress(LeaseLost):
                self._release(lease)
            raise
        stop.set()
        beat.join()
        self._release(lease)

    def _heartbeat(self, lease: Lease, stop: threading.Event) -> None:
        """Renew ``lease`` every ``heartbeat_seconds`` until ``stop`` or until it is lost.

        A failed renewal (DynamoDB unreachable) is tried again at the next beat; if the
        lease runs out meanwhile, ``check()`` says so by its expiry.
        """
        while not stop.wait(self.heartbeat_seconds):
            try:
                lease.renew()
            except LeaseLost as lost:
                lease.lost = str(lost)
                return
            except Exception:  # noqa: S112 - the next beat tries again
                continue

    def _acquire(self, key: str) -> Lease:
        owner = _owner_token(self.owner)
        started = time.monotonic()
        deadline = started + self.wait_seconds
        while True:
            now = self.clock()
            lease_until = now + self.lease_seconds
            try:
                self.client.put_item(
                    TableName=self.table_name,
                    Item={
                        "pk": {"S": self._pk(key)},
                        "sk": {"S": "LOCK"},
                        "owner": {"S": owner},
                        "lease_until": {"N": self._num(lease_until)},
                        "acquired_at": {"N": self._num(now)},
                        "expires_at": {"N": str(math.ceil(lease_until) + CLEANUP_AFTER_SECONDS)},
                    },
                    ConditionExpression="attribute_not_exists(pk) OR lease_until < :now",
                    ExpressionAttributeValues={":now": {"N": self._num(now)}},
                )
                return Lease(key, owner, lease_until, self)
            except ClientError as error:
                if error.response["Error"]["Code"] != "ConditionalCheckFailedException":
                    raise
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise LockBusy(key, self._holder(key), time.monotonic() - started)
            time.sleep(min(remaining, self.poll_seconds * random.uniform(0.5, 1.5)))

    def _holder(self, key: str) -> str | None:
        """The owner of the lock item now (expired or not), or None if there is none."""
        response = self.client.get_item(
            TableName=self.table_name,
            Key={"pk": {"S": self._pk(key)}, "sk": {"S": "LOCK"}},
            ConsistentRead=True,
        )
        owner = response.get("Item", {}).get("owner", {})
        return owner.get("S")

    def _check(self, lease: Lease) -> None:
        if self.clock() >= lease.expires_at:
            raise LeaseLost(f"lease on {lease.key!r} expired")
        holder = self._holder(lease.key)
        if holder != lease.owner:
            raise LeaseLost(f"lease on {lease.key!r} was taken over (now held by {holder})")

    def _renew(self, lease: Lease) -> float:
        now = self.clock()
        lease_until = now + self.lease_seconds
        try:
            self.client.update_item(
                TableName=self.table_name,
                Key={"pk": {"S": self._pk(lease.key)}, "sk": {"S": "LOCK"}},
                UpdateExpression="SET lease_until = :until, expires_at = :ttl",
                ConditionExpression="#owner = :me AND lease_until > :now",
                ExpressionAttributeNames={"#owner": "owner"},
                ExpressionAttributeValues={
                    ":until": {"N": self._num(lease_until)},
                    ":ttl": {"N": str(math.ceil(lease_until) + CLEANUP_AFTER_SECONDS)},
                    ":me": {"S": lease.owner},
                    ":now": {"N": self._num(now)},
                },
            )
        except ClientError as error:
            if error.response["Error"]["Code"] == "ConditionalCheckFailedException":
                raise LeaseLost(f"lease on {lease.key!r} expired or was taken over") from None
            raise
        return lease_until

    def _release(self, lease: Lease) -> None:
        if lease.released:
            return
        lease.released = True
        try:
            self.client.delete_item(
                TableName=self.table_name,
                Key={"pk": {"S": self._pk(lease.key)}, "sk": {"S": "LOCK"}},
                ConditionExpression="#owner = :me",
                ExpressionAttributeNames={"#owner": "owner"},
                ExpressionAttributeValues={":me": {"S": lease.owner}},
            )
        except ClientError as error:
            if error.response["Error"]["Code"] == "ConditionalCheckFailedException":
                raise LeaseLost(
                    f"lease on {lease.key!r} was lost before release "
                    f"(now held by {self._holder(lease.key) or 'nobody'})"
                ) from None
            raise


class ThreadLocker(Locker):
    """In-process locks per key (one process, no DynamoDB). Leases never expire."""

    def __init__(self, *, wait_seconds: float = 30, owner: str | None = None) -> None:
        self.wait_seconds = wait_seconds
        self.owner = owner
        self._guard = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}
        self._holders: dict[str, str] = {}

    @contextmanager
    def hold(self, key: str) -> Iterator[Lease]:
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        started = time.monotonic()
        if not lock.acquire(timeout=max(self.wait_seconds, 0)):
            raise LockBusy(key, self._holders.get(key), time.monotonic() - started)
        lease = Lease(key, _owner_token(self.owner), math.inf, self)
        self._holders[key] = lease.owner
        try:
            yield lease
        finally:
            lease.released = True
            self._holders.pop(key, None)
            lock.release()

    def _check(self, lease: Lease) -> None:
        if self._holders.get(lease.key) != lease.owner:
            raise LeaseLost(f"lease on {lease.key!r} is not held")

    def _renew(self, lease: Lease) -> float:
        self._check(lease)
        return math.inf
