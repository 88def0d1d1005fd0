"""The requests waiting at a (repository, stage): one item, one attribute per request,
so that entering and reading the list is one strongly consistent UpdateItem (the
approvals index is eventually consistent on AWS)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from image_cicd.ledger.records import ApprovalRequest
from image_cicd.ledger.table import LedgerTable, attribute_values, decode_item

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.type_defs import AttributeValueTypeDef


_WAITER = "waiter#"


@dataclass(frozen=True)
class Waiter:
    """A request entered in its (repository, stage)'s waiting list (``Ledger.add_waiter``)."""

    approval_id: str
    execution: str


class WaitingLists(LedgerTable):
    """Items ``WAITING#<stage>#<source repository>`` / ``WAITING``."""

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
            for name, entry in decode_item(item).items()
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
            ExpressionAttributeValues=attribute_values(waiter={"execution": approval.execution}),
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
