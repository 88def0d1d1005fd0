"""The ledger table's client and codec: what every part of the ledger builds on."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_dynamodb.type_defs import AttributeValueTypeDef

_serializer = TypeSerializer()
_deserializer = TypeDeserializer()


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


def encode_item(data: Mapping[str, Any]) -> dict[str, AttributeValueTypeDef]:
    return {
        key: _serializer.serialize(value)
        for key, value in _to_dynamo(data).items()
        if value is not None
    }


def decode_item(item: Mapping[str, Any]) -> dict[str, Any]:
    decoded = {key: _deserializer.deserialize(value) for key, value in item.items()}
    result: dict[str, Any] = _from_dynamo(decoded)
    return result


def attribute_values(**values: Any) -> dict[str, AttributeValueTypeDef]:
    return {f":{key}": _serializer.serialize(_to_dynamo(value)) for key, value in values.items()}


def conditional_failed(error: ClientError) -> bool:
    return error.response["Error"]["Code"] == "ConditionalCheckFailedException"


class LedgerTable:
    """The table and its client; the base of each part of ``Ledger``."""

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
