"""The approval requests in the ledger: store, decide, expire, reopen, supersede, list."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from botocore.exceptions import ClientError

from image_cicd.ledger.errors import (
    AlreadyDecided,
    ApprovalExpired,
    ApprovalNotFound,
    ApprovalSuperseded,
)
from image_cicd.ledger.records import ApprovalRequest, ApprovalStatus, Decision, iso
from image_cicd.ledger.table import (
    LedgerTable,
    attribute_values,
    conditional_failed,
    decode_item,
    encode_item,
)

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.type_defs import AttributeValueTypeDef


_APPROVAL_ID = re.compile(r"^[A-Za-z0-9_-]{16,128}$")
_SECRET_FIELDS = {"task_token", "csrf_secret"}


class ApprovalRequests(LedgerTable):
    """Items ``APPROVAL#<id>`` / ``APPROVAL``, listed through gsi1 ``APPROVALS``."""

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
            **encode_item(data),
        }

    @staticmethod
    def _approval_from(item: Mapping[str, Any]) -> ApprovalRequest:
        data = decode_item(item)
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
                ExpressionAttributeValues=attribute_values(**values),
                ReturnValues="ALL_NEW",
            )
        except ClientError as error:
            if not conditional_failed(error):
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
                ExpressionAttributeValues=attribute_values(
                    status=status,
                    expected=expected,
                    gsi=f"{status}#{iso(current.created_at)}",
                ),
                ReturnValues="ALL_NEW",
            )
        except ClientError as error:
            if conditional_failed(error):
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
                ExpressionAttributeValues=attribute_values(
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
            if conditional_failed(error):
                return None
            raise
        return self._approval_from(response["Attributes"])

    def list_approvals(self, status: ApprovalStatus | None = None) -> list[ApprovalRequest]:
        """Approval requests, newest first, optionally only those with ``status``."""
        condition = "gsi1pk = :pk"
        values: dict[str, Any] = {"pk": "APPROVALS"}
        if status is not None:
            condition += " AND begins_with(gsi1sk, :prefix)"
            values["prefix"] = f"{status}#"
        approvals = [
            self._approval_from(item)
            for item in self._query_gsi1(condition, attribute_values(**values))
        ]
        return sorted(approvals, key=lambda a: a.created_at, reverse=True)
