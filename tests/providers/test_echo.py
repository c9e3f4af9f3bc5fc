"""The echo provider and the registry: deterministic streams, realistic usage, and the
`delay_ms` / `fail_at` settings the engine's tests rely on."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import pytest

from chatledger.errors import InvalidInput, ProviderError
from chatledger.providers import (
    ChatMessage,
    Delta,
    EchoProvider,
    Finished,
    ModelRequest,
    StreamEvent,
    UsageSoFar,
    estimate_tokens,
    resolve,
    split_model,
)
from chatledger.providers.echo import (
    REMEMBERED_TEXT_CHARS,
    TOKENS_PER_MESSAGE,
    TOKENS_PER_REPLY,
    count_input_tokens,
)
from chatledger.tokens import TokenUsage


def request(*texts: str, settings: Mapping[str, Any] | None = None) -> ModelRequest:
    """Alternating user/assistant history ending with the user's `texts[-1]`."""
    roles = ["user", "assistant"] * len(texts)
    messages = tuple(ChatMessage(role, text) for role, text in zip(roles, texts, strict=False))
    return ModelRequest("echo", messages, settings or {})


async def collect(req: ModelRequest) -> list[StreamEvent]:
    return [event async for event in EchoProvider().stream(req)]


async def deltas_until_failure(req: ModelRequest) -> tuple[list[str], ProviderError]:
    seen: list[str] = []
    with pytest.raises(ProviderError) as raised:
        async for event in EchoProvider().stream(req):
            assert not isinstance(event, Finished), "no Finished may come before a failure"
            if isinstance(event, Delta):
                seen.append(event.text)
    return seen, raised.value


async def test_reply_echoes_the_last_user_message_word_by_word() -> None:
    events = await collect(request("hello there, how are you?"))

    started, *deltas, finished = events
    # The input side is reported as the reply starts, the whole count at its end.
    assert isinstance(started, UsageSoFar) and isinstance(finished, Finished)
    assert started.usage == TokenUsage(input_tokens=finished.usage.input_tokens)
    assert all(isinstance(d, Delta) for d in deltas)
    texts = [d.text for d in deltas if isinstance(d, Delta)]
    assert "".join(texts) == "Echo: hello there, how are you?"
    assert texts == ["Echo: ", "hello ", "there, ", "how ", "are ", "you?"]


async def test_deltas_keep_whitespace_exactly() -> None:
    text = "line one\n\n  indented\tand tabbed  "
    events = await collect(request(text))

    assert "".join(e.text for e in events if isinstance(e, Delta)) == f"Echo: {text}"


async def test_reply_is_deterministic() -> None:
    req = request("same input", "ok", "same again")

    assert await collect(req) == await collect(req)


async def test_usage_is_realistic_and_grows_with_history() -> None:
    short = await collect(request("hello there"))
    long = await collect(request("hello there", "Echo: hello there", "and now something longer"))
    assert isinstance(short[-1], Finished)
    assert isinstance(long[-1], Finished)
    short_usage, long_usage = short[-1].usage, long[-1].usage

    assert short_usage.input_tokens > estimate_tokens("hello there")  # per-message overhead
    assert short_usage.output_tokens == estimate_tokens("Echo: hello there")
    assert long_usage.input_tokens > short_usage.input_tokens + 10
    assert short_usage.cached_tokens == short_usage.reasoning_tokens == 0


@pytest.mark.parametrize("length", [10, REMEMBERED_TEXT_CHARS, REMEMBERED_TEXT_CHARS + 1])
def test_input_tokens_are_the_same_counted_again_from_memory(length: int) -> None:
    text = ("word, " * length)[:length]
    history = (ChatMessage("user", text), ChatMessage("assistant", "Echo: " + text))
    expected = TOKENS_PER_REPLY + sum(
        TOKENS_PER_MESSAGE + estimate_tokens(message.content) for message in history
    )
    assert count_input_tokens(history) == expected
    assert count_input_tokens(history) == expected  # the next reply of the conversation


def test_estimate_tokens_is_close_to_bpe_counts() -> None:
    assert estimate_tokens("") == 0
    assert estimate_tokens("hello") == 1
    assert estimate_tokens("Hello, world!") == 4  # cl100k: "Hello" "," " world" "!"
    assert estimate_tokens("internationalization") == 5
    assert estimate_tokens("1234567") == 3
    # ~4 characters per token on ordinary English prose, as OpenAI's rule of thumb says.
    prose = "The quick brown fox jumps over the lazy dog while the farmer watches. " * 10
    assert len(prose) / 5.5 < estimate_tokens(prose) < len(prose) / 3


