"""The provider interface: what the engine sends a model adapter and what it gets back.

A provider turns a `ModelRequest` into a stream of `Delta`s (text as it arrives) closed
by exactly one `Finished` (the call's token usage). A provider that learns part of the
usage early (Anthropic reports the input side when the message starts) says so with
`UsageSoFar`, so a call cut short keeps what is known rather than an estimate. Failures
are `ProviderError`s raised from the stream; after one, nothing more is yielded.
`estimate_tokens` is the fallback when a provider reports no usage.
"""

from __future__ import annotations

import math
import re
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Protocol

from chatledger.errors import InvalidInput
from chatledger.tokens import TokenUsage

ROLES = frozenset({"system", "user", "assistant", "tool"})


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: str
    content: str

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise InvalidInput("role", f"must be one of {', '.join(sorted(ROLES))}")


@dataclass(frozen=True, slots=True)
class ModelRequest:
    model: str
    messages: tuple[ChatMessage, ...]
    # Read-only so one request can be shared by retries without being mutated.
    settings: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True, slots=True)
class Delta:
    text: str


@dataclass(frozen=True, slots=True)
class UsageSoFar:
    """Usage reported before the end; each one replaces the last."""

    usage: TokenUsage


@dataclass(frozen=True, slots=True)
class Finished:
    usage: TokenUsage


StreamEvent = Delta | UsageSoFar | Finished


class Provider(Protocol):
    name: str

    def check_settings(self, settings: Mapping[str, Any]) -> None:
        """Raise `InvalidInput` for a setting this provider cannot honour, before any
        task is created for it (so a typo is a 422, not a failed model call)."""
        ...

    def stream(self, request: ModelRequest) -> AsyncGenerator[StreamEvent, None]:
        """Yield `Delta`s (and any `UsageSoFar`) then exactly one `Finished`; raise
        `ProviderError` on failure."""
        ...


_PIECES = re.compile(r"\w+|[^\w\s]")


def estimate_tokens(text: str) -> int:
    """Approximate a BPE tokenizer's count (cl100k/o200k-like) without its vocabulary.

    Each punctuation mark is a token; a word is one token up to six letters (common words
    are whole tokens) and about one per four characters beyond; numbers split into groups
    of three digits; non-Latin scripts cost about a token per character (3 UTF-8 bytes).
    """
    return sum(_piece_tokens(piece) for piece in _PIECES.findall(text))


def _piece_tokens(piece: str) -> int:
    if not piece.isascii():
        return max(1, math.ceil(len(piece.encode()) / 3))
    if piece.isdigit():
        return math.ceil(len(piece) / 3)
    if len(piece) <= 6:
        return 1
    return math.ceil(len(piece) / 4)
