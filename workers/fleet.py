"""Fleet diagnostics: a probe task that proves delivery semantics end to end.

``fleet.probe`` sleeps, then counts its completion in the cache Redis. It is what the
fleet tests kill with SIGKILL mid-run to show a task is redelivered and completes once,
and what ``dbfleet status --probe`` sends to each queue to prove a worker consumes it.
"""

from __future__ import annotations

import socket
import time
from typing import Any

from workers import runtime
from workers.app import app

PROBE_KEY = "dbfleet:probe:{}:{}"


@app.task(name="fleet.probe", bind=True)
def probe(self: Any, token: str, seconds: float = 0.0) -> dict[str, Any]:
    """Record a start, sleep ``seconds``, record a completion; return who ran it."""
    cache = runtime.cache()
    cache.incr(PROBE_KEY.format(token, "started"))
    time.sleep(max(0.0, min(float(seconds), 600.0)))
    done = cache.incr(PROBE_KEY.format(token, "finished"))
    cache.expire(PROBE_KEY.format(token, "started"), 86400)
    cache.expire(PROBE_KEY.format(token, "finished"), 86400)
    return {"token": token, "worker": self.request.hostname, "pid": _pid(),
            "host": socket.gethostname(), "completions": int(done)}


def _pid() -> int:
    import os

    return os.getpid()
