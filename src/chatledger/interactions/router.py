"""HTTP route for interactions: log a finished exchange in one call, one transaction."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response

from chatledger.ids import ID_PATTERN
from chatledger.interactions import service as interactions
from chatledger.interactions.schemas import InteractionCreate, InteractionRead
from chatledger.messages.schemas import MessageRead
from chatledger.runs.schemas import RunRead
from chatledger.server.deps import DatabaseDep, WriterDep, acting_for
from chatledger.tasks.schemas import TaskRead

router = APIRouter(tags=["interactions"])


@router.post(
    "/v1/runs/{run_id}/interactions",
    status_code=201,
    response_model=InteractionRead,
    responses={200: {"model": InteractionRead, "description": "a replay: already stored"}},
)
async def record_interaction(
    run_id: Annotated[str, Path(pattern=ID_PATTERN)],
    body: InteractionCreate,
    db: DatabaseDep,
    caller: WriterDep,
    response: Response,
) -> InteractionRead:
    """Record a prompt and its response: the run is created if absent (named from the
    prompt), a completed task carries the model, usage and cost (counted once), and the
    user and assistant messages are appended. Posting the same interaction id again
    answers what was stored (200) and changes nothing; other content under it is 409."""
    new = body.new()
    async with db.transaction() as session:
        found, created = await interactions.record(
            session, acting_for(caller, body.user_id), run_id, new
        )
        read = InteractionRead(
            run=RunRead.model_validate(found.run),
            task=TaskRead.model_validate(found.task),
            user_message=MessageRead.model_validate(found.user_message),
            assistant_message=MessageRead.model_validate(found.assistant_message),
        )
    response.status_code = 201 if created else 200
    return read
