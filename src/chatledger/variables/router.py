"""HTTP routes for scoped variables: `/v1/variables/{scope}/{scope_id}/{key}` to set,
read and delete one, `/v1/variables` to list those that apply to the caller."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response

from chatledger.ids import ID_PATTERN
from chatledger.server.deps import CallerDep, DatabaseDep, WriterDep
from chatledger.variables import service as variables
from chatledger.variables.schemas import Scope, VariableRead, VariableWrite

router = APIRouter(prefix="/v1/variables", tags=["variables"])

ScopeId = Annotated[str, Path(pattern=ID_PATTERN)]
Key = Annotated[str, Path(pattern=variables.KEY_PATTERN)]


@router.get("", response_model=list[VariableRead])
async def list_variables(
    db: DatabaseDep,
    caller: CallerDep,
    scope: Scope | None = None,
    scope_id: Annotated[str | None, Query(pattern=ID_PATTERN)] = None,
) -> list[VariableRead]:
    """The variables that apply to the caller — their user's, their project's and its
    org's — or, with `scope` and `scope_id`, one scope's (e.g. a service key reading an
    end user's: `?scope=user&scope_id=u1`)."""
    async with db.reading() as session:
        found = await variables.list_variables(session, caller, scope, scope_id)
        return [VariableRead.of(variable) for variable in found]


@router.get("/{scope}/{scope_id}/{key}", response_model=VariableRead)
async def get_variable(
    scope: Scope, scope_id: ScopeId, key: Key, db: DatabaseDep, caller: CallerDep
) -> VariableRead:
    async with db.reading() as session:
        return VariableRead.of(await variables.get(session, caller, scope, scope_id, key))


@router.put(
    "/{scope}/{scope_id}/{key}",
    response_model=VariableRead,
    responses={201: {"model": VariableRead}},
)
async def put_variable(
    scope: Scope,
    scope_id: ScopeId,
    key: Key,
    body: VariableWrite,
    db: DatabaseDep,
    caller: WriterDep,
    response: Response,
) -> VariableRead:
    """Set a variable: 201 when new, 200 when its value changed or stayed."""
    async with db.transaction() as session:
        variable, created = await variables.put(
            session,
            caller,
            scope,
            scope_id,
            key,
            body.value,
            body.description,
            keep_description="description" not in body.model_fields_set,
        )
        read = VariableRead.of(variable)
    response.status_code = 201 if created else 200
    return read


@router.delete("/{scope}/{scope_id}/{key}", status_code=204)
async def delete_variable(
    scope: Scope, scope_id: ScopeId, key: Key, db: DatabaseDep, caller: WriterDep
) -> Response:
    async with db.transaction() as session:
        await variables.remove(session, caller, scope, scope_id, key)
    return Response(status_code=204)
