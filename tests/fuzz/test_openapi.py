"""Schemathesis against the app's own OpenAPI schema, on SQLite and on PostgreSQL: every
route, with generated valid and invalid input (NUL bytes and any unicode included), as
an account with its own API key. No answer may be a 5xx, and every answer must be one
the schema documents, with the content type and body it documents.

The app runs in-process over ASGI (schemathesis' own transport, whose event loop keeps
the app's lifespan and database pool for the whole module). Under --long each route
gets many more examples.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import hypothesis
import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.routing import APIRoute
from hypothesis import strategies as st
from schemathesis import BaseSchema, Case, GenerationMode
from schemathesis.python import asgi

from chatledger import Settings
from chatledger.server.app import ROUTERS, create_app
from tests.conftest import BACKENDS
from tests.postgres import create_database, drop_database

ADMIN_KEY = "fuzz-admin-key"
EXAMPLES = 25
LONG_EXAMPLES = 400
# A slow echo reply (its `delay_ms` setting, up to 60 s a word) is a test knob, not a
# bug: fuzzed chats get a short one so the run measures answers, not sleeps.
MAX_DELAY_MS = 5

CHECKS = [
    schemathesis.checks.not_a_server_error,
    schemathesis.checks.status_code_conformance,
    schemathesis.checks.content_type_conformance,
    schemathesis.checks.response_headers_conformance,
    schemathesis.checks.response_schema_conformance,
]


def _operations() -> list[str]:
    """Every route the app serves, as "METHOD /path" (read from the routers, so that
    collecting the tests starts nothing)."""
    return sorted(
        f"{method} {route.path}"
        for router in ROUTERS
        for route in router.routes
        if isinstance(route, APIRoute)
        for method in route.methods or ()
    )


OPERATIONS = _operations()


@dataclass
class Target:
    app: FastAPI
    schema: BaseSchema
    user_key: str
    examples: int
    answers: Counter[int] = field(default_factory=Counter)  # status -> how many

    def headers_for(self, path: str) -> dict[str, str]:
        key = ADMIN_KEY if path.startswith("/v1/admin/") else self.user_key
        return {"authorization": f"Bearer {key}"}


@pytest.fixture(scope="module", params=BACKENDS)
def target(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    postgres_template: tuple[str, str] | None,
    long_run: bool,
) -> Iterator[Target]:
    """The app on a database of its own, with one account: the fuzzer acts as it."""
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('fuzz') / 'ledger.db'}"
        admin_url = None
    else:
        if postgres_template is None:
            pytest.skip("no PostgreSQL server (set CHATLEDGER_TEST_POSTGRES_URL)")
        admin_url, template = postgres_template
        url = create_database(admin_url, template=template)
    settings = Settings(
        database_url=url,
        admin_key=ADMIN_KEY,
        stream_debounce_ms=20,
        # Only the offline echo model answers: a key in the environment must not make
        # generated chats call a real provider.
        openai_api_key=None,
        anthropic_api_key=None,
        providers={},
        # One key sends every generated request: throttling it would only cut coverage.
        rate_limit_per_minute=0,
    )
    app = create_app(settings)
    # Loading the schema enters the app's lifespan on schemathesis' event loop.
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    with asgi.get_client(app) as client:
        made = client.post(
            "/v1/admin/users",
            json={"id": "fuzzer", "name": "Fuzzer"},
            headers={"Authorization": f"Bearer {ADMIN_KEY}"},
        )
        assert made.status_code == 201, made.text
    fuzzed = Target(
        app, schema, made.json()["api_key"]["secret"], LONG_EXAMPLES if long_run else EXAMPLES
    )
    try:
        yield fuzzed
    finally:
        asgi.shutdown_lifespans()
        if admin_url is not None:
            drop_database(admin_url, url)
        # The figures docs/reliability.md quotes (shown with `pytest -s`).
        total = sum(fuzzed.answers.values())
        answers = dict(sorted(fuzzed.answers.items()))
        print(f"\nfuzz[{request.param}]: {total} requests, answers by status {answers}")


def test_every_route_is_fuzzed(target: Target) -> None:
    labels = {operation.ok().label for operation in target.schema.get_all_operations()}
    assert labels == set(OPERATIONS)


@pytest.mark.parametrize("label", OPERATIONS)
def test_no_route_answers_5xx_or_outside_its_schema(label: str, target: Target) -> None:
    operation = target.schema.find_operation_by_label(label)
    assert operation is not None
    headers = target.headers_for(operation.path)
    cases = st.one_of(
        operation.as_strategy(GenerationMode.POSITIVE, headers=headers),
        operation.as_strategy(GenerationMode.NEGATIVE, headers=headers),
    )

    @hypothesis.settings(
        max_examples=target.examples,
        deadline=None,
        database=None,
        suppress_health_check=list(hypothesis.HealthCheck),
    )
    @hypothesis.given(case=cases)
    def fuzz(case: Case) -> None:
        _cap_echo_delay(case.body)
        response = case.call()
        target.answers[response.status_code] += 1
        case.validate_response(response, checks=CHECKS)

    fuzz()


def _cap_echo_delay(body: Any) -> None:
    if not isinstance(body, dict) or not isinstance(body.get("settings"), dict):
        return
    delay = body["settings"].get("delay_ms")
    if isinstance(delay, int | float) and not isinstance(delay, bool) and delay > MAX_DELAY_MS:
        body["settings"]["delay_ms"] = MAX_DELAY_MS
