"""Rendering a prompt for a caller: one version, its variables resolved (see
variables/resolve.py for the order), its messages filled."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from chatledger.errors import InvalidInput
from chatledger.prompts import service as prompts
from chatledger.prompts.builtins import is_builtin
from chatledger.prompts.models import Prompt, PromptVersion
from chatledger.prompts.render import NAME_PATTERN, placeholders, render_messages
from chatledger.tenants.caller import Caller
from chatledger.variables.resolve import Resolved, resolve
from chatledger.variables.service import MAX_VALUE_LENGTH

_NAME_RE = re.compile(NAME_PATTERN)


@dataclass(frozen=True)
class Rendered:
    prompt: Prompt
    version: PromptVersion
    messages: list[dict[str, str]]
    variables: dict[str, Resolved]

    @property
    def builtin(self) -> bool:
        return is_builtin(self.prompt.project_id)

    @property
    def values(self) -> dict[str, str]:
        return {name: resolved.value for name, resolved in self.variables.items()}


def checked_given(given: Mapping[str, Any]) -> dict[str, str]:
    """Values given with a request: names as in templates, values plain text."""
    for name, value in given.items():
        if not _NAME_RE.fullmatch(name):
            raise InvalidInput(f"variables.{name}", "not a variable name")
        if not isinstance(value, str):
            raise InvalidInput(f"variables.{name}", "values are text")
        if len(value) > MAX_VALUE_LENGTH:
            raise InvalidInput(f"variables.{name}", f"at most {MAX_VALUE_LENGTH} characters")
    return dict(given)


async def render(
    session: AsyncSession,
    caller: Caller,
    ref: prompts.PromptRef,
    given: Mapping[str, Any] | None = None,
    now: datetime | None = None,
) -> Rendered:
    """The prompt's messages with every variable filled. The variables are the template's
    placeholders and the declared ones (declared but unused still need a value)."""
    values = checked_given(given or {})
    prompt = await prompts.find(session, caller, ref.name)
    version = await prompts.select_version(session, prompt, ref.version, ref.label)
    declared = {v["name"]: v for v in version.variables}
    names = [*placeholders(version.messages), *declared]
    defaults = {name: v["default"] for name, v in declared.items() if v.get("default") is not None}
    resolved = await resolve(session, caller, names, values, defaults, now)
    filled = render_messages(version.messages, {n: r.value for n, r in resolved.items()})
    return Rendered(prompt, version, filled, resolved)
