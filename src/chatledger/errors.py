"""The exceptions chatledger raises, one tree for the library, the CLI and the server.

    ChatledgerError
    ├── NotFound          the row does not exist, or is not the caller's (never "forbidden")
    ├── Conflict          the write contradicts what is stored (e.g. a different completion)
    ├── InvalidInput      a value is malformed; `field` names it
    ├── PayloadTooLarge   a body or batch is over the configured limit
    ├── Busy              the database could not take the write now; retry after a moment
    ├── RateLimited       the API key sent more requests than its limit; retry after a wait
    └── ProviderError     the model call failed (timeout, refusal, injected failure…)

The server maps each to one HTTP status in one place; nothing else decides statuses.
"""

from __future__ import annotations

from typing import Any


class ChatledgerError(Exception):
    code = "error"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class NotFound(ChatledgerError):
    code = "not_found"

    def __init__(self, kind: str, id: str) -> None:
        super().__init__(f"{kind} {id!r} not found", kind=kind, id=id)


class Conflict(ChatledgerError):
    code = "conflict"


class InvalidInput(ChatledgerError):
    code = "invalid"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}", field=field)
        self.field = field


class PayloadTooLarge(ChatledgerError):
    code = "payload_too_large"


class Busy(ChatledgerError):
    code = "busy"

    def __init__(self, message: str = "database busy", retry_after: float = 1.0) -> None:
        super().__init__(message, retry_after=retry_after)
        self.retry_after = retry_after


class RateLimited(ChatledgerError):
    code = "rate_limited"

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message, retry_after=retry_after)
        self.retry_after = retry_after


class ProviderError(ChatledgerError):
    """A model call failed. `retryable` tells a client whether trying again may help."""

    code = "provider_error"

    def __init__(self, message: str, *, kind: str = "provider_error", retryable: bool = False):
        super().__init__(message, kind=kind, retryable=retryable)
        self.kind = kind
        self.retryable = retryable
