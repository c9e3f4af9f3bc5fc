"""Turning an error response back into the exception the server raised, so that code
using the client catches the same `chatledger.errors` as code using the Ledger."""

from __future__ import annotations

from typing import Any

import httpx

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


class HTTPError(ChatledgerError):
    """Any other error status (401, 403, 500…), with the status code."""

    def __init__(self, status_code: int, message: str, details: dict[str, Any]) -> None:
        super().__init__(message, status_code=status_code, **details)
        self.status_code = status_code


def raise_for_error(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    try:
        error = response.json()["error"]
        message, details = str(error["message"]), dict(error.get("details") or {})
    except (ValueError, KeyError, TypeError):
        message, details = response.text or response.reason_phrase, {}
    raise error_for(response.status_code, message, details, response.headers)


def error_for(
    status: int, message: str, details: dict[str, Any], headers: httpx.Headers | None = None
) -> ChatledgerError:
    if status == 404:
        return NotFound(str(details.get("kind", "resource")), str(details.get("id", "")))
    if status == 409:
        return Conflict(message, **details)
    if status == 422:
        field = details.get("field") or _first_field(details) or ""
        error = InvalidInput(str(field), message)
        # The server's message already names the field.
        error.message, error.args = message, (message,)
        return error
    if status == 413:
        return PayloadTooLarge(message, **details)
    if status == 503:
        return Busy(message, retry_after=_retry_after(headers))
    if status == 429:
        return RateLimited(message, retry_after=round(_retry_after(headers)))
    if status == 502:
        failure = ProviderError(
            message,
            kind=str(details.get("kind", "provider_error")),
            retryable=bool(details.get("retryable", False)),
        )
        # The ids of the failed reply (run_id, task_id, message_id): to retry it by id.
        failure.details.update(details)
        return failure
    return HTTPError(status, message, details)


def _retry_after(headers: httpx.Headers | None) -> float:
    raw = headers.get("retry-after") if headers is not None else None
    return float(raw) if raw and raw.replace(".", "", 1).isdigit() else 1.0


def _first_field(details: dict[str, Any]) -> str | None:
    errors = details.get("errors")
    if isinstance(errors, list) and errors and isinstance(errors[0], dict):
        return str(errors[0].get("field", ""))
    return None
