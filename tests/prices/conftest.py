"""The price tests use the server's fixtures (an app per database, accounts)."""

from tests.server.conftest import alice, app, bob, bob_in_alices_project, http, make_account

__all__ = ["alice", "app", "bob", "bob_in_alices_project", "http", "make_account"]
