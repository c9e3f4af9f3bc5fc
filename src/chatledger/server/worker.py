"""One worker process of `chatledger serve --workers N`: `python -m chatledger.server.worker`,
which its supervisor (server/supervisor.py) starts with the listening socket.

Each worker starts afresh, so what `serve` was given travels in the environment, set by
`serve` always (never inherited from whoever started it). Nothing of the command line is
imported here: a worker never uses typer or rich (~3 MB each worker)."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

from chatledger.config import Settings
from chatledger.server import listening

if TYPE_CHECKING:
    from fastapi import FastAPI

NO_AUTH_ENV = "CHATLEDGER_SERVE_NO_AUTH"
DATABASE_URL_ENV = "CHATLEDGER_DATABASE_URL"


def app() -> FastAPI:
    """The app this worker serves, as `serve` configured it."""
    from chatledger.server.app import create_app

    no_auth = os.environ.get(NO_AUTH_ENV) == "1"
    return create_app(Settings(), no_auth=no_auth, serving=True, one_of_several=True)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m chatledger.server.worker")
    parser.add_argument("--log-level", default="info", help="uvicorn's log level")
    parser.add_argument("--no-access-log", action="store_true")
    args = parser.parse_args(argv)
    listening.serve_listening(
        app,
        factory=True,
        log_level=args.log_level,
        access_log=not args.no_access_log,
    )


if __name__ == "__main__":
    main()
