"""Which remote providers the settings configure, and how to reach each.

`openai` is configured by a key or a base URL (an OpenAI-compatible server often needs no
key), `anthropic` by a key or a base URL, and every entry of `settings.providers` by its
base URL. A built-in provider left unconfigured is not an error until a chat asks for it:
then `not_configured` says which variable to set. The key stays a `SecretStr` here; only
the adapter that sends it unwraps it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import SecretStr

from chatledger.config import Settings

Kind = Literal["openai", "anthropic"]

DEFAULT_BASE_URLS: dict[str, str] = {
    "openai": "https://api.openai.com/v1",
    "anthropic": "https://api.anthropic.com",
}
# What to set for each built-in provider, named in the error a chat gets without it.
KEY_VARIABLES: dict[str, str] = {
    "openai": "CHATLEDGER_OPENAI_API_KEY",
    "anthropic": "CHATLEDGER_ANTHROPIC_API_KEY",
}


@dataclass(frozen=True, slots=True)
class ProviderConfig:
    name: str
    kind: Kind
    # Out of repr: a URL may carry `user:password@` (use `public_url` to show one).
    base_url: str = field(repr=False)
    api_key: SecretStr | None = field(repr=False)
    timeout_s: float
    max_retries: int
    # Anthropic's required max_tokens when a chat gives none.
    default_max_tokens: int

    @property
    def public_url(self) -> str:
        """The base URL without any `user:password@` in it, for messages and listings."""
        parts = urlsplit(self.base_url)
        return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))

    @property
    def secret(self) -> str | None:
        """The key in clear, for the SDK and for scrubbing error messages; nothing else."""
        return self.api_key.get_secret_value() if self.api_key is not None else None


def provider_configs(settings: Settings) -> dict[str, ProviderConfig]:
    """The configured remote providers by name (echo is not among them: it needs nothing)."""
    entries: list[tuple[str, Kind, str | None, SecretStr | None]] = [
        ("openai", "openai", settings.openai_base_url, settings.openai_api_key),
        ("anthropic", "anthropic", settings.anthropic_base_url, settings.anthropic_api_key),
    ]
    entries += [(name, p.kind, p.base_url, p.api_key) for name, p in settings.providers.items()]
    return {
        name: ProviderConfig(
            name=name,
            kind=kind,
            base_url=base_url or DEFAULT_BASE_URLS[kind],
            api_key=_non_empty(api_key),
            timeout_s=settings.provider_timeout_seconds,
            max_retries=settings.provider_max_retries,
            default_max_tokens=settings.anthropic_max_tokens,
        )
        for name, kind, base_url, api_key in entries
        if base_url or _non_empty(api_key)
    }


def not_configured(name: str) -> str | None:
    """Why `name/<model>` cannot be used, if `name` is a built-in left unconfigured."""
    variable = KEY_VARIABLES.get(name)
    if variable is None:
        return None
    url_variable = variable.replace("_API_KEY", "_BASE_URL")
    return f"{name} is not configured: set {variable} (or {url_variable} for a compatible server)"


def _non_empty(key: SecretStr | None) -> SecretStr | None:
    # An empty variable (`OPENAI_API_KEY=`) is the same as none.
    return key if key is not None and key.get_secret_value().strip() else None
