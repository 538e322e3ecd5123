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


def observe_and_act(ctx: DRContext) -> tuple[DRStatus, DREvent | None]:
    """One observer tick: observe, report, and fail over when the observers agree it is time."""
    engine = engine_for(ctx)
    status: DRStatus = engine.observe(ctx)
    if status.primary_reachable or not ctx.cfg.auto_failover_enabled:
        return status, None
    decision = verdict(ctx, ctx.clock())
    if not decision.fail_over:
        return status, None
    event: DREvent = engine.failover(ctx, reason=f"automatic: {decision.reason}")
    return status, event
