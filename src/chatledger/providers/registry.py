"""Which provider serves a model string: `provider/model` → (provider instance, model name).

Two sources, looked up in this order:
- registered factories (`register(name, factory)`, for the whole process): echo, and
  test doubles;
- the remote providers one `Settings` configures: `openai`, `anthropic` and every named
  OpenAI-compatible server.

A `Providers` belongs to one configuration: each `ChatEngine` (so each `Ledger` and each
app) has its own, so two apps in one process with different settings never share keys or
base URLs. Instances are created on first use and reused, so adapters holding HTTP
clients are built once per configuration. A built-in provider that is not configured is
a 422 naming `model` with the variable to set, raised by `resolve` before anything is
written. The module-level functions serve a default configuration (`configure`), for
scripts and tests that resolve a model without an engine.
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
# What the factories built: shared by every configuration (they take no settings).
_INSTANCES: dict[str, Provider] = {}


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
    """Make `name/<model>` resolve to the provider `factory` builds (replacing any before),
    in every configuration."""
    _FACTORIES[name] = factory
    _INSTANCES.pop(name, None)


class Providers:
    """The providers one configuration serves (see the module's docstring)."""

    def __init__(self, settings: Settings) -> None:
        self._configs = provider_configs(settings)
        self._built: dict[str, Provider] = {}

    def known(self) -> list[str]:
        return sorted(set(_FACTORIES) | set(self._configs))

    def resolve(self, model: str) -> tuple[Provider, str]:
        provider_name, model_name = split_model(model)
        if provider_name in _FACTORIES:
            instance = _INSTANCES.get(provider_name)
            if instance is None:
                instance = _INSTANCES[provider_name] = _FACTORIES[provider_name]()
            return instance, model_name
        config = self._configs.get(provider_name)
        if config is None:
            reason = not_configured(provider_name) or (
                f"unknown provider {provider_name!r}; known: {', '.join(self.known())}"
            )
            raise InvalidInput("model", reason)
        built = self._built.get(provider_name)
        if built is None:
            built = self._built[provider_name] = _build(config)
        return built, model_name

    async def aclose(self) -> None:
        """Close the HTTP clients of the providers built so far (they reopen on next use).
        `Ledger.close` and the server's shutdown call it."""
        for provider in list(self._built.values()):
            close = getattr(provider, "aclose", None)
            if close is not None:
                await close()

    def describe(self) -> list[ProviderInfo]:
        """Every provider a model string can name now, and the built-ins still to configure."""
        infos = [
            ProviderInfo(name, "echo" if name == "echo" else "registered", None, True, False)
            for name in sorted(_FACTORIES)
        ]
        for name, config in sorted(self._configs.items()):
            if name not in _FACTORIES:
                has_key = config.api_key is not None
                infos.append(ProviderInfo(name, config.kind, config.public_url, True, has_key))
        for name in sorted(set(KEY_VARIABLES) - set(self._configs) - set(_FACTORIES)):
            infos.append(
                ProviderInfo(
                    name, name, DEFAULT_BASE_URLS[name], False, False, hint=not_configured(name)
                )
            )
        return infos


_default: Providers | None = None


def configure(settings: Settings) -> Providers:
    """Make `settings` the default configuration (replacing the last) and return it."""
    global _default
    _default = Providers(settings)
    return _default


def default() -> Providers:
    """The default configuration: the last `configure`d, else the environment's."""
    return _default if _default is not None else configure(Settings())


def known_providers() -> list[str]:
    return default().known()


def resolve(model: str) -> tuple[Provider, str]:
    return default().resolve(model)


def describe() -> list[ProviderInfo]:
    return default().describe()


async def aclose() -> None:
    await default().aclose()


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


def _build(config: ProviderConfig) -> Provider:
    # Imported here: the SDKs take a while to import, and echo-only use never needs them.
    if config.kind == "anthropic":
        from chatledger.providers.anthropic import AnthropicProvider

        return AnthropicProvider(config)
    from chatledger.providers.openai import OpenAIProvider

    return OpenAIProvider(config)
