"""Automatic failover: every observer reports what it sees; promotion needs agreement and time.

A failover starts only when ``auto_failover_enabled`` and at least ``min_observers`` distinct observers
have each seen the primary unreachable continuously for ``failover_after`` seconds, with fresh reports,
and no observer has seen it reachable within that window. One observer cut off from the primary (or a
standby whose WAL receiver stopped) therefore never promotes anything.
"""

from __future__ import annotations

from dataclasses import dataclass

from engines.dr.context import DRContext
from engines.dr.dispatch import engine_for
from engines.dr.models import DREvent, DRStatus
from engines.dr.pgnode import pg_ctl, running
from engines.errors import DbfleetError


@dataclass
class Verdict:
    """Whether the observers agree that the primary is down, and why."""

    fail_over: bool
    reason: str
    down_observers: list[str]


def verdict(ctx: DRContext, now: float) -> Verdict:
    """Read every observer's report and decide."""
    window = ctx.cfg.failover_after
    fresh = max(2 * window, 3 * ctx.cfg.observe_interval_seconds)
    reports = ctx.coord.observers(ctx.dr_id)
    up = sorted(w for w, r in reports.items() if r["state"] == "up" and now - r["seen"] <= window)
    down = sorted(w for w, r in reports.items()
                  if r["state"] == "down" and now - r["since"] >= window and now - r["seen"] <= fresh)
    if up:
        return Verdict(False, f"primary reachable from {', '.join(up)}", down)
    if len(down) < ctx.cfg.min_observers:
        return Verdict(False, f"{len(down)} of {ctx.cfg.min_observers} observers agree for {window:.0f}s", down)
    return Verdict(True, f"primary unreachable from {', '.join(down)} for >= {window:.0f}s", down)


def restart_in_place(ctx: DRContext, primary: str) -> DREvent | None:
    """A crashed postmaster on this host: start it again (under the lease) before anyone fails over."""
    data_dir = ctx.local_data_dir(primary) if ctx.cfg.restart_in_place else None
    if data_dir is None or running(data_dir) or primary in ctx.coord.fenced(ctx.dr_id) \
            or (data_dir / "standby.signal").exists():
        return None
    lease = ctx.coord.acquire(ctx.dr_id, ctx.observer, ctx.cfg.lease_ttl)
    if lease is None:
        return None
    event = DREvent(dr_id=ctx.dr_id, kind="restart", status="failed", holder=ctx.observer, token=lease.token,
                    started_at=ctx.clock(), old_primary=primary, new_primary=primary,
                    reason="primary postmaster not running on this host: restart in place before failing over")
    try:
        pg_ctl(data_dir, "start", timeout=max(5.0, ctx.cfg.failover_after))
        event.status = "done"
        event.downtime_seconds = round(ctx.clock() - min([event.started_at, *[
            o["since"] for o in ctx.coord.observers(ctx.dr_id).values() if o.get("state") == "down"]]), 3)
    except DbfleetError as exc:
        event.detail = f"restart failed ({exc}); failover proceeds after failover_after"
    finally:
        ctx.coord.release(lease)
    event.finished_at = ctx.clock()
    return ctx.record(event)


def observe_and_act(ctx: DRContext) -> tuple[DRStatus, DREvent | None]:
    """One observer tick: observe, report, and fail over when the observers agree it is time."""
    engine = engine_for(ctx)
    status: DRStatus = engine.observe(ctx)
    if status.primary_reachable or not ctx.cfg.auto_failover_enabled:
        return status, None
    if engine.restart is not None:
        restarted = engine.restart(ctx, status.primary or "")
        if restarted is not None and restarted.ok:
            return status, restarted
    decision = verdict(ctx, ctx.clock())
    if not decision.fail_over:
        return status, None
    event: DREvent = engine.failover(ctx, reason=f"automatic: {decision.reason}")
    return status, event
