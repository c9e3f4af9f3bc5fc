"""Who is asking: every service call carries a Caller, and every query is scoped by it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Caller:
    project_id: str
    user_id: str
    # Admins and service keys see every user's rows in the project; members only theirs.
    sees_all: bool = False

    def for_user(self, user_id: str | None) -> Caller:
        """The caller acting for one of the project's end users (service keys may)."""
        if user_id is None or user_id == self.user_id:
            return self
        return Caller(self.project_id, user_id, self.sees_all)
