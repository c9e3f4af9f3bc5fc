"""Model adapters behind one interface: `resolve("provider/model")` gives the provider to
stream from. `echo` (offline, free, deterministic) is built in; others register in
`registry`.
"""

from chatledger.providers.base import (
    ChatMessage,
    Delta,
    Finished,
    ModelRequest,
    Provider,
    StreamEvent,
    estimate_tokens,
)
from chatledger.providers.echo import EchoProvider, EchoSettings
from chatledger.providers.registry import known_providers, register, resolve, split_model

__all__ = [
    "ChatMessage",
    "Delta",
    "EchoProvider",
    "EchoSettings",
    "Finished",
    "ModelRequest",
    "Provider",
    "StreamEvent",
    "estimate_tokens",
    "known_providers",
    "register",
    "resolve",
    "split_model",
]
