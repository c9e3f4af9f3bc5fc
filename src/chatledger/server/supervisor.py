"""Several worker processes on one port: the process `chatledger serve --workers N` becomes.

It binds the port once, starts N copies of a worker command, each handed the listening
socket, a pipe on which it says it serves and a lifeline (so that it ends if this process
is killed), and then only waits. A worker killed, or ending after it served, is replaced
(one killed before it served, after a pause that grows while it keeps happening); one
that ends by itself (or crashes) before it serves stops them all (the app, its
settings or its database are broken, and a replacement would fail the same way: exit
status 3, as uvicorn's). SIGTERM or SIGINT stops each worker gracefully (a second one
kills them), and this process then ends with 0.

Why not uvicorn's supervisor: it is uvicorn and click in a process of its own (26 MB) and
starts its workers through multiprocessing's spawn, which adds a resource tracker (12 MB)
for semaphores nobody here makes. This process holds only the standard library (~13 MB),
which is what keeps two workers well under the 250 MB memory target (docs/benchmarks.md).
uvicorn's SIGHUP is kept (each worker replaced once its replacement serves: new code
without closing the port); its SIGTTIN and SIGTTOU (a worker more or less) are not.

The worker's side of the handshake (uvicorn on the socket it was handed) is
server/listening.py. This module imports only the standard library, and not all of it:
no dataclasses, whose `inspect` and `ast` would be 1.3 MB of the supervisor's ~13.
"""

from __future__ import annotations

import argparse
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import NoReturn

