"""The `anthropic` provider: Claude through the official SDK's streaming Messages API.

System messages go to the `system` parameter (joined in order); the rest alternate as
user/assistant. Usage arrives in two parts: `message_start` gives the input side,
`message_delta` the output so far (cumulative). Anthropic's `input_tokens` excludes cache
reads and cache writes, while chatledger's `input_tokens` includes every prompt token and
`cached_tokens` / `cache_write_tokens` the parts of it read from / written to the cache:
so input = input + cache reads + cache writes, and nothing is counted twice.
`thinking_tokens` (part of `output_tokens`) become `reasoning_tokens`.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping
from typing import Any, cast

import anthropic
import httpx2
from anthropic.types import MessageDeltaUsage, MessageParam, Usage

from chatledger.errors import ProviderError
from chatledger.providers import failures, options
from chatledger.providers.base import (
    ChatMessage,
    Delta,
    Finished,
    ModelRequest,
    StreamEvent,
    UsageSoFar,
    estimate_tokens,
)
from chatledger.providers.config import ProviderConfig
from chatledger.providers.echo import count_input_tokens
from chatledger.providers.sdk_client import PerLoopClient
from chatledger.tokens import TokenUsage

NO_KEY = "no-key-required"

SETTINGS: dict[str, options.Validator] = {
    "max_tokens": options.whole(1),
    # Sampling knobs that newer Claude models refuse: sent as given, the API decides.
    "temperature": options.number(0, 1),
    "top_p": options.number(0, 1),
    "top_k": options.whole(0),
    "stop": options.stop_sequences(None),
    "stop_sequences": options.stop_sequences(None),
    "extra_body": options.json_object,
}
SAMPLING = ("temperature", "top_p", "top_k")


class AnthropicProvider:
    def __init__(self, config: ProviderConfig) -> None:
        self.name = config.name
        self.config = config
        self._clients = PerLoopClient(
            lambda: anthropic.AsyncAnthropic(
                api_key=self.config.secret or NO_KEY,
                base_url=self.config.base_url,
                timeout=self.config.timeout_s,
                max_retries=self.config.max_retries,
            )
        )

    def __repr__(self) -> str:
        return f"AnthropicProvider(name={self.name!r}, base_url={self.config.public_url!r})"

    def check_settings(self, settings: Mapping[str, Any]) -> None:
        options.parse(self.name, settings, SETTINGS)

    async def stream(self, request: ModelRequest) -> AsyncGenerator[StreamEvent, None]:
        settings = options.parse(self.name, request.settings, SETTINGS)
        extra_body = dict(settings.pop("extra_body", {}))
        extra_body.update({k: settings[k] for k in SAMPLING if k in settings})
        stop = settings.get("stop_sequences") or settings.get("stop")
        system = "\n\n".join(m.content for m in request.messages if m.role == "system")
        text, counts = "", _Counts()
        try:
            events = await self.client().messages.create(
                model=request.model,
                max_tokens=settings.get("max_tokens", self.config.default_max_tokens),
                messages=_conversation(request.messages),
                stream=True,
                system=system or anthropic.omit,
                stop_sequences=stop or anthropic.omit,
                extra_body=extra_body or None,
            )
            async with events:  # closes the response however this generator ends
                async for event in events:
                    if event.type == "message_start":
                        counts.take(event.message.usage)
                        yield UsageSoFar(counts.usage())
                    elif event.type == "message_delta":
                        counts.take(event.usage)
                        yield UsageSoFar(counts.usage())
                    elif event.type == "content_block_delta" and event.delta.type == "text_delta":
                        text += event.delta.text
                        yield Delta(event.delta.text)
        except (anthropic.APIError, httpx2.HTTPError) as exc:
            raise self._failure(exc) from None
        yield Finished(counts.usage() if counts.seen else _estimated(request, text))

    def client(self) -> anthropic.AsyncAnthropic:
        return self._clients.get()

    async def aclose(self) -> None:
        await self._clients.aclose()

    def _failure(self, exc: Exception) -> ProviderError:
        secret = self.config.secret
        if isinstance(exc, anthropic.APITimeoutError | httpx2.TimeoutException):
            return failures.timed_out(self.name, self.config.timeout_s)
        if isinstance(exc, anthropic.APIConnectionError | httpx2.TransportError):
            return failures.connection_lost(self.name, self.config.public_url)
        if isinstance(exc, anthropic.APIStatusError):
            return failures.from_status(
                self.name, exc.status_code, exc.body, exc.response.headers, secret=secret
            )
        if isinstance(exc, anthropic.APIError):
            return failures.from_body(self.name, exc.body, secret=secret)
        return failures.failure(self.name, "connection", type(exc).__name__, secret=secret)


class _Counts:
    """Usage as the stream reports it: `message_delta` counts are cumulative and may
    restate the input side, so the latest value of each wins."""

    def __init__(self) -> None:
        self.seen = False
        self.values = {"input": 0, "cache_read": 0, "cache_write": 0, "output": 0, "thinking": 0}

    def take(self, usage: Usage | MessageDeltaUsage) -> None:
        self.seen = True
        details = usage.output_tokens_details
        for key, value in (
            ("input", usage.input_tokens),
            ("cache_read", usage.cache_read_input_tokens),
            ("cache_write", usage.cache_creation_input_tokens),
            ("output", usage.output_tokens),
            ("thinking", details.thinking_tokens if details is not None else None),
        ):
            if value is not None:
                self.values[key] = value

    def usage(self) -> TokenUsage:
        v = self.values
        return TokenUsage(
            input_tokens=v["input"] + v["cache_read"] + v["cache_write"],
            output_tokens=v["output"],
            cached_tokens=v["cache_read"],
            cache_write_tokens=v["cache_write"],
            reasoning_tokens=v["thinking"],
        )


def _conversation(messages: tuple[ChatMessage, ...]) -> list[MessageParam]:
    turns: list[MessageParam] = []
    for message in messages:
        # Anthropic rejects empty text blocks; an empty reply adds nothing to the context.
        if message.role == "system" or not message.content:
            continue
        # A tool result without its call id cannot be a tool_result block: user-side text.
        role = "assistant" if message.role == "assistant" else "user"
        turns.append(cast(MessageParam, {"role": role, "content": message.content}))
    return turns


def _estimated(request: ModelRequest, text: str) -> TokenUsage:
    return TokenUsage(
        input_tokens=count_input_tokens(request.messages),
        output_tokens=estimate_tokens(text),
        estimated=True,
    )
