"""The `echo` provider: an offline, free, deterministic model for local use and tests.

It replies `Echo: <last user message>`, streamed a word at a time, and honours two
settings that let tests drive the engine through slow and failing streams: `delay_ms`
(a delta every that many milliseconds) and `fail_at` (raise a `ProviderError` at that
delta index).
"""

from __future__ import annotations

import asyncio
import functools
import math
import re
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass
from typing import Any

from chatledger.errors import InvalidInput, ProviderError
from chatledger.providers.base import (
    ChatMessage,
    Delta,
    Finished,
    ModelRequest,
    StreamEvent,
    UsageSoFar,
    estimate_tokens,
)
from chatledger.tokens import TokenUsage

# Chat formats wrap every message in role markers (OpenAI documents ~3-4 tokens each)
# and prime the reply with a few more; counting them keeps echo usage realistic.
TOKENS_PER_MESSAGE = 4
TOKENS_PER_REPLY = 3
MAX_DELAY_MS = 60_000
# A conversation's earlier messages are counted again for each of its replies; their
# counts are remembered: this many texts of at most this length (8 MB of ASCII text).
REMEMBERED_TEXT_CHARS = 4_096
REMEMBERED_TEXTS = 2_048

_WORDS = re.compile(r"\S+\s*|\s+")


@dataclass(frozen=True, slots=True)
class EchoSettings:
    delay_ms: float = 0.0
    fail_at: int | None = None

    @classmethod
    def parse(cls, settings: Mapping[str, Any]) -> EchoSettings:
        """Validate the settings echo honours; others (temperature, …) are ignored."""
        delay_ms = settings.get("delay_ms")
        fail_at = settings.get("fail_at")
        return cls(
            delay_ms=0.0 if delay_ms is None else _delay_ms(delay_ms),
            fail_at=None if fail_at is None else _fail_at(fail_at),
        )


class EchoProvider:
    name = "echo"

    def check_settings(self, settings: Mapping[str, Any]) -> None:
        EchoSettings.parse(settings)

    async def stream(self, request: ModelRequest) -> AsyncGenerator[StreamEvent, None]:
        # Validated before the first delta so a bad setting never looks like a partial reply.
        settings = EchoSettings.parse(request.settings)
        reply = echo_reply(request.messages)
        words = _WORDS.findall(reply)
        input_tokens = count_input_tokens(request.messages)
        clock = asyncio.get_running_loop().time
        started = clock()
        for index, word in enumerate(words):
            if settings.delay_ms:
                # Each delta is due on a fixed schedule from the start, as a remote model's
                # tokens arrive whatever its caller is doing: a caller busy past one due
                # time gets the late deltas at once rather than every later one shifted.
                due = started + (index + 1) * settings.delay_ms / 1000
                await asyncio.sleep(max(0.0, due - clock()))
            if index == settings.fail_at:
                raise _injected_failure(index)
            if index == 0:
                # Like a real model, the input side is known (and billed) once the reply
                # has started: a call refused before that (fail_at=0) cost nothing.
                yield UsageSoFar(TokenUsage(input_tokens=input_tokens))
            yield Delta(word)
        if settings.fail_at is not None:
            # Asked for a failure past the last word: fail at the end rather than not at all.
            raise _injected_failure(settings.fail_at)
        yield Finished(
            TokenUsage(
                input_tokens=input_tokens,
                output_tokens=estimate_tokens(reply),
            )
        )


def echo_reply(messages: tuple[ChatMessage, ...]) -> str:
    last_user = next((m.content for m in reversed(messages) if m.role == "user"), "")
    return f"Echo: {last_user}" if last_user.strip() else "Echo: (nothing to echo)"


def count_input_tokens(messages: tuple[ChatMessage, ...]) -> int:
    return TOKENS_PER_REPLY + sum(TOKENS_PER_MESSAGE + _message_tokens(m.content) for m in messages)


def _message_tokens(content: str) -> int:
    if len(content) > REMEMBERED_TEXT_CHARS:
        return estimate_tokens(content)
    return _remembered_tokens(content)


@functools.lru_cache(maxsize=REMEMBERED_TEXTS)
def _remembered_tokens(content: str) -> int:
    return estimate_tokens(content)


def _injected_failure(index: int) -> ProviderError:
    return ProviderError(f"echo: injected failure at token {index}", kind="injected_failure")


def _number(field: str, value: Any) -> float:
    # bool is an int subclass; `True` as a delay is a caller bug, not 1 ms.
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise InvalidInput(field, f"must be a number, got {value!r}")
    try:
        number = float(value)
    except ValueError:
        raise InvalidInput(field, f"must be a number, got {value!r}") from None
    if not math.isfinite(number) or number < 0:
        raise InvalidInput(field, f"must be a finite number >= 0, got {value!r}")
    return number


def _delay_ms(value: Any) -> float:
    delay = _number("delay_ms", value)
    if delay > MAX_DELAY_MS:
        raise InvalidInput("delay_ms", f"must be at most {MAX_DELAY_MS}, got {value!r}")
    return delay


def _fail_at(value: Any) -> int:
    index = _number("fail_at", value)
    if not index.is_integer():
        raise InvalidInput("fail_at", f"must be a whole number, got {value!r}")
    return int(index)
