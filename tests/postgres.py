"""Where the PostgreSQL tests get a server: CHATLEDGER_TEST_POSTGRES_URL, else a server on
127.0.0.1:5432 if one answers, else an embedded one from `pgserver`. Under CI=true a
missing server is an error, never a skip."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from sqlalchemy.engine import make_url

LOCAL_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def _answers(url: str) -> bool:
    try:
        with psycopg.connect(_libpq(url), connect_timeout=3):
            return True
    except psycopg.Error:
        return False


def _libpq(url: str) -> str:
    """A SQLAlchemy URL as psycopg takes it."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@contextmanager
def postgres_server() -> Iterator[str | None]:
    """The admin URL (SQLAlchemy form) of a usable server, or None if there is none."""
    configured = os.environ.get("CHATLEDGER_TEST_POSTGRES_URL")
    if configured:
        yield configured
        return
    if _answers(LOCAL_URL):
        yield LOCAL_URL
        return
    try:
        import pgserver
    except ImportError:
        yield None
        return
    data_dir = tempfile.mkdtemp(prefix="chatledger-pg-")
    server: Any = pgserver.get_server(data_dir, cleanup_mode="stop")
    try:
        yield (
            make_url(server.get_uri())
            .set(drivername="postgresql+psycopg")
            .render_as_string(hide_password=False)
        )
    finally:
        server.cleanup()
        shutil.rmtree(data_dir, ignore_errors=True)


def create_database(admin_url: str, template: str | None = None) -> str:
    """A new database with a random name; returns its SQLAlchemy URL."""
    name = f"chatledger_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(_libpq(admin_url), autocommit=True) as connection:
        suffix = f" TEMPLATE {template}" if template else ""
        connection.execute(f'CREATE DATABASE "{name}"{suffix}')  # type: ignore[arg-type]
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


def drop_database(admin_url: str, url: str) -> None:
    name = make_url(url).database
    with psycopg.connect(_libpq(admin_url), autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # type: ignore[arg-type]
