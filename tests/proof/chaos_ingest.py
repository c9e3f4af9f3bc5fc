"""The chaos test's operations that store a whole exchange or a whole history: an
interaction (a task, its prompt and its reply in one call), an ended task uploaded from
offline, and a batch of items — each predicted from the model like any other operation.

The interaction's id is its task's id: the same id again is a replay only if it says
the same thing (prompt, reply, usage, cost, the message ids it names); an assistant
message id already used answers another task, so it is a conflict. A batch answers per
item, in order, each item as if sent alone: created, duplicate, or rejected.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from typing import Any

import httpx

from tests.proof.chaos_model import (
    ASSISTANT_TEXT,
    MODEL,
    USAGES,
    USER_TEXT,
    InteractionSpec,
    Ledger,
    MessageRow,
    TaskRow,
    Verdict,
    nano,
    past_day,
)
from tests.proof.chaos_ops import Ending, Op, Seen, check_task


@dataclass
class SyncTask(Op):
    """A model call made offline, uploaded ended (batch only)."""

    task_id: str
    run_id: str
    ending: Ending
    days_ago: int
    in_batch: bool = True

    def item(self) -> dict[str, Any]:
        ended = past_day(self.days_ago)
        return {
            "kind": "task",
            "id": self.task_id,
            "run_id": self.run_id,
            "model": MODEL,
            "status": self.ending.status,
            **self.ending.fields(),
            "created_at": (ended - timedelta(seconds=3)).isoformat(),
            "completed_at": ended.isoformat(),
        }

    def expect(self, ledger: Ledger) -> Verdict:
        stored = ledger.tasks.get(self.task_id)
        if stored is None:
            return Verdict.CREATED
        # Insert-only: a stored task stays as it is, whatever this upload says of it.
        return Verdict.REPLAYED if stored.run_id == self.run_id else Verdict.CONFLICT

    def apply(self, ledger: Ledger, answer: Any) -> None:
        ledger.runs.add(self.run_id)
        row = TaskRow(self.run_id, "sync")
        self.ending.record(row)
        ledger.tasks[self.task_id] = row


@dataclass
class RecordInteraction(Op):
    task_id: str
    run_id: str
    variant: int
    user_message_id: str | None
    assistant_message_id: str | None
    cost_usd: Decimal | None
    days_ago: int | None  # None: now
    in_batch: bool = False

    @property
    def spec(self) -> InteractionSpec:
        return InteractionSpec(
            USER_TEXT[self.variant % 2], ASSISTANT_TEXT[self.variant % 2], USAGES[self.variant]
        )

    @property
    def path(self) -> str:
        return f"/v1/runs/{self.run_id}/interactions"

    def body(self) -> dict[str, Any]:
        spec = self.spec
        body: dict[str, Any] = {
            "id": self.task_id,
            "prompt": spec.prompt,
            "response": spec.response,
            "model": MODEL,
            "usage": {"input_tokens": spec.tokens[0], "output_tokens": spec.tokens[1]},
            "total_ms": 900,
        }
        optional = {
            "user_message_id": self.user_message_id,
            "assistant_message_id": self.assistant_message_id,
            "cost_usd": None if self.cost_usd is None else str(self.cost_usd),
            "created_at": None if self.days_ago is None else past_day(self.days_ago).isoformat(),
        }
        return body | {k: v for k, v in optional.items() if v is not None}

    def item(self) -> dict[str, Any]:
        return {"kind": "interaction", "run_id": self.run_id, **self.body()}

    def expect(self, ledger: Ledger) -> Verdict:
        stored = ledger.tasks.get(self.task_id)
        if stored is not None:
            return Verdict.REPLAYED if self._replays(stored) else Verdict.CONFLICT
        prompt = self.spec.prompt
        umid, amid = self.user_message_id, self.assistant_message_id
        if umid in ledger.messages and not ledger.same_message(umid, self.run_id, "user", prompt):
            return Verdict.CONFLICT
        if amid is not None and (amid in ledger.messages or amid == umid):
            return Verdict.CONFLICT  # an assistant message answers one task only
        return Verdict.CREATED

    def _replays(self, stored: TaskRow) -> bool:
        return (
            stored.run_id == self.run_id
            and stored.interaction == self.spec
            and nano(self.cost_usd) in (None, stored.cost_nano)
            and self.user_message_id in (None, stored.user_message_id)
            and self.assistant_message_id in (None, stored.assistant_message_id)
        )

    def apply(self, ledger: Ledger, answer: Any) -> None:
        spec = self.spec
        ledger.runs.add(self.run_id)
        umid = self.user_message_id or f"?user:{self.task_id}"
        amid = self.assistant_message_id or f"?assistant:{self.task_id}"
        row = TaskRow(
            self.run_id,
            "interaction",
            user_message_id=umid,
            attempt=ledger.attempt_for(umid),
            interaction=spec,
            assistant_message_id=amid,
        )
        Ending("completed", spec.response, spec.tokens, self.cost_usd).record(row)
        ledger.tasks[self.task_id] = row
        if umid in ledger.messages:  # a stored user message, answered now
            ledger.messages[umid].status = "complete"
        else:
            ledger.messages[umid] = MessageRow(self.run_id, "user", spec.prompt)
        ledger.messages[amid] = MessageRow(self.run_id, "assistant", spec.response)

    def check(self, ledger: Ledger, answer: Any) -> None:
        check_task(ledger, self.task_id, answer["task"])
        row = ledger.tasks[self.task_id]
        for key, known in (
            ("user_message", row.user_message_id),
            ("assistant_message", row.assistant_message_id),
        ):
            if known is not None and not known.startswith("?"):
                assert answer[key]["id"] == known


@dataclass
class Batch(Op):
    """Items uploaded together: insert-only, idempotent, a verdict per item."""

    ops: list[Op] = field(default_factory=list)

    path = "/v1/batch"

    def body(self) -> dict[str, Any]:
        return {"items": [op.item() for op in self.ops]}

    def expected(self, ledger: Ledger) -> tuple[Verdict, Seen]:
        scratch = ledger.copy()
        verdicts = []
        for op in self.ops:
            verdict = op.expect(scratch)
            if verdict.changes:
                op.apply(scratch, None)
            verdicts.append(verdict.batch_status)
        changed = any(v == "created" for v in verdicts)
        return (Verdict.MOVED if changed else Verdict.REPLAYED), (200, tuple(verdicts))

    def expect(self, ledger: Ledger) -> Verdict:
        return self.expected(ledger)[0]

    def apply(self, ledger: Ledger, answer: Any) -> None:
        for op in self.ops:
            if op.expect(ledger).changes:
                op.apply(ledger, None)

    def seen(self, response: httpx.Response) -> Seen:
        if response.status_code != 200:
            return (response.status_code,)
        return (200, tuple(result["status"] for result in response.json()["results"]))

    @property
    def label(self) -> str:
        return "Batch"
