"""chatledger: the persistence and accounting layer for AI chat and agent applications.

The names below are loaded when first used (PEP 562): a server's worker imports
`chatledger.server.app`, which runs this file first, and needs neither the HTTP client
(httpx, and its command line's click, rich and pygments) nor the in-process `Ledger`."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from chatledger.client import AsyncClient, Client
    from chatledger.config import Settings
    from chatledger.errors import (
        Busy,
        ChatledgerError,
        Conflict,
        InvalidInput,
        NotFound,
        PayloadTooLarge,
        ProviderError,
    )
    from chatledger.ledger import Ledger, RunDetail
    from chatledger.tokens import TokenUsage

# Each public name, and the module that defines it.
_HOMES = {
    "AsyncClient": "chatledger.client",
    "Client": "chatledger.client",
    "Settings": "chatledger.config",
    "Busy": "chatledger.errors",
    "ChatledgerError": "chatledger.errors",
    "Conflict": "chatledger.errors",
    "InvalidInput": "chatledger.errors",
    "NotFound": "chatledger.errors",
    "PayloadTooLarge": "chatledger.errors",
    "ProviderError": "chatledger.errors",
    "Ledger": "chatledger.ledger",
    "RunDetail": "chatledger.ledger",
    "TokenUsage": "chatledger.tokens",
}

__all__ = [
    "AsyncClient",
    "Busy",
    "ChatledgerError",
    "Client",
    "Conflict",
    "InvalidInput",
    "Ledger",
    "NotFound",
    "PayloadTooLarge",
    "ProviderError",
    "RunDetail",
    "Settings",
    "TokenUsage",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'chatledger' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value  # found once: later uses are a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
