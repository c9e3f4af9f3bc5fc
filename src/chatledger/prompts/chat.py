"""Chat with a prompt: the prompt is rendered on a run's first turn and its messages are
stored as the run's first message rows (role as in the template, usually `system`),
before the user's message. So the history replays them on every follow-up and retry like
any other message, and the run says what it was made from: `prompt_id` (the version's
id) and `variable_values` (the values used, by name).

Follow-ups reuse the run's prompt. Naming it again is harmless (a client may send the
same body every turn; a bare name keeps the version the run started with, even if
`production` has moved since); naming another prompt, version or label on a run that has
started is a 409, as is a prompt for a run that started without one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from chatledger.errors import Conflict, InvalidInput, NotFound
from chatledger.messages import service as messages
from chatledger.prompts import service as prompts
from chatledger.prompts.builtins import SYSTEM_PROJECT
from chatledger.prompts.models import PromptVersion
from chatledger.prompts.rendering import Rendered, render
from chatledger.runs import service as runs
from chatledger.runs.models import Run
from chatledger.tenants.caller import Caller


async def for_chat(
    session: AsyncSession,
    caller: Caller,
    ref: prompts.PromptRef | None,
    given: Mapping[str, Any],
    run_id: str | None,
) -> Rendered | None:
    """The prompt a chat asked for, rendered for a run's first turn; None without one, or
    when the run has started with it already. Variables only make sense with a prompt:
    given alone they are refused rather than silently dropped."""
    if ref is None:
        if given:
            raise InvalidInput("variables", "variables are given with a prompt")
        return None
    if run_id is not None and await _started_with(session, caller, run_id, ref):
        return None
    return await render(session, caller, ref, given)


def model_of(rendered: Rendered | None) -> str | None:
    """The model the prompt's settings name, if any."""
    model = rendered.version.settings.get("model") if rendered is not None else None
    return model if isinstance(model, str) else None


async def start_run(session: AsyncSession, caller: Caller, run: Run, rendered: Rendered) -> bool:
    """Put the rendered prompt at the start of the run; True when this call did (its
    first turn), False when the run started with this very version meanwhile."""
    # Locked, so two first turns racing on one run cannot both put a prompt in it; FOR NO
    # KEY UPDATE, which waits for no transaction that merely stored a row in the run (see
    # interactions/bulk_statements.py, `postgresql_lookup`).
    locked = (
        await session.execute(
            select(Run.message_count, Run.prompt_id)
            .where(Run.project_id == run.project_id, Run.id == run.id)
            .with_for_update(key_share=True)
        )
    ).one()
    if locked.message_count > 0:
        if locked.prompt_id == rendered.version.id:
            return False
        raise _started(run.id)
    run.prompt_id = rendered.version.id
    run.variable_values = rendered.values
    # The prompt's model settings become the run's, under any the run was given.
    run.settings = {**rendered.version.settings, **run.settings}
    await session.flush()
    source = {
        "name": rendered.prompt.name,
        "version": rendered.version.version,
        "id": rendered.version.id,
        "builtin": rendered.builtin,
    }
    for message in rendered.messages:
        await messages.append(
            session,
            caller,
            run.id,
            messages.NewMessage(
                role=message["role"], content=message["content"], metadata={"prompt": source}
            ),
        )
    return True


async def _started_with(
    session: AsyncSession, caller: Caller, run_id: str, ref: prompts.PromptRef
) -> bool:
    """True when the run has started with the prompt `ref` names; 409 when it has
    started with another one (or none); False when it has not started."""
    try:
        run = await runs.get(session, caller, run_id)
    except NotFound:
        return False  # a new run (or not the caller's: creating it answers that)
    if run.message_count == 0:
        return False
    used = None
    if run.prompt_id is not None:
        used = await session.scalar(
            select(PromptVersion).where(
                PromptVersion.project_id.in_([run.project_id, SYSTEM_PROJECT]),
                PromptVersion.id == run.prompt_id,
            )
        )
    prompt = await prompts.find(session, caller, ref.name)
    if used is None or (used.project_id, used.prompt_id) != (prompt.project_id, prompt.id):
        raise _started(run.id)
    if ref.version is None and ref.label is None:
        return True
    asked = await prompts.select_version(session, prompt, ref.version, ref.label)
    if asked.id != used.id:
        raise _started(run.id)
    return True


def _started(run_id: str) -> Conflict:
    return Conflict(
        f"run {run_id!r} has started with another prompt (or none); a prompt is used "
        "from a run's first turn",
        run_id=run_id,
    )
