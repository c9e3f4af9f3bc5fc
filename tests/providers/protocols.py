"""The two streaming protocols as the real APIs send them, frame by frame, for the fake
servers: OpenAI's Chat Completions chunks (`data: {...}` … `data: [DONE]`) and
Anthropic's Messages events (`event: message_start` … `event: message_stop`)."""

from __future__ import annotations

import json
from typing import Any

from tests.providers.fake_server import Answer, Received

# -- OpenAI ------------------------------------------------------------------------------

OPENAI_DONE = b"data: [DONE]\n\n"


def openai_chunk(
    content: str | None = None,
    *,
    role: str | None = None,
    finish: str | None = None,
    usage: dict[str, Any] | None = None,
    no_choices: bool = False,
) -> bytes:
    delta: dict[str, Any] = {}
    if role is not None:
        delta["role"] = role
    if content is not None:
        delta["content"] = content
    choices = [] if no_choices else [{"index": 0, "delta": delta, "finish_reason": finish}]
    data = {
        "id": "chatcmpl-test",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": "gpt-4o-2024-08-06",
        "choices": choices,
        "usage": usage,
    }
    return f"data: {json.dumps(data)}\n\n".encode()


def openai_usage(
    prompt: int, completion: int, *, cached: int = 0, reasoning: int = 0
) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": reasoning, "audio_tokens": 0},
    }


def openai_deltas(*words: str) -> list[bytes]:
    return [openai_chunk(word) for word in words]


def openai_reply(*words: str, usage: dict[str, Any] | None = None) -> Answer:
    """A whole stream; the usage chunk (empty choices) only when `usage` is given, as a
    server does when asked for `include_usage` and able to honour it."""
    parts = [openai_chunk(role="assistant", content=""), *openai_deltas(*words)]
    parts.append(openai_chunk(finish="stop"))
    if usage is not None:
        parts.append(openai_chunk(usage=usage, no_choices=True))
    return Answer([*parts, OPENAI_DONE])


def openai_error_event(message: str, type_: str = "server_error") -> bytes:
    """The error object OpenAI sends inside a stream that had started."""
    data = {"error": {"message": message, "type": type_, "param": None, "code": None}}
    return f"data: {json.dumps(data)}\n\n".encode()


def openai_default(request: Received) -> Answer:
    return openai_reply("Hello", " there", usage=openai_usage(9, 2))


# -- both: an HTTP error answer ----------------------------------------------------------


def json_error(
    status: int, message: str, type_: str, headers: dict[str, str] | None = None
) -> Answer:
    body = {"type": "error", "error": {"message": message, "type": type_}}
    return Answer([json.dumps(body).encode()], status, headers or {}, "application/json")


# -- Anthropic ---------------------------------------------------------------------------


def anthropic_event(kind: str, data: dict[str, Any]) -> bytes:
    return f"event: {kind}\ndata: {json.dumps({'type': kind, **data})}\n\n".encode()


def anthropic_start(input_tokens: int, *, cache_read: int = 0, cache_write: int = 0) -> list[bytes]:
    message = {
        "id": "msg_test",
        "type": "message",
        "role": "assistant",
        "model": "claude-haiku-4-5",
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {
            "input_tokens": input_tokens,
            "cache_read_input_tokens": cache_read,
            "cache_creation_input_tokens": cache_write,
            "output_tokens": 1,
        },
    }
    return [
        anthropic_event("message_start", {"message": message}),
        anthropic_event(
            "content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}
        ),
        anthropic_event("ping", {}),
    ]


def anthropic_deltas(*words: str) -> list[bytes]:
    return [
        anthropic_event(
            "content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": word}}
        )
        for word in words
    ]


def anthropic_end(output_tokens: int, *, thinking: int | None = None) -> list[bytes]:
    usage: dict[str, Any] = {"output_tokens": output_tokens}
    if thinking is not None:
        usage["output_tokens_details"] = {"thinking_tokens": thinking}
    return [
        anthropic_event("content_block_stop", {"index": 0}),
        anthropic_event(
            "message_delta",
            {"delta": {"stop_reason": "end_turn", "stop_sequence": None}, "usage": usage},
        ),
        anthropic_event("message_stop", {}),
    ]


def anthropic_reply(
    *words: str,
    input_tokens: int = 12,
    output_tokens: int = 3,
    cache_read: int = 0,
    cache_write: int = 0,
    thinking: int | None = None,
) -> Answer:
    return Answer(
        [
            *anthropic_start(input_tokens, cache_read=cache_read, cache_write=cache_write),
            *anthropic_deltas(*words),
            *anthropic_end(output_tokens, thinking=thinking),
        ]
    )


def anthropic_error_event(type_: str, message: str) -> bytes:
    return anthropic_event("error", {"error": {"type": type_, "message": message}})


def anthropic_default(request: Received) -> Answer:
    return anthropic_reply("Hello", " there")
