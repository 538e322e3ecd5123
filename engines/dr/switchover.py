"""Switchover: a planned change of primary with zero data loss, the old primary rewired as a standby."""

from __future__ import annotations

from engines.dr.context import DRContext
from engines.dr.failover import Refused, promote
from engines.dr.fence import fence_sql, unfence_sql
from engines.dr.models import DREvent
from engines.dr.observe import node_status
from engines.dr.pgnode import controldata, lsn_int, pg_ctl, query, wait_until
from engines.dr.rejoin import _rejoin
from engines.errors import DbfleetError


def switchover(ctx: DRContext, target: str | None = None, *, wait: float = 60.0) -> DREvent:
    """Make ``target`` (default: the most advanced streaming standby) the primary without losing a commit."""
    event = DREvent(dr_id=ctx.dr_id, kind="switchover", status="failed", holder=ctx.observer,
                    started_at=ctx.clock())
    lease = ctx.coord.acquire(ctx.dr_id, ctx.observer, ctx.cfg.lease_ttl)
    if lease is None:
        event.status, event.detail = "skipped", f"lease held by {ctx.coord.holder(ctx.dr_id)}; nothing done"
        return ctx.record(event)
    event.token = lease.token
    try:
        _run(ctx, event, target, wait)
        if not ctx.coord.claim_promotion(lease):  # checked again right before promotion
            raise Refused("stale", f"token {lease.token} is no longer current; not promoting")
        promote(ctx, event, event.new_primary or "")
        event.downtime_seconds = round(ctx.clock() - event.started_at, 3)
        _rejoin(ctx, event.old_primary or "", event.steps, wait)
        event.status = "done"
    except Refused as exc:
        event.status, event.detail = exc.status, exc.detail
    except DbfleetError as exc:  # promoted, but the old primary did not come back as a standby
        event.status = "failed"
        event.detail = f"{event.new_primary} promoted; rewiring {event.old_primary} failed: {exc}; run dr rejoin"
    finally:
        ctx.coord.release(lease)
    event.finished_at = ctx.clock()
    return ctx.record(event)


def _run(ctx: DRContext, event: DREvent, target: str | None, wait: float) -> None:
    """Stop writes on the primary, wait until the target replayed everything, stop the old primary."""
    old = event.old_primary = ctx.current_primary()
    data_dir = ctx.local_data_dir(old)
    if data_dir is None:
        raise Refused("refused", f"{old} has no data_dir on this host: run the switchover on its host")
    target = event.new_primary = target or _streaming_standby(ctx)
    status, _ = node_status(target, ctx.db(target))
    if not (status.reachable and status.role == "standby" and status.streaming):
        raise Refused("refused", f"{target} is not a streaming standby")
    if not fence_sql(ctx.db(old)):
        raise Refused("failed", f"cannot make {old} read-only")
    event.fenced_sql = True
    pg_ctl(data_dir, "stop", "-m", "fast")  # the shutdown checkpoint is streamed before the walsender exits
    final = lsn_int(controldata(data_dir)["Latest checkpoint location"]) or 0
    caught_up = wait_until(lambda: (lsn_int(query(ctx.db(target), "SELECT pg_last_wal_replay_lsn()::text")[0][0])
                                    or 0) >= final, wait)
    if not caught_up:
        pg_ctl(data_dir, "start")
        unfence_sql(ctx.db(old))
        raise Refused("failed", f"{target} did not replay {old}'s last WAL within {wait:.0f}s; {old} restarted")
    event.data_loss_bytes, event.data_loss_seconds = 0, 0.0
    event.steps.append(f"{old} stopped; {target} replayed up to its shutdown checkpoint")


def _streaming_standby(ctx: DRContext) -> str:
    best = None
    for sid in ctx.standbys():
        status, _ = node_status(sid, ctx.db(sid))
        if status.reachable and status.role == "standby" and status.streaming:
            pos = lsn_int(status.lsn) or 0
            best = max(best or (pos, sid), (pos, sid))
    if best is None:
        raise Refused("refused", "no streaming standby to switch over to")
    return best[1]
