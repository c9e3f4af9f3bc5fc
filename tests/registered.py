"""A model provider of a test's own, registered for that test only."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TypeVar

from chatledger.providers import Provider, registry

P = TypeVar("P", bound=Provider)


@contextlib.contextmanager
def registered(name: str, provider: P) -> Iterator[P]:
    """`<name>/<any model>` answered by `provider` until the block ends."""
    registry.register(name, lambda: provider)
    try:
        yield provider
    finally:
        registry._FACTORIES.pop(name, None)
        registry._INSTANCES.pop(name, None)
