"""How failed calls are described: retry-after in its three spellings, error bodies in
the shapes servers send, and messages kept short and free of the key."""

from __future__ import annotations

import email.utils
import time

import pytest

from chatledger.providers import failures


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after": "20"}, 20),
        ({"retry-after": "1.5"}, 1.5),
        ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),  # the precise one wins
        ({"retry-after": "soon"}, None),
        ({"retry-after": "-3"}, None),
        ({"retry-after": "inf"}, None),
        ({}, None),
    ],
)
def test_retry_after(headers: dict[str, str], expected: float | None) -> None:
    assert failures.parse_retry_after(headers) == expected


def test_retry_after_as_an_http_date() -> None:
    later = email.utils.formatdate(time.time() + 120, usegmt=True)

    seconds = failures.parse_retry_after({"retry-after": later})

    assert seconds is not None and 60 < seconds <= 121


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            {"error": {"message": "model not found", "type": "invalid_request_error"}},
            "model not found",
        ),
        ({"message": "bad input"}, "bad input"),
        ("upstream exploded\n", "upstream exploded"),
        ({"detail": "fastapi style"}, None),
        (None, None),
    ],
)
def test_error_message_from_the_body_shapes_servers_send(body: object, message: str | None) -> None:
    assert failures.error_message(body) == message


def test_messages_are_bounded_and_scrubbed() -> None:
    secret = "sk-very-secret"
    error = failures.from_status(
        "openai", 400, {"error": {"message": f"{secret} " + "x" * 2000}}, {}, secret=secret
    )

    assert secret not in error.message and "[redacted]" in error.message
    assert len(error.message) <= failures.MAX_MESSAGE_CHARS
    assert (error.kind, error.retryable) == ("bad_request", False)


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (401, "auth"),
        (403, "auth"),
        (408, "timeout"),
        (422, "bad_request"),
        (429, "rate_limited"),
        (500, "server_error"),
        (529, "server_error"),
    ],
)
def test_status_kinds(status: int, kind: str) -> None:
    assert failures.status_kind(status) == kind
