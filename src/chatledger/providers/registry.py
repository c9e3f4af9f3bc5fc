"""Which provider serves a model string: `provider/model` → (provider instance, model name).

Two sources, looked up in this order:
- registered factories (`register(name, factory)`): echo, and test doubles;
- the remote providers the settings configure (`configure(settings)`, which `Ledger` and
  `create_app` call; until then the environment's `Settings()` is used): `openai`,
  `anthropic` and every named OpenAI-compatible server.

Instances are created on first use and reused, so adapters holding HTTP clients are built
once per configuration. A built-in provider that is not configured is a 422 naming
`model` with the variable to set, raised by `resolve` before anything is written.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from chatledger.config import Settings
from chatledger.errors import InvalidInput
from chatledger.providers.base import Provider
from chatledger.providers.config import (
    DEFAULT_BASE_URLS,
    KEY_VARIABLES,
    ProviderConfig,
    not_configured,
    provider_configs,
)
from chatledger.providers.echo import EchoProvider

_FACTORIES: dict[str, Callable[[], Provider]] = {"echo": EchoProvider}
_INSTANCES: dict[str, Provider] = {}
_CONFIGS: dict[str, ProviderConfig] | None = None
_BUILT: dict[str, Provider] = {}


@dataclass(frozen=True, slots=True)
class ProviderInfo:
    """What `chatledger models` shows of a provider: never its key, only whether one is set."""

    name: str
    kind: str  # echo | openai | anthropic | registered
    base_url: str | None
    configured: bool
    has_key: bool
    hint: str | None = None


def register(name: str, factory: Callable[[], Provider]) -> None:
    """Make `name/<model>` resolve to the provider `factory` builds (replacing any before)."""
    _FACTORIES[name] = factory
    _INSTANCES.pop(name, None)


def configure(settings: Settings) -> None:
    """Serve the remote providers `settings` configure from now on (replacing the last
    configuration; registered factories stay)."""
    global _CONFIGS, _BUILT
    _CONFIGS = provider_configs(settings)
    _BUILT = {}


def _configs() -> dict[str, ProviderConfig]:
    if _CONFIGS is None:
        configure(Settings())
    assert _CONFIGS is not None
    return _CONFIGS


def known_providers() -> list[str]:
    return sorted(set(_FACTORIES) | set(_configs()))


def split_model(model: str) -> tuple[str, str]:
    """`"openai/gpt-4o"` → `("openai", "gpt-4o")`; the bare name `"echo"` is echo's model.
    Only the first slash splits: `"openrouter/meta-llama/llama-3-8b"` is OpenRouter's
    `meta-llama/llama-3-8b`."""
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
    if provider_name in _FACTORIES:
        instance = _INSTANCES.get(provider_name)
        if instance is None:
            instance = _INSTANCES[provider_name] = _FACTORIES[provider_name]()
        return instance, model_name
    config = _configs().get(provider_name)
    if config is None:
        reason = not_configured(provider_name) or (
            f"unknown provider {provider_name!r}; known: {', '.join(known_providers())}"
        )
        raise InvalidInput("model", reason)
    built = _BUILT.get(provider_name)
    if built is None:
        built = _BUILT[provider_name] = _build(config)
    return built, model_name


async def aclose() -> None:
    """Close the HTTP clients of the configured providers built so far (they reopen on
    next use). `Ledger.close` and the server's shutdown call it."""
    for provider in list(_BUILT.values()):
        close = getattr(provider, "aclose", None)
        if close is not None:
            await close()


def describe() -> list[ProviderInfo]:
    """Every provider a model string can name now, and the built-ins still to configure."""
    configs = _configs()
    infos = [
        ProviderInfo(name, "echo" if name == "echo" else "registered", None, True, False)
        for name in sorted(_FACTORIES)
    ]
    for name, config in sorted(configs.items()):
        if name not in _FACTORIES:
            infos.append(
                ProviderInfo(name, config.kind, config.public_url, True, config.api_key is not None)
            )
    for name in sorted(set(KEY_VARIABLES) - set(configs) - set(_FACTORIES)):
        infos.append(
            ProviderInfo(
                name, name, DEFAULT_BASE_URLS[name], False, False, hint=not_configured(name)
            )
        )
    return infos


def _build(config: ProviderConfig) -> Provider:
    # Imported here: the SDKs take a while to import, and echo-only use never needs them.
    if config.kind == "anthropic":
        from chatledger.providers.anthropic import AnthropicProvider

        return AnthropicProvider(config)
    from chatledger.providers.openai import OpenAIProvider

    return OpenAIProvider(config)
