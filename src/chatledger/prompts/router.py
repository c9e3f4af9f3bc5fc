"""HTTP routes for the prompt library: create, list, get (by version or label), new
versions, labels, render, and the built-ins. Thin: the rules are in the services."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Path, Query
from sqlalchemy.ext.asyncio import AsyncSession

from chatledger.errors import InvalidInput
from chatledger.prompts import service as prompts
from chatledger.prompts.builtins import SYSTEM_PROJECT, is_builtin
from chatledger.prompts.models import Prompt, PromptVersion
from chatledger.prompts.rendering import render
from chatledger.prompts.schemas import (
    LABEL_PATTERN,
    PROMPT_NAME_PATTERN,
    LabelRead,
    LabelSet,
    PromptCreate,
    PromptDetail,
    PromptRead,
    PromptVersionRead,
    RenderCreate,
    RenderRead,
    ResolvedVariable,
    VersionCreate,
)
from chatledger.server.deps import CallerDep, DatabaseDep, WriterDep, acting_for
from chatledger.server.pagination import MAX_LIMIT, Page, decode_cursor, encode_cursor

router = APIRouter(prefix="/v1/prompts", tags=["prompts"])

Name = Annotated[str, Path(pattern=PROMPT_NAME_PATTERN)]
Label = Annotated[str, Path(pattern=LABEL_PATTERN)]
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT)]


async def _reads(session: AsyncSession, found: list[Prompt]) -> list[PromptRead]:
    labels = await prompts.labels_of(session, found)
    return [
        PromptRead(
            id=prompt.id,
            name=prompt.name,
            description=prompt.description,
            builtin=is_builtin(prompt.project_id),
            latest_version=labels[(prompt.project_id, prompt.id)][prompts.LATEST],
            labels=labels[(prompt.project_id, prompt.id)],
            created_at=prompt.created_at,
            updated_at=prompt.updated_at,
        )
        for prompt in found
    ]


async def _detail(session: AsyncSession, prompt: Prompt, version: PromptVersion) -> PromptDetail:
    [read] = await _reads(session, [prompt])
    return PromptDetail(**read.model_dump(), version=PromptVersionRead.model_validate(version))


# Declared before `/{name}`, which would otherwise take "builtins" for a prompt's name.
@router.get("/builtins", response_model=list[PromptDetail])
async def list_builtins(db: DatabaseDep, caller: CallerDep) -> list[PromptDetail]:
    """The prompts shipped with chatledger, with their `production` versions. Anyone
    may use them by name; nobody may change them."""
    async with db.reading() as session:
        found = await prompts.list_prompts(session, SYSTEM_PROJECT, limit=0)
        return [
            await _detail(session, prompt, await prompts.select_version(session, prompt))
            for prompt in found
        ]


@router.post("", status_code=201, response_model=PromptDetail)
async def create_prompt(body: PromptCreate, db: DatabaseDep, caller: WriterDep) -> PromptDetail:
    """A prompt and its first version, labelled `production` and `latest`. A name taken
    in the project is a 409; a built-in's name is yours to shadow."""
    async with db.transaction() as session:
        prompt, version = await prompts.create(session, caller, body)
        return await _detail(session, prompt, version)


@router.get("", response_model=Page[PromptRead])
async def list_prompts(
    db: DatabaseDep,
    caller: CallerDep,
    limit: Limit = 50,
    cursor: str | None = None,
    q: Annotated[str | None, Query(max_length=200)] = None,
) -> Page[PromptRead]:
    """The project's prompts by name (built-ins: `/v1/prompts/builtins`)."""
    position = decode_cursor(cursor)
    after = None
    if position is not None:
        if len(position) != 1 or not isinstance(position[0], str):
            raise InvalidInput("cursor", "not a cursor this server gave out")
        after = position[0]
    async with db.reading() as session:
        found = await prompts.list_prompts(
            session, caller.project_id, limit=limit + 1, after=after, query=q
        )
        items = await _reads(session, found[:limit])
    next_cursor = encode_cursor(found[limit - 1].name) if len(found) > limit else None
    return Page(items=items, next_cursor=next_cursor)


@router.get("/{name}", response_model=PromptDetail)
async def get_prompt(
    name: Name,
    db: DatabaseDep,
    caller: CallerDep,
    version: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
    label: Annotated[str | None, Query(pattern=LABEL_PATTERN)] = None,
) -> PromptDetail:
    """A prompt (the project's, else the built-in) with one version: `?version=N`,
    `?label=L`, else the one labelled `production`."""
    async with db.reading() as session:
        prompt = await prompts.find(session, caller, name)
        chosen = await prompts.select_version(session, prompt, version, label)
        return await _detail(session, prompt, chosen)


@router.get("/{name}/versions", response_model=list[PromptVersionRead])
async def list_versions(name: Name, db: DatabaseDep, caller: CallerDep) -> list[PromptVersionRead]:
    """Every version of a prompt, newest first."""
    async with db.reading() as session:
        prompt = await prompts.find(session, caller, name)
        found = await prompts.list_versions(session, prompt)
        return [PromptVersionRead.model_validate(version) for version in found]


@router.post("/{name}/versions", status_code=201, response_model=PromptDetail)
async def add_version(
    name: Name, body: VersionCreate, db: DatabaseDep, caller: WriterDep
) -> PromptDetail:
    """A new immutable version (what is left out is copied from the newest); `latest`
    moves to it, and so do the `labels` given. 409 `read_only` for a built-in."""
    async with db.transaction() as session:
        prompt, version = await prompts.add_version(session, caller, name, body)
        return await _detail(session, prompt, version)


@router.put("/{name}/labels/{label}", response_model=LabelRead)
async def set_label(
    name: Name, label: Label, body: LabelSet, db: DatabaseDep, caller: WriterDep
) -> LabelRead:
    """Point a label at a version (e.g. promote to `production`). `latest` cannot be
    set: it moves by itself. 409 `read_only` for a built-in."""
    async with db.transaction() as session:
        prompt, version = await prompts.set_label(session, caller, name, label, body.version)
        return LabelRead(
            prompt=prompt.name, label=label, version=version.version, version_id=version.id
        )


@router.post("/{name}/render", response_model=RenderRead)
async def render_prompt(
    name: Name,
    db: DatabaseDep,
    caller: CallerDep,
    body: Annotated[RenderCreate | None, Body()] = None,
) -> RenderRead:
    """The prompt's messages with its variables filled, and where each value came from
    (computed > request > project > org > user > default). 422 lists every variable
    with no value."""
    body = body or RenderCreate()
    actor = acting_for(caller, body.user_id)
    ref = prompts.PromptRef(name, body.version, body.label)
    async with db.reading() as session:
        rendered = await render(session, actor, ref, body.variables)
    return RenderRead(
        prompt=rendered.prompt.name,
        prompt_id=rendered.prompt.id,
        builtin=rendered.builtin,
        version=rendered.version.version,
        version_id=rendered.version.id,
        messages=rendered.messages,
        variables={
            n: ResolvedVariable(value=r.value, source=r.source)
            for n, r in rendered.variables.items()
        },
        settings=rendered.version.settings,
    )
