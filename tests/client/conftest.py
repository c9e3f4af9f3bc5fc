"""The client tests use the server's fixtures (an app per database, accounts)."""

from tests.server.conftest import alice, app, bob, http, make_account

__all__ = ["alice", "app", "bob", "http", "make_account"]
