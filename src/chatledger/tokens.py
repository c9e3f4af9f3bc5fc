"""Token usage of one model call: the unit that providers report, pricing prices and
the ledger counts.

`cached_tokens` is the part of `input_tokens` served from the provider's prompt cache,
`cache_write_tokens` the part written into it (Anthropic prices writes above the input
rate), and `reasoning_tokens` the part of `output_tokens` spent on hidden reasoning: all
are subsets, never added on top, so `total` is input + output and nothing is counted twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class HoldsCounts(Protocol):
    """Anything holding the five counts under their names: an API schema, a task row."""

    @property
    def input_tokens(self) -> int: ...
    @property
    def output_tokens(self) -> int: ...
    @property
    def cached_tokens(self) -> int: ...
    @property
    def reasoning_tokens(self) -> int: ...
    @property
    def cache_write_tokens(self) -> int: ...


@dataclass(frozen=True, slots=True)
class TokenUsage:
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    cache_write_tokens: int = 0
    # True when the provider reported nothing and the counts were estimated from text.
    estimated: bool = False

    @classmethod
    def of(cls, source: HoldsCounts, *, estimated: bool = False) -> TokenUsage:
        return cls(
            input_tokens=source.input_tokens,
            output_tokens=source.output_tokens,
            cached_tokens=source.cached_tokens,
            reasoning_tokens=source.reasoning_tokens,
            cache_write_tokens=source.cache_write_tokens,
            estimated=estimated,
        )

    @property
    def total(self) -> int:
        return self.input_tokens + self.output_tokens

    def counts(self) -> tuple[int, int, int, int, int]:
        """Every count (not the `estimated` flag): two reports of one call agree when
        these do."""
        return (
            self.input_tokens,
            self.output_tokens,
            self.cached_tokens,
            self.reasoning_tokens,
            self.cache_write_tokens,
        )
