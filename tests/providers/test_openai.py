"""The `openai` adapter against a real local server speaking the Chat Completions
streaming protocol, through the real SDK: deltas and usage (with and without a usage
chunk), what is sent, every failure kind (before and mid-stream), the key kept out of
messages, and the HTTP stream closed when the consumer stops or is cancelled."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import pytest
from pydantic import SecretStr

from chatledger.errors import InvalidInput, ProviderError
from chatledger.providers import ChatMessage, Delta, Finished, ModelRequest, StreamEvent
from chatledger.providers.config import provider_configs
from chatledger.providers.openai import OpenAIProvider
from chatledger.tokens import TokenUsage
from tests.providers.conftest import OPENAI_KEY, STALL_TIMEOUT_S, provider_settings
from tests.providers.fake_server import DROP, HOLD, Answer, FakeServer
from tests.providers.protocols import (
    OPENAI_DONE,
    json_error,
    openai_chunk,
    openai_deltas,
    openai_error_event,
    openai_reply,
    openai_usage,
)

HISTORY = (
    ChatMessage("system", "Be brief."),
    ChatMessage("user", "hi"),
    ChatMessage("assistant", "Hello!"),
    ChatMessage("user", "how are you?"),
)


def offline() -> OpenAIProvider:
    """An adapter that is never asked to stream: settings checks need no server."""
    settings = provider_settings(openai_api_key=SecretStr(OPENAI_KEY))
    return OpenAIProvider(provider_configs(settings)["openai"])


def request(settings: Mapping[str, Any] | None = None, model: str = "gpt-4o") -> ModelRequest:
    return ModelRequest(model, HISTORY, settings or {})


async def collect(provider: OpenAIProvider, req: ModelRequest | None = None) -> list[StreamEvent]:
    return [event async for event in provider.stream(req or request())]


async def failure(provider: OpenAIProvider) -> tuple[str, ProviderError]:
    """The text streamed before the stream failed, and the failure."""
    text = ""
    with pytest.raises(ProviderError) as raised:
        async for event in provider.stream(request()):
            assert isinstance(event, Delta), "no Finished may come before a failure"
            text += event.text
    return text, raised.value


def text_of(events: list[StreamEvent]) -> str:
    return "".join(e.text for e in events if isinstance(e, Delta))


async def test_streams_deltas_then_the_reported_usage(
    openai_provider: OpenAIProvider, fake_openai: FakeServer
) -> None:
    usage = openai_usage(1200, 80, cached=1024, reasoning=30)
    fake_openai.queue(openai_reply("I am", " fine,", " thanks.", usage=usage))

    events = await collect(openai_provider)

    assert [e.text for e in events if isinstance(e, Delta)] == ["I am", " fine,", " thanks."]
    assert events[-1] == Finished(
        TokenUsage(input_tokens=1200, output_tokens=80, cached_tokens=1024, reasoning_tokens=30)
    )
    assert sum(isinstance(e, Finished) for e in events) == 1


async def test_sends_the_conversation_the_key_and_asks_for_usage(
    openai_provider: OpenAIProvider, fake_openai: FakeServer
) -> None:
    await collect(openai_provider)

    [received] = fake_openai.received
    assert received.path == "/v1/chat/completions"
    assert received.headers["authorization"] == f"Bearer {OPENAI_KEY}"
    assert received.body["model"] == "gpt-4o"
    assert received.body["stream"] is True
    assert received.body["stream_options"] == {"include_usage": True}
    assert received.body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "how are you?"},
    ]


async def test_maps_settings_onto_the_request(
    openai_provider: OpenAIProvider, fake_openai: FakeServer
) -> None:
    settings = {
        "temperature": 0.2,
        "top_p": 0.9,
        "max_tokens": 50,
        "stop": "END",
        "seed": 7,
        "presence_penalty": -1,
        "extra_body": {"top_k": 20, "min_p": 0.05},
    }
    await collect(openai_provider, request(settings))

    body = fake_openai.received[0].body
    assert (body["temperature"], body["top_p"], body["max_tokens"], body["seed"]) == (
        0.2,
        0.9,
        50,
        7,
    )
    assert body["stop"] == ["END"]
    assert body["presence_penalty"] == -1
    assert (body["top_k"], body["min_p"]) == (20, 0.05)  # extra_body passes through as is


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"temperature": 3}, "settings.temperature"),
        ({"temperature": "hot"}, "settings.temperature"),
        ({"temperature": True}, "settings.temperature"),
        ({"top_p": -0.1}, "settings.top_p"),
        ({"max_tokens": 0}, "settings.max_tokens"),
        ({"max_tokens": 1.5}, "settings.max_tokens"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "settings.stop"),
        ({"stop": [""]}, "settings.stop"),
        ({"reasoning_effort": "extreme"}, "settings.reasoning_effort"),
        ({"extra_body": "top_k=3"}, "settings.extra_body"),
        ({"temprature": 0.5}, "settings.temprature"),  # a typo is refused, not ignored
        ({"delay_ms": 10}, "settings.delay_ms"),  # echo's knobs mean nothing here
    ],
)
def test_check_settings_names_the_bad_setting(settings: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidInput) as raised:
        offline().check_settings(settings)
    assert raised.value.field == field


def test_check_settings_accepts_what_it_maps() -> None:
    offline().check_settings(
        {"temperature": 0, "max_tokens": 100.0, "stop": ["a", "b"], "reasoning_effort": "low"}
    )
    offline().check_settings({"temperature": None})  # None means "not set"


async def test_without_a_usage_chunk_usage_is_estimated_and_says_so(
    openai_provider: OpenAIProvider, fake_openai: FakeServer
) -> None:
    fake_openai.queue(openai_reply("I am", " fine", usage=None))

    events = await collect(openai_provider)

    assert text_of(events) == "I am fine"
    finished = events[-1]
    assert isinstance(finished, Finished)
    assert finished.usage.estimated
    assert finished.usage.input_tokens > 0 and finished.usage.output_tokens > 0


async def test_usage_in_every_chunk_keeps_the_last(
    openai_provider: OpenAIProvider, fake_openai: FakeServer
) -> None:
    # Some compatible servers repeat a running usage on each chunk, without [DONE] extras.
    fake_openai.queue(
        Answer(
            [
                openai_chunk("a", usage=openai_usage(10, 1)),
                openai_chunk("b", usage=openai_usage(10, 2)),
                OPENAI_DONE,
            ]
        )
    )

    events = await collect(openai_provider)

    assert events[-1] == Finished(TokenUsage(input_tokens=10, output_tokens=2))


async def test_401_is_an_auth_failure_that_never_shows_the_key(
    openai_provider: OpenAIProvider, fake_openai: FakeServer
) -> None:
    # A careless server echoing the key back must not put it in the recorded message.
    fake_openai.queue(
        json_error(401, f"Incorrect API key provided: {OPENAI_KEY}", "invalid_request_error")
    )

    text, error = await failure(openai_provider)

    assert text == ""
    assert (error.kind, error.retryable) == ("auth", False)
    assert "HTTP 401" in error.message and "Incorrect API key provided" in error.message
    assert OPENAI_KEY not in error.message and OPENAI_KEY not in str(error.details)
    assert OPENAI_KEY not in repr(openai_provider)


async def test_429_is_rate_limited_retryable_with_the_retry_after(
    openai_provider: OpenAIProvider, fake_openai: FakeServer
) -> None:
    fake_openai.queue(
        json_error(429, "Rate limit reached for gpt-4o", "requests", {"retry-after": "20"})
    )

    _, error = await failure(openai_provider)

    assert (error.kind, error.retryable) == ("rate_limited", True)
    assert error.details["retry_after"] == 20
    assert "retry after 20 s" in error.message and "Rate limit reached" in error.message


@pytest.mark.parametrize(
    ("status", "kind", "retryable"),
    [
        (500, "server_error", True),
        (503, "server_error", True),
        (400, "bad_request", False),
        (404, "bad_request", False),
        (403, "auth", False),
    ],
)
async def test_http_errors_map_to_kinds(
    openai_provider: OpenAIProvider,
    fake_openai: FakeServer,
    status: int,
    kind: str,
    retryable: bool,
) -> None:
    fake_openai.queue(json_error(status, "something went wrong", "error"))

    _, error = await failure(openai_provider)

    assert (error.kind, error.retryable) == (kind, retryable)
    assert f"HTTP {status}" in error.message


async def test_an_error_event_mid_stream_fails_after_the_partial_text(
    openai_provider: OpenAIProvider, fake_openai: FakeServer
) -> None:
    fake_openai.queue(
        Answer([*openai_deltas("Once", " upon"), openai_error_event("The server had an error")])
    )

    text, error = await failure(openai_provider)

    assert text == "Once upon"
    assert (error.kind, error.retryable) == ("server_error", True)
    assert "The server had an error" in error.message


async def test_a_connection_dropped_mid_stream_is_a_connection_failure(
    openai_provider: OpenAIProvider, fake_openai: FakeServer
) -> None:
    fake_openai.queue(Answer([*openai_deltas("Once", " upon"), DROP]))

    text, error = await failure(openai_provider)

    assert text == "Once upon"
    assert (error.kind, error.retryable) == ("connection", True)


@pytest.mark.stalls
async def test_a_server_that_never_answers_times_out(
    openai_provider: OpenAIProvider, fake_openai: FakeServer
) -> None:
    fake_openai.queue(Answer([HOLD, *openai_deltas("late")]))

    _, error = await failure(openai_provider)

    assert (error.kind, error.retryable) == ("timeout", True)
    assert f"{STALL_TIMEOUT_S:g} s" in error.message


@pytest.mark.stalls
async def test_a_stream_that_stalls_mid_reply_times_out(
    openai_provider: OpenAIProvider, fake_openai: FakeServer
) -> None:
    fake_openai.queue(Answer([*openai_deltas("Once"), HOLD, OPENAI_DONE]))

    text, error = await failure(openai_provider)

    assert text == "Once"
    assert error.kind == "timeout"


async def test_nobody_listening_is_a_connection_failure(
    openai_provider: OpenAIProvider, fake_openai: FakeServer
) -> None:
    closed_port = OpenAIProvider(replace(openai_provider.config, base_url="http://127.0.0.1:9/v1"))

    with pytest.raises(ProviderError) as raised:
        await collect(closed_port)
    await closed_port.aclose()

    assert (raised.value.kind, raised.value.retryable) == ("connection", True)
    assert "http://127.0.0.1:9/v1" in raised.value.message


async def test_stopping_early_closes_the_http_stream(
    openai_provider: OpenAIProvider, fake_openai: FakeServer
) -> None:
    fake_openai.queue(Answer([*openai_deltas("Once", " upon"), HOLD, OPENAI_DONE]))

    stream = openai_provider.stream(request())
    first = await anext(stream)
    assert first == Delta("Once")
    await stream.aclose()  # what `async for … break` does once the generator is dropped

    await asyncio.wait_for(fake_openai.client_gone.wait(), 10)


async def test_cancelling_the_consumer_closes_the_http_stream(
    openai_provider: OpenAIProvider, fake_openai: FakeServer
) -> None:
    fake_openai.queue(Answer([*openai_deltas("Once"), HOLD, OPENAI_DONE]))
    seen: list[StreamEvent] = []

    async def consume() -> None:
        async for event in openai_provider.stream(request()):
            seen.append(event)

    consumer = asyncio.create_task(consume())
    await asyncio.wait_for(fake_openai.holding.wait(), 10)
    consumer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await consumer

    await asyncio.wait_for(fake_openai.client_gone.wait(), 10)
    assert seen == [Delta("Once")]
