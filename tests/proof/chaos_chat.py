"""The chaos test's live-chat operations: a chat turn on the echo model, and "try again"
on a user message, each either answered or failing before its first token (502).

A failed reply leaves the user message stored with its error, and the next attempt reuses
the message id with a new task (its attempt number one higher); a message whose reply
completed, or is still live, is not answered again (409).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tests.proof.chaos_model import USER_TEXT, Ledger, MessageRow, TaskRow, Verdict
from tests.proof.chaos_ops import STATUS, Op

FAIL_BEFORE_FIRST_TOKEN = {"fail_at": 0}


def _reply(fail: bool) -> Verdict:
    return Verdict.FAILED if fail else Verdict.CREATED


def record_reply(
    ledger: Ledger, message_id: str, run_id: str, content: str, answer: Any, failed: bool
) -> None:
    """A reply attempt to `message_id` as the server answered it (its ids and usage)."""
    ids = answer["error"]["details"] if failed else answer
    assert ids["run_id"] == run_id, ids
    row = TaskRow(run_id, "chat", user_message_id=message_id)
    row.attempt = ledger.attempt_for(message_id)
    ledger.runs.add(run_id)
    message = ledger.messages.setdefault(message_id, MessageRow(run_id, "user", content))
    message.status = "error" if failed else "complete"
    if failed:
        row.status, row.tokens, row.cost_known = "failed", None, False
    else:
        row.status, row.response_text = answer["status"], answer["text"]
        usage = answer["usage"]
        row.tokens = (usage["input_tokens"], usage["output_tokens"])
        row.cost_nano = answer["cost_nano"]
        reply = MessageRow(run_id, "assistant", answer["text"])
        ledger.messages[answer["assistant_message_id"]] = reply
    ledger.tasks[ids["task_id"]] = row


class _Turn(Op):
    fail: bool

    def status(self, verdict: Verdict) -> int:
        return 200 if verdict is Verdict.CREATED else STATUS[verdict]

    def turn_fields(self) -> dict[str, Any]:
        settings = FAIL_BEFORE_FIRST_TOKEN if self.fail else {}
        return {"model": "echo", "settings": settings, "stream": False}

    def check(self, ledger: Ledger, answer: Any) -> None:
        assert answer["status"] == "completed", answer


@dataclass
class Chat(_Turn):
    run_id: str
    message_id: str
    variant: int
    fail: bool

    path = "/v1/chat"

    @property
    def content(self) -> str:
        return USER_TEXT[self.variant]

    def body(self) -> dict[str, Any]:
        message = {"id": self.message_id, "content": self.content}
        return {"run_id": self.run_id, "message": message, **self.turn_fields()}

    def expect(self, ledger: Ledger) -> Verdict:
        stored = ledger.messages.get(self.message_id)
        if stored is None:
            return _reply(self.fail)
        if stored.content != self.content:
            return Verdict.CONFLICT
        # The same message sent again is answered as a retry of it.
        return ledger.answerable(self.message_id) or _reply(self.fail)

    def apply(self, ledger: Ledger, answer: Any) -> None:
        stored = ledger.messages.get(self.message_id)
        run_id = self.run_id if stored is None else stored.run_id
        record_reply(ledger, self.message_id, run_id, self.content, answer, self.fail)


@dataclass
class Retry(_Turn):
    message_id: str
    fail: bool

    @property
    def path(self) -> str:
        return f"/v1/messages/{self.message_id}/retry"

    def body(self) -> dict[str, Any]:
        return self.turn_fields()

    def expect(self, ledger: Ledger) -> Verdict:
        if self.message_id not in ledger.messages:
            return Verdict.NOT_FOUND
        return ledger.answerable(self.message_id) or _reply(self.fail)

    def apply(self, ledger: Ledger, answer: Any) -> None:
        stored = ledger.messages[self.message_id]
        record_reply(ledger, self.message_id, stored.run_id, stored.content, answer, self.fail)
