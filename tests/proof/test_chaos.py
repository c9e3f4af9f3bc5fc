"""Exactly-once under chaos (docs/reliability.md): a hypothesis state machine drives random
interleavings of run, message and task creation, progress, complete / fail / cancel,
interactions, live chat turns that fail and are retried, batch uploads and re-uploads,
and run deletion, over the HTTP API on SQLite and PostgreSQL. Each request is sent once,
replayed, sent twice at the same time, or cut off mid-flight and sent again.

After every step: the run aggregates and `usage_daily` equal their recomputation from the
rows (verify.find_drift, and plain SQL), the API answers exactly what was acknowledged
(chaos_model), no message is stored twice, and nothing answered 5xx (but the 502 of a
model failing on purpose).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

import pytest
from anyio.from_thread import start_blocking_portal
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from chatledger import Settings
from chatledger.server.app import create_app
from chatledger.verify import find_drift
from tests.proof.chaos_chat import Chat, Retry
from tests.proof.chaos_ingest import Batch, RecordInteraction, SyncTask
from tests.proof.chaos_model import (
    ASSISTANT_TEXT,
    COSTS_USD,
    MESSAGE_IDS,
    RUN_IDS,
    TASK_IDS,
    USAGES,
)
from tests.proof.chaos_ops import (
    AppendMessage,
    CreateTask,
    DeleteRun,
    Ending,
    Finish,
    Op,
    Progress,
    PutRun,
)
from tests.proof.chaos_world import FAULT_DELAYS_MS, Example, World
from tests.server.conftest import ADMIN_KEY

# (examples, steps per example): the default keeps CI fast, --long is the big run.
DEFAULT_SIZE = (6, 25)
LONG_SIZE = (100, 50)

run_ids = st.sampled_from(RUN_IDS)
task_ids = st.sampled_from(TASK_IDS)
message_ids = st.sampled_from(MESSAGE_IDS)
maybe_message_ids = st.none() | message_ids
# Most requests are sent once; the rest are the chaos.
modes = st.sampled_from(("once", "once", "replay", "concurrent", "cut_off"))


@st.composite
def endings(draw: st.DrawFn) -> Ending:
    status = draw(st.sampled_from(("completed", "failed", "cancelled")))
    required = status == "completed"  # a completion must say its text and usage
    texts, usages = st.sampled_from(ASSISTANT_TEXT), st.sampled_from(USAGES)
    return Ending(
        status,
        draw(texts if required else st.none() | texts),
        draw(usages if required else st.none() | usages),
        draw(st.sampled_from(COSTS_USD)),
    )


def interactions(in_batch: bool) -> st.SearchStrategy[RecordInteraction]:
    return st.builds(
        RecordInteraction,
        task_id=task_ids,
        run_id=run_ids,
        variant=st.integers(0, 2),
        user_message_id=maybe_message_ids,
        assistant_message_id=maybe_message_ids,
        cost_usd=st.sampled_from(COSTS_USD),
        days_ago=st.none() | st.integers(1, 2),
        in_batch=st.just(in_batch),
    )


appends = st.builds(
    AppendMessage,
    run_id=run_ids,
    message_id=message_ids,
    role=st.sampled_from(("user", "assistant")),
    variant=st.integers(0, 1),
)
batch_items = st.one_of(
    st.builds(PutRun, run_id=run_ids, in_batch=st.just(True)),
    appends.map(lambda op: AppendMessage(op.run_id, op.message_id, op.role, op.variant, True)),
    st.builds(
        SyncTask, task_id=task_ids, run_id=run_ids, ending=endings(), days_ago=st.integers(1, 2)
    ),
    interactions(in_batch=True),
)


class ChaosLedger(RuleBasedStateMachine):
    world: World  # set by the test: the app and its event loop, shared by examples

    def __init__(self) -> None:
        super().__init__()
        project_id, client = self.world.portal.call(self.world.new_account)
        self.example = Example(self.world, project_id, client)
        self.uploaded: list[Batch] = []

    def perform(self, op: Op, mode: str, delay_ms: float = 0) -> None:
        self.world.counts["operations"] += 1
        self.world.counts[f"operations: {op.label}"] += 1
        example = self.example
        if mode == "once":
            self.world.portal.call(example.once, op)
        elif mode == "replay":
            self.world.portal.call(example.replayed, op)
        elif mode == "concurrent":
            self.world.portal.call(example.twice_at_once, op)
        else:
            self.world.portal.call(example.cut_off, op, delay_ms)
        self.world.portal.call(example.learn)

    @rule(run_id=run_ids, mode=modes, delay=st.sampled_from(FAULT_DELAYS_MS))
    def put_run(self, run_id: str, mode: str, delay: float) -> None:
        self.perform(PutRun(run_id), mode, delay)

    @rule(op=appends, mode=modes, delay=st.sampled_from(FAULT_DELAYS_MS))
    def append_message(self, op: AppendMessage, mode: str, delay: float) -> None:
        self.perform(op, mode, delay)

    @rule(
        task_id=task_ids,
        run_id=run_ids,
        user_message_id=maybe_message_ids,
        mode=modes,
        delay=st.sampled_from(FAULT_DELAYS_MS),
    )
    def create_task(
        self, task_id: str, run_id: str, user_message_id: str | None, mode: str, delay: float
    ) -> None:
        self.perform(CreateTask(task_id, run_id, user_message_id), mode, delay)

    @rule(task_id=task_ids, variant=st.integers(0, 1), mode=modes)
    def progress(self, task_id: str, variant: int, mode: str) -> None:
        self.perform(Progress(task_id, variant), mode, 2)

    @rule(task_id=task_ids, ending=endings(), mode=modes, delay=st.sampled_from(FAULT_DELAYS_MS))
    def finish(self, task_id: str, ending: Ending, mode: str, delay: float) -> None:
        self.perform(Finish(task_id, ending), mode, delay)

    @rule(op=interactions(in_batch=False), mode=modes, delay=st.sampled_from(FAULT_DELAYS_MS))
    def record_interaction(self, op: RecordInteraction, mode: str, delay: float) -> None:
        self.perform(op, mode, delay)

    @rule(
        items=st.lists(batch_items, min_size=1, max_size=6),
        mode=modes,
        delay=st.sampled_from(FAULT_DELAYS_MS),
    )
    def upload(self, items: list[Op], mode: str, delay: float) -> None:
        batch = Batch(items)
        self.uploaded.append(batch)
        self.perform(batch, mode, delay)

    @precondition(lambda self: self.uploaded)
    @rule(data=st.data(), mode=modes, delay=st.sampled_from(FAULT_DELAYS_MS))
    def upload_again(self, data: st.DataObject, mode: str, delay: float) -> None:
        """Offline sync sending its history again (all of it, or an older upload)."""
        batch = data.draw(st.sampled_from(self.uploaded))
        self.world.counts["batch re-uploads"] += 1
        self.perform(batch, mode, delay)

    # A live reply runs on the engine's own task, which a cut-off request does not stop:
    # chat turns are sent once (their replays are the retries).
    @rule(
        run_id=run_ids,
        message_id=message_ids,
        variant=st.integers(0, 1),
        fail=st.booleans(),
    )
    def chat(self, run_id: str, message_id: str, variant: int, fail: bool) -> None:
        self.perform(Chat(run_id, message_id, variant, fail), "once")

    @rule(message_id=message_ids, fail=st.booleans())
    def retry(self, message_id: str, fail: bool) -> None:
        self.perform(Retry(message_id, fail), "once")

    # Rarer than the rest (which hypothesis picks evenly): only once there is something
    # to take back out of the totals.
    @precondition(lambda self: len(self.example.ledger.tasks) >= 3)
    @rule(run_id=run_ids, mode=st.sampled_from(("once", "replay")))
    def delete_run(self, run_id: str, mode: str) -> None:
        self.perform(DeleteRun(run_id), mode)

    @invariant()
    def ledger_agrees_with_rows_and_api(self) -> None:
        self.world.portal.call(self.example.check)

    def teardown(self) -> None:
        self.world.portal.call(self.example.client.aclose)


@pytest.fixture
def world(settings: Settings) -> Iterator[World]:
    app = create_app(settings.model_copy(update={"admin_key": ADMIN_KEY}))
    with (
        start_blocking_portal("asyncio") as portal,
        portal.wrap_async_context_manager(app.router.lifespan_context(app)),
    ):
        yield World(portal, app)


def test_exactly_once_under_chaos(world: World, long_run: bool, database_url: str) -> None:
    examples, steps = LONG_SIZE if long_run else DEFAULT_SIZE
    ChaosLedger.world = world
    run_state_machine_as_test(
        ChaosLedger,
        settings=hypothesis_settings(
            max_examples=examples,
            stateful_step_count=steps,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        ),
    )
    backend = database_url.split(":", 1)[0]
    figures = ", ".join(f"{name} {n}" for name, n in sorted(world.counts.items()))
    print(f"\nexactly-once under chaos [{backend}]: {figures}, rows lost 0")
    assert world.counts["faults injected (request cut off)"] > 0


# Cut-offs that found the lock below: within a few dozen before it was fixed.
CUT_OFFS = 150
# A lock left behind shows as a wait of SQLite's busy_timeout (30 s), then a 503.
PROMPT_ANSWER_S = 5


def test_a_request_cut_off_mid_transaction_leaves_no_lock_behind(world: World) -> None:
    """Found by the chaos test on SQLite: a request cancelled in the middle of a statement
    left its connection closed but not finished, holding the write lock until the garbage
    collector came by, so the next writes waited 30 s and failed busy (db/engine.py)."""

    async def cut_offs() -> None:
        _, client = await world.new_account()
        async with client:
            for i in range(CUT_OFFS):
                body = {
                    "id": f"i{i}",
                    "prompt": "Cut me off",
                    "response": "Sent again",
                    "model": "openai/gpt-4o",
                    "usage": {"input_tokens": 3, "output_tokens": 2},
                }
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout((i % 30) * 0.0003):
                        await client.post("/v1/runs/r1/interactions", json=body)
                async with asyncio.timeout(PROMPT_ANSWER_S):
                    again = await client.post("/v1/runs/r1/interactions", json=body)
                assert again.status_code in (200, 201), again.text
            run = (await client.get("/v1/runs/r1")).json()
            assert (run["task_count"], run["message_count"]) == (CUT_OFFS, 2 * CUT_OFFS)

    world.portal.call(cut_offs)


def test_a_message_being_answered_from_another_run_is_not_answered_again(world: World) -> None:
    async def claim_then_retry() -> None:
        _, client = await world.new_account()
        async with client:
            failed = await client.post(
                "/v1/chat",
                json={
                    "run_id": "r1",
                    "message": {"id": "m0", "content": "Hello"},
                    "model": "echo",
                    "settings": {"fail_at": 0},
                    "stream": False,
                },
            )
            assert failed.status_code == 502, failed.text
            claim = {"id": "t0", "run_id": "r0", "model": "openai/gpt-4o", "user_message_id": "m0"}
            claimed = await client.post("/v1/tasks", json=claim)
            if claimed.status_code != 201:  # refused: the message is in another run
                assert claimed.status_code in (409, 422), claimed.text
                return
            retried = await client.post("/v1/messages/m0/retry", json={"stream": False})
            assert retried.status_code == 409, retried.text  # t0 is answering it

    world.portal.call(claim_then_retry)


# Interactions per batch: ~1,250 rows, so the commit runs on a worker thread
# (db/sqlite_inline.py); a batch cut off at each of these moments, then sent again.
BIG_BATCH = 400
BIG_BATCH_CUT_OFFS_S = (0.0, 0.01, 0.03, 0.06, 0.1, 0.15, 0.25)


def test_big_batches_cut_off_at_any_moment_land_exactly_once(world: World) -> None:
    """A batch cut off while it is checked, written or committed, then sent again: every
    interaction is stored once, the totals count each once, and no lock is left behind."""

    async def cut_offs() -> None:
        _, client = await world.new_account()
        async with client:
            for b, cut_off_s in enumerate(BIG_BATCH_CUT_OFFS_S):
                items = [
                    {
                        "kind": "interaction",
                        "id": f"b{b}-i{i}",
                        "run_id": f"r{b}-{i // 40}",
                        "prompt": "Cut me off",
                        "response": "Sent again",
                        "model": "openai/gpt-4o",
                        "usage": {"input_tokens": 3, "output_tokens": 2},
                        "cost_usd": "0.001",
                    }
                    for i in range(BIG_BATCH)
                ]
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(cut_off_s):
                        await client.post("/v1/batch", json={"items": items})
                async with asyncio.timeout(PROMPT_ANSWER_S * 4):
                    again = await client.post("/v1/batch", json={"items": items})
                assert again.status_code == 200, again.text
                answered = again.json()
                assert answered["created"] + answered["duplicate"] == BIG_BATCH, answered
            usage = (await client.get("/v1/usage/daily")).json()["totals"]
            batches = len(BIG_BATCH_CUT_OFFS_S)
            assert usage["requests"] == batches * BIG_BATCH
            assert usage["cost_nano"] == batches * BIG_BATCH * 1_000_000
            run = (await client.get("/v1/runs/r0-0")).json()
            assert (run["task_count"], run["message_count"]) == (40, 80)
        async with world.state.database.reading() as session:
            assert await find_drift(session) == []

    world.portal.call(cut_offs)
