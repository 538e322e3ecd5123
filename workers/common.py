"""The shape every script task shares: resolve the id, record history, call the engine, return JSON."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from celery import Task
from celery.exceptions import SoftTimeLimitExceeded

from engines.config import DatabaseConfig
from engines.errors import DbfleetError, ScriptFailed
from engines.history import FAILED, SUCCEEDED
from engines.secrets import scrub
from workers import runtime

log = logging.getLogger("dbfleet.tasks")

# An engine call returns (result, ok, error): ok=False records a failed run without raising.
EngineCall = Callable[[DatabaseConfig, dict[str, Any]], tuple[dict[str, Any], bool, str | None]]


class ScriptTask(Task):
    """Base class of script tasks: history records and safe errors around an engine call."""

    abstract = True
    script_type = ""

    def execute(self, database_id: str, options: dict[str, Any] | None, call: EngineCall) -> dict[str, Any]:
        """Run ``call`` for ``database_id``, record the run, return its JSON result."""
        req = self.request
        run_id = req.id or "local"
        options = dict(options or {})
        queue = (req.delivery_info or {}).get("routing_key")
        history = runtime.history()
        history.start(run_id, self.script_type, database_id, options, queue=queue, worker=req.hostname)
        try:
            db = runtime.config().database(database_id)
            result, ok, error = call(db, options)
        except SoftTimeLimitExceeded:
            self._fail(run_id, f"time limit exceeded on queue {queue}")
        except DbfleetError as exc:
            self._fail(run_id, f"{type(exc).__name__}: {scrub(str(exc))}")
        except Exception as exc:  # unexpected: log the type and scrubbed message, never locals
            log.error("%s on %s failed: %s", self.script_type, database_id,
                      scrub(f"{type(exc).__name__}: {exc}"))
            self._fail(run_id, f"{type(exc).__name__}: {scrub(str(exc))}")
        result = json.loads(scrub(json.dumps(result, default=str)))
        history.finish(run_id, SUCCEEDED if ok else FAILED, summary=result, error=error)
        log.info("%s %s on %s: %s", self.script_type, run_id, database_id, "ok" if ok else error)
        return result

    def _fail(self, run_id: str, message: str) -> None:
        runtime.history().finish(run_id, FAILED, error=message)
        raise ScriptFailed(message) from None
