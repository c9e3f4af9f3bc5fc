"""Built-in prompts: system prompts shipped with chatledger, in the system project.

They are seeded by migration 0004 (a changed built-in would be a new version in a new
migration, so a run's recorded version keeps its text). Every caller can list them
(`GET /v1/prompts/builtins`) and use them by name; a project's own prompt of the same
name comes first. Nobody writes them: a new version or a label on a built-in is a 409
`read_only` — create a prompt of your own (the same name shadows it) to change one.
"""

from __future__ import annotations

from chatledger.errors import Conflict

SYSTEM_PROJECT = "system"
BUILTIN_NAMES = ("assistant", "summarize", "translate")


class ReadOnly(Conflict):
    code = "read_only"

    def __init__(self, name: str) -> None:
        super().__init__(
            f"built-in prompts are read-only: {name!r} is one "
            "(create a prompt of your own with that name to change it)",
            prompt=name,
        )


def is_builtin(project_id: str) -> bool:
    return project_id == SYSTEM_PROJECT
