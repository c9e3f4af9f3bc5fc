"""Which provider serves a model string: `provider/model` → (provider instance, model name).

Providers register a factory under their name; instances are created on first use and
reused, so adapters holding HTTP clients are built once per process.
"""

from __future__ import annotations

from collections.abc import Callable

from chatledger.errors import InvalidInput
from chatledger.providers.base import Provider
from chatledger.providers.echo import EchoProvider

_FACTORIES: dict[str, Callable[[], Provider]] = {"echo": EchoProvider}
_INSTANCES: dict[str, Provider] = {}


def register(name: str, factory: Callable[[], Provider]) -> None:
    """Make `name/<model>` resolve to the provider `factory` builds (replacing any before)."""
    _FACTORIES[name] = factory
    _INSTANCES.pop(name, None)


def known_providers() -> list[str]:
    return sorted(_FACTORIES)


def split_model(model: str) -> tuple[str, str]:
    """`"openai/gpt-4o"` → `("openai", "gpt-4o")`; the bare name `"echo"` is echo's model."""
    if model == "echo":
        return "echo", "echo"
    provider, slash, name = model.partition("/")
    if not slash:
        raise InvalidInput("model", f"expected 'provider/model' (e.g. 'echo/echo'), got {model!r}")
    if not provider or not name:
        raise InvalidInput("model", f"provider and model name must be non-empty, got {model!r}")
    return provider, name


def resolve(model: str) -> tuple[Provider, str]:
    provider_name, model_name = split_model(model)
    if provider_name not in _FACTORIES:
        raise InvalidInput(
            "model",
            f"unknown provider {provider_name!r}; known: {', '.join(known_providers())}",
        )
    instance = _INSTANCES.get(provider_name)
    if instance is None:
        instance = _INSTANCES[provider_name] = _FACTORIES[provider_name]()
    return instance, model_name