# How a worker finds what its supervisor hands it: the listening socket; the pipe on which
# it writes one byte once it serves; the lifeline, a pipe whose other end only the
# supervisor holds, which ends (end of file) when the supervisor does, however it ends.
LISTEN_FD_ENV = "CHATLEDGER_LISTEN_FD"
READY_FD_ENV = "CHATLEDGER_READY_FD"
LIFELINE_FD_ENV = "CHATLEDGER_LIFELINE_FD"
# uvicorn's exit status for a server that could not start; this supervisor's too.
STARTUP_FAILURE = 3
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
# The signals a worker receives from someone else, never raises itself.
SENT_SIGNALS = (signal.SIGKILL, signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
# A worker killed before it served is replaced after a pause, doubled each time it happens
# again before any worker serves (the OOM killer taking each new worker as it loads), up
# to the longest: not a process started and killed again and again with no end.
FIRST_PAUSE_S = 0.5
LONGEST_PAUSE_S = 30.0


def log(level: str, message: str) -> None:
    """A line on stderr in uvicorn's layout, so that the workers' lines and these read alike."""
    print(f"{level + ':':<10}{message}", file=sys.stderr, flush=True)


class Worker:
    """One worker process, and the pipe on which it says it serves until it has."""

    def __init__(self, process: subprocess.Popen[bytes], ready_pipe: int) -> None:
        self.process = process
        self.ready_pipe: int | None = ready_pipe
        self.started = False

    def read_ready(self) -> bool:
        """Read the readiness pipe, which `select` found readable: True if the worker
        serves, False if it ended without saying so (the pipe's end of file)."""
        assert self.ready_pipe is not None
        said = os.read(self.ready_pipe, 1)
        os.close(self.ready_pipe)
        self.ready_pipe = None
        self.started = bool(said)
        return self.started


class Supervisor:
    """N workers of one command on one listening socket."""

    def __init__(
        self, command: Sequence[str], listening: socket.socket, count: int, *, verbose: bool
    ) -> None:
        self.command = command
        self.listening = listening
        self.count = count
        self.verbose = verbose
        self.workers: list[Worker] = []
        # Workers replaced by SIGHUP, finishing what they serve (uvicorn's graceful
        # shutdown) while their replacements take the new connections.
        self.retiring: list[Worker] = []
        # The read end is handed to each worker; the write end stays here, open until this
        # process ends (os.pipe's descriptors are not inherited).
        self.lifeline, self._lifeline_kept = os.pipe()
        # The places of workers killed before they served, and when each is started again.
        self.pausing: dict[int, float] = {}
        self.pause = FIRST_PAUSE_S

    def run(self) -> int:
        """Serve until told to stop; the exit status this process should end with."""
        wakeup = _wakeup_pipe()
        self.workers = [self._start() for _ in range(self.count)]
        status = self._watch(wakeup)
        self._stop(wakeup)
        return status

    def _start(self) -> Worker:
        ready_read, ready_write = os.pipe()
        listen_fd = self.listening.fileno()
        environment = {
            **os.environ,
            LISTEN_FD_ENV: str(listen_fd),
            READY_FD_ENV: str(ready_write),
            LIFELINE_FD_ENV: str(self.lifeline),
        }
        handed = (listen_fd, ready_write, self.lifeline)
        process = subprocess.Popen(self.command, env=environment, pass_fds=handed)
        os.close(ready_write)  # the worker's end: EOF here once it has ended
        return Worker(process, ready_read)

    def _watch(self, wakeup: int) -> int:
        """Wait on signals and readiness pipes until told to stop or a worker cannot start."""
        announced = False
        while True:
            pipes = {w.ready_pipe: w for w in self.workers if w.ready_pipe is not None}
            readable, _, _ = select.select([wakeup, *pipes], [], [], self._until_restart())
            for pipe in readable:
                if pipe == wakeup:
                    continue
                if pipes[pipe].read_ready():
                    self.pause = FIRST_PAUSE_S  # one serves: whatever killed them has passed
                else:
                    pipes[pipe].process.wait()  # ending: its status is read below
            received = os.read(wakeup, 64) if wakeup in readable else b""
            if _stop_in(received) or (signal.SIGHUP in received and not self._restart(wakeup)):
                return 0
            self.retiring = [w for w in self.retiring if w.process.poll() is None]
            for index, worker in enumerate(self.workers):
                status = worker.process.poll()
                if status is None or index in self.pausing:
                    continue
                if worker.ready_pipe is not None:  # it has ended: what it said is there
                    worker.read_ready()
                pid, how = worker.process.pid, _how_it_ended(status)
                if not worker.started and not _ended_by_another(status):
                    # It gave up before serving (uvicorn could not load the app or run its
                    # startup; it crashed): a replacement would fail the same way.
                    log("ERROR", f"Worker [{pid}] ended ({how}) before serving; stopping.")
                    return STARTUP_FAILURE
                if worker.started:
                    log("WARNING", f"Worker [{pid}] ended ({how}); starting another.")
                    self.workers[index] = self._start()
                    continue
                pause = f"{self.pause:g} s"
                log("WARNING", f"Worker [{pid}] ended ({how}) before serving; another in {pause}.")
                self.pausing[index] = time.monotonic() + self.pause
                self.pause = min(2 * self.pause, LONGEST_PAUSE_S)
            for index, due in list(self.pausing.items()):
                if due <= time.monotonic():
                    del self.pausing[index]
                    self.workers[index] = self._start()
            if not announced and all(w.started for w in self.workers):
                announced = True
                if self.verbose:
                    pids = ", ".join(str(w.process.pid) for w in self.workers)
                    log("INFO", f"{len(self.workers)} workers serving [{pids}]")

    def _until_restart(self) -> float | None:
        """Seconds until the next paused worker is started again; None: none pausing."""
        if not self.pausing:
            return None
        return max(0.0, min(self.pausing.values()) - time.monotonic())

    def _restart(self, wakeup: int) -> bool:
        """SIGHUP: each worker in turn replaced by a new one (the code as it is now) once the
        new one serves, so the port is never without its workers. A new one that cannot
        start ends the restart, the workers not yet replaced kept. False if told to stop."""
        if self.verbose:
            log("INFO", "Received SIGHUP: replacing the workers one by one.")
        for index, old in enumerate(self.workers):
            new = self._start()
            while new.ready_pipe is not None:
                readable, _, _ = select.select([wakeup, new.ready_pipe], [], [])
                if wakeup in readable and _stop_in(os.read(wakeup, 64)):
                    self.workers.append(new)  # stopped with the others
                    return False
                if new.ready_pipe in readable:
                    new.read_ready()
            if not new.started:
                pid, how = new.process.pid, _how_it_ended(new.process.wait())
                log("ERROR", f"Worker [{pid}] ended ({how}) before serving; restart abandoned.")
                return True
            old.process.send_signal(signal.SIGTERM)  # (nothing, if it had ended)
            self.retiring.append(old)
            self.workers[index] = new
            self.pausing.pop(index, None)
        return True

    def _stop(self, wakeup: int) -> None:
        """SIGTERM to each worker (uvicorn's graceful shutdown), then wait for all; another
        SIGTERM or SIGINT meanwhile kills them."""
        everyone = [*self.workers, *self.retiring]
        for worker in everyone:
            if worker.process.poll() is None:
                worker.process.send_signal(signal.SIGTERM)
        while any(w.process.poll() is None for w in everyone):
            readable, _, _ = select.select([wakeup], [], [], 0.5)
            if readable and _stop_in(os.read(wakeup, 64)):
                for worker in everyone:
                    if worker.process.poll() is None:
                        worker.process.kill()
        for worker in everyone:
            if worker.ready_pipe is not None:
                os.close(worker.ready_pipe)


def _wakeup_pipe() -> int:
    """A pipe on which each signal this process handles arrives as its number: the one
    `select` waits on (a handler alone would not interrupt it: PEP 475 retries)."""
    read, write = os.pipe()
    os.set_blocking(read, False)
    os.set_blocking(write, False)
    signal.set_wakeup_fd(write)
    for signum in (*STOP_SIGNALS, signal.SIGHUP, signal.SIGCHLD):
        signal.signal(signum, lambda *_: None)
    return read


def _ended_by_another(status: int) -> bool:
    """Whether a child's return code says someone else ended it (an operator, the OOM
    killer): not an exit status of its own, nor a crash such as SIGSEGV or SIGABRT."""
    return -status in SENT_SIGNALS


def _how_it_ended(status: int) -> str:
    """A child's return code (Popen's: a signal as its negative number), for a person."""
    return f"signal {-status}" if status < 0 else f"exit status {status}"


def _stop_in(received: bytes) -> bool:
    """Whether the signals read from the wakeup pipe include a stop."""
    return any(signum in STOP_SIGNALS for signum in received)


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, as uvicorn binds one (IPv6 for an address with a colon)."""
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listening = socket.socket(family, socket.SOCK_STREAM)
    listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listening.bind((host, port))
    return listening


def main(argv: Sequence[str] | None = None) -> NoReturn:
    parser = argparse.ArgumentParser(
        prog="python -m chatledger.server.supervisor",
        description="Run N copies of a worker command on one listening port.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, required=True)
    parser.add_argument("--quiet", action="store_true", help="log only what went wrong")
    parser.add_argument("command", nargs="+", help="the worker command (after --)")
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    try:
        listening = bind(args.host, args.port)
    except OSError as error:
        log("ERROR", f"cannot listen on {args.host}:{args.port}: {error}")
        sys.exit(STARTUP_FAILURE)
    if not args.quiet:
        scheme_host = f"[{args.host.strip('[]')}]" if ":" in args.host else args.host
        log("INFO", f"Listening on http://{scheme_host}:{listening.getsockname()[1]}")
    supervisor = Supervisor(args.command, listening, args.workers, verbose=not args.quiet)
    sys.exit(supervisor.run())


if __name__ == "__main__":
    main()
