"""The `openai` provider: OpenAI and every server speaking its Chat Completions API
(Ollama, vLLM, llama.cpp, LM Studio, OpenRouter…), through the official SDK.

Streams ask for usage (`stream_options.include_usage`): the last chunk then carries
`prompt_tokens` (cache reads included, as in chatledger), `cached_tokens` and
`reasoning_tokens`, mapped one to one. Many compatible servers send no such chunk; the
usage is then estimated from the text and marked `estimated`. The HTTP stream is closed
however the iteration ends (finished, failed, abandoned or cancelled), so a cancelled
reply stops the request upstream too.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping
from typing import Any, cast

import httpx2
import openai
from openai.types.chat import ChatCompletionMessageParam
from openai.types.chat.completion_create_params import CompletionCreateParamsStreaming
from openai.types.completion_usage import CompletionUsage

from chatledger.errors import ProviderError
from chatledger.providers import failures, options
from chatledger.providers.base import Delta, Finished, ModelRequest, StreamEvent, estimate_tokens
from chatledger.providers.config import ProviderConfig
from chatledger.providers.echo import count_input_tokens
from chatledger.providers.sdk_client import PerLoopClient
from chatledger.tokens import TokenUsage

# Local servers need no key, but the SDK refuses to start without one.
NO_KEY = "no-key-required"

SETTINGS: dict[str, options.Validator] = {
    "temperature": options.number(0, 2),
    "top_p": options.number(0, 1),
    "max_tokens": options.whole(1),
    "max_completion_tokens": options.whole(1),
    "presence_penalty": options.number(-2, 2),
    "frequency_penalty": options.number(-2, 2),
    "seed": options.whole(-(2**63), 2**63 - 1),
    "stop": options.stop_sequences(4),
    "reasoning_effort": options.choice("none", "minimal", "low", "medium", "high", "xhigh"),
    "user": options.text,
    "extra_body": options.json_object,
}


class OpenAIProvider:
    def __init__(self, config: ProviderConfig) -> None:
        self.name = config.name
        self.config = config
        self._clients = PerLoopClient(
            lambda: openai.AsyncOpenAI(
                api_key=self.config.secret or NO_KEY,
                base_url=self.config.base_url,
                timeout=self.config.timeout_s,
                max_retries=self.config.max_retries,
            )
        )

    def __repr__(self) -> str:
        return f"OpenAIProvider(name={self.name!r}, base_url={self.config.public_url!r})"

    def check_settings(self, settings: Mapping[str, Any]) -> None:
        options.parse(self.name, settings, SETTINGS)

    async def stream(self, request: ModelRequest) -> AsyncGenerator[StreamEvent, None]:
        settings = options.parse(self.name, request.settings, SETTINGS)
        extra_body = settings.pop("extra_body", None)
        params = cast(
            CompletionCreateParamsStreaming,
            {
                **settings,
                "model": request.model,
                "messages": [_message(m.role, m.content) for m in request.messages],
                "stream": True,
                "stream_options": {"include_usage": True},
            },
        )
        text, usage = "", None
        try:
            chunks = await self.client().chat.completions.create(**params, extra_body=extra_body)
            async with chunks:  # closes the response however this generator ends
                async for chunk in chunks:
                    if chunk.usage is not None:
                        usage = chunk.usage
                    for choice in chunk.choices:
                        # Only the first choice is the reply (n is not offered).
                        if choice.index == 0 and choice.delta.content:
                            text += choice.delta.content
                            yield Delta(choice.delta.content)
        except (openai.APIError, httpx2.HTTPError) as exc:
            raise self._failure(exc) from None
        yield Finished(_usage(usage) if usage is not None else _estimated(request, text))

    def client(self) -> openai.AsyncOpenAI:
        return self._clients.get()

    async def aclose(self) -> None:
        await self._clients.aclose()

    def _failure(self, exc: Exception) -> ProviderError:
        secret = self.config.secret
        if isinstance(exc, openai.APITimeoutError | httpx2.TimeoutException):
            return failures.timed_out(self.name, self.config.timeout_s)
        if isinstance(exc, openai.APIConnectionError | httpx2.TransportError):
            return failures.connection_lost(self.name, self.config.public_url)
        if isinstance(exc, openai.APIStatusError):
            return failures.from_status(
                self.name, exc.status_code, exc.body, exc.response.headers, secret=secret
            )
        if isinstance(exc, openai.APIError):  # an error object sent inside the stream
            return failures.from_body(self.name, exc.body, secret=secret)
        return failures.failure(self.name, "connection", type(exc).__name__, secret=secret)


def _message(role: str, content: str) -> ChatCompletionMessageParam:
    if role in ("system", "assistant"):
        return cast(ChatCompletionMessageParam, {"role": role, "content": content})
    # A tool result without its call id cannot be sent as `tool`: it is text from the user side.
    return {"role": "user", "content": content}


def _usage(usage: CompletionUsage) -> TokenUsage:
    prompt, completion = usage.prompt_tokens_details, usage.completion_tokens_details
    return TokenUsage(
        input_tokens=usage.prompt_tokens,
        output_tokens=usage.completion_tokens,
        cached_tokens=(prompt.cached_tokens if prompt else None) or 0,
        reasoning_tokens=(completion.reasoning_tokens if completion else None) or 0,
    )


def _estimated(request: ModelRequest, text: str) -> TokenUsage:
    return TokenUsage(
        input_tokens=count_input_tokens(request.messages),
        output_tokens=estimate_tokens(text),
        estimated=True,
    )
