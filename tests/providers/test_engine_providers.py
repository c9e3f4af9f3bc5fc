"""Real providers through the whole save flow (SQLite and PostgreSQL): a Ledger whose
settings point the `openai` and `anthropic` adapters at the fake servers. Completed
replies store the exact reported usage and the genai-prices cost (cache reads at the
cache rate); a stream without usage is estimated and says so; a 429 fails the task and
marks the user message; a cancel keeps the partial text and closes the upstream stream;
an unconfigured provider is a 422 that writes nothing; the key is in no stored row."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import select, text

from chatledger import Ledger, Settings
from chatledger.engine.chat import Turn
from chatledger.engine.turn import TurnResult
from chatledger.errors import InvalidInput
from chatledger.messages.models import Message
from chatledger.providers import estimate_tokens
from chatledger.server.app import create_app
from tests.providers.conftest import ANTHROPIC_KEY, OPENAI_KEY, timeout_for
from tests.providers.fake_server import HOLD, Answer, FakeServer
from tests.providers.protocols import (
    OPENAI_DONE,
    anthropic_deltas,
    anthropic_end,
    anthropic_reply,
    anthropic_start,
    json_error,
    openai_deltas,
    openai_reply,
    openai_usage,
)

GENAI_PRICES = "genai-prices"


@pytest.fixture
def provider_ledger_settings(
    request: pytest.FixtureRequest,
    settings: Settings,
    fake_openai: FakeServer,
    fake_anthropic: FakeServer,
) -> Settings:
    return settings.model_copy(
        update={
            "openai_api_key": SecretStr(OPENAI_KEY),
            "openai_base_url": fake_openai.base_url,
            "anthropic_api_key": SecretStr(ANTHROPIC_KEY),
            "anthropic_base_url": fake_anthropic.base_url,
            "provider_timeout_seconds": timeout_for(request),
            "provider_max_retries": 0,
        }
    )


@pytest.fixture
async def ledger(provider_ledger_settings: Settings) -> AsyncIterator[Ledger]:
    async with Ledger(provider_ledger_settings) as opened:
        yield opened


async def outcome(turn: Turn) -> TurnResult | BaseException:
    [ended] = await asyncio.wait_for(
        asyncio.gather(turn.result(), return_exceptions=True), timeout=30
    )
    return ended


async def cancel_once_held(turn: Turn, server: FakeServer, after: str) -> None:
    """Cancel the turn while the server holds its stream, once the delta `after` came."""
    await asyncio.wait_for(server.holding.wait(), 10)
    async for event in turn.events():
        if event.kind == "delta" and event.data["text"] == after:
            break
    turn.cancel()
    await outcome(turn)


async def user_message(ledger: Ledger, message_id: str) -> Message:
    async with ledger.database.reading() as session:
        found = await session.scalar(select(Message).where(Message.id == message_id))
    assert found is not None
    return found


async def stored_text(ledger: Ledger) -> str:
    """Every value of every row chatledger stored, as one string to search."""
    async with ledger.database.reading() as session:
        dump = []
        for table in ("runs", "messages", "tasks", "usage_daily"):
            dump += [
                repr(tuple(row)) for row in await session.execute(text(f"SELECT * FROM {table}"))
            ]
    return "\n".join(dump)


async def test_openai_reply_is_recorded_with_exact_usage_and_cost(
    ledger: Ledger, fake_openai: FakeServer
) -> None:
    # 1000 prompt tokens of which 400 from cache, 200 out: gpt-4o costs $2.50/M input,
    # $1.25/M cached input, $10/M output → 600 x 2.5 + 400 x 1.25 + 200 x 10 = $0.004.
    fake_openai.queue(
        openai_reply("Hi", " there!", usage=openai_usage(1000, 200, cached=400, reasoning=0))
    )

    turn = await ledger.chat("hi", model="openai/gpt-4o", message_id="q1")
    result = await turn.result()

    assert (result.status, result.text) == ("completed", "Hi there!")
    task = await ledger.get_task(result.task_id)
    assert (task.provider, task.model, task.status) == ("openai", "gpt-4o", "completed")
    assert (task.input_tokens, task.output_tokens, task.cached_tokens) == (1000, 200, 400)
    assert task.usage_estimated is False
    assert task.cost_nano == 4_000_000
    assert task.price_source is not None and task.price_source.startswith(GENAI_PRICES)
    assert task.ttft_ms is not None and task.total_ms is not None
    detail = await ledger.get_run(result.run_id)
    assert detail.run.total_cost_nano == 4_000_000 and detail.run.total_tokens == 1200
    assert [(m.role, m.content) for m in detail.messages] == [
        ("user", "hi"),
        ("assistant", "Hi there!"),
    ]
    assert await ledger.verify() == []
    # The request carried the whole history and asked for usage.
    assert fake_openai.received[-1].body["stream_options"] == {"include_usage": True}


async def test_reasoning_tokens_are_stored_and_priced_once(
    ledger: Ledger, fake_openai: FakeServer
) -> None:
    # o3-mini: $1.10/M input, $4.40/M output; the 300 reasoning tokens are inside the 500
    # output tokens: 100 x 1.1 + 500 x 4.4 = 2310 micro-USD, not 2310 + 300 x 4.4.
    fake_openai.queue(openai_reply("42", usage=openai_usage(100, 500, reasoning=300)))

    result = await (await ledger.chat("think", model="openai/o3-mini")).result()

    task = await ledger.get_task(result.task_id)
    assert (task.output_tokens, task.reasoning_tokens) == (500, 300)
    assert task.cost_nano == 2_310_000


async def test_without_a_usage_chunk_the_task_is_estimated(
    ledger: Ledger, fake_openai: FakeServer
) -> None:
    fake_openai.queue(openai_reply("Local", " model", " reply", usage=None))

    result = await (await ledger.chat("hi", model="openai/gpt-4o")).result()

    task = await ledger.get_task(result.task_id)
    assert task.status == "completed" and task.response_text == "Local model reply"
    assert task.usage_estimated is True
    assert task.input_tokens > 0 and task.output_tokens > 0
    assert result.usage.estimated


async def test_rate_limited_fails_the_task_and_marks_the_message(
    ledger: Ledger, fake_openai: FakeServer
) -> None:
    fake_openai.queue(json_error(429, "Rate limit reached", "requests", {"retry-after": "3"}))

    result = await (await ledger.chat("hi", model="openai/gpt-4o", message_id="q-429")).result()

    assert result.status == "failed"
    task = await ledger.get_task(result.task_id)
    assert task.status == "failed"
    assert task.error is not None
    assert (task.error["kind"], task.error["retryable"]) == ("rate_limited", True)
    assert "retry after 3 s" in task.error["message"]
    assert task.error["retry_after"] == 3  # stored, for a client deciding when to retry
    message = await user_message(ledger, "q-429")
    assert message.status == "error" and message.error is not None
    assert message.error["kind"] == "rate_limited"

    # "Try again": same message id, a new attempt that succeeds; usage counted once.
    retried = await (await ledger.retry("q-429")).result()
    assert retried.status == "completed"
    assert (await user_message(ledger, "q-429")).status == "complete"
    assert await ledger.verify() == []


async def test_auth_failure_is_recorded_without_the_key(
    ledger: Ledger, fake_openai: FakeServer
) -> None:
    fake_openai.queue(json_error(401, f"Incorrect API key provided: {OPENAI_KEY}", "auth"))

    result = await (await ledger.chat("hi", model="openai/gpt-4o")).result()

    assert result.status == "failed" and result.error is not None
    assert (result.error["kind"], result.error["retryable"]) == ("auth", False)
    stored = await stored_text(ledger)
    assert "Incorrect API key provided" in stored
    assert OPENAI_KEY not in stored and ANTHROPIC_KEY not in stored


@pytest.mark.stalls
async def test_a_timeout_fails_the_task(ledger: Ledger, fake_openai: FakeServer) -> None:
    fake_openai.queue(Answer([HOLD, OPENAI_DONE]))

    result = await (await ledger.chat("hi", model="openai/gpt-4o")).result()

    assert result.status == "failed" and result.error is not None
    assert result.error["kind"] == "timeout"


async def test_cancel_mid_stream_keeps_the_partial_text_and_closes_the_stream(
    ledger: Ledger, fake_openai: FakeServer
) -> None:
    fake_openai.queue(Answer([*openai_deltas("Once", " upon"), HOLD, OPENAI_DONE]))

    turn = await ledger.chat("tell me a story", model="openai/gpt-4o", message_id="q-c")
    await cancel_once_held(turn, fake_openai, after=" upon")

    task = await ledger.get_task(turn.plan.task_id)
    assert task.status == "cancelled" and task.response_text == "Once upon"
    assert task.error is not None and task.error["kind"] == "cancelled"
    assert task.usage_estimated is True  # no usage comes before the end of the stream
    assert (await user_message(ledger, "q-c")).status == "error"
    # The request was cancelled upstream: the server saw its client go away.
    await asyncio.wait_for(fake_openai.client_gone.wait(), 10)
    assert await ledger.verify() == []


async def test_anthropic_reply_prices_cache_reads_at_the_cache_rate(
    ledger: Ledger, fake_anthropic: FakeServer
) -> None:
    # Anthropic says input_tokens=1000 plus 4000 read from cache; chatledger stores 5000
    # input of which 4000 cached. claude-haiku-4-5: $1/M input, $0.10/M cache read, $5/M
    # output → 1000 x 1 + 4000 x 0.1 + 100 x 5 = 1900 micro-USD.
    fake_anthropic.queue(
        anthropic_reply("Bonjour", input_tokens=1000, cache_read=4000, output_tokens=100)
    )

    turn = await ledger.chat("hi", model="anthropic/claude-haiku-4-5")
    result = await turn.result()

    task = await ledger.get_task(result.task_id)
    assert (task.status, task.response_text) == ("completed", "Bonjour")
    assert (task.input_tokens, task.cached_tokens, task.output_tokens) == (5000, 4000, 100)
    assert task.cost_nano == 1_900_000
    assert fake_anthropic.received[-1].body["messages"] == [{"role": "user", "content": "hi"}]


async def test_anthropic_cache_writes_are_priced_at_their_own_rate(
    ledger: Ledger, fake_anthropic: FakeServer
) -> None:
    # claude-haiku-4-5: $1/M input, $1.25/M cache write, $0.10/M cache read, $5/M output.
    fake_anthropic.queue(
        anthropic_reply(
            "Hi", input_tokens=1000, cache_read=4000, cache_write=2000, output_tokens=100
        )
    )

    result = await (await ledger.chat("hi", model="anthropic/claude-haiku-4-5")).result()

    task = await ledger.get_task(result.task_id)
    assert (task.input_tokens, task.cached_tokens, task.cache_write_tokens) == (7000, 4000, 2000)
    assert task.cost_nano == 1000 * 1000 + 4000 * 100 + 2000 * 1250 + 100 * 5000
    assert result.usage.cache_write_tokens == 2000


async def test_a_cancelled_anthropic_reply_keeps_the_usage_it_was_told(
    ledger: Ledger, fake_anthropic: FakeServer
) -> None:
    # The input side (cache reads and writes included) comes with message_start: a reply
    # cancelled before its end keeps it exactly and estimates only the output.
    fake_anthropic.queue(
        Answer(
            [
                *anthropic_start(1000, cache_read=4000, cache_write=2000),
                *anthropic_deltas("Once", " upon"),
                HOLD,
                *anthropic_end(50),
            ]
        )
    )

    turn = await ledger.chat("story", model="anthropic/claude-haiku-4-5")
    await cancel_once_held(turn, fake_anthropic, after=" upon")

    task = await ledger.get_task(turn.plan.task_id)
    assert (task.status, task.response_text) == ("cancelled", "Once upon")
    assert (task.input_tokens, task.cached_tokens, task.cache_write_tokens) == (7000, 4000, 2000)
    assert task.output_tokens == estimate_tokens("Once upon")
    assert task.usage_estimated is True  # the output part is an estimate
    output = task.output_tokens * 5000
    assert task.cost_nano == 1000 * 1000 + 4000 * 100 + 2000 * 1250 + output
    assert await ledger.verify() == []


async def test_an_unconfigured_provider_is_a_422_that_writes_nothing(
    settings: Settings,
) -> None:
    bare = settings.model_copy(update={"openai_api_key": None, "openai_base_url": None})
    async with Ledger(bare) as ledger:
        with pytest.raises(InvalidInput) as raised:
            await ledger.chat("hi", model="openai/gpt-4o")
        assert raised.value.field == "model"
        assert "openai is not configured: set CHATLEDGER_OPENAI_API_KEY" in raised.value.message
        assert await ledger.list_runs() == []


async def test_a_bad_setting_is_a_422_that_writes_nothing(ledger: Ledger) -> None:
    with pytest.raises(InvalidInput) as raised:
        await ledger.chat("hi", model="openai/gpt-4o", settings={"temperature": 9})

    assert raised.value.field == "settings.temperature"
    assert await ledger.list_runs() == []


async def test_over_http_the_key_is_in_no_answer(
    provider_ledger_settings: Settings, fake_openai: FakeServer
) -> None:
    app = create_app(provider_ledger_settings, no_auth=True)
    fake_openai.queue(
        openai_reply("Hi", usage=openai_usage(10, 1)),
        json_error(401, f"bad key {OPENAI_KEY}", "invalid_request_error"),
    )
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http,
    ):
        ok = await chat(http, model="openai/gpt-4o")
        failed = await chat(http, model="openai/gpt-4o")
        unconfigured = await chat(http, model="anthropic-typo/x")

    assert ok.status_code == 200 and ok.json()["status"] == "completed", ok.text
    assert failed.status_code == 502, failed.text  # failed before its first token
    assert failed.json()["error"]["details"]["kind"] == "auth"
    assert OPENAI_KEY not in failed.text
    assert unconfigured.status_code == 422
    assert unconfigured.json()["error"]["details"]["field"] == "model"


async def chat(http: httpx.AsyncClient, **body: Any) -> httpx.Response:
    return await http.post("/v1/chat", json={"message": {"content": "hi"}, "stream": False, **body})
