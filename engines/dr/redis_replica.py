"""Redis in a DR group: replication offsets against the RPO, and failover by ``REPLICAOF NO ONE`` under the
same lease and fencing token as PostgreSQL. The old primary, when it answers, is paused for writes first
and then made a replica of the new one (its fence and its rejoin)."""

from __future__ import annotations

from typing import Any

from engines.config import DatabaseConfig
from engines.connectors.redis import RedisConnector
from engines.dr.context import DRContext
from engines.dr.coord import Lease
from engines.dr.failover import Refused, check_rpo, redirect, under_lease
from engines.dr.fence import run_hook
from engines.dr.models import DREvent, DRStatus, NodeStatus
from engines.dr.pgnode import wait_until

PAUSE_MS = 30_000


def client(db: DatabaseConfig) -> Any:
    """A redis-py client for ``db`` (ConnectionFailed when it does not answer)."""
    return RedisConnector(db, password=db.password()).conn


def node(database_id: str, db: DatabaseConfig) -> tuple[NodeStatus, dict[str, Any]]:
    """Role, offset and link state of one Redis node."""
    try:
        info = client(db).info("replication")
    except Exception as exc:
        return NodeStatus(database=database_id, reachable=False, error=str(exc)[:300]), {}
    if info.get("role") == "master":
        return NodeStatus(database=database_id, reachable=True, role="primary", read_only=False,
                          lsn=str(info.get("master_repl_offset", 0))), info
    return NodeStatus(database=database_id, reachable=True, role="standby", read_only=True,
                      lsn=str(info.get("slave_repl_offset", 0)), streaming=info.get("master_link_status") == "up"), info


def observe(ctx: DRContext, *, report: bool = True) -> DRStatus:
    """Observe a Redis group: primary up, replicas linked, offset lag vs the primary."""
    primary_id = ctx.current_primary()
    primary, _ = node(primary_id, ctx.db(primary_id))
    up = primary.reachable and primary.role == "primary"
    nodes, problems = [primary], [] if up else [f"primary {primary_id} unreachable or not a master"]
    for sid in ctx.standbys():
        replica, info = node(sid, ctx.db(sid))
        nodes.append(replica)
        if replica.role == "primary" and up:  # a second master (an old primary back): demote it now
            db = ctx.db(primary_id)
            client(ctx.db(sid)).execute_command("REPLICAOF", db.host or "127.0.0.1", db.port or 6379)
            ctx.coord.set_fenced(ctx.dr_id, sid)
            problems.append(f"{sid} was a master beside {primary_id}: made its replica")
            continue
        if replica.role != "standby":
            problems.append(f"{sid} is unreachable")
            continue
        if up:
            replica.lag_bytes = max(0, int(primary.lsn or 0) - int(replica.lsn or 0))
            replica.lag_seconds = 0.0 if replica.lag_bytes == 0 else float(info.get("master_last_io_seconds_ago", -1))
            replica.rpo_budget_ratio = round(replica.lag_seconds / ctx.cfg.rpo_seconds, 4) if ctx.cfg.rpo_seconds else None
        if not replica.streaming:
            problems.append(f"replica {sid} link is down")
    status = DRStatus(dr_id=ctx.dr_id, observed_at=ctx.clock(), observer=ctx.observer, primary=primary_id,
                      primary_reachable=up, nodes=nodes, rpo_seconds=ctx.cfg.rpo_seconds, ok=not problems,
                      problems=problems)
    if report:
        ctx.coord.save_status(ctx.dr_id, status.model_dump(mode="json"))
        ctx.coord.report(ctx.dr_id, ctx.observer, up, status.observed_at)
    return status


def failover(ctx: DRContext, *, reason: str = "", force: bool = False, emergency: bool = False) -> DREvent:
    """Promote the replica with the highest offset (``REPLICAOF NO ONE``) under the group's lease."""
    return under_lease(ctx, reason, force or emergency, lambda event, lease: _run(ctx, event, lease, force or emergency))


def _run(ctx: DRContext, event: DREvent, lease: Lease, force: bool) -> None:
    old = event.old_primary = ctx.current_primary()
    old_status, _ = node(old, ctx.db(old))
    old_up = old_status.reachable and old_status.role == "primary"
    if old_up and not force:
        raise Refused("refused", f"primary {old} is reachable; force (or emergency) to fail over anyway")
    replicas = [node(sid, ctx.db(sid))[0] for sid in ctx.standbys()]
    usable = [r for r in replicas if r.reachable and r.role == "standby"]
    if not usable:
        raise Refused("failed", "no reachable replica to promote")
    cand = max(usable, key=lambda r: int(r.lsn or 0))
    seen = ctx.coord.last_primary_seen(ctx.dr_id)
    last = int(old_status.lsn or 0) if old_up else int(seen["lsn"]) if seen and seen.get("lsn") else None
    if last is not None:
        event.data_loss_bytes = max(0, last - int(cand.lsn or 0))
        lag = (seen or {}).get("lag_seconds", {}).get(cand.database)
        event.data_loss_seconds = 0.0 if event.data_loss_bytes == 0 else lag
    if not force:
        check_rpo(ctx, event)
    if old_up:
        client(ctx.db(old)).execute_command("CLIENT", "PAUSE", PAUSE_MS, "WRITE")
        event.fenced_sql = True
    event.hooks.append(run_hook("fence", ctx.cfg.fence_command, {"DBFLEET_DR_ID": ctx.dr_id,
                                "DBFLEET_DR_TOKEN": str(lease.token), "DBFLEET_DR_OLD_PRIMARY": old},
                                ctx.cfg.command_timeout))
    ctx.coord.set_fenced(ctx.dr_id, old)
    if not ctx.coord.claim_promotion(lease):
        raise Refused("stale", f"token {lease.token} is no longer current; not promoting")
    _promote(ctx, event, cand.database, old, old_up)
    redirect(ctx, event)


def _promote(ctx: DRContext, event: DREvent, new: str, old: str, old_up: bool) -> None:
    db = ctx.db(new)
    client(db).execute_command("REPLICAOF", "NO", "ONE")
    if not wait_until(lambda: client(db).info("replication").get("role") == "master", 30):
        raise Refused("failed", f"{new} did not become a master")
    ctx.coord.set_primary(ctx.dr_id, new)
    event.new_primary, event.status = new, "promoted"
    event.downtime_seconds = round(ctx.clock() - min([event.started_at, *[
        o["since"] for o in ctx.coord.observers(ctx.dr_id).values() if o.get("state") == "down"]]), 3)
    for sid in [s for s in ctx.standbys() if s != old or old_up]:
        try:
            other = client(ctx.db(sid))
            other.execute_command("REPLICAOF", db.host or "127.0.0.1", db.port or 6379)
            if sid == old:
                other.execute_command("CLIENT", "UNPAUSE")
            event.steps.append(f"{sid} now replicates {new}")
        except Exception as exc:
            event.steps.append(f"{sid}: could not repoint ({type(exc).__name__})")
    ctx.coord.clear_observers(ctx.dr_id)
