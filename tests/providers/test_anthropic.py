"""The `anthropic` adapter against a real local server speaking the Messages streaming
protocol, through the real SDK: text deltas, usage converted so cache reads are inside
the input and counted once, the system prompt in `system`, max_tokens always sent, error
answers and error events, and the HTTP stream closed on cancel."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import pytest
from pydantic import SecretStr

from chatledger.errors import InvalidInput, ProviderError
from chatledger.providers import (
    ChatMessage,
    Delta,
    Finished,
    ModelRequest,
    StreamEvent,
    UsageSoFar,
)
from chatledger.providers.anthropic import AnthropicProvider
from chatledger.providers.config import provider_configs
from chatledger.tokens import TokenUsage
from tests.providers.conftest import ANTHROPIC_KEY, provider_settings
from tests.providers.fake_server import DROP, HOLD, Answer, FakeServer
from tests.providers.protocols import (
    anthropic_deltas,
    anthropic_end,
    anthropic_error_event,
    anthropic_reply,
    anthropic_start,
    json_error,
)

HISTORY = (
    ChatMessage("system", "Be brief."),
    ChatMessage("user", "hi"),
    ChatMessage("assistant", "Hello!"),
    ChatMessage("system", "Answer in English."),
    ChatMessage("user", "how are you?"),
)
MODEL = "claude-haiku-4-5"


def request(settings: Mapping[str, Any] | None = None) -> ModelRequest:
    return ModelRequest(MODEL, HISTORY, settings or {})


def offline() -> AnthropicProvider:
    settings = provider_settings(anthropic_api_key=SecretStr(ANTHROPIC_KEY))
    return AnthropicProvider(provider_configs(settings)["anthropic"])


async def collect(
    provider: AnthropicProvider, req: ModelRequest | None = None
) -> list[StreamEvent]:
    return [event async for event in provider.stream(req or request())]


async def failure(provider: AnthropicProvider) -> tuple[str, ProviderError]:
    text = ""
    with pytest.raises(ProviderError) as raised:
        async for event in provider.stream(request()):
            assert not isinstance(event, Finished), "no Finished may come before a failure"
            if isinstance(event, Delta):
                text += event.text
    return text, raised.value


async def test_streams_text_then_usage_with_cache_reads_inside_the_input(
    anthropic_provider: AnthropicProvider, fake_anthropic: FakeServer
) -> None:
    # Anthropic: input_tokens=100 excludes the 2000 read from cache and the 300 written.
    fake_anthropic.queue(
        anthropic_reply(
            "I am", " fine.", input_tokens=100, cache_read=2000, cache_write=300, output_tokens=40
        )
    )

    events = await collect(anthropic_provider)

    assert [e.text for e in events if isinstance(e, Delta)] == ["I am", " fine."]
    whole = TokenUsage(
        input_tokens=2400, output_tokens=40, cached_tokens=2000, cache_write_tokens=300
    )
    assert events[-1] == Finished(whole)
    # The input side is known from message_start, before any text: kept if cut short.
    assert events[0] == UsageSoFar(replace(whole, output_tokens=1))


async def test_thinking_tokens_are_reasoning_inside_the_output(
    anthropic_provider: AnthropicProvider, fake_anthropic: FakeServer
) -> None:
    fake_anthropic.queue(anthropic_reply("42", input_tokens=10, output_tokens=500, thinking=450))

    events = await collect(anthropic_provider)

    assert events[-1] == Finished(
        TokenUsage(input_tokens=10, output_tokens=500, reasoning_tokens=450)
    )


async def test_sends_system_apart_the_key_and_a_default_max_tokens(
    anthropic_provider: AnthropicProvider, fake_anthropic: FakeServer
) -> None:
    await collect(anthropic_provider)

    [received] = fake_anthropic.received
    assert received.path == "/v1/messages"
    # The SDK sends the key as `x-api-key` or, in newer versions, as a bearer token.
    sent = received.headers.get("x-api-key") or received.headers["authorization"]
    assert sent.removeprefix("Bearer ") == ANTHROPIC_KEY
    body = received.body
    assert (body["model"], body["stream"], body["max_tokens"]) == (MODEL, True, 1024)
    assert body["system"] == "Be brief.\n\nAnswer in English."
    assert body["messages"] == [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "how are you?"},
    ]


async def test_maps_settings_onto_the_request(
    anthropic_provider: AnthropicProvider, fake_anthropic: FakeServer
) -> None:
    settings = {"max_tokens": 64, "temperature": 0.3, "top_k": 5, "stop": "END"}
    await collect(anthropic_provider, request(settings))

    body = fake_anthropic.received[0].body
    assert (body["max_tokens"], body["temperature"], body["top_k"]) == (64, 0.3, 5)
    assert body["stop_sequences"] == ["END"]
    assert "stop" not in body


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"temperature": 1.5}, "settings.temperature"),  # Anthropic's range is 0..1
        ({"max_tokens": -1}, "settings.max_tokens"),
        ({"top_k": "five"}, "settings.top_k"),
        ({"presence_penalty": 1}, "settings.presence_penalty"),  # an OpenAI-only knob
    ],
)
def test_check_settings_names_the_bad_setting(settings: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidInput) as raised:
        offline().check_settings(settings)
    assert raised.value.field == field


async def test_a_stream_without_usage_events_is_estimated(
    anthropic_provider: AnthropicProvider, fake_anthropic: FakeServer
) -> None:
    # A minimal compatible proxy that sends only the text.
    fake_anthropic.queue(Answer(anthropic_deltas("just", " text")))

    events = await collect(anthropic_provider)

    assert isinstance(events[-1], Finished) and events[-1].usage.estimated


async def test_401_is_auth_and_the_key_is_scrubbed(
    anthropic_provider: AnthropicProvider, fake_anthropic: FakeServer
) -> None:
    fake_anthropic.queue(
        json_error(401, f"invalid x-api-key {ANTHROPIC_KEY}", "authentication_error")
    )

    _, error = await failure(anthropic_provider)

    assert (error.kind, error.retryable) == ("auth", False)
    assert "HTTP 401" in error.message and "invalid x-api-key" in error.message
    assert ANTHROPIC_KEY not in error.message


async def test_429_is_rate_limited_with_the_retry_after(
    anthropic_provider: AnthropicProvider, fake_anthropic: FakeServer
) -> None:
    fake_anthropic.queue(
        json_error(429, "Number of requests exceeded", "rate_limit_error", {"retry-after": "7"})
    )

    _, error = await failure(anthropic_provider)

    assert (error.kind, error.retryable, error.details["retry_after"]) == (
        "rate_limited",
        True,
        7,
    )


async def test_529_overloaded_is_a_retryable_server_error(
    anthropic_provider: AnthropicProvider, fake_anthropic: FakeServer
) -> None:
    fake_anthropic.queue(json_error(529, "Overloaded", "overloaded_error"))

    _, error = await failure(anthropic_provider)

    assert (error.kind, error.retryable) == ("server_error", True)


@pytest.mark.parametrize(
    ("error_type", "kind", "retryable"),
    [
        ("overloaded_error", "server_error", True),
        ("api_error", "server_error", True),
        ("rate_limit_error", "rate_limited", True),
        ("invalid_request_error", "bad_request", False),
    ],
)
async def test_an_error_event_mid_stream_keeps_the_partial_text(
    anthropic_provider: AnthropicProvider,
    fake_anthropic: FakeServer,
    error_type: str,
    kind: str,
    retryable: bool,
) -> None:
    fake_anthropic.queue(
        Answer(
            [
                *anthropic_start(10),
                *anthropic_deltas("Once", " upon"),
                anthropic_error_event(error_type, "Something happened"),
            ]
        )
    )

    text, error = await failure(anthropic_provider)

    assert text == "Once upon"
    assert (error.kind, error.retryable) == (kind, retryable)
    assert "Something happened" in error.message


async def test_a_dropped_connection_mid_stream_is_a_connection_failure(
    anthropic_provider: AnthropicProvider, fake_anthropic: FakeServer
) -> None:
    fake_anthropic.queue(Answer([*anthropic_start(10), *anthropic_deltas("Once"), DROP]))

    text, error = await failure(anthropic_provider)

    assert (text, error.kind, error.retryable) == ("Once", "connection", True)


@pytest.mark.stalls
async def test_a_stalled_stream_times_out(
    anthropic_provider: AnthropicProvider, fake_anthropic: FakeServer
) -> None:
    fake_anthropic.queue(
        Answer([*anthropic_start(10), *anthropic_deltas("Once"), HOLD, *anthropic_end(2)])
    )

    text, error = await failure(anthropic_provider)

    assert (text, error.kind, error.retryable) == ("Once", "timeout", True)


async def test_cancelling_the_consumer_closes_the_http_stream(
    anthropic_provider: AnthropicProvider, fake_anthropic: FakeServer
) -> None:
    fake_anthropic.queue(
        Answer([*anthropic_start(10), *anthropic_deltas("Once"), HOLD, *anthropic_end(2)])
    )
    seen: list[StreamEvent] = []

    async def consume() -> None:
        async for event in anthropic_provider.stream(request()):
            seen.append(event)

    consumer = asyncio.create_task(consume())
    await asyncio.wait_for(fake_anthropic.holding.wait(), 10)
    consumer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await consumer

    await asyncio.wait_for(fake_anthropic.client_gone.wait(), 10)
    assert seen == [UsageSoFar(TokenUsage(input_tokens=10, output_tokens=1)), Delta("Once")]
