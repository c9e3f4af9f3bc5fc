"""The rules for prompts: a name per project, immutable numbered versions, and labels
that point at one version each. `latest` moves by itself to every new version;
`production` — what get, render and chat use when no version or label is asked for —
points at the first version and then moves only when set. A name is looked up in the
caller's project first, then among the built-ins, which nobody may write."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession

from chatledger.db.types import utcnow
from chatledger.db.upsert import insert_if_absent
from chatledger.errors import Conflict, InvalidInput, NotFound
from chatledger.ids import checked_id, new_id
from chatledger.prompts.builtins import SYSTEM_PROJECT, ReadOnly, is_builtin
from chatledger.prompts.models import Prompt, PromptLabel, PromptVersion
from chatledger.prompts.schemas import LABEL_PATTERN, PromptCreate, VersionCreate
from chatledger.tenants.caller import Caller

DEFAULT_LABEL = "production"
LATEST = "latest"
_LABEL_RE = re.compile(LABEL_PATTERN)


@dataclass(frozen=True, slots=True)
class PromptRef:
    """Which prompt a render or chat uses: a name, and a version or a label."""

    name: str
    version: int | None = None
    label: str | None = None


async def _named(
    session: AsyncSession, project_id: str, name: str, *, lock: bool = False
) -> Prompt | None:
    stmt = select(Prompt).where(Prompt.project_id == project_id, Prompt.name == name)
    if lock:  # versions of one prompt are numbered one at a time
        stmt = stmt.with_for_update()
    prompt: Prompt | None = await session.scalar(stmt)
    return prompt


async def find(session: AsyncSession, caller: Caller, name: str) -> Prompt:
    """The caller's project's prompt of this name, else the built-in one."""
    for project_id in (caller.project_id, SYSTEM_PROJECT):
        if (prompt := await _named(session, project_id, name)) is not None:
            return prompt
    raise NotFound("prompt", name)


async def _own(session: AsyncSession, caller: Caller, name: str) -> Prompt:
    """A prompt the caller may write (locked): a built-in is read-only (409)."""
    prompt = (
        None
        if is_builtin(caller.project_id)
        else await _named(session, caller.project_id, name, lock=True)
    )
    if prompt is None:
        if await _named(session, SYSTEM_PROJECT, name) is not None:
            raise ReadOnly(name)
        raise NotFound("prompt", name)
    return prompt


async def create(
    session: AsyncSession, caller: Caller, new: PromptCreate
) -> tuple[Prompt, PromptVersion]:
    """A prompt with its first version, labelled `production` and `latest`."""
    if is_builtin(caller.project_id):
        raise ReadOnly(new.name)
    if await _named(session, caller.project_id, new.name) is not None:
        raise Conflict(f"prompt {new.name!r} exists; add a version to change it", name=new.name)
    prompt_id, now = checked_id(new.id, "id"), utcnow()
    values = {
        "project_id": caller.project_id,
        "id": prompt_id,
        "name": new.name,
        "description": new.description,
        "created_at": now,
        "updated_at": now,
    }
    # Also refuses a name taken by a concurrent create (the name is unique per project).
    if not await insert_if_absent(session, Prompt, values):
        raise Conflict(f"prompt {new.name!r} or id {prompt_id!r} exists", id=prompt_id)
    prompt = await session.get(Prompt, (caller.project_id, prompt_id))
    assert prompt is not None
    template = new.model_dump(include={"messages", "variables", "settings"}, exclude_none=True)
    version = await _add_version(session, caller, prompt, 1, template, now)
    for label in (DEFAULT_LABEL, LATEST):
        await _point(session, prompt, label, version, now)
    return prompt, version


async def add_version(
    session: AsyncSession, caller: Caller, name: str, new: VersionCreate
) -> tuple[Prompt, PromptVersion]:
    """The next version; `latest` (and any labels asked for) move to it."""
    for label in new.labels:
        _checked_label(label)
    prompt = await _own(session, caller, name)
    newest = await session.scalar(
        select(PromptVersion)
        .where(PromptVersion.project_id == prompt.project_id, PromptVersion.prompt_id == prompt.id)
        .order_by(PromptVersion.version.desc())
        .limit(1)
    )
    assert newest is not None  # a prompt is created with its first version
    given = new.model_dump(include={"messages", "variables", "settings"}, exclude_none=True)
    template = {
        "messages": given.get("messages", newest.messages),
        "variables": given.get("variables", newest.variables),
        "settings": given.get("settings", newest.settings),
    }
    now = utcnow()
    version = await _add_version(session, caller, prompt, newest.version + 1, template, now)
    for label in dict.fromkeys([LATEST, *new.labels]):
        await _point(session, prompt, label, version, now)
    prompt.updated_at = now
    await session.flush()
    return prompt, version


async def set_label(
    session: AsyncSession, caller: Caller, name: str, label: str, number: int
) -> tuple[Prompt, PromptVersion]:
    _checked_label(label)
    if label == LATEST:
        raise InvalidInput("label", "'latest' moves by itself to the newest version")
    prompt = await _own(session, caller, name)
    version = await _numbered(session, prompt, number)
    if version is None:
        raise InvalidInput("version", f"prompt {name!r} has no version {number}")
    prompt.updated_at = utcnow()
    await _point(session, prompt, label, version, prompt.updated_at)
    await session.flush()
    return prompt, version


async def select_version(
    session: AsyncSession, prompt: Prompt, version: int | None = None, label: str | None = None
) -> PromptVersion:
    """The version asked for by number or label; `production`'s when neither is."""
    if version is not None and label is not None:
        raise InvalidInput("version", "give a version or a label, not both")
    if version is not None:
        found = await _numbered(session, prompt, version)
        if found is None:
            raise NotFound("prompt version", f"{prompt.name} v{version}")
        return found
    label = label or DEFAULT_LABEL
    found = await session.scalar(
        select(PromptVersion)
        .join(
            PromptLabel,
            and_(
                PromptLabel.project_id == PromptVersion.project_id,
                PromptLabel.version_id == PromptVersion.id,
            ),
        )
        .where(
            PromptLabel.project_id == prompt.project_id,
            PromptLabel.prompt_id == prompt.id,
            PromptLabel.label == label,
        )
    )
    if found is None:
        raise NotFound("prompt label", f"{prompt.name} {label}")
    return found


