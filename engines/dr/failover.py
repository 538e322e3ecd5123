"""Failover with a lease and a fencing token: pick the most advanced standby, check RPO, fence, promote,
redirect, record. Never two primaries: no lease -> nothing; a stale token -> no promotion."""

from __future__ import annotations

from collections.abc import Callable

from psycopg import sql

from engines.config import DatabaseConfig
from engines.dr.context import DRContext
from engines.dr.coord import Lease
from engines.dr.fence import fence_data_dir, fence_sql, run_hook, unfence_sql
from engines.dr.models import DREvent, DRStrategy, NodeStatus
from engines.dr.observe import node_status
from engines.dr.pgnode import lsn_int, primary_conninfo, query, wait_until
from engines.dr.setup import ensure_slot, passfile

PROMOTE_WAIT = 60


class Refused(Exception):
    """The failover stops here; the message says why (recorded, not raised to the caller)."""

    def __init__(self, status: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.detail = status, detail


def failover(ctx: DRContext, *, reason: str = "", force: bool = False, emergency: bool = False,
             require_primary_down: bool = True, before_claim: Callable[[], None] | None = None) -> DREvent:
    """Fail the group over to its most advanced standby; returns the recorded event."""
    need_down = require_primary_down and not emergency
    return under_lease(ctx, reason, force or emergency,
                       lambda event, lease: _run(ctx, event, lease, force or emergency, need_down, before_claim))


def under_lease(ctx: DRContext, reason: str, forced: bool, run: Callable[[DREvent, Lease], None]) -> DREvent:
    """The shape of every engine's failover: take the group's lease (or record ``skipped``), ``run`` under it,
    turn a :class:`Refused` into the event's status, release the lease, record the event."""
    event = DREvent(dr_id=ctx.dr_id, kind="failover", status="failed", reason=reason, holder=ctx.observer,
                    forced=forced, started_at=ctx.clock())
    lease = ctx.coord.acquire(ctx.dr_id, ctx.observer, ctx.cfg.lease_ttl)
    if lease is None:
        event.status, event.detail = "skipped", f"lease held by {ctx.coord.holder(ctx.dr_id)}; nothing done"
    else:
        event.token = lease.token
        try:
            run(event, lease)
        except Refused as exc:
            event.status, event.detail = exc.status, exc.detail
        finally:
            ctx.coord.release(lease)
    event.finished_at = ctx.clock()
    return ctx.record(event)


def _run(ctx: DRContext, event: DREvent, lease: Lease, force: bool, need_down: bool,
         before_claim: Callable[[], None] | None) -> None:
    old = event.old_primary = ctx.current_primary()
    old_status, _ = node_status(old, ctx.db(old))
    old_up = old_status.reachable and old_status.role == "primary"
    if old_up and need_down and not force:
        raise Refused("refused", f"primary {old} is reachable and accepts writes; use switchover, or force")
    standbys = reachable_standbys(ctx)
    candidate = pick_candidate(ctx, standbys)
    warm = ctx.cfg.strategy == DRStrategy.WARM_STANDBY
    reach = _warm_reach(ctx) if warm else None
    event.data_loss_bytes, event.data_loss_seconds = estimate_loss(ctx, candidate, old_status if old_up else None,
                                                                   reach)
    event.steps.append(f"candidate {candidate.database} at {candidate.receive_lsn or candidate.lsn}")
    if ctx.cfg.synchronous and _has_every_ack(ctx, event, candidate, standbys, old_up):
        event.measures["unacknowledged_bytes"] = event.data_loss_bytes  # WAL in flight, never acknowledged
        event.data_loss_bytes, event.data_loss_seconds = 0, 0.0
    elif not force:
        check_rpo(ctx, event)
    fence(ctx, event, old, old_up)
    if warm:  # everything archived is replayed before promotion; a live old primary archives its last WAL
        from engines.dr.warm import archive_last_segment, replay_archive

        if old_up:
            archive_last_segment(ctx, old, event)
        replay_archive(ctx, event, candidate.database)
    if before_claim is not None:
        before_claim()
    if not ctx.coord.claim_promotion(lease):
        raise Refused("stale", f"token {lease.token} is no longer current (lease lost or newer failover); "
                               "not promoting")
    event.steps.append(f"promotion claimed with token {lease.token}")
    promote(ctx, event, candidate.database)
    down_since = _down_since(ctx, event.started_at)
    event.downtime_seconds = round(ctx.clock() - down_since, 3)
    if not warm:  # warm standbys follow the archive (recovery_target_timeline latest), not a primary
        repoint_standbys(ctx, event, candidate.database, old)
    if ctx.cfg.synchronous:
        _sync_after_promotion(ctx, event, candidate.database)
    ctx.coord.clear_observers(ctx.dr_id)
    redirect(ctx, event)


def _has_every_ack(ctx: DRContext, event: DREvent, candidate: NodeStatus, standbys: list[NodeStatus],
                   old_up: bool) -> bool:
    from engines.dr.sync import holds_every_ack

    try:
        return holds_every_ack(ctx, event, candidate, [s.database for s in standbys], old_up)
    except Exception as exc:  # the old primary died between the two reads: treat as not proven
        event.steps.append(f"synchronous state unreadable ({type(exc).__name__}); the RPO check applies")
        return False


def _sync_after_promotion(ctx: DRContext, event: DREvent, new: str) -> None:
    """The new primary waits for the standbys already streaming from it; none: asynchronous until a rejoin."""
    from engines.dr.sync import apply

    try:
        setting = apply(ctx, new, only_streaming=True)
        event.steps.append(f"{new}: synchronous_standby_names = {setting!r}" if setting else
                           f"{new}: no standby streams yet: asynchronous until one rejoins (writes do not block)")
    except Exception as exc:
        event.steps.append(f"{new}: could not set synchronous_standby_names ({type(exc).__name__})")


def _warm_reach(ctx: DRContext) -> int | None:
    from engines.dr.warm import archived_end

    return archived_end(ctx)


def reachable_standbys(ctx: DRContext) -> list[NodeStatus]:
    """Every standby that answers and is in recovery."""
    found = [node_status(sid, ctx.db(sid))[0] for sid in ctx.standbys()]
    return [s for s in found if s.reachable and s.role == "standby"]


def pick_candidate(ctx: DRContext, standbys: list[NodeStatus] | None = None) -> NodeStatus:
    """The reachable standby with the highest received/replayed LSN."""
    usable = reachable_standbys(ctx) if standbys is None else standbys
    if not usable:
        raise Refused("failed", "no reachable standby to promote")
    return max(usable, key=lambda s: max(lsn_int(s.lsn) or 0, lsn_int(s.receive_lsn) or 0))


def estimate_loss(ctx: DRContext, candidate: NodeStatus, old: NodeStatus | None,
                  reach: int | None = None) -> tuple[int | None, float | None]:
    """(bytes, seconds) of WAL the candidate lacks: against the live primary, else its last observation.
    ``reach``: how far it will get before promotion (a warm standby: the end of the archive)."""
    pos = max(lsn_int(candidate.lsn) or 0, lsn_int(candidate.receive_lsn) or 0, reach or 0)
    seen = ctx.coord.last_primary_seen(ctx.dr_id)
    primary_lsn = lsn_int(old.lsn) if old else lsn_int(seen["lsn"]) if seen else None
    if primary_lsn is None:
        return None, None
    missing = max(0, primary_lsn - pos)
    if missing == 0:
        return 0, 0.0
    lag = (seen or {}).get("lag_seconds", {}).get(candidate.database)
    return missing, (float(lag) if lag is not None else None)


def check_rpo(ctx: DRContext, event: DREvent) -> None:
    """Refuse when the estimated loss exceeds the RPO, or cannot be estimated."""
    if event.data_loss_bytes is None:
        raise Refused("refused", "no observation of the primary's position: data loss unknown; "
                                 "run dr observe first, or force")
    if event.data_loss_bytes and event.data_loss_seconds is None:
        raise Refused("refused", f"candidate lacks {event.data_loss_bytes} bytes of WAL of unknown age; force to accept")
    if (event.data_loss_seconds or 0) > ctx.cfg.rpo_seconds:
        raise Refused("refused", f"candidate lag {event.data_loss_seconds:.1f}s exceeds RPO "
                                 f"{ctx.cfg.rpo_seconds:.0f}s; force to accept the loss")


def fence(ctx: DRContext, event: DREvent, old: str, old_up: bool) -> None:
    """SQL fence when reachable, data-directory fence when local, and always the fence command."""
    event.fenced_sql = fence_sql(ctx.db(old)) if old_up else None
    data_dir = ctx.local_data_dir(old)
    if data_dir is not None and fence_data_dir(data_dir):
        event.steps.append(f"{old}: data directory fenced (standby.signal, read-only)")
    hook = run_hook("fence", ctx.cfg.fence_command, _env(ctx, event, old, None), ctx.cfg.command_timeout)
    event.hooks.append(hook)
    ctx.coord.set_fenced(ctx.dr_id, old)
    if old_up and not event.fenced_sql and hook.returncode not in (0, None):
        raise Refused("failed", f"cannot fence {old}: SQL fence failed and fence command exited {hook.returncode}")
    if old_up and not event.fenced_sql and hook.returncode is None and ctx.cfg.fence_command:
        raise Refused("failed", f"cannot fence {old}: SQL fence failed and fence command timed out")


def promote(ctx: DRContext, event: DREvent, database_id: str) -> None:
    """``pg_promote()``, wait until it accepts writes, drop any old fence, record it as the primary."""
    db = ctx.db(database_id)
    query(db, "SELECT pg_promote(true, %s)", [PROMOTE_WAIT], timeout=10)
    writable = wait_until(lambda: query(db, "SELECT NOT pg_is_in_recovery()") == [(True,)], PROMOTE_WAIT)
    if not writable:
        raise Refused("failed", f"{database_id} did not leave recovery within {PROMOTE_WAIT}s")
    unfence_sql(db)
    wait_until(lambda: query(db, "SHOW transaction_read_only") == [("off",)], 10)
    ctx.coord.set_primary(ctx.dr_id, database_id)
    ctx.coord.set_fenced(ctx.dr_id, database_id, False)
    event.new_primary, event.status = database_id, "promoted"
    event.steps.append(f"{database_id} promoted and accepts writes")


def repoint_standbys(ctx: DRContext, event: DREvent, new: str, old: str) -> None:
    """Other standbys follow the new primary (slot on it, primary_conninfo reloaded; timeline 'latest')."""
    for sid in ctx.standbys():
        if sid == old:
            continue
        try:
            pfile = passfile(ctx, sid)
            slot = ctx.cfg.slot_name(sid)
            ensure_slot(ctx.db(new), slot)
            conninfo = primary_conninfo(ctx.db(new), ctx.cfg.replication_user, pfile, slot)
            db = ctx.db(sid)
            set_standby_source(db, conninfo, slot)
            event.steps.append(f"{sid} now follows {new}")
        except Exception as exc:
            event.steps.append(f"{sid}: could not repoint ({type(exc).__name__}); run dbfleet dr rejoin {sid}")


def set_standby_source(db: DatabaseConfig, conninfo: str, slot: str) -> None:
    """Point a running standby at a new upstream (both settings reload without a restart)."""
    for name, value in (("primary_conninfo", conninfo), ("primary_slot_name", slot)):
        query(db, sql.SQL("ALTER SYSTEM SET {} = {}").format(sql.Identifier(name), sql.Literal(value)))
    query(db, "SELECT pg_reload_conf()")


def redirect(ctx: DRContext, event: DREvent) -> None:
    """The client-redirect hook (the Redis key ``<prefix><dr_id>:primary`` is already updated)."""
    hook = run_hook("redirect", ctx.cfg.redirect_command, _env(ctx, event, event.old_primary, event.new_primary),
                    ctx.cfg.command_timeout)
    event.hooks.append(hook)


def _env(ctx: DRContext, event: DREvent, old: str | None, new: str | None) -> dict[str, str]:
    env = {"DBFLEET_DR_ID": ctx.dr_id, "DBFLEET_DR_TOKEN": str(event.token or ""),
           "DBFLEET_DR_OLD_PRIMARY": old or "", "DBFLEET_DR_NEW_PRIMARY": new or ""}
    if new:
        db = ctx.db(new)
        env |= {"DBFLEET_DR_NEW_HOST": str(db.host or ""), "DBFLEET_DR_NEW_PORT": str(db.port or "")}
    return env


def _down_since(ctx: DRContext, started: float) -> float:
    """When observers first saw the primary down (else when this failover started)."""
    downs = [o["since"] for o in ctx.coord.observers(ctx.dr_id).values() if o.get("state") == "down"]
    return min([started, *downs])
