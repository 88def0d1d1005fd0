"""The ledger: approvals, promotions, releases and rollback plans in one DynamoDB table.

Item layout (pk / sk; docs/contracts.md "Ledger table" lists every attribute):

- approval request: ``APPROVAL#<id>`` / ``APPROVAL``,
  gsi1 ``APPROVALS`` / ``<status>#<created>``; a SUPERSEDED one also has
  ``superseded_by`` (the newer execution) and ``superseded_by_digest``
- promotion: ``PROMOTION#<execution>`` / ``PROMOTION``, gsi1 ``REPO#<name>`` / ``<started>``
- release (PROD): ``RELEASE#<prod repository>`` / ``<at>#<version>``
- requests waiting at a stage: ``WAITING#<stage>#<source repository>`` / ``WAITING``,
  one attribute ``waiter#<approval id>`` per request
- rollback plan: ``ROLLBACK#<execution>`` / ``PLAN``, written once per execution
- (the repository locks, ``LOCK#<repository>`` / ``LOCK``, are written by
  ``promotion.locks``)

Times are fixed-width ISO-8601 UTC strings; ``expires_at`` is the table's TTL
attribute (epoch seconds). Approval requests get a TTL some time after their
expiry (``approval_expires_at`` + ``approval_retention``) so a late click still finds
them; promotions, releases and rollback plans are the audit trail and never expire.
tests/integration/test_ledger_layout.py checks this layout against docs/contracts.md.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError

from image_cicd.ledger.records import (
    ApprovalRecord,
    ApprovalRequest,
    ApprovalStatus,
    Decision,
    Outcome,
    Promotion,
    Release,
    RollbackPlan,
    TestResults,
    iso,
)

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_dynamodb.type_defs import AttributeValueTypeDef

__all__ = [
    "AlreadyDecided",
    "ApprovalExpired",
    "ApprovalNotFound",
    "ApprovalSuperseded",
    "Ledger",
    "LedgerError",
    "PromotionNotFound",
    "Waiter",
]

_APPROVAL_ID = re.compile(r"^[A-Za-z0-9_-]{16,128}$")
_SECRET_FIELDS = {"task_token", "csrf_secret"}
_WAITER = "waiter#"
_serializer = TypeSerializer()
_deserializer = TypeDeserializer()


class LedgerError(Exception):
    """Base of the ledger's typed errors."""


class ApprovalNotFound(LedgerError):
    def __init__(self, approval_id: str) -> None:
        self.approval_id = approval_id
        super().__init__(f"no approval request {approval_id[:64]!r}")


class AlreadyDecided(LedgerError):
    """The approval was decided before; carries who decided, how and when."""

    def __init__(self, approval: ApprovalRequest) -> None:
        self.approval = approval
        self.status = approval.status
        self.decided_by = approval.decided_by
        self.decided_at = approval.decided_at
        when = iso(approval.decided_at) if approval.decided_at else "an unknown time"
        super().__init__(
            f"approval {approval.approval_id} was already {approval.status.lower()} "
            f"by {approval.decided_by or 'unknown'} at {when}"
        )


class ApprovalExpired(LedgerError):
    def __init__(self, approval: ApprovalRequest) -> None:
        self.approval = approval
        super().__init__(f"approval {approval.approval_id} expired at {iso(approval.expires_at)}")


class ApprovalSuperseded(LedgerError):
    """A newer image of the repository took this approval's place."""

    def __init__(self, approval: ApprovalRequest) -> None:
        self.approval = approval
        super().__init__(
            f"approval {approval.approval_id} was superseded by {approval.superseded_by} "
            f"({approval.superseded_by_digest})"
        )


@dataclass(frozen=True)
class Waiter:
    """A request entered in its (repository, stage)'s waiting list (``Ledger.add_waiter``)."""

    approval_id: str
    execution: str


