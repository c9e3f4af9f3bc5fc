"""The sweeper: a task whose writer died (crash, kill -9, lost network) stops sending
heartbeats. Once the lease has passed it is ended as `interrupted`, keeping the text it
had streamed, through the same exactly-once transition as any other ending."""

from __future__ import annotations

from datetime import timedelta

from chatledger.db.engine import Database
from chatledger.db.types import utcnow
from chatledger.providers import estimate_tokens
from chatledger.tasks import service as tasks
from chatledger.tenants.caller import Caller
from chatledger.tokens import TokenUsage


async def sweep(database: Database, lease_seconds: float) -> list[str]:
    """End every task whose lease has expired; returns their ids."""
    cutoff = utcnow() - timedelta(seconds=lease_seconds)
    async with database.reading() as session:
        expired = [(t.project_id, t.user_id, t.id) for t in await tasks.stale(session, cutoff)]
    swept = []
    for project_id, user_id, task_id in expired:
        caller = Caller(project_id, user_id, sees_all=True)
        async with database.transaction() as session:
            task = await tasks.get(session, caller, task_id)
            if task.is_terminal:
                continue
            outcome = tasks.Outcome(
                status="interrupted",
                # The streamed text was paid for; its prompt is not known here.
                usage=TokenUsage(output_tokens=estimate_tokens(task.response_text), estimated=True),
                error={"kind": "lease_expired", "message": f"no heartbeat for {lease_seconds:g}s"},
                # A heartbeat arriving meanwhile renews the lease: the guard then misses.
                silent_since=cutoff,
            )
            _, ended = await tasks.finish(session, caller, task_id, outcome)
        if ended:
            swept.append(task_id)
    return swept
