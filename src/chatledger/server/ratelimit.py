"""Rate limits per API key: a token bucket each, kept in this process.

A key may send `burst` requests at once, then `per_minute` a minute, spread evenly; past
that it is answered 429 with Retry-After, the whole seconds until its next request is
allowed. Keys are limited after they are authenticated, so only real keys get a bucket.
With several replicas each keeps its own buckets, so behind a load balancer a key gets
up to `per_minute` times the replicas. That suits what the limit is for, keeping one
runaway client from starving the others; it is not a quota to bill against.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from chatledger.errors import RateLimited


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    def __init__(
        self, per_minute: int, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.per_second = per_minute / 60
        self.burst = max(burst, 1)
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}
        self._pruned_at = clock()

    @property
    def enabled(self) -> bool:
        return self.per_second > 0

    def __len__(self) -> int:
        """Keys with a bucket now (those seen lately)."""
        return len(self._buckets)

    def take(self, key: str) -> None:
        """Spend one request of `key`'s allowance, or raise RateLimited."""
        if not self.enabled:
            return
        now = self._clock()
        self._prune(now)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(float(self.burst), now)
        else:
            refill = (now - bucket.updated) * self.per_second
            bucket.tokens = min(float(self.burst), bucket.tokens + refill)
            bucket.updated = now
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return
        # Rounded up: a client that waits as long as it is told is let through.
        wait = math.ceil((1 - bucket.tokens) / self.per_second)
        raise RateLimited(f"too many requests with this key; retry in {wait} s", wait)

    def _prune(self, now: float) -> None:
        # A bucket left alone long enough to refill is the same as no bucket: forget it,
        # so keys used once do not accumulate. At most one pass per refill period.
        full_after = self.burst / self.per_second
        if now - self._pruned_at < full_after:
            return
        self._pruned_at = now
        idle = [key for key, b in self._buckets.items() if now - b.updated >= full_after]
        for key in idle:
            del self._buckets[key]
