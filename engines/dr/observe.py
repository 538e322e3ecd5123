"""Observe a DR group: primary reachable, standbys streaming, replay lag in bytes and seconds vs RPO,
timeline and slot retention. Also the split-brain guard: a second read-write node is fenced at once."""

from __future__ import annotations

from typing import Any

from engines.config import DatabaseConfig
from engines.dr.context import DRContext
from engines.dr.fence import fence_sql
from engines.dr.models import DRStatus, DRStrategy, NodeStatus
from engines.dr.pgnode import lsn_int, query

_NODE_SQL = """
SELECT pg_is_in_recovery(),
       CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END::text,
       CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_walfile_name(pg_current_wal_lsn()) END,
       (SELECT timeline_id FROM pg_control_checkpoint()),
       current_setting('default_transaction_read_only')::bool,
       extract(epoch FROM now())::float8,
       pg_last_wal_receive_lsn()::text,
       (SELECT status FROM pg_stat_wal_receiver),
       (SELECT received_tli FROM pg_stat_wal_receiver),
       extract(epoch FROM pg_last_xact_replay_timestamp())::float8
"""
_REPLICATION_SQL = """
SELECT application_name, state, extract(epoch FROM replay_lag)::float8, sync_state FROM pg_stat_replication
"""
_SLOTS_SQL = """
SELECT slot_name, active, pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint
FROM pg_replication_slots WHERE slot_type = 'physical'
"""
NodeRow = tuple[NodeStatus, dict[str, Any]]


def node_status(database_id: str, db: DatabaseConfig, timeout: float = 3.0) -> NodeRow:
    """One node's role, LSN, timeline and WAL-receiver state (unreachable -> ``reachable=False``)."""
    try:
        (row,) = query(db, _NODE_SQL, timeout=timeout)
    except Exception as exc:
        return NodeStatus(database=database_id, reachable=False, error=str(exc)[:300]), {}
    in_recovery, lsn, walfile, ckpt_tli, read_only, now, recv_lsn, wr_status, recv_tli, replay_ts = row
    status = NodeStatus(database=database_id, reachable=True, role="standby" if in_recovery else "primary",
                        lsn=lsn, read_only=bool(read_only) or bool(in_recovery),
                        timeline=int(walfile[:8], 16) if walfile else int(recv_tli or ckpt_tli),
                        receive_lsn=recv_lsn, streaming=(wr_status == "streaming") if in_recovery else None)
    return status, {"now": now, "replay_ts": replay_ts}


def _upstream_rows(db: DatabaseConfig) -> tuple[dict[str, tuple[Any, ...]], dict[str, tuple[bool, int]]]:
    replication = {r[0]: (r[1], r[2], r[3]) for r in query(db, _REPLICATION_SQL)}
    slots = {r[0]: (bool(r[1]), int(r[2] or 0)) for r in query(db, _SLOTS_SQL)}
    return replication, slots


def _lag(ctx: DRContext, standby: NodeStatus, extra: dict[str, Any], primary: NodeStatus,
         pextra: dict[str, Any], replication: dict[str, tuple[Any, ...]]) -> None:
    """Fill lag bytes/seconds and the RPO budget ratio of one standby."""
    replay, receive = lsn_int(standby.lsn), lsn_int(standby.receive_lsn)
    if primary.reachable and primary.role == "primary" and replay is not None:
        standby.lag_bytes = max(0, (lsn_int(primary.lsn) or 0) - replay)
        row = replication.get(ctx.cfg.slot_name(standby.database))
        standby.sync_state = row[2] if row is not None else None
        if standby.lag_bytes == 0:
            standby.lag_seconds = 0.0
        elif row is not None and row[1] is not None:
            standby.lag_seconds = round(float(row[1]), 3)
        elif extra.get("replay_ts") is not None:  # disconnected: the age of its newest replayed commit
            standby.lag_seconds = round(max(0.0, pextra["now"] - extra["replay_ts"]), 3)
    elif replay is not None and receive is not None:
        standby.lag_bytes = max(0, receive - replay)
    if standby.lag_seconds is not None and ctx.cfg.rpo_seconds > 0:
        standby.rpo_budget_ratio = round(standby.lag_seconds / ctx.cfg.rpo_seconds, 4)