async def labels_of(
    session: AsyncSession, prompts: list[Prompt]
) -> dict[tuple[str, str], dict[str, int]]:
    """Each prompt's labels and the version numbers they point at, by (project, id)."""
    if not prompts:
        return {}
    rows = await session.execute(
        select(
            PromptLabel.project_id, PromptLabel.prompt_id, PromptLabel.label, PromptVersion.version
        )
        .join(
            PromptVersion,
            and_(
                PromptVersion.project_id == PromptLabel.project_id,
                PromptVersion.id == PromptLabel.version_id,
            ),
        )
        .where(
            tuple_(PromptLabel.project_id, PromptLabel.prompt_id).in_(
                [(p.project_id, p.id) for p in prompts]
            )
        )
        .order_by(PromptLabel.label)
    )
    found: dict[tuple[str, str], dict[str, int]] = {(p.project_id, p.id): {} for p in prompts}
    for project_id, prompt_id, label, number in rows:
        found[(project_id, prompt_id)][label] = number
    return found


async def list_prompts(
    session: AsyncSession,
    project_id: str,
    *,
    limit: int = 50,
    after: str | None = None,
    query: str | None = None,
) -> list[Prompt]:
    """A project's prompts by name; `after` is the last name seen (cursor)."""
    stmt = select(Prompt).where(Prompt.project_id == project_id)
    if after is not None:
        stmt = stmt.where(Prompt.name > after)
    if query:
        stmt = stmt.where(func.lower(Prompt.name).contains(query.lower(), autoescape=True))
    stmt = stmt.order_by(Prompt.name)
    if limit > 0:
        stmt = stmt.limit(limit)
    return list(await session.scalars(stmt))


async def list_versions(session: AsyncSession, prompt: Prompt) -> list[PromptVersion]:
    """Newest first."""
    return list(
        await session.scalars(
            select(PromptVersion)
            .where(
                PromptVersion.project_id == prompt.project_id,
                PromptVersion.prompt_id == prompt.id,
            )
            .order_by(PromptVersion.version.desc())
        )
    )


# -- helpers ---------------------------------------------------------------------------


def _checked_label(label: str) -> str:
    if not _LABEL_RE.fullmatch(label):
        raise InvalidInput("label", "lower-case letters, digits, '.', '_' and '-' (at most 64)")
    return label


async def _numbered(session: AsyncSession, prompt: Prompt, number: int) -> PromptVersion | None:
    found: PromptVersion | None = await session.scalar(
        select(PromptVersion).where(
            PromptVersion.project_id == prompt.project_id,
            PromptVersion.prompt_id == prompt.id,
            PromptVersion.version == number,
        )
    )
    return found


async def _add_version(
    session: AsyncSession,
    caller: Caller,
    prompt: Prompt,
    number: int,
    template: dict[str, Any],
    now: datetime,
) -> PromptVersion:
    version = PromptVersion(
        project_id=prompt.project_id,
        id=new_id(),
        prompt_id=prompt.id,
        version=number,
        messages=template["messages"],
        variables=template.get("variables", []),
        settings=template.get("settings", {}),
        created_at=now,
        created_by=caller.user_id,
    )
    session.add(version)
    await session.flush()
    return version


async def _point(
    session: AsyncSession, prompt: Prompt, label: str, version: PromptVersion, now: datetime
) -> None:
    """Point a label at a version (creating the label, or moving it)."""
    key = {"project_id": prompt.project_id, "prompt_id": prompt.id, "label": label}
    if not await insert_if_absent(
        session, PromptLabel, {**key, "version_id": version.id, "updated_at": now}
    ):
        await session.execute(
            update(PromptLabel)
            .where(*(getattr(PromptLabel, column) == value for column, value in key.items()))
            .values(version_id=version.id, updated_at=now)
        )
