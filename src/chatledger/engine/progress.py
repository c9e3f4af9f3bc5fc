"""The debounced progress writer: while a reply streams, its text so far is saved at most
once per interval (status `streaming`), in a short transaction of its own, so that a
crash loses at most one interval of text and no DB session is held for the stream.

The first text is written at once, so `streaming` shows as soon as the model answers.
A heartbeat is written even without new text, so a slow model is not mistaken for a
dead writer by the sweeper.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from chatledger.db.engine import Database
from chatledger.errors import Conflict
from chatledger.tasks import service as tasks
from chatledger.tenants.caller import Caller

log = logging.getLogger(__name__)


class ProgressWriter:
    def __init__(
        self,
        database: Database,
        caller: Caller,
        task_id: str,
        *,
        interval_s: float,
        heartbeat_s: float,
    ) -> None:
        self._database = database
        self._caller = caller
        self._task_id = task_id
        self._interval_s = interval_s
        self._heartbeat_s = heartbeat_s
        self._text = ""
        self._saved_text: str | None = None
        self._saved_at = time.monotonic()
        self._closing = asyncio.Event()
        self._wake = asyncio.Event()
        self._loop: asyncio.Task[None] | None = None
        self.writes = 0
        # Set when the task ended elsewhere (cancelled through the API): stop streaming.
        self.ended_as: str | None = None

    def start(self) -> None:
        self._loop = asyncio.create_task(self._run(), name=f"progress:{self._task_id}")

    def note(self, text: str) -> None:
        """The reply's text so far; written on the next tick (the first one at once)."""
        self._text = text
        if self._saved_text is None:
            self._wake.set()

    async def close(self) -> None:
        """Stop writing. A write in flight finishes first: it is never cut in half."""
        self._closing.set()
        self._wake.set()
        if self._loop is not None:
            # Shielded: cancelling whoever closes must not cancel the loop itself, or a
            # later close() (the one that records the cancellation) would raise.
            await asyncio.shield(self._loop)

    async def _run(self) -> None:
        while not self._closing.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self._next_tick())
            self._wake.clear()
            if self._closing.is_set():
                return
            changed = self._text != (self._saved_text or "")
            heartbeat_due = time.monotonic() - self._saved_at >= self._heartbeat_s
            if changed or heartbeat_due:
                await self._write()
                # Text noted while the first write was in flight waits for the next tick:
                # it must not cause a second write straight after the first.
                self._wake.clear()

    def _next_tick(self) -> float:
        if self._interval_s <= 0:
            return 0.005
        return min(self._interval_s, self._heartbeat_s)

    async def _write(self) -> None:
        text = self._text
        try:
            async with self._database.transaction() as session:
                await tasks.progress(session, self._caller, self._task_id, text)
        except Conflict as exc:
            self.ended_as = str(exc.details.get("status", "ended"))
            self._closing.set()
            return
        except Exception:
            # Progress is best effort: the completion carries the final text anyway, and
            # a failed tick must not end the reply. The next tick tries again.
            log.warning("progress write for task %s failed", self._task_id, exc_info=True)
            return
        self.writes += 1
        self._saved_text = text
        self._saved_at = time.monotonic()
