"""chatledger: the persistence and accounting layer for AI chat and agent applications."""

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
