"""Scoped variables over the API: what a client sets, and what it reads back."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, Field

from chatledger.variables.models import Variable
from chatledger.variables.service import MAX_VALUE_LENGTH, public_scope_id

Scope = Literal["user", "org", "project"]


class VariableWrite(BaseModel):
    value: Annotated[str, Field(max_length=MAX_VALUE_LENGTH, examples=["Asia/Tokyo"])]
    # Left out on an update: the stored description stays.
    description: Annotated[str, Field(max_length=2000)] | None = None


class VariableRead(BaseModel):
    scope: Scope
    scope_id: str
    key: str
    value: str
    description: str | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, variable: Variable) -> VariableRead:
        return cls(
            scope=variable.scope,
            scope_id=public_scope_id(variable),
            key=variable.key,
            value=variable.value,
            description=variable.description,
            created_at=variable.created_at,
            updated_at=variable.updated_at,
        )
