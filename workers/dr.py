"""Tasks of the ``dr`` queue: observe, setup, failover, switchover, drill, rejoin. Resolve -> engine -> JSON.

A DR task runs for a group id; ScriptTask records it against the group's current primary database.
"""

from __future__ import annotations

from typing import Any

from engines.config import DatabaseConfig
from engines.dr.models import DREvent
from workers.app import app
from workers.common import ScriptTask
from workers.dr_api import context

Result = tuple[dict[str, Any], bool, str | None]


def _event(event: DREvent) -> Result:
    return event.model_dump(mode="json"), event.ok, None if event.ok else f"{event.status}: {event.detail}"


def _run(task: ScriptTask, dr_id: str, options: dict[str, Any] | None, verb: str) -> dict[str, Any]:
    ctx = context(dr_id, task.request.hostname or None, history=False)

    def call(_db: DatabaseConfig, opts: dict[str, Any]) -> Result:
        return _VERBS[verb](ctx, opts)

    return task.execute(ctx.current_primary(), {**(options or {}), "dr_id": dr_id}, call)


def _observe(ctx: Any, _opts: dict[str, Any]) -> Result:
    from engines.dr.auto import observe_and_act

    status, event = observe_and_act(ctx)
    result = status.model_dump(mode="json") | {"failover": event.model_dump(mode="json") if event else None}
    return result, event is None or event.ok, None if event is None or event.ok else event.detail


def _failover(ctx: Any, opts: dict[str, Any]) -> Result:
    from engines.dr.dispatch import engine_for

    return _event(engine_for(ctx).failover(ctx, reason=str(opts.get("reason", "")), force=bool(opts.get("force")),
                           emergency=bool(opts.get("emergency"))))


def _switchover(ctx: Any, opts: dict[str, Any]) -> Result:
    from engines.dr.switchover import switchover

    return _event(switchover(ctx, opts.get("target")))


def _drill(ctx: Any, opts: dict[str, Any]) -> Result:
    from engines.dr.drill import drill

    return _event(drill(ctx, rate=float(opts.get("rate", 20.0))))


def _setup(ctx: Any, _opts: dict[str, Any]) -> Result:
    from engines.dr.dispatch import engine_for
    from engines.dr.setup import setup

    return _event((engine_for(ctx).setup or setup)(ctx))


def _rejoin(ctx: Any, opts: dict[str, Any]) -> Result:
    from engines.dr.dispatch import engine_for
    from engines.dr.rejoin import rejoin

    return _event((engine_for(ctx).rejoin or rejoin)(ctx, str(opts["database"])))


_VERBS = {"observe": _observe, "failover": _failover, "switchover": _switchover, "drill": _drill,
          "setup": _setup, "rejoin": _rejoin}


@app.task(bind=True, base=ScriptTask, name="dr.observe", script_type="dr_observe")
def observe(self: ScriptTask, dr_id: str, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Observe one DR group and fail over automatically when the observers agree (beat: one per group)."""
    return _run(self, dr_id, options, "observe")


@app.task(bind=True, base=ScriptTask, name="dr.failover", script_type="dr_failover")
def failover(self: ScriptTask, dr_id: str, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Fail a group over (options: reason, force, emergency)."""
    return _run(self, dr_id, options, "failover")


@app.task(bind=True, base=ScriptTask, name="dr.switchover", script_type="dr_switchover")
def switchover(self: ScriptTask, dr_id: str, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Planned switchover (options: target)."""
    return _run(self, dr_id, options, "switchover")


@app.task(bind=True, base=ScriptTask, name="dr.drill", script_type="dr_drill")
def drill(self: ScriptTask, dr_id: str, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """A failover drill on a throwaway copy; measures RTO and RPO."""
    return _run(self, dr_id, options, "drill")


@app.task(bind=True, base=ScriptTask, name="dr.setup", script_type="dr_setup")
def setup(self: ScriptTask, dr_id: str, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Set up the group's standbys held by this worker."""
    return _run(self, dr_id, options, "setup")


@app.task(bind=True, base=ScriptTask, name="dr.rejoin", script_type="dr_rejoin")
def rejoin(self: ScriptTask, dr_id: str, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Bring an old primary back as a standby (options: database)."""
    return _run(self, dr_id, options, "rejoin")
