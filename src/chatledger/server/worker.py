"""The app of one worker process of `chatledger serve --workers N`, uvicorn's factory.

uvicorn starts each worker afresh, so what `serve` was given travels in the environment,
set by `serve` always (never inherited from whoever started it). Nothing of the command
line is imported here: a worker never uses typer or rich (~3 MB each worker)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from chatledger.config import Settings

if TYPE_CHECKING:
    from fastapi import FastAPI

NO_AUTH_ENV = "CHATLEDGER_SERVE_NO_AUTH"
DATABASE_URL_ENV = "CHATLEDGER_DATABASE_URL"


def app() -> FastAPI:
    """The app this worker serves, as `serve` configured it."""
    from chatledger.server.app import create_app

    no_auth = os.environ.get(NO_AUTH_ENV) == "1"
    return create_app(Settings(), no_auth=no_auth, serving=True, one_of_several=True)
