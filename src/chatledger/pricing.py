"""What a model call cost, in integer nano-USD, from the genai-prices database.

`price_usage` is on the completion hot path: genai-prices caches the models it finds but
scans its whole catalogue again for every unknown one, so misses are remembered here.
Money stays integer nano-USD everywhere (exact sums on every database); `usd` turns it
into a Decimal for display. An unknown price is `None`, never a made-up zero.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import overload

import genai_prices
from genai_prices import Usage, calc_price, data_snapshot

from chatledger.tokens import TokenUsage

GENAI_PRICES_SOURCE = f"genai-prices {genai_prices.__version__}"
FREE_PROVIDERS = frozenset({"echo"})


@dataclass(frozen=True, slots=True)
class Price:
    cost_nano: int | None
    # Where the price came from ("genai-prices 0.2.3", "free", "unknown"), stored on the
    # task so a cost can be explained, or recomputed, after prices change.
    source: str


UNKNOWN = Price(None, "unknown")
FREE = Price(0, "free")
PER_MILLION = 1_000_000


@dataclass(frozen=True, slots=True)
class Rates:
    """A model's own prices in integer nano-USD per million tokens (a project's override);
    a cache rate of None is the input rate."""

    input: int
    output: int
    cache_read: int | None = None
    cache_write: int | None = None

    def cost_nano(self, usage: TokenUsage) -> int:
        """Each token once, at its rate: cache reads and writes are parts of the input."""
        cache_read = self.input if self.cache_read is None else self.cache_read
        cache_write = self.input if self.cache_write is None else self.cache_write
        fresh = max(0, usage.input_tokens - usage.cached_tokens - usage.cache_write_tokens)
        total = (
            fresh * self.input
            + usage.cached_tokens * cache_read
            + usage.cache_write_tokens * cache_write
            + usage.output_tokens * self.output
        )
        # Half a nano rounds up, as `to_nano` does; every term is non-negative.
        return (total + PER_MILLION // 2) // PER_MILLION


def load_catalogue() -> None:
    """Read genai-prices' catalogue now rather than at the first priced call: some 16,500
    objects, tens of milliseconds. A serving process does it before its heap is settled
    (server/heap.py), so that no request waits for it and the collector never walks it."""
    data_snapshot.get_snapshot()


def price_usage(provider: str, model: str, usage: TokenUsage, at: datetime | None = None) -> Price:
    """Price `usage` of `provider`'s `model` at time `at` (now if None; naive means UTC)."""
    if provider in FREE_PROVIDERS:
        return FREE
    if not _is_priced(provider, model):
        return UNKNOWN
    at = at or datetime.now(UTC)
    flat = _flat_price(provider, model, at if at.tzinfo else at.replace(tzinfo=UTC))
    if flat is not None:
        return Price(flat.cost_nano(usage), GENAI_PRICES_SOURCE)
    return Price(to_nano(_library_price(provider, model, usage, at)), GENAI_PRICES_SOURCE)


def _library_price(provider: str, model: str, usage: TokenUsage, at: datetime) -> Decimal:
    calculation = calc_price(
        # genai-prices' input_tokens includes cache reads and writes, as ours does: each
        # is priced at its cache rate and not again at the input rate. Reasoning tokens
        # are already inside output_tokens.
        Usage(
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cache_read_tokens=usage.cached_tokens,
            cache_write_tokens=usage.cache_write_tokens,
        ),
        model_ref=model,
        provider_id=provider,
        genai_request_timestamp=at,
    )
    return calculation.total_price


