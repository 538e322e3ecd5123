"""Repository locks: shared for backup/restore/verify, exclusive for prune (restic's scheme).

Each holder writes ``locks/<id>`` first and lists ``locks/`` second. Listings are strongly
consistent (POSIX, S3 since 2020), so of two processes racing, at least one sees the other's
lock and backs off: a prune can never run while a backup that might reuse a chunk is in flight.
A lock is stale when its holder stopped refreshing it (``stale_after``) or, on the same host,
when its process is gone (a SIGKILLed worker's lock does not block the next prune).
"""

from __future__ import annotations

import json
import os
import random
import socket
import threading
import time
import uuid
from typing import Any

from engines.errors import ObjectMissing, RepositoryLocked
from engines.storage import Storage

SHARED, EXCLUSIVE = "shared", "exclusive"
STALE_AFTER = 1800.0  # seconds without a refresh after which a lock (or a crashed upload's temp file) is stale


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RepoLock:
    """``with RepoLock(storage, EXCLUSIVE, "prune"):`` — waits up to ``wait`` seconds for conflicts."""

    def __init__(self, storage: Storage, kind: str, operation: str, *, wait: float = 0.0,
                 stale_after: float = STALE_AFTER, refresh: float = 60.0) -> None:
        self.storage = storage
        self.kind = kind
        self.operation = operation
        self.wait = wait
        self.stale_after = stale_after
        self.refresh = refresh
        self.key = f"locks/{kind}-{uuid.uuid4().hex}"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _body(self) -> bytes:
        now = time.time()
        return json.dumps({"kind": self.kind, "operation": self.operation, "host": socket.gethostname(),
                           "pid": os.getpid(), "refreshed": now}).encode()

    def _stale(self, lock: dict[str, Any]) -> bool:
        if time.time() - float(lock.get("refreshed", 0)) > self.stale_after:
            return True
        return lock.get("host") == socket.gethostname() and not _alive(int(lock.get("pid", 0)))

    def conflicts(self) -> list[dict[str, Any]]:
        """Live locks of other holders that conflict with ours."""
        found = []
        for info in self.storage.list("locks/"):
            if info.key == self.key:
                continue
            try:
                lock = json.loads(self.storage.get(info.key))
            except (ObjectMissing, ValueError):
                continue
            if self._stale(lock):
                continue
            if self.kind == EXCLUSIVE or lock.get("kind") == EXCLUSIVE:
                found.append(lock | {"key": info.key})
        return found

    def acquire(self) -> RepoLock:
        deadline = time.monotonic() + self.wait
        while True:
            self.storage.put(self.key, self._body())
            conflicts = self.conflicts()
            if not conflicts:
                break
            self.storage.delete(self.key)
            if time.monotonic() >= deadline:
                held = "; ".join(f"{c.get('operation')} ({c.get('kind')}) by pid {c.get('pid')} on "
                                 f"{c.get('host')}" for c in conflicts)
                raise RepositoryLocked(f"{self.storage.describe()}: {self.operation} cannot start: "
                                       f"locked by {held}; retry later or remove stale locks with "
                                       "`dbfleet repo unlock`")
            # jitter: two waiters that keep seeing each other's probe locks fall out of step
            time.sleep(min(random.uniform(0.2, 2.0), max(0.2, deadline - time.monotonic())))
        self._thread = threading.Thread(target=self._refresh, daemon=True, name="dbfleet-lock")
        self._thread.start()
        return self

    def _refresh(self) -> None:
        while not self._stop.wait(self.refresh):
            try:
                self.storage.put(self.key, self._body())
            except Exception:  # a missed refresh only makes the lock look stale sooner
                continue

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.storage.delete(self.key)

    def __enter__(self) -> RepoLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def remove_stale(storage: Storage, stale_after: float = 1800.0, *, all_locks: bool = False) -> list[str]:
    """Delete stale locks (or every lock with ``all_locks``); returns the removed keys."""
    probe = RepoLock(storage, SHARED, "unlock", stale_after=stale_after)
    removed = []
    for info in storage.list("locks/"):
        try:
            lock = json.loads(storage.get(info.key))
        except (ObjectMissing, ValueError):
            lock = {}
        if all_locks or not lock or probe._stale(lock):
            storage.delete(info.key)
            removed.append(info.key)
    return removed
