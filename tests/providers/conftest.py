"""Fixtures for the provider tests: fake OpenAI and Anthropic servers (real HTTP, real
SDKs pointed at them), adapters configured for them, and the default provider
configuration put back as it was after each test (`configure` sets it process-wide)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from pydantic import SecretStr

from chatledger import Settings
from chatledger.providers import registry
from chatledger.providers.anthropic import AnthropicProvider
from chatledger.providers.config import provider_configs
from chatledger.providers.openai import OpenAIProvider
from tests.providers.fake_server import FakeServer, running
from tests.providers.protocols import anthropic_default, openai_default

OPENAI_KEY = "sk-test-OPENAI-5ecret-0123456789"
ANTHROPIC_KEY = "sk-ant-test-ANTHROPIC-5ecret-0123456789"
# Generous: a module's first request does cold work (the SDK's lazy imports and models)
# on a machine the rest of the suite keeps busy, and must not time out by accident.
TIMEOUT_S = 10.0
# For the tests marked `stalls`, which wait for a held answer to time out: short, so they
# finish quickly; nothing asserts on durations.
STALL_TIMEOUT_S = 0.5


def timeout_for(request: pytest.FixtureRequest) -> float:
    """The provider timeout a test runs with: short where it waits for one to pass."""
    return STALL_TIMEOUT_S if request.node.get_closest_marker("stalls") else TIMEOUT_S


@pytest.fixture(autouse=True)
def restore_registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # A developer's own keys must not leak into what these tests see as "not configured".
    for name in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    default = registry._default
    yield
    registry._default = default


@pytest.fixture
async def fake_openai() -> AsyncIterator[FakeServer]:
    async with running(FakeServer(openai_default), path="/v1") as server:
        yield server


@pytest.fixture
async def fake_anthropic() -> AsyncIterator[FakeServer]:
    async with running(FakeServer(anthropic_default)) as server:
        yield server


def provider_settings(timeout_s: float = TIMEOUT_S, **values: object) -> Settings:
    """Settings with nothing from the environment's provider variables, plus `values`."""
    base: dict[str, object] = {
        "openai_api_key": None,
        "anthropic_api_key": None,
        "provider_timeout_seconds": timeout_s,
        # The SDKs' own retries would answer a scripted 429 or 500 with a second request.
        "provider_max_retries": 0,
    }
    return Settings(**{**base, **values})  # type: ignore[arg-type]


@pytest.fixture
async def openai_provider(
    request: pytest.FixtureRequest, fake_openai: FakeServer
) -> AsyncIterator[OpenAIProvider]:
    settings = provider_settings(
        timeout_for(request),
        openai_api_key=SecretStr(OPENAI_KEY),
        openai_base_url=fake_openai.base_url,
    )
    provider = OpenAIProvider(provider_configs(settings)["openai"])
    yield provider
    await provider.aclose()  # its connection pool belongs to this test's event loop


@pytest.fixture
async def anthropic_provider(
    request: pytest.FixtureRequest, fake_anthropic: FakeServer
) -> AsyncIterator[AnthropicProvider]:
    settings = provider_settings(
        timeout_for(request),
        anthropic_api_key=SecretStr(ANTHROPIC_KEY),
        anthropic_base_url=fake_anthropic.base_url,
    )
    provider = AnthropicProvider(provider_configs(settings)["anthropic"])
    yield provider
    await provider.aclose()
