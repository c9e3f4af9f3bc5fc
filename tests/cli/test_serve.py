"""`chatledger serve`: `--no-auth` is refused (exit 2, one clear line) unless bound to a
loopback address; on loopback, a real server in a subprocess answers as the local user."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from chatledger.cli.app import app
from chatledger.cli.serve import is_loopback

DEADLINE_S = 30


@pytest.mark.parametrize(
    "host", ["0.0.0.0", "::", "192.168.1.10", "example.com", "127.0.0.1.nip.io"]
)
def test_no_auth_is_refused_off_loopback(host: str, tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}"
    result = CliRunner().invoke(app, ["--db", url, "serve", "--no-auth", "--host", host])
    assert result.exit_code == 2, result.output
    assert "--no-auth" in result.output and "loopback" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "ledger.db").exists()  # refused before anything was opened


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("LOCALHOST", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.0.0.1", False),
        ("localhost.example.com", False),
        ("", False),
    ],
)
def test_what_counts_as_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


@pytest.fixture
def local_server(tmp_path: Path) -> Iterator[str]:
    """`chatledger serve --no-auth` on a free loopback port, in a subprocess."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}"
    command = [sys.executable, "-m", "chatledger", "--db", url, "serve", "--no-auth"]
    process = subprocess.Popen(
        [*command, "--port", str(port)],
        env={**os.environ, "CHATLEDGER_ADMIN_KEY": ""},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + DEADLINE_S
        while True:
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            try:
                if httpx.get(f"{base_url}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.05)
        yield base_url
    finally:
        process.terminate()
        process.wait(timeout=DEADLINE_S)
        if process.stderr is not None:
            process.stderr.close()


def test_no_auth_on_loopback_serves_the_local_user(local_server: str) -> None:
    with httpx.Client(base_url=local_server, timeout=DEADLINE_S) as client:
        me = client.get("/v1/me")
        assert me.status_code == 200, me.text
        assert (me.json()["user_id"], me.json()["project_id"]) == ("local", "local")
        reply = client.post("/v1/chat", json={"message": {"content": "hi"}, "stream": False})
        assert reply.status_code == 200, reply.text
        assert reply.json()["text"] == "Echo: hi"
