"""Fixtures shared by every test: a migrated database on SQLite AND PostgreSQL (each test
gets its own, created and dropped), and a Ledger on it."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from chatledger import Ledger, Settings
from chatledger.db.engine import Database
from chatledger.db.migrate import upgrade
from tests.postgres import create_database, drop_database, postgres_server

BACKENDS = ("sqlite", "postgresql")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--long",
        action="store_true",
        help="run the proof suites at full size (docs/reliability.md); CI runs them small",
    )


# Seconds a test may take under --long (pytest-timeout; the ini's `timeout` otherwise): a
# full-size proof runs for minutes, and still must not hang forever.
LONG_RUN_TIMEOUT_S = 3600


@pytest.hookimpl(tryfirst=True)  # before pytest-timeout reads its setting
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "long: runs only with --long (a big proof run)")
    if config.getoption("--long") and config.getoption("timeout", None) is None:
        config.option.timeout = LONG_RUN_TIMEOUT_S


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--long"):
        return
    skip = pytest.mark.skip(reason="a big run: pass --long (see docs/reliability.md)")
    for item in items:
        if "long" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def long_run(request: pytest.FixtureRequest) -> bool:
    """True under --long: proof suites scale their sizes up (operations, clients, inputs)."""
    return bool(request.config.getoption("--long"))


@pytest.fixture(scope="session")
def postgres_template() -> Iterator[tuple[str, str] | None]:
    """(admin URL, template database name): migrated once, copied per test (fast)."""
    with postgres_server() as admin_url:
        if admin_url is None:
            if os.environ.get("CI") == "true":
                raise RuntimeError("CI=true but no PostgreSQL server could be found or started")
            yield None
            return
        template_url = create_database(admin_url)

        async def migrate() -> None:
            database = Database(template_url)
            await upgrade(database)
            await database.dispose()

        asyncio.run(migrate())
        try:
            yield admin_url, str(make_url(template_url).database)
        finally:
            drop_database(admin_url, template_url)


@pytest.fixture(params=BACKENDS)
def database_url(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    postgres_template: tuple[str, str] | None,
) -> Iterator[str]:
    with _database(request.param, tmp_path, postgres_template, migrated=True) as url:
        yield url


@pytest.fixture(params=BACKENDS)
def empty_database_url(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    postgres_template: tuple[str, str] | None,
) -> Iterator[str]:
    """A database no migration has touched yet (the SQLite file does not exist)."""
    with _database(request.param, tmp_path, postgres_template, migrated=False) as url:
        yield url


@contextlib.contextmanager
def _database(
    backend: str, tmp_path: Path, postgres_template: tuple[str, str] | None, *, migrated: bool
) -> Iterator[str]:
    # SQLite: a new file, which the first Database to open it migrates.
    if backend == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}"
        return
    if postgres_template is None:
        pytest.skip("no PostgreSQL server (set CHATLEDGER_TEST_POSTGRES_URL)")
    admin_url, template = postgres_template
    url = create_database(admin_url, template=template if migrated else None)
    try:
        yield url
    finally:
        drop_database(admin_url, url)


@pytest.fixture
def settings(database_url: str) -> Settings:
    # A short debounce so streaming tests see progress writes within milliseconds.
    return Settings(database_url=database_url, stream_debounce_ms=20)


@pytest.fixture
async def ledger(settings: Settings) -> AsyncIterator[Ledger]:
    async with Ledger(settings) as opened:
        yield opened