@dataclass(frozen=True, slots=True)
class _FlatPrice:
    """A model's list price with one rate per kind of token (no tiers), as genai-prices
    gives it for a time: computed here in a few multiplications instead of the library's
    general calculation (~70 µs, most of a batch item's cost). Exact: Decimal all along."""

    source: object  # the library's price object this was read from
    input: Decimal
    output: Decimal
    cache_read: Decimal
    cache_write: Decimal
    # The same rates in integer nano-USD when each is a whole number of them (all but a
    # few list prices): the cost is then integer arithmetic, ~2 µs less than Decimal's
    # on every call a batch prices.
    whole: Rates | None = None

    def cost_nano(self, usage: TokenUsage) -> int:
        if self.whole is not None:
            return self.whole.cost_nano(usage)
        return to_nano(self.cost_usd(usage))

    def cost_usd(self, usage: TokenUsage) -> Decimal:
        fresh = max(0, usage.input_tokens - usage.cached_tokens - usage.cache_write_tokens)
        total = (
            fresh * self.input
            + usage.cached_tokens * self.cache_read
            + usage.cache_write_tokens * self.cache_write
            + usage.output_tokens * self.output
        )
        return total / PER_MILLION


# A usage with every count distinct, to check a flat price against the library once.
_PROBE = TokenUsage(
    input_tokens=1_000_003, output_tokens=200_017, cached_tokens=300_007, cache_write_tokens=50_021
)
_RATES = frozenset({"input_mtok", "output_mtok", "cache_read_mtok", "cache_write_mtok"})
_flat_prices: dict[int, _FlatPrice | None] = {}


def _flat_price(provider: str, model: str, at: datetime) -> _FlatPrice | None:
    """The flat price in force at `at`, or None where the library must compute (tiers,
    other units, or any disagreement with the library on the probe)."""
    try:
        _, info = data_snapshot.get_snapshot().find_provider_model(model, None, provider, None)
        library_price = info.get_prices(at)
    except LookupError:
        return None
    key = id(library_price)
    if key in _flat_prices:
        known = _flat_prices[key]
        # None only costs the library's slower calculation; a flat price must be this one.
        if known is None or known.source is library_price:
            return known
    flat = _read_flat(library_price)
    if flat is not None:
        expected = _library_price(provider, model, _PROBE, at)
        if flat.cost_usd(_PROBE) != expected or flat.cost_nano(_PROBE) != to_nano(expected):
            flat = None
    _flat_prices[key] = flat
    return flat


def _read_flat(library_price: object) -> _FlatPrice | None:
    rates = {k: v for k, v in vars(library_price).items() if v is not None}
    used = {k: v for k, v in rates.items() if k in _RATES}
    if not all(isinstance(v, Decimal) for v in used.values()) or "input_mtok" not in used:
        return None
    # Prices of other units (searches, audio tokens, one-hour cache writes…) cost nothing
    # for the four counts chatledger records; a price per request would. Should another
    # rate ever apply to those counts, the probe in `_flat_price` disagrees: not flat.
    if "requests_kcount" in rates:
        return None
    input_rate = used["input_mtok"]
    per_kind = (
        input_rate,
        used.get("output_mtok", Decimal(0)),
        used.get("cache_read_mtok", input_rate),
        used.get("cache_write_mtok", input_rate),
    )
    in_nano = [rate.scaleb(9) for rate in per_kind]
    whole = None
    if all(nano == nano.to_integral_value() for nano in in_nano):
        whole = Rates(*(int(nano) for nano in in_nano))
    return _FlatPrice(library_price, *per_kind, whole=whole)


@functools.lru_cache(maxsize=1024)
def _is_priced(provider: str, model: str) -> bool:
    try:
        calc_price(Usage(input_tokens=0), model_ref=model, provider_id=provider)
    except LookupError:
        return False
    return True


def to_nano(amount_usd: Decimal) -> int:
    """Exact USD → nano-USD, rounding half a nano up (away from zero)."""
    # (As quantize(Decimal(1)) rounds it, in half the time: once per item of a batch.)
    return int(amount_usd.scaleb(9).to_integral_value(rounding=ROUND_HALF_UP))


@overload
def usd(nano: int) -> Decimal: ...
@overload
def usd(nano: None) -> None: ...
@overload
def usd(nano: int | None) -> Decimal | None: ...
def usd(nano: int | None) -> Decimal | None:
    """nano-USD → USD as an exact Decimal, for display and the API."""
    return None if nano is None else Decimal(nano).scaleb(-9)
