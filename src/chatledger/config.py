"""Settings: every knob chatledger reads from the environment (`CHATLEDGER_*`), with
defaults that work on a laptop with nothing configured."""

from __future__ import annotations

from pathlib import Path

import platformdirs
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def default_database_path() -> Path:
    return Path(platformdirs.user_data_dir("chatledger", appauthor=False)) / "chatledger.db"


def sqlite_url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CHATLEDGER_", extra="ignore")

    database_url: str = Field(
        default_factory=lambda: sqlite_url(default_database_path()),
        description="SQLAlchemy URL; sqlite+aiosqlite:///file or postgresql+psycopg://…",
    )
    admin_key: str | None = None
    task_lease_seconds: float = Field(60.0, gt=0)
    stream_debounce_ms: int = Field(500, ge=0)
    default_model: str = "echo"
    # Larger request bodies answer 413 before they are read into memory.
    max_request_bytes: int = Field(10 * 1024 * 1024, gt=0)
    # Who the CLI and the embedded Ledger act as when no API key is involved.
    local_project: str = "local"
    local_user: str = "local"