def observe(ctx: DRContext, *, report: bool = True, guard: bool = True) -> DRStatus:
    """Observe every node of the group; record it (and this observer's view of the primary) in the store."""
    primary_id = ctx.current_primary()
    primary, pextra = node_status(primary_id, ctx.db(primary_id))
    replication: dict[str, tuple[Any, ...]] = {}
    slots: dict[str, tuple[bool, int]] = {}
    problems: list[str] = []
    if primary.reachable and primary.role == "primary":
        replication, slots = _upstream_rows(ctx.db(primary_id))
    elif primary.reachable:
        problems.append(f"recorded primary {primary_id} is in recovery (read-only)")
    else:
        problems.append(f"primary {primary_id} unreachable: {primary.error}")
    nodes = [primary]
    warm = ctx.cfg.strategy == DRStrategy.WARM_STANDBY
    archiver = _archiver(ctx, primary_id, problems) if warm and primary.reachable and primary.role == "primary" else {}
    for sid in ctx.standbys():
        standby, extra = node_status(sid, ctx.db(sid))
        nodes.append(standby)
        if not standby.reachable:
            problems.append(f"standby {sid} unreachable")
            continue
        slot = ctx.cfg.slot_name(sid)
        if slot in slots:
            standby.slot, (standby.slot_active, standby.slot_retained_bytes) = slot, slots[slot]
        if standby.role == "primary":  # fence it only when the recorded primary is itself writable
            both = primary.reachable and primary.role == "primary" and not primary.read_only
            problems.append(_split_brain(ctx, sid) if guard and both else
                            f"{sid} accepts writes; recorded primary {primary_id} is "
                            f"{'writable too' if both else 'not'}: check dbfleet dr status before acting")
            continue
        if warm:  # fed by the archive: no walreceiver, no slot; lag is measured against the repository
            from engines.dr.warm import fill_lag

            problems += fill_lag(ctx, standby, primary, archiver, pextra.get("now") or ctx.clock())
            continue
        _lag(ctx, standby, extra, primary, pextra, replication)
        problems += _standby_problems(ctx, standby)
    if ctx.cfg.synchronous and primary.reachable and primary.role == "primary" and not primary.read_only:
        _keep_synchronous(ctx, primary_id, replication, problems)
    if ctx.cfg.strategy == DRStrategy.BACKUP_RESTORE:
        from engines.dr.restore import observe_problems

        problems += observe_problems(ctx, primary.reachable and primary.role == "primary")
    status = DRStatus(dr_id=ctx.dr_id, observed_at=ctx.clock(), observer=ctx.observer, primary=primary_id,
                      primary_reachable=primary.reachable and primary.role == "primary", nodes=nodes,
                      rpo_seconds=ctx.cfg.rpo_seconds, ok=not problems, problems=problems)
    if report:
        ctx.coord.save_status(ctx.dr_id, status.model_dump(mode="json"))
        ctx.coord.report(ctx.dr_id, ctx.observer, status.primary_reachable, status.observed_at)
    return status


def _keep_synchronous(ctx: DRContext, primary_id: str, replication: dict[str, tuple[Any, ...]],
                      problems: list[str]) -> None:
    from engines.dr.sync import maintain

    try:
        maintain(ctx, primary_id, {name for name, row in replication.items() if row[0] == "streaming"})
    except Exception as exc:
        problems.append(f"cannot check synchronous_standby_names on {primary_id}: {type(exc).__name__}")


def _archiver(ctx: DRContext, primary_id: str, problems: list[str]) -> dict[str, Any]:
    from engines.dr.warm import primary_archiver

    try:
        return primary_archiver(ctx, primary_id)
    except Exception as exc:
        problems.append(f"cannot read the archiver of {primary_id}: {type(exc).__name__}")
        return {}


def _standby_problems(ctx: DRContext, standby: NodeStatus) -> list[str]:
    out = []
    if not standby.streaming:
        out.append(f"standby {standby.database} is not streaming")
    if standby.rpo_budget_ratio is not None and standby.rpo_budget_ratio > 1:
        out.append(f"standby {standby.database} lag {standby.lag_seconds:.1f}s exceeds RPO {ctx.cfg.rpo_seconds:.0f}s")
    if standby.slot_active is False:
        out.append(f"slot {standby.slot} is inactive and retains {standby.slot_retained_bytes} bytes of WAL")
    return out


def _split_brain(ctx: DRContext, database_id: str) -> str:
    """A node that accepts writes but is not the recorded primary: fence it now."""
    done = fence_sql(ctx.db(database_id))
    ctx.coord.set_fenced(ctx.dr_id, database_id)
    return f"{database_id} accepted writes beside the primary: fenced (read-only) {'ok' if done else 'FAILED'}"


def metrics(status: DRStatus) -> list[tuple[str, dict[str, str], float]]:
    """Exporter-ready samples: (name, labels, value) for every standby with a measured lag."""
    out = [("dbfleet_dr_primary_up", {"dr_group": status.dr_id, "database": status.primary or ""},
            1.0 if status.primary_reachable else 0.0)]
    for node in status.nodes:
        labels = {"dr_group": status.dr_id, "database": node.database}
        if node.role != "standby":
            continue
        if node.streaming is not None:  # a warm standby does not stream: no "not streaming" alert for it
            out.append(("dbfleet_dr_standby_streaming", labels, 1.0 if node.streaming else 0.0))
        if node.lag_seconds is not None:
            out.append(("dbfleet_dr_replay_lag_seconds", labels, node.lag_seconds))
        if node.lag_bytes is not None:
            out.append(("dbfleet_dr_replay_lag_bytes", labels, float(node.lag_bytes)))
        if node.rpo_budget_ratio is not None:
            out.append(("dbfleet_dr_rpo_budget_ratio", labels, node.rpo_budget_ratio))
        if node.archive_lag_seconds is not None:
            out.append(("dbfleet_dr_archive_replay_lag_seconds", labels, node.archive_lag_seconds))
        if node.slot_retained_bytes is not None:
            out.append(("dbfleet_dr_slot_retained_bytes", labels, float(node.slot_retained_bytes)))
    return out
