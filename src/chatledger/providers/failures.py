"""How a failed model call becomes a `ProviderError` the ledger can record and a client
can act on: one `kind` per cause, `retryable` when trying again may help.

    kind          cause                                        retryable
    timeout       no answer (or no next chunk) within the timeout   yes
    connection    refused, reset or dropped mid-stream              yes
    rate_limited  HTTP 429 / a rate-limit error event               yes (retry_after if sent)
    server_error  HTTP 5xx, 529 overloaded, an error event          yes
    auth          HTTP 401 / 403                                    no
    bad_request   any other 4xx (unknown model, context too long)   no

Messages are built here from the status and the server's own message, never from the
SDK exception's text, and the API key is scrubbed from them: a key must not reach the
task row, the SSE `error` event or a log, even if a server echoes it back.
"""

from __future__ import annotations

import email.utils
import math
import time
from collections.abc import Mapping
from typing import Any

from chatledger.errors import ProviderError

MAX_MESSAGE_CHARS = 500
RETRYABLE = frozenset({"timeout", "connection", "rate_limited", "server_error"})
REDACTED = "[redacted]"


def failure(
    provider: str,
    kind: str,
    detail: str,
    *,
    secret: str | None = None,
    retry_after: float | None = None,
) -> ProviderError:
    message = f"{provider}: {detail}"
    if retry_after is not None:
        message += f" (retry after {retry_after:g} s)"
    if secret:
        message = message.replace(secret, REDACTED)
    if len(message) > MAX_MESSAGE_CHARS:
        message = message[: MAX_MESSAGE_CHARS - 1] + "…"
    error = ProviderError(message, kind=kind, retryable=kind in RETRYABLE)
    if retry_after is not None:
        error.details["retry_after"] = retry_after
    return error


def timed_out(provider: str, timeout_s: float) -> ProviderError:
    return failure(provider, "timeout", f"timed out: no response within {timeout_s:g} s")


def connection_lost(provider: str, url: str) -> ProviderError:
    return failure(provider, "connection", f"connection to {url} failed or was dropped")


def from_status(
    provider: str,
    status: int,
    body: object,
    headers: Mapping[str, str],
    *,
    secret: str | None = None,
) -> ProviderError:
    """An HTTP error answer. Status 200 means an error event inside a started stream
    (Anthropic's `event: error`): its body decides."""
    if status == 200:
        return from_body(provider, body, secret=secret)
    kind = status_kind(status)
    detail = f"{kind.replace('_', ' ')} (HTTP {status})"
    if server_message := error_message(body):
        detail += f": {server_message}"
    retry_after = parse_retry_after(headers) if kind == "rate_limited" else None
    return failure(provider, kind, detail, secret=secret, retry_after=retry_after)


def from_body(provider: str, body: object, *, secret: str | None = None) -> ProviderError:
    """An error sent inside a stream that had started: the HTTP status was 200, so only
    the error's `type`/`code` tell what happened."""
    error = _error_object(body)
    label = " ".join(str(error.get(k) or "") for k in ("type", "code")).lower()
    if "rate_limit" in label:
        kind = "rate_limited"
    elif "authentication" in label or "permission" in label:
        kind = "auth"
    elif "invalid_request" in label:
        kind = "bad_request"
    else:  # overloaded_error, api_error, server_error, or nothing said
        kind = "server_error"
    detail = f"error mid-stream ({kind.replace('_', ' ')})"
    if server_message := error_message(body):
        detail += f": {server_message}"
    return failure(provider, kind, detail, secret=secret)


def status_kind(status: int) -> str:
    if status in (401, 403):
        return "auth"
    if status == 429:
        return "rate_limited"
    if status == 408:
        return "timeout"
    if status >= 500:  # includes Anthropic's 529 "overloaded"
        return "server_error"
    return "bad_request"


def error_message(body: object) -> str | None:
    """The human message in an error body: `{"error": {"message": …}}` (OpenAI and
    Anthropic), `{"message": …}`, or a plain-text body."""
    if isinstance(body, str):
        return body.strip()[:MAX_MESSAGE_CHARS] or None
    message = _error_object(body).get("message")
    return message if isinstance(message, str) and message else None


def _error_object(body: object) -> dict[str, Any]:
    if not isinstance(body, dict):
        return {}
    inner = body.get("error")
    return inner if isinstance(inner, dict) else body


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait, from `retry-after-ms`, `retry-after` (seconds or an HTTP date)."""
    if (ms := _float(headers.get("retry-after-ms"))) is not None:
        return ms / 1000
    value = headers.get("retry-after")
    if value is None:
        return None
    if (seconds := _float(value)) is not None:
        return seconds
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, round(when.timestamp() - time.time(), 3))


def _float(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) and number >= 0 else None
