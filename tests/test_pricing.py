"""Pricing: exact nano-USD from genai-prices, cache reads at the cache rate, honest unknowns."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from genai_prices import data_snapshot

from chatledger.pricing import (
    Price,
    Rates,
    _flat_price,
    _library_price,
    price_usage,
    to_nano,
    usd,
)
from chatledger.tokens import TokenUsage

# A fixed date so a future change in list prices cannot move these expectations.
AT = datetime(2025, 6, 1, tzinfo=UTC)
# gpt-4o list prices per token, in nano-USD: $2.50 / $1.25 cached / $10.00 per million.
GPT4O_INPUT, GPT4O_CACHED, GPT4O_OUTPUT = 2_500, 1_250, 10_000


def test_gpt_4o_priced_exactly() -> None:
    price = price_usage("openai", "gpt-4o", TokenUsage(input_tokens=1_234, output_tokens=567), AT)

    assert price.cost_nano == 1_234 * GPT4O_INPUT + 567 * GPT4O_OUTPUT
    assert price.source.startswith("genai-prices ")


def test_cached_tokens_priced_at_cache_rate_once() -> None:
    usage = TokenUsage(input_tokens=1_000, output_tokens=500, cached_tokens=200)

    price = price_usage("openai", "gpt-4o", usage, AT)

    # 800 fresh + 200 cached input tokens: the cached ones are not also charged as input.
    assert price.cost_nano == 800 * GPT4O_INPUT + 200 * GPT4O_CACHED + 500 * GPT4O_OUTPUT
    assert price.cost_nano == 7_250_000


def test_reasoning_tokens_are_not_charged_twice() -> None:
    plain = TokenUsage(input_tokens=10, output_tokens=100)
    with_reasoning = TokenUsage(input_tokens=10, output_tokens=100, reasoning_tokens=80)

    assert price_usage("openai", "gpt-4o", with_reasoning, AT) == price_usage(
        "openai", "gpt-4o", plain, AT
    )


def test_zero_usage_of_a_known_model_costs_zero() -> None:
    price = price_usage("openai", "gpt-4o", TokenUsage(), AT)

    assert price.cost_nano == 0
    assert price.source.startswith("genai-prices ")


@pytest.mark.parametrize(
    ("provider", "model"),
    [("openai", "no-such-model-xyz"), ("no-such-provider", "gpt-4o")],
)
def test_unknown_model_has_no_price(provider: str, model: str) -> None:
    usage = TokenUsage(input_tokens=100, output_tokens=100)

    # Asked twice: the second answer comes from the miss cache and must be the same.
    assert price_usage(provider, model, usage) == Price(None, "unknown")
    assert price_usage(provider, model, usage) == Price(None, "unknown")


def test_echo_is_free() -> None:
    price = price_usage("echo", "echo", TokenUsage(input_tokens=10**6, output_tokens=10**6))

    assert price == Price(0, "free")


@pytest.mark.parametrize(
    ("amount", "nano"),
    [
        (Decimal("0.00725"), 7_250_000),
        (Decimal("0.0000001125"), 113),  # 112.5 nano: half rounds up, not to even
        (Decimal("0.0000001124"), 112),
        (Decimal("0.0000000005"), 1),
        (Decimal("0"), 0),
        (Decimal("123456.789012345"), 123_456_789_012_345),
    ],
)
def test_to_nano_is_exact_and_rounds_half_up(amount: Decimal, nano: int) -> None:
    assert to_nano(amount) == nano


def test_usd_round_trips_nano() -> None:
    assert usd(None) is None
    assert usd(7_250_000) == Decimal("0.00725")
    assert usd(1) == Decimal("0.000000001")
    assert to_nano(usd(123_456_789) or Decimal(0)) == 123_456_789


def test_cache_writes_priced_at_their_own_rate_once() -> None:
    # claude-haiku-4-5 per million: $1 input, $0.10 cache read, $1.25 cache write, $5 output.
    usage = TokenUsage(
        input_tokens=10_000, cached_tokens=4_000, cache_write_tokens=5_000, output_tokens=100
    )

    price = price_usage("anthropic", "claude-haiku-4-5", usage, AT)

    # 1,000 fresh + 4,000 read + 5,000 written: each input token once, at its own rate.
    assert price.cost_nano == 1_000 * 1_000 + 4_000 * 100 + 5_000 * 1_250 + 100 * 5_000


def test_override_rates_price_every_part_once() -> None:
    rates = Rates(input=3_000_000_000, output=15_000_000_000, cache_read=300_000_000)
    usage = TokenUsage(
        input_tokens=1_000, cached_tokens=300, cache_write_tokens=200, output_tokens=50
    )

    # Per token: $3/M input (and cache writes, left at the input rate), $0.30/M reads.
    assert rates.cost_nano(usage) == 500 * 3_000 + 300 * 300 + 200 * 3_000 + 50 * 15_000


def test_override_rates_round_half_a_nano_up() -> None:
    # $0.0005 per million tokens is half a nano-USD per token.
    half = Rates(input=500_000, output=0)
    under_half = Rates(input=499_999, output=0)

    assert half.cost_nano(TokenUsage(input_tokens=1)) == 1
    assert under_half.cost_nano(TokenUsage(input_tokens=1)) == 0
    assert half.cost_nano(TokenUsage(input_tokens=3)) == 2  # 1.5 nano


def test_every_catalogue_price_agrees_with_the_library() -> None:
    """The flat-rate shortcut (most models) and the library's own calculation (tiers,
    other units) give the same nano-USD for every model, on usages of every shape."""
    chooser = random.Random(7)
    checked = 0
    for provider in data_snapshot.get_snapshot().providers:
        for model in provider.models:
            input_tokens = chooser.randint(0, 400_000)  # across the 200k tiers too
            cached = chooser.randint(0, input_tokens)
            usage = TokenUsage(
                input_tokens=input_tokens,
                cached_tokens=cached,
                cache_write_tokens=chooser.randint(0, input_tokens - cached),
                output_tokens=chooser.randint(0, 60_000),
            )
            try:
                expected = to_nano(_library_price(provider.id, model.id, usage, AT))
            except (LookupError, ValueError):
                continue  # priced in other units, or not at this date
            assert price_usage(provider.id, model.id, usage, AT).cost_nano == expected, (
                provider.id,
                model.id,
                usage,
            )
            checked += 1
    assert checked > 500


def test_whole_nano_rates_cost_what_the_decimal_rates_cost() -> None:
    """A list price whose rates are whole nano-USD is costed in integers (the rest, a
    rate finer than a nano per million tokens, in Decimal): the same cost as Decimal's."""
    chooser = random.Random(11)
    whole = 0
    for provider in data_snapshot.get_snapshot().providers:
        for model in provider.models:
            flat = _flat_price(provider.id, model.id, AT)
            if flat is None or flat.whole is None:
                continue
            whole += 1
            for _ in range(5):
                input_tokens = chooser.randint(0, 2**31 - 1)
                cached = chooser.randint(0, input_tokens)
                usage = TokenUsage(
                    input_tokens=input_tokens,
                    cached_tokens=cached,
                    cache_write_tokens=chooser.randint(0, input_tokens - cached),
                    output_tokens=chooser.randint(0, 2**31 - 1),
                )
                assert flat.cost_nano(usage) == to_nano(flat.cost_usd(usage)), (model.id, usage)
    assert whole > 500
