"""PostgreSQL's statistics of the tables batch ingest looks ids up in, taken as soon as
they hold rows.

A new database's tables have none until autovacuum first looks at them (once a minute,
after 50 rows), and a first sync is often over by then. Without them the planner takes
a project for a handful of rows: it hashed every row of the project to look up a
batch's 1,000 ids (14-23 ms at 40,000 messages, growing with the project), and probing
the ids one by one it could pick an index that holds the project but not the id (428 ms
for one lookup of 2,000 tasks; docs/benchmarks.md, a twenty-first session). Once a
table has been analyzed, PostgreSQL scales its row counts by its size as it grows, and
autovacuum keeps the rest up to date: so this is asked once per process and database.
"""

from __future__ import annotations

import logging
import weakref

from sqlalchemy import bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.types import String

from chatledger.db import walls
from chatledger.db.base import table_of
from chatledger.db.engine import Database
from chatledger.messages.models import Message
from chatledger.runs.models import Run
from chatledger.tasks.models import Task

TABLES = tuple(table_of(model).name for model in (Task, Message, Run))

# The tables among `tables` that PostgreSQL holds no statistics of.
_UNMEASURED = text(
    "SELECT name FROM unnest(:tables) AS name WHERE NOT EXISTS (SELECT 1 FROM pg_stats"
    " WHERE schemaname = current_schema() AND tablename = name)"
).bindparams(bindparam("tables", type_=ARRAY(String())))

_asked: weakref.WeakSet[Database] = weakref.WeakSet()

log = logging.getLogger(__name__)


async def take_once(database: Database) -> None:
    """Analyze the lookups' tables that have no statistics, once per process and
    database (PostgreSQL only), as chatledger: a caller's role may not analyze a table,
    only its owner. Call it once they hold rows (after a batch stored some): a table
    analyzed empty would be no better off."""
    if database.is_sqlite or database in _asked:
        return
    _asked.add(database)  # whatever comes of it: never a statement more per batch
    try:
        with walls.acting_as_chatledger():
            async with database.looking_up() as session:
                tables = {"tables": list(TABLES)}
                unmeasured = (await session.scalars(_UNMEASURED, tables)).all()
                if unmeasured:
                    # (SKIP_LOCKED: another process analyzing them now does it for both.)
                    analyze = f"ANALYZE (SKIP_LOCKED) {', '.join(unmeasured)}"
                    await session.execute(text(analyze))
    except Exception:
        # The batch is stored already: its answer must not turn into an error for this.
        log.warning("analyzing %s failed; autovacuum will", ", ".join(TABLES), exc_info=True)
