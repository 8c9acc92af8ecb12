"""``POST /api/batch``: up to 100 writes in one transaction, all or nothing."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request
from starlette.responses import Response

from roost.errors import ValidationFailed
from roost.http.context import JSONResponse, components, json_object, principal
from roost.records.idempotency import idempotent_request
from roost.records.service import MAX_BATCH_OPERATIONS, Operation
from roost.types import JSONObject


class BatchOperation(BaseModel):
    model_config = ConfigDict(extra="forbid")

    action: Literal["create", "update", "delete"]
    collection: Annotated[str, Field(max_length=63)]
    id: Annotated[str, Field(max_length=64)] | None = None
    data: JSONObject | None = None
    if_match: Annotated[int, Field(ge=1)] | None = None


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    operations: Annotated[
        list[BatchOperation], Field(min_length=1, max_length=MAX_BATCH_OPERATIONS)
    ]


def _operations(body: JSONObject) -> list[Operation]:
    try:
        batch = BatchRequest.model_validate(body)
    except ValidationError as exc:
        errors = [
            {"field": ".".join(str(p) for p in e["loc"]), "message": e["msg"]} for e in exc.errors()
        ]
        raise ValidationFailed(f"{errors[0]['field']}: {errors[0]['message']}", errors) from None
    operations = []
    for index, op in enumerate(batch.operations):
        if op.action != "create" and op.id is None:
            raise ValidationFailed(
                f"operations.{index}: {op.action} needs an id",
                [{"field": f"operations.{index}.id", "message": "required"}],
            )
        data = op.data
        if op.action == "create" and op.id is not None:
            data = {**(data or {}), "id": op.id}
        operations.append(
            Operation(
                op.action,
                op.collection,
                id=None if op.action == "create" else op.id,
                data=data,
                if_match=op.if_match,
            )
        )
    return operations


async def batch(request: Request) -> Response:
    body, raw = await json_object(request)
    operations = _operations(body)
    caller = await principal(request)
    idempotency = idempotent_request(
        request.headers.get("idempotency-key"), caller.scope, request.method, request.url.path, raw
    )
    outcomes = await components(request).records.write(operations, caller, idempotency, batch=True)
    return JSONResponse(
        {"results": [{"status": outcome.status, "record": outcome.body} for outcome in outcomes]}
    )
