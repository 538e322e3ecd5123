"""The shape every script task shares: resolve the id, record history, call the engine, return JSON.

:func:`run_recorded` is the one place a run's history row is opened and closed, for worker tasks
(:class:`ScriptTask`) and local runs (``dbfleet backups ... --local``) alike.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from celery import Task
from celery.exceptions import SoftTimeLimitExceeded

from engines.config import DatabaseConfig
from engines.errors import DbfleetError, ScriptFailed
from engines.history import FAILED, SUCCEEDED
from engines.secrets import scrub
from engines.tracing import traced
from workers import reliability, runtime

log = logging.getLogger("dbfleet.tasks")

# An engine call returns (result, ok, error): ok=False records a failed run without raising.
EngineCall = Callable[[DatabaseConfig, dict[str, Any]], tuple[dict[str, Any], bool, str | None]]


@dataclass
class Run:
    """Who runs what: the history row's key and labels."""

    run_id: str
    script_type: str
    database_id: str
    options: dict[str, Any]
    queue: str | None = None
    worker: str | None = None
    soft_limit: float | None = None  # seconds, to name in the error when it stops the run
    local: bool = False  # in the CLI: a dbfleet error is raised as itself, for its own message


@traced("dbfleet.run", lambda run, call: {"script_type": run.script_type, "database_id": run.database_id,
                                          "run_id": run.run_id})
def run_recorded(run: Run, call: EngineCall) -> dict[str, Any]:
    """Open the history row, call the engine, close the row whatever happens; return the scrubbed result.

    A failure is recorded, then raised as :class:`ScriptFailed` with a scrubbed message (a local run re-raises
    a dbfleet error itself; a ``KeyboardInterrupt`` is recorded and re-raised); no path leaves the row ``running``.
    """
    history = runtime.history()
    done = None if run.local else history.get(run.run_id)
    if done and done["status"] == SUCCEEDED and done["summary"] is not None:
        # a copy of a task that already succeeded (the broker redelivered it: a visibility timeout shorter than
        # the run, a lost ack): the work is done, its recorded result is the answer; running it again would
        # repeat a backup or a migration step
        log.warning("%s %s on %s already succeeded: redelivered copy not run again", run.script_type,
                    run.run_id, run.database_id)
        return dict(done["summary"])
    history.start(run.run_id, run.script_type, run.database_id, run.options, queue=run.queue, worker=run.worker)
    try:
        db = runtime.config().database(run.database_id)
        result, ok, error = call(db, run.options)
    except SoftTimeLimitExceeded:
        _fail(run, _time_limit_message(run))
    except DbfleetError as exc:
        _fail(run, f"{type(exc).__name__}: {scrub(str(exc))}", exc if run.local else None)
    except KeyboardInterrupt:
        history.finish(run.run_id, FAILED, error="interrupted (Ctrl-C)")
        raise
    except Exception as exc:  # unexpected: log the type and scrubbed message, never locals
        log.error("%s on %s failed: %s", run.script_type, run.database_id, scrub(f"{type(exc).__name__}: {exc}"))
        _fail(run, f"{type(exc).__name__}: {scrub(str(exc))}")
    if reliability.soft_limit_fired():  # the engine caught the exception and returned a verdict
        _fail(run, _time_limit_message(run))
    result = json.loads(scrub(json.dumps(result, default=str)))
    history.finish(run.run_id, SUCCEEDED if ok else FAILED, summary=result, error=error)
    log.info("%s %s on %s: %s", run.script_type, run.run_id, run.database_id, "ok" if ok else error)
    return result


def _time_limit_message(run: Run) -> str:
    limit = f" of {run.soft_limit:g} s" if run.soft_limit else ""
    queue = run.queue or "?"
    return (f"time limit exceeded: {run.script_type} on {run.database_id} was stopped by its soft time limit{limit} "
            f"(queue {queue}); if it needs longer, raise fleet.time_limits.{queue}")


def _fail(run: Run, message: str, original: DbfleetError | None = None) -> None:
    runtime.history().finish(run.run_id, FAILED, error=message)
    if original is not None:
        raise original
    raise ScriptFailed(message) from None


class FleetTask(Task):
    """Base of every dbfleet task (the app's ``task_cls``): the soft limit is watched, redeliveries capped."""

    Request = "workers.reliability:FleetRequest"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        req = self.request
        if req.called_directly or req.is_eager or not req.id:
            return super().__call__(*args, **kwargs)
        reliability.arm_soft_limit()
        deliveries = reliability.count_delivery(req.id)
        cap = runtime.config().fleet.max_deliveries
        if deliveries is not None and deliveries > cap:
            raise ScriptFailed(reliability.refuse(self, args, deliveries))
        try:
            return super().__call__(*args, **kwargs)
        finally:
            reliability.forget_delivery(req.id)


class ScriptTask(FleetTask):
    """Base class of script tasks: history records and safe errors around an engine call."""

    abstract = True
    script_type = ""

    def execute(self, database_id: str, options: dict[str, Any] | None, call: EngineCall) -> dict[str, Any]:
        """Run ``call`` for ``database_id``, record the run, return its JSON result."""
        req = self.request
        soft = req.timelimit[1] if req.timelimit and req.timelimit[1] else self.soft_time_limit
        run = Run(req.id or "local", self.script_type, database_id, dict(options or {}),
                  queue=(req.delivery_info or {}).get("routing_key"), worker=req.hostname, soft_limit=soft)
        return run_recorded(run, call)
