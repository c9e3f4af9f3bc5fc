"""The one place errors become HTTP responses: `{"error": {"code", "message", "details"}}`.

    InvalidInput / request validation → 422 (details name the field)
    NotFound                          → 404 (also for another tenant's ids)
    Conflict, IntegrityError          → 409
    PayloadTooLarge                   → 413
    Busy                              → 503 with Retry-After
    RateLimited                       → 429 with Retry-After
    ProviderError                     → 502
Anything else is a bug and answers 500 with no internals.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.exc import IntegrityError
from starlette.exceptions import HTTPException

from chatledger.errors import (
    Busy,
    ChatledgerError,
    Conflict,
    InvalidInput,
    NotFound,
    PayloadTooLarge,
    ProviderError,
    RateLimited,
)

log = logging.getLogger(__name__)

STATUS: dict[type[ChatledgerError], int] = {
    InvalidInput: 422,
    NotFound: 404,
    Conflict: 409,
    PayloadTooLarge: 413,
    Busy: 503,
    RateLimited: 429,
    ProviderError: 502,
}

HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    422: "invalid",
    429: "rate_limited",
}


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details or {}}}


def status_of(exc: ChatledgerError) -> int:
    for kind in type(exc).__mro__:
        if kind in STATUS:
            return STATUS[kind]
    return 500


async def _chatledger_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ChatledgerError)
    headers = (
        {"Retry-After": str(max(1, round(exc.retry_after)))}
        if isinstance(exc, Busy | RateLimited)
        else None
    )
    return JSONResponse(
        error_body(exc.code, exc.message, exc.details), status_of(exc), headers=headers
    )


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = [
        {
            "field": ".".join(str(part) for part in error["loc"] if part != "body"),
            "message": error["msg"],
            "type": error["type"],
        }
        for error in exc.errors()
    ]
    first = problems[0] if problems else {"field": "", "message": "invalid request"}
    message = f"{first['field']}: {first['message']}" if first["field"] else first["message"]
    return JSONResponse(error_body("invalid", message, {"errors": problems}), 422)


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    code = HTTP_CODES.get(exc.status_code, "error")
    return JSONResponse(
        error_body(code, str(exc.detail)), exc.status_code, headers=getattr(exc, "headers", None)
    )


async def _integrity_error(_: Request, exc: Exception) -> JSONResponse:
    # A constraint the services did not foresee: still the caller's conflict, not a crash.
    log.warning("integrity error reached the error mapping: %s", exc)
    return JSONResponse(error_body("conflict", "the write conflicts with stored data"), 409)


async def _unexpected_error(_: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error", exc_info=exc)
    return JSONResponse(error_body("internal", "internal error"), 500)


def install(app: FastAPI) -> None:
    app.add_exception_handler(ChatledgerError, _chatledger_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(IntegrityError, _integrity_error)
    app.add_exception_handler(Exception, _unexpected_error)


class ErrorDetail(BaseModel):
    code: str
    message: str
    details: dict[str, Any]


class ErrorBody(BaseModel):
    error: ErrorDetail


# Documented on every route, so the OpenAPI schema says what errors look like.
RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": description}
    for status, description in (
        (400, "a body that cannot be read (not UTF-8 JSON)"),
        (401, "no valid API key"),
        (403, "the key may not do this (a viewer writing, user_id without a service key)"),
        (404, "not found (or not the caller's)"),
        (409, "conflicts with what is stored"),
        (413, "payload too large"),
        (422, "invalid input; details name the field"),
        (429, "too many requests with this key; retry after Retry-After seconds"),
        (503, "database busy; retry after Retry-After seconds"),
    )
}