async def test_delay_ms_pauses_before_each_delta() -> None:
    req = request("one two three", settings={"delay_ms": "20"})
    started = time.monotonic()

    events = await collect(req)

    deltas = [e for e in events if isinstance(e, Delta)]
    assert len(deltas) == 4
    assert time.monotonic() - started >= 4 * 0.020 * 0.9  # lower bound only: CI can be slow


async def test_delay_ms_is_a_schedule_a_busy_caller_does_not_shift() -> None:
    # A remote model's tokens keep coming while its caller is busy; a caller that blocks
    # for three delays after the first delta then gets the overdue ones back to back.
    # Each pause measured from the previous delta would end ~0.7 s in; the schedule ~0.4.
    req = request("one two three", settings={"delay_ms": 100})
    started = time.monotonic()
    deltas = 0

    async for event in EchoProvider().stream(req):
        if isinstance(event, Delta):
            deltas += 1
            if deltas == 1:
                # Blocks the event loop on purpose, as a busy server does.
                time.sleep(0.3)  # noqa: ASYNC251

    assert deltas == 4
    assert time.monotonic() - started < 0.55


async def test_fail_at_zero_fails_before_any_delta() -> None:
    seen, error = await deltas_until_failure(request("hello there", settings={"fail_at": 0}))

    assert seen == []
    assert error.kind == "injected_failure"
    assert error.message == "echo: injected failure at token 0"


async def test_fail_at_two_yields_two_deltas_then_fails() -> None:
    seen, error = await deltas_until_failure(request("a b c d", settings={"fail_at": "2"}))

    assert seen == ["Echo: ", "a "]
    assert "token 2" in error.message


async def test_fail_at_past_the_end_still_fails_without_finishing() -> None:
    seen, _ = await deltas_until_failure(request("short", settings={"fail_at": 99}))

    assert "".join(seen) == "Echo: short"


async def test_unrelated_settings_are_ignored() -> None:
    events = await collect(request("hi", settings={"temperature": 0.2, "fail_at": None}))

    assert isinstance(events[-1], Finished)


@pytest.mark.parametrize(
    "settings",
    [
        {"delay_ms": -1},
        {"delay_ms": "fast"},
        {"delay_ms": float("nan")},
        {"delay_ms": 10**9},
        {"delay_ms": True},
        {"fail_at": 1.5},
        {"fail_at": "-1"},
        {"fail_at": [1]},
    ],
)
async def test_bad_settings_raise_invalid_input_before_any_delta(
    settings: dict[str, Any],
) -> None:
    stream = EchoProvider().stream(request("hi", settings=settings))

    with pytest.raises(InvalidInput) as raised:
        await anext(stream)
    assert raised.value.field == next(iter(settings))


def test_chat_message_rejects_unknown_roles() -> None:
    with pytest.raises(InvalidInput):
        ChatMessage("robot", "beep")


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("echo", ("echo", "echo")),
        ("echo/anything", ("echo", "anything")),
        ("openai/gpt-4o", ("openai", "gpt-4o")),
        ("openrouter/anthropic/claude-3.5", ("openrouter", "anthropic/claude-3.5")),
    ],
)
def test_split_model(model: str, expected: tuple[str, str]) -> None:
    assert split_model(model) == expected


@pytest.mark.parametrize("model", ["gpt-4o", "", "echo/", "/echo"])
def test_split_model_rejects_malformed_names(model: str) -> None:
    with pytest.raises(InvalidInput) as raised:
        split_model(model)
    assert raised.value.field == "model"


@pytest.mark.parametrize("model", ["echo", "echo/anything"])
def test_resolve_echo(model: str) -> None:
    provider, name = resolve(model)

    assert isinstance(provider, EchoProvider)
    assert provider.name == "echo"
    assert name == split_model(model)[1]


def test_resolve_unknown_provider() -> None:
    with pytest.raises(InvalidInput) as raised:
        resolve("x/some-model")

    assert raised.value.field == "model"
    assert raised.value.message == "model: unknown provider 'x'; known: echo"
