"""What a chat turn is made of: the request, the plan the first transaction produced, and
the result the last one recorded."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from chatledger.prompts.service import PromptRef
from chatledger.providers import ModelRequest, Provider
from chatledger.tokens import TokenUsage


@dataclass
class ChatRequest:
    content: str
    run_id: str | None = None
    message_id: str | None = None
    task_id: str | None = None
    model: str | None = None
    # Model settings for this turn only, over the run's stored ones (delay_ms, fail_at…).
    settings: dict[str, Any] = field(default_factory=dict)
    run_name: str | None = None
    # Chat with a prompt: rendered on the run's first turn (see prompts/chat.py).
    prompt: PromptRef | None = None
    variables: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class TurnPlan:
    """Everything the stream needs, read in the first transaction, so that no DB session
    is held while the model talks."""

    project_id: str
    run_id: str
    run_name: str
    run_created: bool
    task_id: str
    attempt: int
    user_message_id: str
    # Stored by this turn (status `complete`): its reply's success has nothing to mark.
    new_message: bool
    provider: Provider
    model: str
    request: ModelRequest

    @property
    def task(self) -> PlannedTask:
        """The turn's task, as ending it needs to know it (`tasks.end`)."""
        return PlannedTask(self.project_id, self.task_id, self.provider.name, self.model)


@dataclass(frozen=True)
class PlannedTask:
    project_id: str
    id: str
    provider: str
    model: str


@dataclass(frozen=True)
class TurnResult:
    run_id: str
    task_id: str
    user_message_id: str
    status: str  # completed | failed | cancelled
    text: str
    assistant_message_id: str | None = None
    usage: TokenUsage = field(default_factory=TokenUsage)
    cost_nano: int | None = None
    price_source: str | None = None
    ttft_ms: int | None = None
    total_ms: int | None = None
    error: dict[str, Any] | None = None
