"""The `variables` table: one value per (scope, owner, key).

Unlike the tenant tables, its key does not lead with `project_id`: an org variable is
read by every project of its org, and a registered user's variables (their name, their
timezone) follow them into every project, so neither belongs to one project. The
owner is `scope_id`: an org id, a project id, or a user id. The end users of an app's
service key are not registered users and their ids mean something only inside that
project, so their rows are stored under `<project_id>/<end_user_id>` (a `/` never occurs
in an id): two apps' end users called "u1" never share a value. For Citus this table
would be a reference table, or distributed by `scope_id`.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import String, Text
from sqlalchemy.orm import Mapped, mapped_column

from chatledger.db.base import Base
from chatledger.db.types import UtcTimeStamp, utcnow

SCOPES = ("user", "org", "project")
# Room for "<project_id>/<end_user_id>", both ids at most 128 characters.
SCOPE_ID_LENGTH = 257


class Variable(Base):
    __tablename__ = "variables"

    scope: Mapped[str] = mapped_column(String(8), primary_key=True)  # user | org | project
    scope_id: Mapped[str] = mapped_column(String(SCOPE_ID_LENGTH), primary_key=True)
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
    description: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcTimeStamp, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcTimeStamp, default=utcnow)
