"""What the chaos test expects chatledger to hold, in plain Python: the runs, tasks and
messages that every acknowledged write must have left, and the aggregates they imply.

The model is written from the API contract (DESIGN.md, the route docstrings), not from
the code: each operation in chaos_ops.py predicts its verdict from this model and then
applies its effect here. The only values the model learns from the server are the ones
the server chooses: generated ids, a price computed server-side, the token counts of an
echo reply.
"""

from __future__ import annotations

import copy
import enum
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from chatledger.pricing import to_nano

TERMINAL = ("completed", "failed", "cancelled", "interrupted")
LIVE = ("pending", "streaming")

RUN_IDS = ("r0", "r1", "r2")
TASK_IDS = ("t0", "t1", "t2", "t3", "t4")
MESSAGE_IDS = ("m0", "m1", "m2", "m3", "m4")
MODEL = "openai/gpt-4o"

# Few variants of each text, so the same id is often sent with the same content (a
# replay) and sometimes with another (a conflict).
USER_TEXT = ("user says alpha", "user says beta")
ASSISTANT_TEXT = ("assistant says alpha", "assistant says beta")
USAGES = ((10, 5), (3, 0), (120, 40))
COSTS_USD = (None, Decimal("0.000123"), Decimal("0"))


def past_day(days_ago: int) -> datetime:
    """Noon UTC `days_ago` days ago: synced history that counts on an earlier day."""
    today = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)
    return today - timedelta(days=days_ago)


def nano(cost_usd: Decimal | None) -> int | None:
    return None if cost_usd is None else to_nano(cost_usd)


class Verdict(enum.Enum):
    CREATED = "created"  # a new entity: 201 (200 for a chat reply)
    MOVED = "moved"  # an existing entity changed: 200 (204 for a delete)
    REPLAYED = "replayed"  # already so: 200, the stored entity, nothing changes
    CONFLICT = "conflict"  # 409, nothing changes
    NOT_FOUND = "not_found"  # 404
    INVALID = "invalid"  # 422
    FAILED = "failed"  # 502: the model call failed; the attempt is recorded

    @property
    def changes(self) -> bool:
        return self in (Verdict.CREATED, Verdict.MOVED, Verdict.FAILED)

    @property
    def batch_status(self) -> str:
        if self is Verdict.CREATED:
            return "created"
        return "duplicate" if self is Verdict.REPLAYED else "rejected"


@dataclass(frozen=True)
class InteractionSpec:
    """An interaction as first recorded: a replay must say the same to be answered."""

    prompt: str
    response: str
    tokens: tuple[int, int]


@dataclass
class TaskRow:
    run_id: str
    kind: str  # task | interaction | sync | chat
    status: str = "pending"
    response_text: str = ""
    tokens: tuple[int, int] | None = (0, 0)  # None: an echo reply's, learned
    cost_nano: int | None = None
    cost_known: bool = True  # False: priced by the server, learned
    user_message_id: str | None = None
    attempt: int = 1
    interaction: InteractionSpec | None = None
    assistant_message_id: str | None = None

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL

    @property
    def total_tokens(self) -> int:
        assert self.tokens is not None, "learned after every operation"
        return sum(self.tokens)


@dataclass
class MessageRow:
    run_id: str
    role: str
    content: str
    status: str = "complete"


@dataclass
class Ledger:
    runs: set[str] = field(default_factory=set)
    tasks: dict[str, TaskRow] = field(default_factory=dict)
    # Keyed by id; "?user:<task>" / "?assistant:<task>" until a generated id is learned.
    messages: dict[str, MessageRow] = field(default_factory=dict)

    def copy(self) -> Ledger:
        return copy.deepcopy(self)

    def attempt_for(self, user_message_id: str | None) -> int:
        """The attempt number a new task answering this message gets."""
        if user_message_id is None:
            return 1
        return 1 + sum(t.user_message_id == user_message_id for t in self.tasks.values())

    def same_message(self, message_id: str, run_id: str, role: str, content: str) -> bool:
        stored = self.messages[message_id]
        return (stored.run_id, stored.role, stored.content) == (run_id, role, content)

    def answerable(self, message_id: str) -> Verdict | None:
        """Why a user message cannot be answered again (None: it can): only a user
        message, and only when no reply to it completed or is still live — wherever that
        reply's task was created (POST /v1/tasks may name a message of another run)."""
        message = self.messages[message_id]
        if message.role != "user":
            return Verdict.INVALID
        for task in self.tasks.values():
            if task.user_message_id != message_id:
                continue
            if task.status in ("completed", *LIVE):
                return Verdict.CONFLICT
        return None

    def delete_run(self, run_id: str) -> None:
        self.runs.discard(run_id)
        self.tasks = {k: t for k, t in self.tasks.items() if t.run_id != run_id}
        self.messages = {k: m for k, m in self.messages.items() if m.run_id != run_id}

    # -- what the aggregates must say -----------------------------------------------------

    def run_totals(self, run_id: str) -> dict[str, int]:
        ended = [t for t in self.tasks.values() if t.run_id == run_id and t.is_terminal]
        return {
            "task_count": sum(t.status == "completed" for t in ended),
            "message_count": sum(m.run_id == run_id for m in self.messages.values()),
            "total_tokens": sum(t.total_tokens for t in ended),
            "total_cost_nano": sum(t.cost_nano or 0 for t in ended),
        }

    def usage_totals(self) -> dict[str, int]:
        ended = [t for t in self.tasks.values() if t.is_terminal]
        return {
            "requests": len(ended),
            "failed_requests": sum(t.status in ("failed", "interrupted") for t in ended),
            "input_tokens": sum((t.tokens or (0, 0))[0] for t in ended),
            "output_tokens": sum((t.tokens or (0, 0))[1] for t in ended),
            "cost_nano": sum(t.cost_nano or 0 for t in ended),
        }

    def unlearned_tasks(self) -> list[str]:
        return [k for k, t in self.tasks.items() if t.tokens is None or not t.cost_known]

    def unlearned_messages(self) -> list[str]:
        return [k for k in self.messages if k.startswith("?")]
