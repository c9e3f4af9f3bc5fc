"""The tokens a turn is recorded with when the provider did not say them all.

A reply that completes carries the provider's own count (or, when it reported none, an
estimate flagged as such). A reply cut short (cancelled, failed mid-stream) was still
paid for: it keeps what the provider reported so far (`UsageSoFar`: Anthropic tells the
input side when the message starts) and estimates only the rest from the streamed text.
"""

from __future__ import annotations

from dataclasses import replace

from chatledger.providers import ModelRequest, estimate_tokens
from chatledger.providers.echo import count_input_tokens
from chatledger.tokens import TokenUsage


def estimated(request: ModelRequest, text: str) -> TokenUsage:
    """Both sides estimated: the provider reported nothing."""
    return TokenUsage(
        input_tokens=count_input_tokens(request.messages),
        output_tokens=estimate_tokens(text),
        estimated=True,
    )


def cut_short(request: ModelRequest, text: str, known: TokenUsage | None) -> TokenUsage | None:
    """The usage of a reply that ended before the provider's final count: what it reported
    so far, the unreported part estimated (and then flagged). None when nothing is known
    and nothing was streamed: no sign the call was ever billed."""
    if known is None:
        return estimated(request, text) if text else None
    output = estimate_tokens(text)
    # Providers state the output so far rarely and late (Anthropic says 1 at the start):
    # the streamed text is the better floor.
    if known.output_tokens >= output:
        return known
    return replace(
        known,
        output_tokens=output,
        # Reasoning is part of the output: never more than the whole.
        reasoning_tokens=min(known.reasoning_tokens, output),
        estimated=True,
    )
