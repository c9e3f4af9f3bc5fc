"""HTTP route for batch ingest and offline sync."""

from __future__ import annotations

from collections import Counter

from fastapi import APIRouter, Request

from chatledger.batch import body as batch_body
from chatledger.batch import service as batch
from chatledger.batch.schemas import MAX_ITEMS, BatchResult
from chatledger.errors import PayloadTooLarge
from chatledger.interactions import statistics
from chatledger.server.deps import DatabaseDep, WriterDep

router = APIRouter(tags=["batch"])


@router.post("/v1/batch", response_model=BatchResult, openapi_extra=batch_body.OPENAPI)
async def ingest(request: Request, db: DatabaseDep, caller: WriterDep) -> BatchResult:
    """Store runs, messages, ended tasks, interactions and trace entries, insert-only and
    idempotent by id. Each item answers `created`, `duplicate` (already stored: nothing
    changes, totals included) or `rejected` (with the reason; the other items still
    land). Items keep their own timestamps; usage counts on the day a task ended."""
    upload = await batch_body.read(request)  # (its body: batch/body.py, BatchRequest)
    if len(upload) > MAX_ITEMS:
        raise PayloadTooLarge(f"at most {MAX_ITEMS} items per batch", limit=MAX_ITEMS)
    # Checked before the write transaction, which other requests' writes wait for.
    checked = batch.check(caller, upload)
    built = await batch.build(db, caller, checked)  # the interactions' rows, as well
    results = await batch.store_in_transaction(db, caller, checked, built)
    if built:  # the interactions' tables hold rows: what their lookups need measured
        await statistics.take_once(db)
    counts = Counter(result.status for result in results)
    return BatchResult(
        results=results,
        created=counts["created"],
        duplicate=counts["duplicate"],
        rejected=counts["rejected"],
    )
