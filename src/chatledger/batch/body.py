"""A batch's body, read. The usual upload, every item valid, is validated in one pass
straight from the JSON text, into the items' models: reading it as FastAPI reads a
declared body (`json.loads` into dicts, a pass over the dicts, then each item validated
from its dict) cost twice as much, ~14 against ~8 µs an item, ~7% of a batch's CPU.

Any other body is read exactly as FastAPI reads a `BatchRequest`, with the same answers
to what is not one (400, 422): its items are then JSON objects, validated one by one by
`service.check`, so that a bad item is rejected alone and the others land. So is a body
whose items hold what a database cannot store (a NUL, a number that is not finite), each
item then checked for it (`storable.check_json`) when the body may hold such a value.

The route documents its body as FastAPI would (`OPENAPI`)."""

from __future__ import annotations

import email.message
import json
from dataclasses import dataclass, field
from typing import Any

from fastapi import HTTPException, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

from chatledger import storable
from chatledger.batch.schemas import BatchRequest, Item


class _ValidBatch(BaseModel):
    items: list[Item]


# The request body as the route's OpenAPI operation documents it.
OPENAPI: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": BatchRequest.model_json_schema()}},
    }
}


@dataclass(frozen=True, slots=True)
class Upload:
    """A batch's items as read: `valid`, every item validated, or else `raw`, each item
    the JSON object it was sent as (`check_each`: the body may hold what a database
    cannot store, so each item is searched for it)."""

    valid: list[Item] | None = None
    raw: list[dict[str, Any]] = field(default_factory=list)
    check_each: bool = True

    def __len__(self) -> int:
        return len(self.valid) if self.valid is not None else len(self.raw)


async def read(request: Request) -> Upload:
    """The items of the request's body; raises what FastAPI raises for a body that is
    not a `BatchRequest`."""
    body = await request.body()
    is_json = _is_json(request.headers.get("content-type"))
    valid = _valid_items(body) if is_json else None
    if valid is not None:
        return Upload(valid=valid)
    check_each = storable.may_hold_unstorable(body)
    return Upload(raw=_as_fastapi_reads(body, is_json).items, check_each=check_each)


def _valid_items(body: bytes) -> list[Item] | None:
    """The body's items if every one is valid and storable, validated in one pass; else
    None, and the body is read again (`_as_fastapi_reads`), each item on its own.

    Checked for what no database can store once validated, rather than by searching the
    body first (`storable.may_hold_unstorable`: ~1 ms for 500 items, mostly its search
    for numbers too large for a float): pydantic's parser refuses what else it could be,
    but a NUL and a non-finite number (`storable.numbers_are_finite`)."""
    try:
        items = _ValidBatch.model_validate_json(body).items
    except ValidationError:
        return None  # some item is not valid, or the body is not a batch
    if _NUL in body or not all(map(storable.numbers_are_finite, items)):
        return None
    return items


# A NUL's only spelling in JSON text that pydantic's parser takes.
_NUL = b"\\u0000"


def _is_json(content_type: str | None) -> bool:
    """Whether FastAPI would parse a body of this type as JSON (`application/json`,
    `application/*+json`, with any parameters; no type at all is not JSON)."""
    if not content_type:
        return False
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (
        subtype == "json" or subtype.endswith("+json")
    )


def _as_fastapi_reads(body: bytes, is_json: bool) -> BatchRequest:
    """`body` as FastAPI reads a declared `BatchRequest` body (fastapi/routing.py and
    `request_body_to_args`), its errors the ones it raises, which the server's handlers
    answer as for any route. `tests/server/test_batch_body.py` compares the two."""
    if not body:
        missing = {"type": "missing", "loc": ("body",), "msg": "Field required", "input": None}
        raise RequestValidationError([missing])
    value: Any = body
    if is_json:
        try:
            value = json.loads(body)
        except json.JSONDecodeError as exc:
            invalid = {
                "type": "json_invalid",
                "loc": ("body", exc.pos),
                "msg": "JSON decode error",
                "input": {},
                "ctx": {"error": exc.msg},
            }
            raise RequestValidationError([invalid], body=exc.doc) from exc
        except Exception as exc:  # not UTF-8, nested too deep: as FastAPI answers them
            raise HTTPException(400, "There was an error parsing the body") from exc
    try:
        return BatchRequest.model_validate(value, from_attributes=True)
    except ValidationError as exc:
        errors = [
            {**error, "loc": ("body", *error["loc"])} for error in exc.errors(include_url=False)
        ]
        raise RequestValidationError(errors, body=value) from exc
