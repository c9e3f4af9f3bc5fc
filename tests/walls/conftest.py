"""Fixtures for the wall tests: the HTTP fixtures of tests/server (the app, accounts with
their own keys), and a PostgreSQL-only database for the row-level security tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.postgres import create_database, drop_database
from tests.server.conftest import (  # noqa: F401  (fixtures, used by name)
    alice,
    app,
    bob,
    bob_in_alices_project,
    http,
    make_account,
)


@pytest.fixture
def postgres_url(postgres_template: tuple[str, str] | None) -> Iterator[str]:
    """A migrated PostgreSQL database of the test's own. Under CI=true a missing server
    fails the session (tests/conftest.py) rather than skipping this."""
    if postgres_template is None:
        pytest.skip("no PostgreSQL server (set CHATLEDGER_TEST_POSTGRES_URL)")
    admin_url, template = postgres_template
    url = create_database(admin_url, template=template)
    try:
        yield url
    finally:
        drop_database(admin_url, url)
