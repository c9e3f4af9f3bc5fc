"""Live chat over the API: what a client sends to start or retry a reply, and the JSON
answer of a reply it chose not to stream (`stream: false`)."""

from __future__ import annotations

from dataclasses import asdict
from decimal import Decimal
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, Field, computed_field

from chatledger.engine.turn import TurnResult
from chatledger.ids import ID_PATTERN
from chatledger.pricing import usd
from chatledger.prompts.schemas import GivenVariables, PromptChoice
from chatledger.prompts.service import PromptRef

ClientId = Annotated[str, Field(pattern=ID_PATTERN, examples=["run-1"])]


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be blank")
    return value


class ChatMessageIn(BaseModel):
    id: ClientId | None = None
    content: Annotated[str, Field(min_length=1), AfterValidator(_not_blank)]


class _Turn(BaseModel):
    # "provider/model", or the run's model (else the server's default) when absent.
    model: Annotated[str, Field(min_length=1, max_length=200, examples=["echo"])] | None = None
    # Model settings for this turn only, over the run's (echo: delay_ms, fail_at).
    settings: dict[str, Any] | None = None
    # true: an SSE stream (run, task, delta…, usage, done | error); false: JSON at the end.
    stream: bool = True


class ChatCreate(_Turn):
    run_id: ClientId | None = None
    message: ChatMessageIn
    run_name: (
        Annotated[str, Field(min_length=1, max_length=200), AfterValidator(_not_blank)] | None
    ) = None
    # Service keys only: the app's own end user this conversation belongs to.
    user_id: ClientId | None = None
    # Chat with a prompt: its name, or {name, version | label}. Rendered on the run's
    # first turn, its messages stored before the user's; follow-ups reuse it.
    prompt: Annotated[PromptChoice, BeforeValidator(PromptChoice.by_name)] | None = Field(
        None, description='A prompt\'s name ("summarize"), or {"name", "version" | "label"}.'
    )
    # Values for the prompt's variables, over the stored ones (not the computed ones).
    variables: GivenVariables | None = None

    def prompt_ref(self) -> PromptRef | None:
        if self.prompt is None:
            return None
        return PromptRef(self.prompt.name, self.prompt.version, self.prompt.label)


class RetryCreate(_Turn):
    """Answer a user message again: same message id, a new task attempt."""


class ChatUsage(BaseModel):
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    reasoning_tokens: int
    cache_write_tokens: int
    # True when the provider reported nothing and the counts were estimated from text.
    estimated: bool


class ChatResult(BaseModel):
    run_id: str
    task_id: str
    user_message_id: str
    assistant_message_id: str | None
    status: str  # completed | failed | cancelled
    text: str
    usage: ChatUsage
    # NULL when the model has no known price: unknown is not the same as free.
    cost_nano: int | None
    price_source: str | None
    ttft_ms: int | None
    total_ms: int | None
    error: dict[str, Any] | None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def cost_usd(self) -> Decimal | None:
        return usd(self.cost_nano)

    @classmethod
    def of(cls, result: TurnResult) -> ChatResult:
        return cls(
            run_id=result.run_id,
            task_id=result.task_id,
            user_message_id=result.user_message_id,
            assistant_message_id=result.assistant_message_id,
            status=result.status,
            text=result.text,
            # The same fields as TokenUsage, which is a dataclass.
            usage=ChatUsage(**asdict(result.usage)),
            cost_nano=result.cost_nano,
            price_source=result.price_source,
            ttft_ms=result.ttft_ms,
            total_ms=result.total_ms,
            error=result.error,
        )
