"""Settings: every knob chatledger reads from the environment (`CHATLEDGER_*`), with
defaults that work on a laptop with nothing configured.

Model provider keys are secrets: they are `SecretStr` (masked in `repr`, logs and
tracebacks), read from the environment or given to `Settings(...)`, and never written to
the database. Extra OpenAI-compatible servers are named entries of `providers`:
`CHATLEDGER_PROVIDERS__OLLAMA__BASE_URL=http://localhost:11434/v1` or, all at once,
`CHATLEDGER_PROVIDERS='{"ollama": {"base_url": "http://localhost:11434/v1"}}'`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import platformdirs
from pydantic import AliasChoices, BaseModel, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Names a configured provider may not take: they already mean something in `provider/model`.
RESERVED_PROVIDER_NAMES = frozenset({"echo", "openai", "anthropic"})
PROVIDER_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")


def default_database_path() -> Path:
    return Path(platformdirs.user_data_dir("chatledger", appauthor=False)) / "chatledger.db"


def sqlite_url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


def _http_url(value: str | None) -> str | None:
    if value is not None and not value.startswith(("http://", "https://")):
        raise ValueError(f"must be an http:// or https:// URL, got {value!r}")
    return value


class ExtraProvider(BaseModel):
    """A further server reached as `<name>/<model>`: OpenAI-compatible by default (Ollama,
    vLLM, llama.cpp, LM Studio, OpenRouter…), or speaking Anthropic's API."""

    base_url: str
    # Local servers usually need none; the SDK is then given a placeholder.
    api_key: SecretStr | None = None
    kind: Literal["openai", "anthropic"] = "openai"

    _check_url = field_validator("base_url")(_http_url)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="CHATLEDGER_",
        extra="ignore",
        # CHATLEDGER_PROVIDERS__OLLAMA__BASE_URL=… sets providers["ollama"].base_url.
        env_nested_delimiter="__",
        # Fields with an env alias (the API keys) can still be given by name in code.
        populate_by_name=True,
        # A validation error must not print what it was given: it may hold an API key.
        hide_input_in_errors=True,
    )

    database_url: str = Field(
        default_factory=lambda: sqlite_url(default_database_path()),
        description="SQLAlchemy URL; sqlite+aiosqlite:///file or postgresql+psycopg://…",
    )
    # PostgreSQL connections a process keeps open, and may open beyond them when busy
    # (db/engine.py `PoolLimits`); with several workers, each has its own.
    db_pool_size: int = Field(20, gt=0)
    db_max_overflow: int = Field(10, ge=0)
    admin_key: str | None = None
    task_lease_seconds: float = Field(60.0, gt=0)
    stream_debounce_ms: int = Field(500, ge=0)
    default_model: str = "echo"
    # Larger request bodies answer 413 before they are read into memory.
    max_request_bytes: int = Field(10 * 1024 * 1024, gt=0)
    # Batch uploads read and stored at once per process; more wait their turn unread
    # (server/limits.py: each holds its items in memory while it is stored). Unset: two
    # in a process serving alone, one in each of several sharing the machine's cores
    # (the same rate on either database, measured, and ~8 MB less with two workers).
    batch_concurrency: int | None = Field(None, gt=0)
    # Requests per API key (a token bucket per key and replica; 0 turns limits off):
    # generous, to stop a runaway client rather than to meter a normal one.
    rate_limit_per_minute: int = Field(6000, ge=0)
    rate_limit_burst: int = Field(1000, gt=0)
    # Who the CLI and the embedded Ledger act as when no API key is involved.
    local_project: str = "local"
    local_user: str = "local"

    # -- model providers -----------------------------------------------------------------
    # The SDKs' own variable names are honoured as a fallback, so an existing shell works.
    openai_api_key: SecretStr | None = Field(
        None, validation_alias=AliasChoices("CHATLEDGER_OPENAI_API_KEY", "OPENAI_API_KEY")
    )
    openai_base_url: str | None = None
    anthropic_api_key: SecretStr | None = Field(
        None, validation_alias=AliasChoices("CHATLEDGER_ANTHROPIC_API_KEY", "ANTHROPIC_API_KEY")
    )
    anthropic_base_url: str | None = None
    # Anthropic requires max_tokens on every request; this is used when a chat gives none.
    anthropic_max_tokens: int = Field(1024, gt=0)
    providers: dict[str, ExtraProvider] = Field(default_factory=dict)
    # For a stream this bounds the wait for each chunk, not the whole reply.
    provider_timeout_seconds: float = Field(600.0, gt=0)
    # Retries the SDKs make themselves (429, 5xx, connection) before the first token only.
    provider_max_retries: int = Field(2, ge=0)

    _check_urls = field_validator("openai_base_url", "anthropic_base_url")(_http_url)

    @field_validator("providers")
    @classmethod
    def _check_provider_names(cls, value: dict[str, ExtraProvider]) -> dict[str, ExtraProvider]:
        for name in value:
            if name in RESERVED_PROVIDER_NAMES:
                raise ValueError(f"{name!r} is built in; configure it with its own settings")
            if not PROVIDER_NAME.fullmatch(name):
                raise ValueError(f"provider name {name!r} must match {PROVIDER_NAME.pattern}")
        return value
