"""Providers configured from settings and the environment: which `provider/model`
strings resolve to what, the clear 422 for a built-in left unconfigured, named
OpenAI-compatible servers, and keys that never show in `repr`, in `describe()` or in a
validation error."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from chatledger import Ledger, Settings
from chatledger.errors import InvalidInput
from chatledger.providers import EchoProvider, configure, describe, known_providers, resolve
from chatledger.providers.anthropic import AnthropicProvider
from chatledger.providers.openai import OpenAIProvider
from tests.providers.conftest import ANTHROPIC_KEY, OPENAI_KEY, provider_settings


def test_nothing_configured_serves_echo_and_names_what_to_set() -> None:
    configure(provider_settings())

    provider, model = resolve("echo/echo")
    assert isinstance(provider, EchoProvider) and model == "echo"
    with pytest.raises(InvalidInput) as raised:
        resolve("openai/gpt-4o")
    assert raised.value.field == "model"
    assert "openai is not configured: set CHATLEDGER_OPENAI_API_KEY" in raised.value.message
    with pytest.raises(InvalidInput, match="anthropic is not configured"):
        resolve("anthropic/claude-haiku-4-5")
    with pytest.raises(InvalidInput, match="unknown provider 'ollama'"):
        resolve("ollama/llama3")


def test_a_key_configures_openai_and_anthropic() -> None:
    configure(
        provider_settings(
            openai_api_key=SecretStr(OPENAI_KEY), anthropic_api_key=SecretStr(ANTHROPIC_KEY)
        )
    )

    openai_provider, model = resolve("openai/gpt-4o")
    assert isinstance(openai_provider, OpenAIProvider) and model == "gpt-4o"
    assert openai_provider.config.base_url == "https://api.openai.com/v1"
    anthropic_provider, _ = resolve("anthropic/claude-haiku-4-5")
    assert isinstance(anthropic_provider, AnthropicProvider)
    assert resolve("openai/gpt-4o")[0] is openai_provider  # built once, reused
    assert {"echo", "openai", "anthropic"} <= set(known_providers())


def test_a_base_url_alone_configures_openai_for_a_local_server() -> None:
    configure(provider_settings(openai_base_url="http://localhost:11434/v1"))

    provider, model = resolve("openai/llama3.2")

    assert isinstance(provider, OpenAIProvider) and model == "llama3.2"
    assert provider.config.base_url == "http://localhost:11434/v1"
    assert provider.config.api_key is None


def test_two_ledgers_in_one_process_keep_their_own_providers(tmp_path: Path) -> None:
    # An app and a script (or two apps) in one process, each with its own settings.
    first, second = (
        Ledger(
            provider_settings(
                database_url=f"sqlite+aiosqlite:///{tmp_path / name}.db",
                openai_base_url=f"http://{name}.test/v1",
            )
        )
        for name in ("first", "second")
    )

    mine, _ = first.engine.providers.resolve("openai/gpt-4o")
    theirs, _ = second.engine.providers.resolve("openai/gpt-4o")

    assert isinstance(mine, OpenAIProvider) and isinstance(theirs, OpenAIProvider)
    assert (mine.config.base_url, theirs.config.base_url) == (
        "http://first.test/v1",
        "http://second.test/v1",
    )
    with pytest.raises(InvalidInput, match="not configured"):
        unconfigured = provider_settings(database_url=f"sqlite+aiosqlite:///{tmp_path}/x.db")
        Ledger(unconfigured).engine.providers.resolve("openai/gpt-4o")


def test_named_compatible_servers_route_by_their_name() -> None:
    configure(
        provider_settings(
            providers={
                "ollama": {"base_url": "http://localhost:11434/v1"},
                "openrouter": {"base_url": "https://openrouter.ai/api/v1", "api_key": "or-key"},
                "claude-proxy": {"base_url": "http://proxy.local", "kind": "anthropic"},
            }
        )
    )

    ollama, model = resolve("ollama/llama3")
    assert isinstance(ollama, OpenAIProvider)
    assert (ollama.name, model, ollama.config.base_url) == (
        "ollama",
        "llama3",
        "http://localhost:11434/v1",
    )
    # Only the first slash splits: OpenRouter's model ids have one of their own.
    router, model = resolve("openrouter/meta-llama/llama-3-8b-instruct")
    assert (router.name, model) == ("openrouter", "meta-llama/llama-3-8b-instruct")
    proxy, _ = resolve("claude-proxy/claude-haiku-4-5")
    assert isinstance(proxy, AnthropicProvider)


def test_environment_variables_configure_providers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-the-sdk-variable")
    monkeypatch.setenv("CHATLEDGER_OPENAI_API_KEY", OPENAI_KEY)
    monkeypatch.setenv("ANTHROPIC_API_KEY", ANTHROPIC_KEY)
    monkeypatch.setenv("CHATLEDGER_OPENAI_BASE_URL", "http://localhost:8000/v1")
    monkeypatch.setenv("CHATLEDGER_PROVIDERS__LMSTUDIO__BASE_URL", "http://localhost:1234/v1")
    monkeypatch.setenv("CHATLEDGER_PROVIDER_TIMEOUT_SECONDS", "30")

    settings = Settings()

    # chatledger's own variable wins over the SDK's; the SDK's is the fallback.
    assert settings.openai_api_key is not None
    assert settings.openai_api_key.get_secret_value() == OPENAI_KEY
    assert settings.anthropic_api_key is not None
    assert settings.anthropic_api_key.get_secret_value() == ANTHROPIC_KEY
    configure(settings)
    openai_provider, _ = resolve("openai/gpt-4o")
    assert isinstance(openai_provider, OpenAIProvider)
    assert openai_provider.config.base_url == "http://localhost:8000/v1"
    assert openai_provider.config.timeout_s == 30
    lmstudio, _ = resolve("lmstudio/qwen2.5-7b")
    assert isinstance(lmstudio, OpenAIProvider) and lmstudio.name == "lmstudio"


def test_providers_as_one_json_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "CHATLEDGER_PROVIDERS", '{"vllm": {"base_url": "http://gpu-box:8000/v1", "api_key": "v"}}'
    )

    configure(Settings())

    assert resolve("vllm/Qwen/Qwen2.5-7B-Instruct")[0].name == "vllm"


def test_an_empty_key_variable_is_no_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHATLEDGER_OPENAI_API_KEY", "")

    configure(Settings())

    with pytest.raises(InvalidInput, match="openai is not configured"):
        resolve("openai/gpt-4o")


def test_keys_never_show_in_repr_describe_or_validation_errors() -> None:
    settings = provider_settings(
        openai_api_key=SecretStr(OPENAI_KEY),
        anthropic_api_key=SecretStr(ANTHROPIC_KEY),
        providers={"ollama": {"base_url": "http://localhost:11434/v1", "api_key": OPENAI_KEY}},
    )
    configure(settings)
    shown = [repr(settings), str(settings), repr(describe()), settings.model_dump_json()]
    shown += [repr(resolve(m)[0]) for m in ("openai/x", "anthropic/y", "ollama/z")]
    shown.append(repr(resolve("openai/x")[0].config))  # type: ignore[attr-defined]

    for text in shown:
        assert OPENAI_KEY not in text and ANTHROPIC_KEY not in text

    with pytest.raises(ValidationError) as raised:
        Settings(providers={"Bad Name": {"base_url": "http://x", "api_key": OPENAI_KEY}})
    assert OPENAI_KEY not in str(raised.value)


@pytest.mark.parametrize(
    "providers",
    [
        {"openai": {"base_url": "http://x"}},  # built-in names are not redefined here
        {"echo": {"base_url": "http://x"}},
        {"has/slash": {"base_url": "http://x"}},
        {"ollama": {"base_url": "localhost:11434"}},  # not a URL
        {"ollama": {"base_url": "http://x", "kind": "gemini"}},
    ],
)
def test_bad_provider_entries_are_refused(providers: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        Settings(providers=providers)  # type: ignore[arg-type]


def test_describe_lists_echo_the_configured_and_what_is_missing() -> None:
    configure(
        provider_settings(
            openai_api_key=SecretStr(OPENAI_KEY),
            providers={"ollama": {"base_url": "http://localhost:11434/v1"}},
        )
    )

    infos = {info.name: info for info in describe()}

    assert infos["echo"].configured and infos["echo"].kind == "echo"
    assert infos["openai"].configured and infos["openai"].has_key
    assert infos["openai"].base_url == "https://api.openai.com/v1"
    assert infos["ollama"].configured and not infos["ollama"].has_key
    assert infos["ollama"].kind == "openai"
    assert not infos["anthropic"].configured
    assert infos["anthropic"].hint is not None
    assert "CHATLEDGER_ANTHROPIC_API_KEY" in infos["anthropic"].hint


def test_credentials_in_a_base_url_are_never_shown() -> None:
    configure(provider_settings(providers={"vllm": {"base_url": "http://bob:hunter2@gpu:8000/v1"}}))

    provider, _ = resolve("vllm/qwen")
    [info] = [i for i in describe() if i.name == "vllm"]

    assert info.base_url == "http://gpu:8000/v1"
    assert "hunter2" not in repr(provider) and "hunter2" not in repr(provider.config)  # type: ignore[attr-defined]
