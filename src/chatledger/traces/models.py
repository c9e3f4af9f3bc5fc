"""The `traces` and `trace_entries` tables: an agent's node executions for one thread,
one row per entry (never a JSON blob rewritten on every chunk)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKeyConstraint, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from chatledger.db.base import Base
from chatledger.db.types import JSON_, Id, UtcTimeStamp, utcnow

RUNNING = "running"


class Trace(Base):
    __tablename__ = "traces"
    __table_args__ = (
        ForeignKeyConstraint(
            ["project_id", "thread_id"], ["runs.project_id", "runs.id"], ondelete="CASCADE"
        ),
        # One trace per thread; creating it is an insert-if-absent on this key, so two
        # writers racing on a new thread end up with the same trace.
        Index(None, "project_id", "thread_id", unique=True),
        # The trace list is "my traces, newest activity first" (cursor pagination).
        Index(None, "project_id", "user_id", "updated_at"),
    )

    project_id: Mapped[str] = mapped_column(Id, primary_key=True)
    id: Mapped[str] = mapped_column(Id, primary_key=True)
    thread_id: Mapped[str] = mapped_column(Id)
    # The thread's owner, copied so visibility needs no join.
    user_id: Mapped[str] = mapped_column(Id)
    name: Mapped[str | None] = mapped_column(String(200))
    # Trace-level data a client attaches (PATCH); the entries are rows, not in here.
    data: Mapped[dict[str, Any]] = mapped_column(JSON_, default=dict)
    created_at: Mapped[datetime] = mapped_column(UtcTimeStamp, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcTimeStamp, default=utcnow)


class TraceEntry(Base):
    __tablename__ = "trace_entries"
    __table_args__ = (
        ForeignKeyConstraint(
            ["project_id", "trace_id"], ["traces.project_id", "traces.id"], ondelete="CASCADE"
        ),
    )

    project_id: Mapped[str] = mapped_column(Id, primary_key=True)
    trace_id: Mapped[str] = mapped_column(Id, primary_key=True)
    # Position in the trace, as the client numbers it; the key that makes re-sending
    # the whole trace insert only what is new.
    idx: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    node: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(32))  # running | completed | failed | …
    data: Mapped[dict[str, Any]] = mapped_column(JSON_, default=dict)
    started_at: Mapped[datetime | None] = mapped_column(UtcTimeStamp)
    ended_at: Mapped[datetime | None] = mapped_column(UtcTimeStamp)
