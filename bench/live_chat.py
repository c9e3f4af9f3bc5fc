"""Bench 2: what recording adds to a live streamed reply.

200 conversations at once, each sending 3 messages one after the other to
`POST /v1/chat` (stream) and reading the SSE reply of the echo model, whose tokens come
at a fixed pace (`delay_ms`). The conversations start spread over one reply's length,
so that 200 replies are streaming at any moment rather than all starting in the same
millisecond. The baseline is the same load against a bare SSE endpoint streaming the same
tokens and recording nothing (bench/bare_sse.py), measured in the same run just before.
Latencies are from sending the request to the first `delta` event and to the `done` event.

    python -m bench.live_chat [--quick] [--db sqlite|postgresql|both] [--workers N]

Without `--workers` each database is measured twice: with one process per server, then
with one per core (both servers alike), as a deployment serves on this machine.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field

from bench.common import (
    Figure,
    Server,
    arguments,
    cpu_seconds,
    dialects,
    fresh_database,
    header,
    new_user_key,
    note,
    percentile,
    process_counts,
    report,
    serving,
)

CONVERSATIONS = 200
QUICK_CONVERSATIONS = 20
TURNS = 3
DELAY_MS = 50  # per token: 20 tokens/s, a brisk model
WORDS = 20  # the reply is "Echo: " and these words, so 21 tokens: about 1 s
TARGETS_MS = {50: 5.0, 99: 25.0}  # added latency allowed, per percentile


@dataclass
class Latencies:
    first_token: list[float] = field(default_factory=list)
    done: list[float] = field(default_factory=list)
    failures: int = 0
    server_cpu_s: float = 0.0  # the server's CPU time over the measured load


def message(conversation: int, turn: int) -> str:
    words = [f"w{conversation}-{turn}-{n}" for n in range(WORDS - 1)]
    return " ".join(["Please", *words])


async def one_reply(
    server: Server, key: str | None, body: dict[str, object], latencies: Latencies
) -> str | None:
    """Send one message and read its stream to the end; the run id, for the next turn.

    A bare HTTP/1.1 exchange over asyncio streams (one connection per reply): 200
    streams through a full HTTP client cost the client more CPU than the servers under
    test, on the same cores.
    """
    host, port = server.url.removeprefix("http://").split(":")
    payload = json.dumps(body).encode()
    auth = f"Authorization: Bearer {key}\r\n" if key else ""
    request = (
        f"POST /v1/chat HTTP/1.1\r\nHost: {host}\r\n{auth}"
        "Content-Type: application/json\r\nConnection: close\r\n"
        f"Content-Length: {len(payload)}\r\n\r\n"
    ).encode() + payload
    started = time.perf_counter()
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            latencies.failures += 1
            return None
        run_id = _header(head, b"x-run-id")
        first = done = None
        received = b""
        while done is None:
            chunk = await reader.read(65536)
            if not chunk:
                break
            # Keep the tail: a marker may be split between two reads.
            received = received[-16:] + chunk
            if first is None and b"event: delta" in received:
                first = time.perf_counter() - started
            if b"event: done" in received:
                done = time.perf_counter() - started
            elif b"event: error" in received:
                latencies.failures += 1
                break
    finally:
        writer.close()
    if first is not None:
        latencies.first_token.append(first * 1000)
    if done is not None:
        latencies.done.append(done * 1000)
    return run_id


def _header(head: bytes, name: bytes) -> str | None:
    for line in head.split(b"\r\n")[1:]:
        field, _, value = line.partition(b":")
        if field.strip().lower() == name:
            return value.strip().decode()
    return None


async def conversation(
    server: Server, key: str | None, index: int, start_after_s: float, latencies: Latencies
) -> None:
    await asyncio.sleep(start_after_s)
    run_id = None
    for turn in range(TURNS):
        body: dict[str, object] = {
            "message": {"content": message(index, turn)},
            "model": "echo",
            "settings": {"delay_ms": DELAY_MS},
            "stream": True,
        }
        if run_id is not None:
            body["run_id"] = run_id
        run_id = await one_reply(server, key, body, latencies) or run_id


async def load(server: Server, key: str | None, conversations: int) -> Latencies:
    reply_s = (WORDS + 1) * DELAY_MS / 1000
    warm_up = Latencies()
    await asyncio.gather(*(conversation(server, key, i, 0, warm_up) for i in range(5)))
    latencies = Latencies()
    cpu_before = cpu_seconds(server.pid)
    await asyncio.gather(
        *(
            conversation(server, key, i, reply_s * i / conversations, latencies)
            for i in range(conversations)
        )
    )
    latencies.server_cpu_s = cpu_seconds(server.pid) - cpu_before
    return latencies


def compare(name: str, ours: list[float], bare: list[float]) -> None:
    for p, allowed in TARGETS_MS.items():
        value, baseline = percentile(ours, p), percentile(bare, p)
        report(
            Figure(
                f"{name} p{p}",
                value,
                "ms",
                baseline,
                f"<= baseline + {allowed:g} ms",
                value - baseline <= allowed,
            )
        )


def measure(dialect: str, conversations: int, workers: int) -> None:
    processes = f", {workers} processes per server" if workers > 1 else ""
    header(
        f"live chat: {conversations} conversations x {TURNS} streamed replies, {dialect}"
        + processes
    )
    with serving("bare-sse", f"live-bare-{dialect}", workers=workers) as server:
        bare = asyncio.run(load(server, None, conversations))
    with (
        fresh_database(dialect) as database,
        serving(
            "chatledger", f"live-{dialect}", database_url=database.url, workers=workers
        ) as server,
    ):
        ours = asyncio.run(load(server, new_user_key(server), conversations))
    compare("time to first token", ours.first_token, bare.first_token)
    compare("time to done", ours.done, bare.done)
    replies = conversations * TURNS
    # What explains the latencies: the one core's time each reply costs the server.
    ours_ms, bare_ms = ours.server_cpu_s / replies * 1000, bare.server_cpu_s / replies * 1000
    report(Figure("server CPU per reply", ours_ms, "ms", bare_ms))
    note(
        f"{len(ours.done)}/{replies} replies done ({ours.failures} failed), "
        f"baseline {len(bare.done)}/{replies}; tokens every {DELAY_MS} ms, "
        f"{WORDS + 1} tokens per reply"
    )


def main() -> None:
    args = arguments(__doc__ or "", workers=True, default_workers=None)
    conversations = QUICK_CONVERSATIONS if args.quick else CONVERSATIONS
    for dialect in dialects(args.db):
        for workers in process_counts(args.workers):
            measure(dialect, conversations, workers)


if __name__ == "__main__":
    main()
