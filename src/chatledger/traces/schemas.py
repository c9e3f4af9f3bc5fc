"""Automation traces over the API: what an agent sends (the whole trace so far, every
time) and what it reads back. The limits are checked again by the service, which the
batch endpoint also uses."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from chatledger.fields import Timestamp
from chatledger.ids import ID_PATTERN
from chatledger.traces.entries import MAX_IDX, NAME_LENGTH, NODE_LENGTH, STATUS_LENGTH, NewEntry

ClientId = Annotated[str, Field(pattern=ID_PATTERN, examples=["thread-1"])]
TraceName = Annotated[str, Field(min_length=1, max_length=NAME_LENGTH)]


class TraceEntryCreate(BaseModel):
    # Unknown fields are refused, not dropped: an agent's extra output belongs in `data`.
    model_config = ConfigDict(extra="forbid")

    idx: Annotated[int, Field(ge=0, le=MAX_IDX)] | None = Field(
        default=None, description="position in the trace; defaults to the position in the list"
    )
    node: Annotated[str, Field(min_length=1, max_length=NODE_LENGTH, examples=["planner"])]
    status: Annotated[
        str,
        Field(
            min_length=1,
            max_length=STATUS_LENGTH,
            examples=["running", "completed", "failed"],
            description="`running` entries may still change; any other status is final",
        ),
    ]
    data: dict[str, Any] = Field(default_factory=dict)
    started_at: Timestamp | None = None
    ended_at: Timestamp | None = None

    def to_new(self) -> NewEntry:
        return NewEntry(
            node=self.node,
            status=self.status,
            data=self.data,
            idx=self.idx,
            started_at=self.started_at,
            ended_at=self.ended_at,
        )


class TraceUpsert(BaseModel):
    """`PUT /v1/automation/traces/thread/{thread_id}`: the thread's trace so far."""

    id: ClientId | None = Field(default=None, description="the trace's id, when it is created")
    name: TraceName | None = None
    entries: list[TraceEntryCreate] = Field(default_factory=list)
    # Service keys only: the app's own end user this thread belongs to.
    user_id: ClientId | None = None


class TraceCreate(TraceUpsert):
    thread_id: ClientId


class TraceUpdate(BaseModel):
    """Fields left out stay as they are; `null` clears the name or empties the data."""

    name: TraceName | None = None
    data: dict[str, Any] | None = None


class TraceEntryRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    idx: int
    node: str
    status: str
    data: dict[str, Any]
    started_at: datetime | None
    ended_at: datetime | None


class TraceRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    thread_id: str
    user_id: str
    name: str | None
    data: dict[str, Any]
    entry_count: int = 0
    created_at: datetime
    updated_at: datetime


class TraceDetail(TraceRead):
    entries: list[TraceEntryRead] = Field(default_factory=list)


class TraceSaved(TraceRead):
    created: int = Field(description="entries inserted by this call")
    updated: int = Field(description="`running` entries this call moved on")
