"""The server process's heap, settled once the server has started (`settle`).

CPython's cycle collector walks every object of a generation each time it collects
that generation. A started server holds a few hundred thousand objects that live as long
as the process (modules, FastAPI's routes and schemas, SQLAlchemy's mappers, the
migrations just run, the price catalogue), and each full collection walked them all:
~120 ms on the bench machine, several times a minute under batch ingest, and a pause
for every reply streaming at that moment. Frozen, they are left out of every
collection; the objects of requests are collected as before.

Only for a serving process: a frozen object is never collected, even if it becomes
garbage later, so a process that builds many apps (the test suite) must not freeze.
"""

from __future__ import annotations

import gc

# Net allocations between two young collections (CPython's default: 700). A batch of 500
# items makes tens of thousands of short-lived objects, nearly all freed by reference
# counting, yet each 700 of them cost a collection that promoted the survivors of the
# moment (the batch's own rows) to be walked again in the older generations.
YOUNG_THRESHOLD = 10_000


def settle() -> None:
    """Collect what startup left behind, freeze the rest, and collect the young less
    often."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