class PromotionNotFound(LedgerError):
    def __init__(self, execution: str) -> None:
        self.execution = execution
        super().__init__(f"no promotion for execution {execution!r}")


class PromotionFinished(LedgerError):
    """The promotion has an outcome already (another writer recorded it first)."""

    def __init__(self, execution: str) -> None:
        self.execution = execution
        super().__init__(f"promotion {execution!r} has finished already")


# --------------------------------------------------------------------------- codec


def _to_dynamo(value: Any) -> Any:
    """JSON-shaped data -> what TypeSerializer accepts (floats become Decimal)."""
    if isinstance(value, float):
        return Decimal(repr(value))
    if isinstance(value, Mapping):
        return {k: _to_dynamo(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [_to_dynamo(v) for v in value]
    return value


def _from_dynamo(value: Any) -> Any:
    """TypeDeserializer output -> JSON-shaped data (Decimal becomes int or float)."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, Mapping):
        return {k: _from_dynamo(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [_from_dynamo(v) for v in value]
    return value


def _encode(data: Mapping[str, Any]) -> dict[str, AttributeValueTypeDef]:
    return {
        key: _serializer.serialize(value)
        for key, value in _to_dynamo(data).items()
        if value is not None
    }


def _decode(item: Mapping[str, Any]) -> dict[str, Any]:
    decoded = {key: _deserializer.deserialize(value) for key, value in item.items()}
    result: dict[str, Any] = _from_dynamo(decoded)
    return result


def _values(**values: Any) -> dict[str, AttributeValueTypeDef]:
    return {f":{key}": _serializer.serialize(_to_dynamo(value)) for key, value in values.items()}


def _conditional_failed(error: ClientError) -> bool:
    return error.response["Error"]["Code"] == "ConditionalCheckFailedException"


# --------------------------------------------------------------------------- ledger


class Ledger:
    """Data access for the ledger table; every method is one or two DynamoDB calls."""

    def __init__(
        self,
        table_name: str,
        client: DynamoDBClient,
        *,
        approval_retention: timedelta = timedelta(days=90),
    ) -> None:
        self.table_name = table_name
        self.client = client
        self.approval_retention = approval_retention

    # ---------------------------------------------------------------- approvals

    @staticmethod
    def _approval_key(approval_id: str) -> dict[str, AttributeValueTypeDef]:
        return {"pk": {"S": f"APPROVAL#{approval_id}"}, "sk": {"S": "APPROVAL"}}

    def _approval_item(self, approval: ApprovalRequest) -> dict[str, AttributeValueTypeDef]:
        data = approval.model_dump(mode="json", exclude=_SECRET_FIELDS)
        data["task_token"] = approval.task_token.get_secret_value()
        data["csrf_secret"] = approval.csrf_secret.get_secret_value()
        # The model's expiry lives in approval_expires_at; expires_at is the TTL.
        data["approval_expires_at"] = data.pop("expires_at")
        ttl = approval.expires_at + self.approval_retention
        return {
            **self._approval_key(approval.approval_id),
            "gsi1pk": {"S": "APPROVALS"},
            "gsi1sk": {"S": f"{approval.status}#{iso(approval.created_at)}"},
            "expires_at": {"N": str(int(ttl.timestamp()))},
            **_encode(data),
        }

    @staticmethod
    def _approval_from(item: Mapping[str, Any]) -> ApprovalRequest:
        data = _decode(item)
        data["expires_at"] = data.pop("approval_expires_at")
        return ApprovalRequest.model_validate(data)

    def put_approval_request(self, approval: ApprovalRequest) -> None:
        """Store a new approval request (fails if the id exists: ids are unique)."""
        self.client.put_item(
            TableName=self.table_name,
            Item=self._approval_item(approval),
            ConditionExpression="attribute_not_exists(pk)",
        )

    def get_approval(self, approval_id: str) -> ApprovalRequest:
        """The approval request; ApprovalNotFound for unknown or malformed ids."""
        if not _APPROVAL_ID.match(approval_id):
            raise ApprovalNotFound(approval_id)
        response = self.client.get_item(
            TableName=self.table_name, Key=self._approval_key(approval_id), ConsistentRead=True
        )
        if "Item" not in response:
            raise ApprovalNotFound(approval_id)
        return self._approval_from(response["Item"])

    def decide(
        self,
        approval_id: str,
        decision: Decision,
        approver: str,
        comment: str | None,
        source_ip: str | None,
        user_agent: str | None,
        now: datetime,
    ) -> ApprovalRequest:
        """Record a decision, only from PENDING and before expiry; returns the new state.

        Raises ApprovalNotFound, AlreadyDecided (with who and when) or ApprovalExpired.
        Concurrent decisions: exactly one wins, the others get AlreadyDecided.
        """
        if decision not in ("APPROVED", "REJECTED"):
            raise ValueError(f"decision must be APPROVED or REJECTED, not {decision!r}")
        current = self.get_approval(approval_id)
        self._raise_unless_open(current, now)
        names = {"#status": "status"}
        fields: dict[str, Any] = {
            "decided_by": approver,
            "decided_at": iso(now),
            "comment": comment or None,
            "source_ip": source_ip,
            "user_agent": user_agent,
        }
        sets = ["#status = :decision", "gsi1sk = :gsi"]
        values: dict[str, Any] = {
            "decision": decision,
            "pending": "PENDING",
            "now": iso(now),
            "gsi": f"{decision}#{iso(current.created_at)}",
        }
        for field, value in fields.items():
            if value is not None:
                names[f"#{field}"] = field
                sets.append(f"#{field} = :{field}")
                values[field] = value
        try:
            response = self.client.update_item(
                TableName=self.table_name,
                Key=self._approval_key(approval_id),
                UpdateExpression="SET " + ", ".join(sets),
                ConditionExpression=(
                    "attribute_exists(pk) AND #status = :pending AND approval_expires_at > :now"
                ),
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=_values(**values),
                ReturnValues="ALL_NEW",
            )
        except ClientError as error:
            if not _conditional_failed(error):
                raise
            self._raise_unless_open(self.get_approval(approval_id), now)
            raise  # the condition failed for a reason we did not foresee
        return self._approval_from(response["Attributes"])

    @staticmethod
    def _raise_unless_open(approval: ApprovalRequest, now: datetime) -> None:
        if approval.status in ("APPROVED", "REJECTED"):
            raise AlreadyDecided(approval)
        if approval.status == "SUPERSEDED":
            raise ApprovalSuperseded(approval)
        if approval.is_expired(now):
            raise ApprovalExpired(approval)

    def _set_status(
        self,
        approval_id: str,
        status: ApprovalStatus,
        expected: ApprovalStatus,
        *,
        clear_decision: bool = False,
    ) -> ApprovalRequest | None:
        current = self.get_approval(approval_id)
        if current.status != expected:
            return None
        update = "SET #status = :status, gsi1sk = :gsi"
        if clear_decision:
            update += (
                " REMOVE decided_by, decided_at, #comment, source_ip, user_agent,"
                " superseded_by, superseded_by_digest"
            )
        try:
            response = self.client.update_item(
                TableName=self.table_name,
                Key=self._approval_key(approval_id),
                UpdateExpression=update,
                ConditionExpression="#status = :expected",
                ExpressionAttributeNames={"#status": "status"}
                | ({"#comment": "comment"} if clear_decision else {}),
                ExpressionAttributeValues=_values(
                    status=status,
                    expected=expected,
                    gsi=f"{status}#{iso(current.created_at)}",
                ),
                ReturnValues="ALL_NEW",
            )
        except ClientError as error:
            if _conditional_failed(error):
                return None
            raise
        return self._approval_from(response["Attributes"])

    def mark_expired(
        self, approval_id: str, *, expected: ApprovalStatus = "PENDING"
    ) -> ApprovalRequest:
        """Set status EXPIRED if it is still ``expected``; returns the current state."""
        updated = self._set_status(approval_id, "EXPIRED", expected)
        return updated if updated is not None else self.get_approval(approval_id)

    def reopen(
        self, approval_id: str, *, expected: Decision | Literal["SUPERSEDED"]
    ) -> ApprovalRequest:
        """Undo a decision (or superseding) that could not be delivered (back to PENDING)."""
        updated = self._set_status(approval_id, "PENDING", expected, clear_decision=True)
        return updated if updated is not None else self.get_approval(approval_id)

    def supersede(
        self, approval_id: str, *, by_execution: str, by_digest: str, now: datetime
    ) -> ApprovalRequest | None:
        """PENDING -> SUPERSEDED by a newer promotion, in one conditional write.

        Returns the superseded request, or None when it was no longer PENDING (a
        decision, an expiry or another superseding came first: exactly one wins).
        """
        current = self.get_approval(approval_id)
        try:
            response = self.client.update_item(
                TableName=self.table_name,
                Key=self._approval_key(approval_id),
                UpdateExpression=(
                    "SET #status = :status, gsi1sk = :gsi, decided_at = :now,"
                    " superseded_by = :by, superseded_by_digest = :digest"
                ),
                ConditionExpression="attribute_exists(pk) AND #status = :pending",
                ExpressionAttributeNames={"#status": "status"},
                ExpressionAttributeValues=_values(
                    status="SUPERSEDED",
                    pending="PENDING",
                    gsi=f"SUPERSEDED#{iso(current.created_at)}",
                    now=iso(now),
                    by=by_execution,
                    digest=by_digest,
                ),
                ReturnValues="ALL_NEW",
            )
        except ClientError as error:
            if _conditional_failed(error):
                return None
            raise
        return self._approval_from(response["Attributes"])

    # The requests waiting at a (repository, stage): one item, one attribute per
    # request, so that entering and reading the list is one strongly consistent
    # UpdateItem (the approvals index is eventually consistent on AWS).

    @staticmethod
    def _waiters_key(repository: str, stage: str) -> dict[str, AttributeValueTypeDef]:
        return {"pk": {"S": f"WAITING#{stage}#{repository}"}, "sk": {"S": "WAITING"}}

    @staticmethod
    def _waiters_from(item: Mapping[str, Any]) -> list[Waiter]:
        return [
            Waiter(
                approval_id=name.removeprefix(_WAITER),
                execution=entry["execution"],
            )
            for name, entry in _decode(item).items()
            if name.startswith(_WAITER)
        ]

    def add_waiter(self, approval: ApprovalRequest) -> list[Waiter]:
        """Enter a stored request in its (repository, stage)'s list; returns the whole list.

        Of two requests entered at the same time, the one entered second sees the first.
        """
        response = self.client.update_item(
            TableName=self.table_name,
            Key=self._waiters_key(approval.repository, approval.stage),
            UpdateExpression="SET #waiter = :waiter",
            ExpressionAttributeNames={"#waiter": _WAITER + approval.approval_id},
            ExpressionAttributeValues=_values(waiter={"execution": approval.execution}),
            ReturnValues="ALL_NEW",
        )
        return self._waiters_from(response["Attributes"])

    def waiters(self, repository: str, stage: str) -> list[Waiter]:
        """The requests entered at (repository, stage), read consistently."""
        response = self.client.get_item(
            TableName=self.table_name,
            Key=self._waiters_key(repository, stage),
            ConsistentRead=True,
        )
        return self._waiters_from(response.get("Item", {}))

    def remove_waiter(self, repository: str, stage: str, approval_id: str) -> None:
        """Drop a request that can never wait again (its promotion ended, it expired)."""
        self.client.update_item(
            TableName=self.table_name,
            Key=self._waiters_key(repository, stage),
            UpdateExpression="REMOVE #waiter",
            ExpressionAttributeNames={"#waiter": _WAITER + approval_id},
        )

    def list_approvals(self, status: ApprovalStatus | None = None) -> list[ApprovalRequest]:
        """Approval requests, newest first, optionally only those with ``status``."""
        condition = "gsi1pk = :pk"
        values: dict[str, Any] = {"pk": "APPROVALS"}
        if status is not None:
            condition += " AND begins_with(gsi1sk, :prefix)"
            values["prefix"] = f"{status}#"
        approvals = [
            self._approval_from(item) for item in self._query_gsi1(condition, _values(**values))
        ]
        return sorted(approvals, key=lambda a: a.created_at, reverse=True)

    def _query_gsi1(
        self, condition: str, values: dict[str, AttributeValueTypeDef], limit: int | None = None
    ) -> Iterator[dict[str, Any]]:
        paginator = self.client.get_paginator("query")
        count = 0
        for page in paginator.paginate(
            TableName=self.table_name,
            IndexName="gsi1",
            KeyConditionExpression=condition,
            ExpressionAttributeValues=values,
            ScanIndexForward=False,
        ):
            for item in page.get("Items", []):
                yield item
                count += 1
                if limit is not None and count >= limit:
                    return

    # --------------------------------------------------------------- promotions

    @staticmethod
    def _promotion_key(execution: str) -> dict[str, AttributeValueTypeDef]:
        return {"pk": {"S": f"PROMOTION#{execution}"}, "sk": {"S": "PROMOTION"}}

    def start_promotion(
        self, execution: str, repository: str, digest: str, started_at: datetime
    ) -> Promotion:
        """Record a RUNNING promotion. Idempotent: a retry returns the stored one.

        ``repository`` is the repository name without stage prefix (``repo-1``).
        """
        promotion = Promotion(
            execution=execution, repository=repository, digest=digest, started_at=started_at
        )
        item = {
            **self._promotion_key(execution),
            "gsi1pk": {"S": f"REPO#{repository}"},
            "gsi1sk": {"S": iso(promotion.started_at)},
            **_encode(promotion.model_dump(mode="json")),
        }
        try:
            self.client.put_item(
                TableName=self.table_name,
                Item=item,
                ConditionExpression="attribute_not_exists(pk)",
            )
        except ClientError as error:
            if _conditional_failed(error):
                return self.get_promotion(execution)
            raise
        return promotion

    def get_promotion(self, execution: str) -> Promotion:
        response = self.client.get_item(
            TableName=self.table_name, Key=self._promotion_key(execution), ConsistentRead=True
        )
        if "Item" not in response:
            raise PromotionNotFound(execution)
        return Promotion.model_validate(_decode(response["Item"]))

    def update_promotion(
        self,
        execution: str,
        *,
        test_version: str | None = None,
        prod_version: str | None = None,
        tests: TestResults | None = None,
        approval: ApprovalRecord | None = None,
    ) -> Promotion:
        """Set the given fields (None = leave as is); ``approval`` is appended."""
        sets: list[str] = []
        values: dict[str, Any] = {}
        if test_version is not None:
            sets.append("test_version = :test_version")
            values["test_version"] = test_version
        if prod_version is not None:
            sets.append("prod_version = :prod_version")
            values["prod_version"] = prod_version
        if tests is not None:
            sets.append("tests = :tests")
            values["tests"] = tests.model_dump(mode="json")
        if approval is not None:
            sets.append("approvals = list_append(if_not_exists(approvals, :empty), :approval)")
            values["empty"] = []
            values["approval"] = [approval.model_dump(mode="json")]
        if not sets:
            return self.get_promotion(execution)
        return self._update_promotion(execution, "SET " + ", ".join(sets), values)

    def finish_promotion(
        self,
        execution: str,
        outcome: Outcome,
        reason: str | None = None,
        *,
        now: datetime,
        if_running: bool = False,
    ) -> Promotion:
        """Record the outcome and why. With `if_running`, only over a RUNNING record
        (PromotionFinished when another writer recorded an outcome first)."""
        update = "SET outcome = :outcome, finished_at = :now"
        values: dict[str, Any] = {"outcome": outcome, "now": iso(now)}
        if reason is not None:
            update += ", reason = :reason"
            values["reason"] = reason
        if not if_running:
            return self._update_promotion(execution, update, values)
        try:
            return self._update_promotion(
                execution, update, values | {"running": "RUNNING"}, "outcome = :running"
            )
        except PromotionNotFound:
            self.get_promotion(execution)  # PromotionNotFound if there is none at all
            raise PromotionFinished(execution) from None

    def _update_promotion(
        self, execution: str, update: str, values: dict[str, Any], condition: str | None = None
    ) -> Promotion:
        try:
            response = self.client.update_item(
                TableName=self.table_name,
                Key=self._promotion_key(execution),
                UpdateExpression=update,
                ConditionExpression="attribute_exists(pk)"
                + (f" AND {condition}" if condition else ""),
                ExpressionAttributeValues=_values(**values),
                ReturnValues="ALL_NEW",
            )
        except ClientError as error:
            if _conditional_failed(error):
                raise PromotionNotFound(execution) from None
            raise
        return Promotion.model_validate(_decode(response["Attributes"]))

    def promotions_for(self, repository: str, limit: int | None = None) -> list[Promotion]:
        """Promotions of a repository (name without stage prefix), newest first."""
        items = self._query_gsi1("gsi1pk = :pk", _values(pk=f"REPO#{repository}"), limit)
        return [Promotion.model_validate(_decode(item)) for item in items]

    # ----------------------------------------------------------------- releases

    def record_release(self, release: Release) -> None:
        item = {
            "pk": {"S": f"RELEASE#{release.repository}"},
            "sk": {"S": f"{iso(release.at)}#{release.version}"},
            **_encode(release.model_dump(mode="json")),
        }
        self.client.put_item(TableName=self.table_name, Item=item)

    def save_rollback_plan(self, execution: str, plan: RollbackPlan) -> RollbackPlan:
        """Keep a rollback execution's plan; the first one saved wins (a retry gets it)."""
        try:
            self.client.put_item(
                TableName=self.table_name,
                Item={
                    "pk": {"S": f"ROLLBACK#{execution}"},
                    "sk": {"S": "PLAN"},
                    **_encode(asdict(plan)),
                },
                ConditionExpression="attribute_not_exists(pk)",
            )
        except ClientError as error:
            if not _conditional_failed(error):
                raise
            stored = self.rollback_plan(execution)
            assert stored is not None
            return stored
        return plan

    def rollback_plan(self, execution: str) -> RollbackPlan | None:
        response = self.client.get_item(
            TableName=self.table_name,
            Key={"pk": {"S": f"ROLLBACK#{execution}"}, "sk": {"S": "PLAN"}},
            ConsistentRead=True,
        )
        if "Item" not in response:
            return None
        data = _decode(response["Item"])
        # from_version is left out when None (`latest` was at an untagged digest)
        fields: dict[str, Any] = {k: data.get(k) for k in RollbackPlan.__dataclass_fields__}
        return RollbackPlan(**fields)

    def releases(self, prod_repository: str, limit: int | None = None) -> list[Release]:
        """Releases of a PROD repository, newest first."""
        paginator = self.client.get_paginator("query")
        releases: list[Release] = []
        for page in paginator.paginate(
            TableName=self.table_name,
            KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues=_values(pk=f"RELEASE#{prod_repository}"),
            ScanIndexForward=False,
        ):
            for item in page.get("Items", []):
                releases.append(Release.model_validate(_decode(item)))
                if limit is not None and len(releases) >= limit:
                    return releases
        return releases
