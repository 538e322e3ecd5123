"""The typed values of the application API: who runs an operation and what came of it.

``OperationContext`` travels with a run (inside its options, under ``context``) and is recorded in
history; ``OperationResult`` is what ``execute_script`` and ``get_script_history`` return.
"""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from engines.errors import ConfigError

CONTEXT_KEY = "context"  # where the context travels inside a run's options
_CONTEXT_TEXT = 200  # longest who/why/tenant accepted (they land in history and logs)


@dataclass
class OperationContext:
    """Who asks for an operation and why; recorded with the run in history.

    ``dry_run`` validates and resolves the operation without sending it; ``timeout`` bounds how long
    ``await manager.execute_script(...)`` waits for the result (seconds, None: no bound).
    """

    who: str | None = None
    why: str | None = None
    correlation_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    tenant: str | None = None
    dry_run: bool = False
    timeout: float | None = None

    def __post_init__(self) -> None:
        problems = [(f"context.{k}", f"longer than {_CONTEXT_TEXT} characters")
                    for k in ("who", "why", "tenant", "correlation_id")
                    if len(str(getattr(self, k) or "")) > _CONTEXT_TEXT]
        if self.timeout is not None and self.timeout <= 0:
            problems.append(("context.timeout", "must be a positive number of seconds"))
        if problems:
            raise ConfigError(problems, "operation context")

    def to_dict(self) -> dict[str, Any]:
        """The JSON form recorded in history."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> OperationContext | None:
        """The context recorded with a run, or None when it had none."""
        if not isinstance(data, dict):
            return None
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


@dataclass
class OperationResult:
    """The outcome of one operation, JSON-able (``to_dict``) and readable as a mapping (``result["status"]``).

    ``status``: succeeded, failed, running, queued or dry_run. ``summary`` holds the few figures a
    person reads first; ``payload`` is the engine's whole result; ``errors`` the scrubbed messages.
    """

    operation: str
    database_id: str | None
    status: str
    task_id: str | None = None
    queue: str | None = None
    task: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    duration_seconds: float | None = None
    summary: dict[str, Any] = field(default_factory=dict)
    payload: dict[str, Any] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    context: OperationContext | None = None
    options: dict[str, Any] = field(default_factory=dict)
    worker: str | None = None
    attempts: int | None = None

    @property
    def ok(self) -> bool:
        """True when the operation succeeded (or, for a dry run, would be sent)."""
        return self.status in ("succeeded", "dry_run")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types only."""
        out = asdict(self)
        out["ok"] = self.ok
        return out

    def to_row(self) -> dict[str, Any]:
        """The history row shape of earlier versions (``dbfleet history`` renders it)."""
        options = dict(self.options) | ({CONTEXT_KEY: self.context.to_dict()} if self.context else {})
        return {"id": self.task_id, "script_type": self.operation, "database_id": self.database_id,
                "options": options, "queue": self.queue, "worker": self.worker, "status": self.status,
                "attempts": self.attempts, "started_at": self.started_at, "finished_at": self.finished_at,
                "summary": self.payload or None, "error": "; ".join(self.errors) or None}

    def __getitem__(self, key: str) -> Any:
        """``result["status"]``, and the keys of earlier history rows: ``id``, ``script_type``, ``error`` and
        ``summary`` (as before, the engine's whole result; the attribute ``.summary`` is the short one)."""
        legacy = {"id": self.task_id, "script_type": self.operation, "summary": self.payload or None,
                  "error": "; ".join(self.errors) or None}
        if key in legacy:
            return legacy[key]
        if key in self.__dataclass_fields__ or key == "ok":
            return getattr(self, key)
        raise KeyError(key)

    @classmethod
    def from_history(cls, row: dict[str, Any]) -> OperationResult:
        """A history row (engines.history.ScriptRun.to_dict) as a result."""
        options = dict(row.get("options") or {})
        context = OperationContext.from_dict(options.pop(CONTEXT_KEY, None))
        payload = row.get("summary") or {}
        return cls(operation=row["script_type"], database_id=row.get("database_id"), status=row["status"],
                   task_id=row["id"], queue=row.get("queue"), started_at=row.get("started_at"),
                   finished_at=row.get("finished_at"),
                   duration_seconds=_seconds(row.get("started_at"), row.get("finished_at")),
                   summary=summarize(payload), payload=payload, errors=[row["error"]] if row.get("error") else [],
                   context=context, options=options, worker=row.get("worker"), attempts=row.get("attempts"))


# payload keys worth lifting into the summary, in order; the first 12 present are kept
_SUMMARY_KEYS = ("status", "ok", "backup_id", "backup_type", "incremental", "partial", "tables",
                 "retention_days", "storage", "duration_seconds", "stats", "rto_seconds", "rpo_seconds",
                 "counts", "findings_count", "error", "checks_count", "monitoring", "alerts")


def summarize(payload: dict[str, Any]) -> dict[str, Any]:
    """The few figures of an engine result a person reads first."""
    out = {k: payload[k] for k in _SUMMARY_KEYS if k in payload}
    if "checks" in payload and isinstance(payload["checks"], list):
        statuses = [c.get("status") for c in payload["checks"] if isinstance(c, dict)]
        out["checks"] = {s: statuses.count(s) for s in sorted({s for s in statuses if s})}
    return dict(list(out.items())[:12])


def _seconds(start: str | None, end: str | None) -> float | None:
    if not (start and end):
        return None
    return round((datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds(), 3)
