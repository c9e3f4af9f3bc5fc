"""How runs, messages and tasks look in a terminal (and as JSON with --json)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from rich.table import Table

from chatledger.engine.turn import TurnResult
from chatledger.ledger import RunDetail
from chatledger.pricing import usd
from chatledger.runs.models import Run
from chatledger.tasks.models import Task


def money(nano: int | None) -> str:
    amount = usd(nano)
    return "unpriced" if amount is None else f"${amount:.6f}"


def when(at: datetime | None) -> str:
    return "-" if at is None else at.strftime("%Y-%m-%d %H:%M:%S")


def run_dict(run: Run) -> dict[str, Any]:
    return {
        "id": run.id,
        "name": run.name,
        "user_id": run.user_id,
        "task_count": run.task_count,
        "message_count": run.message_count,
        "total_tokens": run.total_tokens,
        "total_cost_usd": f"{usd(run.total_cost_nano):f}",
        "last_model": run.last_model,
        "last_message_at": run.last_message_at.isoformat() if run.last_message_at else None,
        "created_at": run.created_at.isoformat(),
    }


def task_dict(task: Task) -> dict[str, Any]:
    cost = usd(task.cost_nano)
    return {
        "id": task.id,
        "attempt": task.attempt,
        "status": task.status,
        "provider": task.provider,
        "model": task.model,
        "input_tokens": task.input_tokens,
        "output_tokens": task.output_tokens,
        "cost_usd": None if cost is None else f"{cost:f}",
        "price_source": task.price_source,
        "ttft_ms": task.ttft_ms,
        "total_ms": task.total_ms,
        "error": task.error,
    }


def as_json(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False)


def runs_table(runs: list[Run]) -> Table:
    table = Table("name", "messages", "tasks", "tokens", "cost", "last message")
    table.add_column("id", no_wrap=True)
    for run in runs:
        table.add_row(
            run.name,
            str(run.message_count),
            str(run.task_count),
            str(run.total_tokens),
            money(run.total_cost_nano),
            when(run.last_message_at),
            run.id,
        )
    return table


def run_tables(detail: RunDetail) -> list[Table]:
    run = detail.run
    summary = Table(title=f"run {run.id}", show_header=False)
    for label, value in (
        ("name", run.name),
        ("messages", str(run.message_count)),
        ("tasks completed", str(run.task_count)),
        ("total tokens", str(run.total_tokens)),
        ("total cost", money(run.total_cost_nano)),
        ("last model", run.last_model or "-"),
        ("last message", when(run.last_message_at)),
    ):
        summary.add_row(label, value)
    conversation = Table("#", "role", "status", "content", title="messages")
    for message in detail.messages:
        conversation.add_row(str(message.seq), message.role, message.status, message.content)
    calls = Table(title="tasks")
    for name in ("try", "status", "model", "in", "out", "cost", "ttft", "total"):
        calls.add_column(name, no_wrap=True)
    # The long id gives way (folded) so the figures stay readable on an 80-column terminal.
    calls.add_column("task", overflow="fold")
    for task in detail.tasks:
        calls.add_row(
            str(task.attempt),
            task.status,
            task.model,
            str(task.input_tokens),
            str(task.output_tokens),
            money(task.cost_nano),
            f"{task.ttft_ms} ms" if task.ttft_ms is not None else "-",
            f"{task.total_ms} ms" if task.total_ms is not None else "-",
            task.id,
        )
    return [summary, conversation, calls]


def turn_table(result: TurnResult) -> Table:
    table = Table(show_header=False, title="recorded")
    usage = result.usage
    rows = [
        ("run", result.run_id),
        ("task", result.task_id),
        ("status", result.status),
        ("user message", result.user_message_id),
        ("assistant message", result.assistant_message_id or "-"),
        ("tokens", f"{usage.input_tokens} in, {usage.output_tokens} out"),
        ("cost", f"{money(result.cost_nano)} ({result.price_source or 'no price'})"),
        ("time to first token", f"{result.ttft_ms} ms" if result.ttft_ms is not None else "-"),
        ("total time", f"{result.total_ms} ms" if result.total_ms is not None else "-"),
    ]
    if result.error:
        rows.append(("error", str(result.error.get("message"))))
    for label, value in rows:
        table.add_row(label, value)
    return table
