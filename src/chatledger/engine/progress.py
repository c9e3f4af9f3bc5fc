"""The debounced progress writer: while replies stream, the text of each so far is saved
at most once per interval (status `streaming`), so that a crash loses at most one
interval of text and no DB session is held for a stream.

One writer serves every reply an engine streams. On each tick it writes all the replies
that have something new in one statement (`tasks.progress_many`), in one short
transaction: 200 live replies cost one write per interval, not 200, and on SQLite they
queue once for the single writer instead of 200 times.

A reply's first write comes one interval after it started, like every later one: a
reply shorter than the interval costs no progress write at all, and the many replies
that start at once under load share their first write instead of waking the writer one
by one. A heartbeat is written even without new text, so a slow model is not mistaken
for a dead writer by the sweeper.

The writer works as chatledger itself, not as any one caller (see db/walls.py): it
writes only the tasks its engine's turns created, by their (project, id), and the
statement's guard leaves a task that has ended as it is.
"""

from __future__ import annotations

import asyncio
import logging
import time

from chatledger.db import walls
from chatledger.db.engine import Database
from chatledger.tasks import service as tasks

log = logging.getLogger(__name__)

TaskKey = tuple[str, str]  # (project_id, task_id)


class Progress:
    """One reply's share of the writer: note its text as it grows, close it when the
    reply is over."""

    def __init__(self, writer: ProgressWriter, key: TaskKey) -> None:
        self.key = key
        self.text = ""
        self.saved_text: str | None = None  # None until the first write
        self.saved_at = time.monotonic()
        self.writes = 0
        # Set when the task ended elsewhere (cancelled through the API): stop streaming.
        self.ended_as: str | None = None
        self._writer = writer

    def note(self, text: str) -> None:
        """The reply's text so far; written on a coming tick."""
        self.text = text

    async def close(self) -> None:
        """Stop writing this reply. A write of it in flight finishes first: it is never
        cut in half, and none lands after this returns."""
        await self._writer.forget(self)

    def due(self, now: float, interval_s: float, heartbeat_s: float) -> bool:
        # `saved_at` starts as the reply's start: the first write is due an interval on.
        if self.text != (self.saved_text or "") and now - self.saved_at >= interval_s:
            return True
        return now - self.saved_at >= heartbeat_s


class ProgressWriter:
    def __init__(self, database: Database, *, interval_s: float, heartbeat_s: float) -> None:
        self._database = database
        self._interval_s = interval_s
        self._heartbeat_s = heartbeat_s
        self._live: dict[TaskKey, Progress] = {}
        self._loop: asyncio.Task[None] | None = None
        # The write in flight and the replies it carries: closing one of them waits.
        self._writing: asyncio.Future[None] | None = None
        self._carried: set[TaskKey] = set()

    def follow(self, project_id: str, task_id: str) -> Progress:
        """Start writing a reply's progress."""
        progress = Progress(self, (project_id, task_id))
        self._live[progress.key] = progress
        if self._loop is None or self._loop.done():
            # Started with no caller bound, whoever asks first: the writer is
            # chatledger's own work and writes for every caller's replies.
            with walls.acting_as_chatledger():
                self._loop = asyncio.create_task(self._run(), name="progress-writer")
        return progress

    async def forget(self, progress: Progress) -> None:
        self._live.pop(progress.key, None)
        writing = self._writing
        if writing is not None and progress.key in self._carried:
            # Shielded: cancelling whoever closes must not cancel the write of others.
            await asyncio.shield(writing)

    async def _run(self) -> None:
        # Ends when no reply is left to follow; the next reply starts it again.
        while self._live:
            await asyncio.sleep(self._tick())
            await self._write_due()

    def _tick(self) -> float:
        # Half an interval: a reply waits at most 1.5 intervals for its text to be saved.
        return max(min(self._interval_s, self._heartbeat_s) / 2, 0.005)

    async def _write_due(self) -> None:
        now = time.monotonic()
        due = [
            progress
            for progress in self._live.values()
            if progress.due(now, self._interval_s, self._heartbeat_s)
        ]
        if not due:
            return
        texts = {progress.key: progress.text for progress in due}
        self._writing = asyncio.get_running_loop().create_future()
        self._carried = set(texts)
        try:
            async with self._database.transaction() as session:
                stopped = await tasks.progress_many(session, texts)
        except Exception:
            # Progress is best effort: the completion carries the final text anyway, and
            # a failed tick must not end the replies. The next tick tries again.
            log.warning("progress write for %d replies failed", len(due), exc_info=True)
            return
        finally:
            self._writing.set_result(None)
            self._writing, self._carried = None, set()
        for progress in due:
            if progress.key in stopped:
                progress.ended_as = stopped[progress.key] or "deleted"
                self._live.pop(progress.key, None)
                continue
            progress.writes += 1
            progress.saved_text = texts[progress.key]
            progress.saved_at = now
