"""Who is asking: every service call carries a Caller, and every query is scoped by it."""

from __future__ import annotations

from dataclasses import dataclass, replace

ROLES = ("owner", "admin", "member", "viewer")
SEES_ALL_ROLES = ("owner", "admin")


@dataclass(frozen=True, slots=True)
class Caller:
    project_id: str
    user_id: str
    # Admins and service keys see every user's rows in the project; members only theirs.
    sees_all: bool = False
    role: str = "owner"
    key_kind: str = "local"  # local | user | service
    key_id: str | None = None

    @property
    def can_write(self) -> bool:
        return self.role != "viewer"

    @property
    def manages_project(self) -> bool:
        return self.role in SEES_ALL_ROLES

    def for_user(self, user_id: str | None) -> Caller:
        """The caller acting for one of the project's end users (service keys may)."""
        if user_id is None or user_id == self.user_id:
            return self
        return replace(self, user_id=user_id)
