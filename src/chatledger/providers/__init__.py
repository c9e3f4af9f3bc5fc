"""Model adapters behind one interface: `Providers(settings).resolve("provider/model")`
gives the provider to stream from. `echo` (offline, free, deterministic) is built in;
`openai` (and any OpenAI-compatible server) and `anthropic` are configured from settings;
test doubles `register` themselves.
"""

from chatledger.providers.base import (
    ChatMessage,
    Delta,
    Finished,
    ModelRequest,
    Provider,
    StreamEvent,
    UsageSoFar,
    estimate_tokens,
)
from chatledger.providers.config import ProviderConfig
from chatledger.providers.echo import EchoProvider, EchoSettings
from chatledger.providers.registry import (
    ProviderInfo,
    Providers,
    aclose,
    configure,
    describe,
    known_providers,
    register,
    resolve,
    split_model,
)

__all__ = [
    "ChatMessage",
    "Delta",
    "EchoProvider",
    "EchoSettings",
    "Finished",
    "ModelRequest",
    "Provider",
    "ProviderConfig",
    "ProviderInfo",
    "Providers",
    "StreamEvent",
    "UsageSoFar",
    "aclose",
    "configure",
    "describe",
    "estimate_tokens",
    "known_providers",
    "register",
    "resolve",
    "split_model",
]
