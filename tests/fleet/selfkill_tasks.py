"""Test-only tasks, loaded into a test fleet's workers through ``fleet.extra_task_modules``; never in product code.

``dr.selfkill`` SIGKILLs the pool process running it, as a task that runs its worker out of memory would;
``health.outstay`` swallows its soft time limit, as a careless driver loop would, so only the hard one ends it.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

from engines.config import DatabaseConfig
from workers.app import app
from workers.common import ScriptTask


def _kill_this_process(db: DatabaseConfig, options: dict[str, Any]) -> tuple[dict[str, Any], bool, str | None]:
    os.kill(os.getpid(), signal.SIGKILL)
    raise AssertionError("unreachable: SIGKILL cannot be caught")


@app.task(name="dr.selfkill", bind=True, base=ScriptTask, script_type="selfkill_test")
def selfkill(self: ScriptTask, database_id: str, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Kill the worker process that runs it, every time."""
    return self.execute(database_id, options, _kill_this_process)


def _outstay(db: DatabaseConfig, options: dict[str, Any]) -> tuple[dict[str, Any], bool, str | None]:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            time.sleep(0.2)
        except Exception:  # noqa: S110 - the point: a loop that swallows SoftTimeLimitExceeded
            pass
    return {}, True, None


@app.task(name="health.outstay", bind=True, base=ScriptTask, script_type="outstay_test")
def outstay(self: ScriptTask, database_id: str, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run past the soft limit, which it ignores."""
    return self.execute(database_id, options, _outstay)
