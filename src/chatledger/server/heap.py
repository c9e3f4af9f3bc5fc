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
# items keeps some 15,000 objects alive while it is stored (its items, rows and
# results), and every young collection walked them and promoted them to be walked again
# in the middle generation: at 700, 0.22-0.26 s of a 20,000-interaction ingest (young
# and middle collections, startup frozen); at 10,000, 0.17-0.19 s; at 50,000,
# 0.01-0.03 s, most of a batch freed by reference counting before the next collection.
# What may wait in the young generation: 50,000 objects, some megabytes (peak RSS under
# the ingest bench stayed at 124 MB).
YOUNG_THRESHOLD = 50_000


def settle() -> None:
    """Collect what startup left behind, freeze the rest, and collect the young less
    often."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
