"""The promotions in the ledger: one item per execution, listed per repository."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from image_cicd.ledger.errors import PromotionFinished, PromotionNotFound
from image_cicd.ledger.records import ApprovalRecord, Outcome, Promotion, TestResults, iso
from image_cicd.ledger.table import (
    LedgerTable,
    attribute_values,
    conditional_failed,
    decode_item,
    encode_item,
)

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.type_defs import AttributeValueTypeDef


class Promotions(LedgerTable):
    """Items ``PROMOTION#<execution>`` / ``PROMOTION``, gsi1 ``REPO#<name>``."""

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
            **encode_item(promotion.model_dump(mode="json")),
        }
        try:
            self.client.put_item(
                TableName=self.table_name,
                Item=item,
                ConditionExpression="attribute_not_exists(pk)",
            )
        except ClientError as error:
            if conditional_failed(error):
                return self.get_promotion(execution)
            raise
        return promotion

    def get_promotion(self, execution: str) -> Promotion:
        response = self.client.get_item(
            TableName=self.table_name, Key=self._promotion_key(execution), ConsistentRead=True
        )
        if "Item" not in response:
            raise PromotionNotFound(execution)
        return Promotion.model_validate(decode_item(response["Item"]))

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
                ExpressionAttributeValues=attribute_values(**values),
                ReturnValues="ALL_NEW",
            )
        except ClientError as error:
            if conditional_failed(error):
                raise PromotionNotFound(execution) from None
            raise
        return Promotion.model_validate(decode_item(response["Attributes"]))

    def promotions_for(self, repository: str, limit: int | None = None) -> list[Promotion]:
        """Promotions of a repository (name without stage prefix), newest first."""
        items = self._query_gsi1("gsi1pk = :pk", attribute_values(pk=f"REPO#{repository}"), limit)
        return [Promotion.model_validate(decode_item(item)) for item in items]
