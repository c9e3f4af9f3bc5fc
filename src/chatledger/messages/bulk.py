"""Appending many messages at once (a batch's message items: the history an app uploads
when it syncs what it stored offline): the rows that `messages.append` makes for each,
after `runs.ensure` made its run, made for a whole group in a fixed handful of
statements. One at a time a message item cost a savepoint and seven statements, several
through the ORM: ~740 items a second on SQLite, ~320 on PostgreSQL, against ~15,000
interactions (each holding two messages) through `interactions.bulk`.

The group's stored runs are locked in id order and its new runs made with the group's
counts already in, each message numbered on from its run's count, the messages inserted
(`COPY` on PostgreSQL, multi-row INSERTs on SQLite: `interactions.bulk_statements`) and
each stored run's aggregates written once (`interactions.bulk_runs`), all in the
caller's transaction.

Only *fresh* messages come here: `lookup` tells the caller which ids are stored and whose
the group's runs are, and a message whose id is taken (a re-sync, an id sent twice) goes
through `append` instead, which answers it a duplicate or a conflict. Should the database
disagree with what `lookup` saw (another transaction stored an id or made a run
meanwhile), `store` raises (`NotFresh`, `IntegrityError`) and the caller rolls the group
back and appends it one message at a time: the outcome is always what `append` makes.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy.ext.asyncio import AsyncSession

from chatledger.db.base import table_of
from chatledger.db.driver_rows import Columns
from chatledger.db.types import utcnow
from chatledger.errors import InvalidInput
from chatledger.ids import checked_id
from chatledger.interactions import bulk_runs
from chatledger.interactions import bulk_statements as statements
from chatledger.interactions.bulk import MESSAGE_IDS, RUN_OWNERS, NotFresh, run_owner
from chatledger.interactions.bulk_rows import DriverValues
from chatledger.messages.models import Message
from chatledger.messages.service import ROLES, STATUSES, NewMessage
from chatledger.runs.service import name_from_message
from chatledger.tenants.caller import Caller


class Pending(NamedTuple):
    """A message checked as `append` checks it before writing, its ids settled."""

    caller: Caller
    run_id: str
    id: str
    new: NewMessage


def prepare(caller: Caller, run_id: str, new: NewMessage) -> Pending:
    """Raises what `runs.ensure` and `append` raise for bad input, before any write."""
    run_id = checked_id(run_id, "run_id")
    if new.role not in ROLES:
        raise InvalidInput("role", f"must be one of {', '.join(ROLES)}")
    if new.status not in STATUSES:
        raise InvalidInput("status", f"must be one of {', '.join(STATUSES)}")
    return Pending(caller, run_id, checked_id(new.id, "id"), new)


@dataclass(frozen=True)
class Known:
    """What is already stored under the ids of a group."""

    messages: frozenset[str]
    run_owners: dict[str, str]


async def lookup(session: AsyncSession, project_id: str, pendings: Sequence[Pending]) -> Known:
    run_ids = sorted({p.run_id for p in pendings})
    owners = await RUN_OWNERS.rows(session, project_id, run_ids)
    return Known(
        messages=await MESSAGE_IDS.present(session, project_id, [p.id for p in pendings]),
        run_owners=dict(owners),
    )


async def store(session: AsyncSession, pendings: Sequence[Pending]) -> None:
    """Append fresh messages (see the module docstring), in the caller's transaction."""
    project_id = pendings[0].caller.project_id
    now = utcnow()
    locked = await bulk_runs.locked(session, project_id, {p.run_id for p in pendings})
    # As `runs.ensure` makes a run for the first message naming it: its caller's, named
    # after that message, made now.
    first = bulk_runs.first_in_new_runs(pendings, locked)
    created = bulk_runs.made(
        project_id,
        {
            run_id: (p.caller.user_id, name_from_message(p.new.content), now)
            for run_id, p in first.items()
        },
    )
    runs = {**created, **locked}
    for p in pendings:
        run_owner(runs, p.caller, p.run_id)
    # Each run's messages numbered on from its count as locked (none, for a run made
    # now), in the group's order; a new run is made with the group's counts already in.
    deltas: dict[str, bulk_runs.RunDelta] = {}
    times = [p.new.created_at or now for p in pendings]
    for p, at in zip(pendings, times, strict=True):
        deltas.setdefault(p.run_id, bulk_runs.RunDelta()).count_message(p.new.content, at)
    numbers = {
        run_id: itertools.count(runs[run_id].add(delta) + 1) for run_id, delta in deltas.items()
    }
    seqs = [next(numbers[p.run_id]) for p in pendings]
    if not await bulk_runs.create(session, created.values()):
        raise NotFresh("a run of the group was made meanwhile")
    values = DriverValues.of(session.get_bind().dialect)
    rows = _rows(project_id, pendings, seqs, times, values)
    try:
        await statements.insert_rows(session, {table_of(Message): rows})
    except statements.IdTaken as exc:
        raise NotFresh(str(exc)) from exc
    await bulk_runs.write_back(session, locked.values())


# The columns of a message's row (`messages.service.row`), as `_rows` fills them.
_COLUMNS = (
    *("project_id", "id", "run_id", "seq", "parent_id", "role", "content", "status"),
    *("error", "task_id", "metadata", "created_at", "updated_at"),
)


def _rows(
    project_id: str,
    pendings: Sequence[Pending],
    seqs: list[int],
    times: list[datetime],
    values: DriverValues,
) -> Columns:
    """The messages' rows as the driver takes them, column by column."""
    document, timestamp = values.document, values.timestamp
    rows: list[tuple[Any, ...]] = []
    for p, seq, at in zip(pendings, seqs, times, strict=True):
        new, when = p.new, timestamp(at)
        rows.append(
            (
                *(project_id, p.id, p.run_id, seq, new.parent_id, new.role, new.content),
                *(new.status, document(new.error), new.task_id, document(new.metadata)),
                *(when, when),
            )
        )
    columns = tuple(map(list, zip(*rows, strict=True)))
    return Columns(_COLUMNS, columns, frozenset())
