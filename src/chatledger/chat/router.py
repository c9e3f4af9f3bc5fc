"""HTTP routes for live chat: start a reply (`POST /v1/chat`), answer a message again
(`POST /v1/messages/{id}/retry`), and follow a reply again (`GET /v1/tasks/{id}/stream`).

The engine runs the save flow on its own asyncio task; these routes only watch it. So a
client that goes away mid-stream stops watching, never the recording. Headers wait for
the reply's first token: a reply that fails before it is a proper HTTP status (a
provider error 502), one that fails after it an `error` event in a 200 stream. The same
rule holds for `stream: false`: a failure with some text answers 200 with `status`
`failed`, the partial text and the error.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Annotated, Any, NoReturn

from fastapi import APIRouter, Body, Header, Path, Query, Response

from chatledger.chat import stream
from chatledger.chat.schemas import ChatCreate, ChatResult, RetryCreate
from chatledger.engine.chat import Turn
from chatledger.engine.events import ChatEvent
from chatledger.engine.turn import ChatRequest
from chatledger.errors import Conflict, InvalidInput, ProviderError
from chatledger.ids import ID_PATTERN
from chatledger.server import errors
from chatledger.server.deps import CallerDep, StateDep, WriterDep, acting_for

router = APIRouter(tags=["chat"])

PathId = Annotated[str, Path(pattern=ID_PATTERN)]
# One event of the stream, as OpenAPI 3.2 describes items (and FastAPI its own SSE routes).
_SSE_EVENT = {
    "type": "object",
    "properties": {
        "event": {"type": "string"},
        "data": {"type": "string", "contentMediaType": "application/json"},
        "id": {"type": "string"},
        "retry": {"type": "integer", "minimum": 0},
    },
    "required": ["data"],
}
_SSE = {"text/event-stream": {"itemSchema": _SSE_EVENT}}
STREAMED: dict[int | str, dict[str, Any]] = {
    200: {"description": "JSON (`stream: false`) or SSE events", "content": _SSE},
    502: {"model": errors.ErrorBody, "description": "the model call failed before its 1st token"},
}
# Where the engine's names for bad values are in the request body.
BODY_FIELDS = {"content": "message.content", "name": "run_name"}


@router.post("/v1/chat", response_model=ChatResult, responses=STREAMED)
async def chat(body: ChatCreate, state: StateDep, caller: WriterDep) -> Response | ChatResult:
    """Send a message (a new run, or `run_id` to continue one) and get the reply, streamed
    as SSE (`run`, `task`, `delta`…, `usage`, `done` | `error`) or, with `stream: false`,
    as JSON once recorded."""
    request = ChatRequest(
        content=body.message.content,
        run_id=body.run_id,
        message_id=body.message.id,
        model=body.model,
        settings=body.settings or {},
        run_name=body.run_name,
        prompt=body.prompt_ref(),
        variables=body.variables or {},
    )
    with _named_fields(body.settings):
        turn = await state.engine.start(acting_for(caller, body.user_id), request)
    return await _answer(turn, body.stream)


@router.post("/v1/messages/{message_id}/retry", response_model=ChatResult, responses=STREAMED)
async def retry(
    message_id: PathId,
    state: StateDep,
    caller: WriterDep,
    body: Annotated[RetryCreate | None, Body()] = None,
) -> Response | ChatResult:
    """Answer a failed user message again: same message id, a new task attempt. 409 when
    it was already answered or is being answered."""
    body = body or RetryCreate()
    request = None
    if body.model is not None or body.settings:
        # The content is unused: a retry answers the stored message.
        request = ChatRequest(content="", model=body.model, settings=body.settings or {})
    with _named_fields(body.settings):
        turn = await state.engine.retry(caller, message_id, request)
    return await _answer(turn, body.stream)


@router.get(
    "/v1/tasks/{task_id}/stream",
    response_class=Response,  # the stream's own (stream.response): no JSON to document
    responses={200: {"content": _SSE}},
)
async def follow_task(
    task_id: PathId,
    state: StateDep,
    caller: CallerDep,
    last_event_id: Annotated[str | None, Header(max_length=32)] = None,
    after: Annotated[int | None, Query(ge=0)] = None,
) -> Response:
    """Follow a reply again: live, after `Last-Event-ID` (or `?after=`), if it is being
    answered here; else as stored (replayed, then followed until it ends)."""
    stored = await stream.read_task(state.database, caller, task_id)
    turn = state.engine.live_turn(caller.project_id, task_id)
    if turn is None:
        poll_s = max(state.settings.stream_debounce_ms / 1000, 0.05)
        return stream.response(stream.replay(state.database, caller, stored, poll_s))
    position: int | None = after or 0
    if last_event_id is not None:
        # Not a number: an id of a database replay, whose text the client holds already.
        numeric = last_event_id.isascii() and last_event_id.isdigit()
        position = int(last_event_id) if numeric else None
    return stream.live_response(turn, position)


async def _answer(turn: Turn, streamed: bool) -> Response | ChatResult:
    if not streamed:
        [ended] = await asyncio.gather(turn.result(), return_exceptions=True)
        if isinstance(ended, BaseException):  # a bug, or the server shutting down
            _refuse(turn, _last_error(turn))
        if ended.status != "completed" and not ended.text:
            _refuse(turn, ended.error or {})
        return ChatResult.of(ended)
    first = await _first_outcome(turn)
    if first.kind == "error":
        _refuse(turn, first.data)
    # The ids in headers too, so a client can re-attach even before reading an event.
    headers = {"X-Run-Id": turn.plan.run_id, "X-Task-Id": turn.plan.task_id}
    return stream.live_response(turn, 0, headers)


async def _first_outcome(turn: Turn) -> ChatEvent:
    """The first token, or how the reply ended without one."""
    # Closed on return: left to the garbage collector, the loop would close it (and the
    # log's generator inside) in a task of its own, two per streamed reply.
    async with contextlib.aclosing(turn.log.follow()) as events:
        async for event in events:
            if event.kind in ("delta", "done", "error"):
                return event
    raise RuntimeError(f"the log of task {turn.plan.task_id!r} closed without an ending")


def _last_error(turn: Turn) -> dict[str, Any]:
    errors_seen = [e.data for e in turn.log.events if e.kind == "error"]
    return errors_seen[-1] if errors_seen else {"kind": "internal", "message": "no outcome"}


def _refuse(turn: Turn, error: dict[str, Any]) -> NoReturn:
    """The reply ended before its first token: the status says how. The user message is
    stored with its error, so the client can retry it by id."""
    plan = turn.plan
    ids = {"run_id": plan.run_id, "task_id": plan.task_id, "message_id": plan.user_message_id}
    kind = str(error.get("kind", "error"))
    message = str(error.get("message", "the reply failed"))
    if "retryable" in error:  # the model call failed (a ProviderError)
        failure = ProviderError(message, kind=kind, retryable=bool(error["retryable"]))
        failure.details.update(ids)
        raise failure
    if kind == "internal":  # a bug: the one error mapping answers 500, without internals
        raise RuntimeError(f"the reply for task {plan.task_id!r} failed: {message}")
    raise Conflict(message, kind=kind, **ids)  # cancelled through the API, or by shutdown


@contextlib.contextmanager
def _named_fields(settings: dict[str, Any] | None) -> Iterator[None]:
    """Name a bad value by its place in the request body, not by the engine's name."""
    try:
        yield
    except InvalidInput as exc:
        field = BODY_FIELDS.get(exc.field)
        if field is None and settings and exc.field in settings:
            field = f"settings.{exc.field}"
        if field is None:
            raise
        raise InvalidInput(field, exc.message.removeprefix(f"{exc.field}: ")) from exc
