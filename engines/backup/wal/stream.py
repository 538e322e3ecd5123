"""``dbfleet wal stream``: WAL from the replication protocol, for servers where archive_command cannot be set.

``pg_receivewal --slot dbfleet_<id> --synchronous`` (the client matching the server's major version)
writes into a private spool directory; every completed file (segments, ``.history``; never the
``.partial`` segment still being written) is pushed into the repository exactly like ``wal push``
does, then removed from the spool except the newest segment, from which pg_receivewal resumes after a
restart. The slot keeps WAL on the server while the stream is down (the ``wal_stream`` and
``replication_slot_wal`` health checks watch it). The process runs until SIGTERM/SIGINT, restarting
pg_receivewal with a back-off when it exits, like Barman's ``receive-wal`` under a service manager.
"""

from __future__ import annotations

import logging
import re
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engines.backup import tools
from engines.backup.wal import names
from engines.config import DatabaseConfig
from engines.errors import DbfleetError
from engines.secrets import scrub

log = logging.getLogger("dbfleet.wal.stream")
COMPLETE = re.compile(r"^([0-9A-F]{24}|[0-9A-F]{8}\.history)$")


class WalStream:
    """One database's stream: the slot, the pg_receivewal child, and the pushes of completed files."""

    def __init__(self, archive: Any, db: DatabaseConfig, spool: Path, *, level: int | None = 3,
                 secrets_dir: Path, poll: float = 0.5, on_push: Callable[[Any], None] | None = None,
                 on_event: Callable[[str], None] | None = None) -> None:
        self.archive, self.db, self.spool, self.level = archive, db, spool, level
        self.slot = names.stream_slot(db.id)
        self.poll, self.on_push, self.on_event = poll, on_push, on_event
        self.secrets_dir = secrets_dir
        self.stop = threading.Event()
        self.proc: subprocess.Popen[bytes] | None = None
        self.restarts = 0
        self.pushed: set[str] = set()
        self._tool: Path | None = None
        self._env: dict[str, str] | None = None

    def prepare(self) -> None:
        """Find pg_receivewal for the server's major version, write the passfile, create the slot if missing."""
        from engines.backup.physical.backup import pg_env, server_facts

        facts = server_facts(self.db, self.db.password())
        self._tool, _version = tools.pg_tool("pg_receivewal", facts["server_major"])
        self._env, _extra = pg_env(self.db, self.db.password(), self.secrets_dir)
        self.spool.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.spool.chmod(0o700)  # WAL holds every row written
        self._create_slot()

    def _create_slot(self) -> None:
        assert self._tool is not None
        tools.run_tool([str(self._tool), "--create-slot", "--if-not-exists", "--slot", self.slot, "--no-password"],
                       env=self._env, what="pg_receivewal --create-slot", timeout=120)

    def _start(self) -> None:
        assert self._tool is not None
        if self.restarts:  # the slot may be gone (a cluster restored from a base backup has none)
            try:
                self._create_slot()
            except DbfleetError as exc:
                self._event(f"cannot create slot {self.slot}: {exc}")
        args = [str(self._tool), "--directory", str(self.spool), "--slot", self.slot, "--synchronous",
                "--no-loop", "--no-password", "--status-interval", "10"]
        self.proc = subprocess.Popen(args, env=tools.child_env(self._env), stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        log.info("pg_receivewal started for %s on slot %s", self.db.id, self.slot)

    def push_completed(self) -> list[Any]:
        """Push every completed file of the spool not pushed yet; remove them except the newest segment (the
        resume point). ``.partial`` files are pg_receivewal's, never touched."""
        done = []
        files = sorted(p for p in self.spool.iterdir() if COMPLETE.match(p.name))
        segments = [p for p in files if names.is_segment(p.name)]
        keep = max(segments, key=lambda p: names.segment_number(p.name)) if segments else None
        for path in files:
            if path.name not in self.pushed:
                result = self.archive.push(path, level=self.level)
                self.pushed.add(path.name)
                done.append(result)
                if self.on_push:
                    self.on_push(result)
            if path != keep:
                path.unlink()
        return done

    def _event(self, message: str) -> None:
        log.warning("wal stream %s: %s", self.db.id, message)
        if self.on_event:
            self.on_event(message)

    def _reap(self) -> str:
        """The exited child's last words (scrubbed)."""
        assert self.proc is not None and self.proc.stderr is not None
        return scrub(self.proc.stderr.read().decode(errors="replace").strip()[-600:])

    def run(self) -> None:
        """Stream until ``stop`` is set: keep pg_receivewal running (back-off 1..30 s), push completed files."""
        self.prepare()
        backoff, next_start, started = 1.0, 0.0, 0.0
        while not self.stop.is_set():
            if self.proc is not None and self.proc.poll() is not None:
                self._event(f"pg_receivewal exited with status {self.proc.returncode}: "
                            f"{self._reap() or '(no message)'}; restarting in {backoff:.0f} s")
                self.proc, self.restarts = None, self.restarts + 1
                next_start, backoff = time.monotonic() + backoff, min(30.0, backoff * 2)
            if self.proc is None and time.monotonic() >= next_start:
                self._start()
                started = time.monotonic()
            elif self.proc is not None and time.monotonic() - started > 60:
                backoff = 1.0  # it has been up a while: the next failure starts the back-off again
            self.push_completed()
            self.stop.wait(self.poll)
        self.close()

    def close(self) -> None:
        """Stop pg_receivewal (it flushes and exits on SIGTERM), then push what it completed."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.push_completed()

