"""Tasks of the ``compliance`` queue and the documented API entry point ``initialize_compliance_system``."""

from __future__ import annotations

import time
from typing import Any

from engines.compliance import operations
from engines.compliance.api import ComplianceEngine
from engines.config import DatabaseConfig
from workers import runtime
from workers.app import app
from workers.common import ScriptTask

Result = tuple[dict[str, Any], bool, str | None]


class RowsProgress:
    """Publishes rows masked so far in the task state (Flower, `dbfleet run --wait`), at most once a second."""

    def __init__(self, task: ScriptTask) -> None:
        self.task, self.last = task, time.monotonic()  # first report after a second: short runs publish nothing

    def __call__(self, done: int, total: int | None) -> None:
        now = time.monotonic()
        if now - self.last >= 1.0 and self.task.request.id:
            self.last = now
            self.task.update_state(state="PROGRESS", meta={"phase": "masking", "rows": done, "total": total})


def do_scan(db: DatabaseConfig, options: dict[str, Any], progress: Any = None) -> Result:
    """Discovery + standards for ``db``, diffed with its last scan in history."""
    return operations.do_scan(db, runtime.config(), runtime.history(), options)


def do_anonymize(db: DatabaseConfig, options: dict[str, Any], progress: Any = None) -> Result:
    """Mask one table in place (resumable)."""
    return operations.do_anonymize(db, runtime.config(), options, progress)


def do_erase(db: DatabaseConfig, options: dict[str, Any], progress: Any = None) -> Result:
    """Plan or perform an erasure."""
    return operations.do_erase(db, runtime.config(), options)


OPERATIONS = {"compliance_scan": do_scan, "compliance_anonymize": do_anonymize, "compliance_erase": do_erase}


@app.task(name="compliance.scan", bind=True, base=ScriptTask, script_type="compliance_scan")
def scan(self: ScriptTask, database_id: str, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """PII discovery and GDPR / PCI-DSS / HIPAA / SOX controls of one database (read-only)."""
    return self.execute(database_id, options, do_scan)


@app.task(name="compliance.anonymize", bind=True, base=ScriptTask, script_type="compliance_anonymize")
def anonymize(self: ScriptTask, database_id: str, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Deterministic in-place masking of one table; a redelivery resumes from the checkpoint."""
    return self.execute(database_id, options, lambda db, o: do_anonymize(db, o, RowsProgress(self)))


@app.task(name="compliance.erase", bind=True, base=ScriptTask, script_type="compliance_erase")
def erase(self: ScriptTask, database_id: str, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Right to erasure for one subject (one transaction)."""
    return self.execute(database_id, options, do_erase)


@app.task(name="compliance.export_anchor", bind=True)
def export_anchor(self: Any) -> dict[str, Any]:
    """Beat, daily: write the audit trail's head to the backup storage (recorded in history like any run)."""
    import uuid

    from engines.history import FAILED, SUCCEEDED
    from engines.secrets import scrub

    run_id, history = self.request.id or f"anchor-{uuid.uuid4()}", runtime.history()
    history.start(run_id, "compliance_trail_anchor", None, {}, queue="compliance", worker=self.request.hostname)
    try:
        out = operations.export_anchor(runtime.config())
    except Exception as exc:
        history.finish(run_id, FAILED, error=scrub(f"{type(exc).__name__}: {exc}"))
        raise
    history.finish(run_id, SUCCEEDED, summary=out)
    return out


def run_local(script: str, database_id: str, options: dict[str, Any], progress: Any = None) -> dict[str, Any]:
    """Run a compliance script in this process, recorded in history (scrubbed) like a task."""
    import json
    import uuid

    from engines.errors import ScriptFailed
    from engines.history import FAILED, SUCCEEDED
    from engines.secrets import scrub
    from workers.manager import check_options

    check_options(options)
    db = runtime.config().database(database_id)
    run_id, history = f"local-{uuid.uuid4()}", runtime.history()
    history.start(run_id, script, database_id, options, queue="local", worker="api")
    try:
        result, ok, error = OPERATIONS[script](db, options, progress)
    except Exception as exc:
        history.finish(run_id, FAILED, error=scrub(f"{type(exc).__name__}: {exc}"))
        raise
    result = json.loads(scrub(json.dumps(result, default=str)))
    history.finish(run_id, SUCCEEDED if ok else FAILED, summary=result, error=error)
    if not ok and not result:
        raise ScriptFailed(error or "failed")
    return result


def run_on_fleet(script: str, database_id: str, options: dict[str, Any], timeout: float = 3 * 3600) -> dict[str, Any]:
    """Send a compliance script to the ``compliance`` queue and wait for its result."""
    from workers.manager import DatabaseScriptManager

    return DatabaseScriptManager().execute_script(script, database_id, options).wait(timeout)


async def initialize_compliance_system(*, local: bool = False) -> ComplianceEngine:
    """The compliance engine of this fleet: tasks on the ``compliance`` queue (``local=True``: this process)."""
    return ComplianceEngine(runtime.config(), run_local if local else run_on_fleet)
