"""The operations the chaos test sends, each as one HTTP request that predicts its own
answer from the model (chaos_model.Ledger) and applies its effect to it.

A prediction is what the contract says: a new id is created (201), the same request
again answers what is stored (200) and changes nothing, the same id with other content
is a conflict (409), an unknown parent is 404. Interactions and batches are in
chaos_ingest.py, live chat in chaos_chat.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import httpx

from tests.proof.chaos_model import (
    ASSISTANT_TEXT,
    MODEL,
    USER_TEXT,
    Ledger,
    MessageRow,
    TaskRow,
    Verdict,
    nano,
)

STATUS = {
    Verdict.CREATED: 201,
    Verdict.MOVED: 200,
    Verdict.REPLAYED: 200,
    Verdict.CONFLICT: 409,
    Verdict.NOT_FOUND: 404,
    Verdict.INVALID: 422,
    Verdict.FAILED: 502,
}
Seen = tuple[Any, ...]


class Op:
    """One request: `expect` predicts from the model, `apply` records a change in it."""

    method = "POST"
    # In a batch, parents are ensured and verdicts are per item.
    in_batch = False

    @property
    def path(self) -> str:
        raise NotImplementedError

    def body(self) -> dict[str, Any] | None:
        return None

    def item(self) -> dict[str, Any]:
        raise NotImplementedError(f"{type(self).__name__} has no batch form")

    def expect(self, ledger: Ledger) -> Verdict:
        raise NotImplementedError

    def apply(self, ledger: Ledger, answer: Any) -> None:
        raise NotImplementedError

    def check(self, ledger: Ledger, answer: Any) -> None:
        """A 2xx answer (applied already) shows what the model holds."""

    def status(self, verdict: Verdict) -> int:
        return STATUS[verdict]

    def expected(self, ledger: Ledger) -> tuple[Verdict, Seen]:
        verdict = self.expect(ledger)
        return verdict, (self.status(verdict),)

    def seen(self, response: httpx.Response) -> Seen:
        return (response.status_code,)

    @property
    def label(self) -> str:
        return type(self).__name__


@dataclass
class PutRun(Op):
    run_id: str
    in_batch: bool = False

    path = "/v1/runs"

    def body(self) -> dict[str, Any]:
        return {"id": self.run_id}

    def item(self) -> dict[str, Any]:
        return {"kind": "run", "id": self.run_id}

    def expect(self, ledger: Ledger) -> Verdict:
        return Verdict.REPLAYED if self.run_id in ledger.runs else Verdict.CREATED

    def apply(self, ledger: Ledger, answer: Any) -> None:
        ledger.runs.add(self.run_id)

    def check(self, ledger: Ledger, answer: Any) -> None:
        assert answer["id"] == self.run_id


@dataclass
class AppendMessage(Op):
    run_id: str
    message_id: str
    role: str
    variant: int
    in_batch: bool = False

    @property
    def content(self) -> str:
        return (USER_TEXT if self.role == "user" else ASSISTANT_TEXT)[self.variant]

    @property
    def path(self) -> str:
        return f"/v1/runs/{self.run_id}/messages"

    def body(self) -> dict[str, Any]:
        return {"id": self.message_id, "role": self.role, "content": self.content}

    def item(self) -> dict[str, Any]:
        return {"kind": "message", "run_id": self.run_id, **self.body()}

    def expect(self, ledger: Ledger) -> Verdict:
        if self.run_id not in ledger.runs and not self.in_batch:
            return Verdict.NOT_FOUND
        if self.message_id in ledger.messages:
            same = ledger.same_message(self.message_id, self.run_id, self.role, self.content)
            return Verdict.REPLAYED if same else Verdict.CONFLICT
        return Verdict.CREATED

    def apply(self, ledger: Ledger, answer: Any) -> None:
        ledger.runs.add(self.run_id)
        ledger.messages[self.message_id] = MessageRow(self.run_id, self.role, self.content)

    def check(self, ledger: Ledger, answer: Any) -> None:
        assert (answer["id"], answer["content"]) == (self.message_id, self.content)


def check_task(ledger: Ledger, task_id: str, answer: dict[str, Any]) -> None:
    """A task as answered is the task the model holds."""
    row = ledger.tasks[task_id]
    assert (answer["id"], answer["run_id"], answer["status"]) == (task_id, row.run_id, row.status)
    assert answer["attempt"] == row.attempt
    if row.tokens is not None:
        assert (answer["input_tokens"], answer["output_tokens"]) == row.tokens
    if row.cost_known:
        assert answer["cost_nano"] == row.cost_nano


@dataclass
class CreateTask(Op):
    task_id: str
    run_id: str
    user_message_id: str | None

    path = "/v1/tasks"

    def body(self) -> dict[str, Any]:
        body = {"id": self.task_id, "run_id": self.run_id, "model": MODEL}
        if self.user_message_id is not None:
            body["user_message_id"] = self.user_message_id
        return body

    def expect(self, ledger: Ledger) -> Verdict:
        stored = ledger.tasks.get(self.task_id)
        if stored is None:
            return Verdict.CREATED
        return Verdict.REPLAYED if stored.run_id == self.run_id else Verdict.CONFLICT

    def apply(self, ledger: Ledger, answer: Any) -> None:
        ledger.runs.add(self.run_id)
        attempt = ledger.attempt_for(self.user_message_id)
        ledger.tasks[self.task_id] = TaskRow(
            self.run_id, "task", user_message_id=self.user_message_id, attempt=attempt
        )

    def check(self, ledger: Ledger, answer: Any) -> None:
        check_task(ledger, self.task_id, answer)


@dataclass
class Progress(Op):
    task_id: str
    variant: int

    method = "PATCH"

    @property
    def text(self) -> str:
        return ASSISTANT_TEXT[self.variant][: 10 + self.variant]

    @property
    def path(self) -> str:
        return f"/v1/tasks/{self.task_id}"

    def body(self) -> dict[str, Any]:
        return {"response_text": self.text}

    def expect(self, ledger: Ledger) -> Verdict:
        stored = ledger.tasks.get(self.task_id)
        if stored is None:
            return Verdict.NOT_FOUND
        return Verdict.CONFLICT if stored.is_terminal else Verdict.MOVED

    def apply(self, ledger: Ledger, answer: Any) -> None:
        row = ledger.tasks[self.task_id]
        row.status, row.response_text = "streaming", self.text

    def check(self, ledger: Ledger, answer: Any) -> None:
        check_task(ledger, self.task_id, answer)


@dataclass(frozen=True)
class Ending:
    """How a model call ended, as a client reports it (None: not reported)."""

    status: str  # completed | failed | cancelled
    text: str | None
    tokens: tuple[int, int] | None
    cost_usd: Decimal | None

    def fields(self) -> dict[str, Any]:
        body: dict[str, Any] = {}
        if self.text is not None:
            body["response_text"] = self.text
        if self.tokens is not None:
            body["usage"] = {"input_tokens": self.tokens[0], "output_tokens": self.tokens[1]}
        if self.cost_usd is not None:
            body["cost_usd"] = str(self.cost_usd)
        if self.status == "failed":
            body["error"] = {"kind": "chaos", "message": "the model call failed"}
        return body

    def record(self, row: TaskRow) -> None:
        row.status = self.status
        if self.text is not None:
            row.response_text = self.text
        row.tokens = self.tokens or (0, 0)
        row.cost_nano, row.cost_known = nano(self.cost_usd), self.cost_usd is not None

    def agrees_with(self, row: TaskRow) -> bool:
        """A replay of this ending is answered (not 409) when it says what is stored."""
        return (
            row.status == self.status
            and self.text in (None, row.response_text)
            and self.tokens in (None, row.tokens)
        )


ENDPOINT = {"completed": "complete", "failed": "fail", "cancelled": "cancel"}


@dataclass
class Finish(Op):
    task_id: str
    ending: Ending

    @property
    def path(self) -> str:
        return f"/v1/tasks/{self.task_id}/{ENDPOINT[self.ending.status]}"

    def body(self) -> dict[str, Any]:
        return self.ending.fields()

    def expect(self, ledger: Ledger) -> Verdict:
        stored = ledger.tasks.get(self.task_id)
        if stored is None:
            return Verdict.NOT_FOUND
        if not stored.is_terminal:
            return Verdict.MOVED
        return Verdict.REPLAYED if self.ending.agrees_with(stored) else Verdict.CONFLICT

    def apply(self, ledger: Ledger, answer: Any) -> None:
        self.ending.record(ledger.tasks[self.task_id])

    def check(self, ledger: Ledger, answer: Any) -> None:
        check_task(ledger, self.task_id, answer)


@dataclass
class DeleteRun(Op):
    run_id: str

    method = "DELETE"

    @property
    def path(self) -> str:
        return f"/v1/runs/{self.run_id}"

    def status(self, verdict: Verdict) -> int:
        return 204 if verdict is Verdict.MOVED else STATUS[verdict]

    def expect(self, ledger: Ledger) -> Verdict:
        return Verdict.MOVED if self.run_id in ledger.runs else Verdict.NOT_FOUND

    def apply(self, ledger: Ledger, answer: Any) -> None:
        ledger.delete_run(self.run_id)
