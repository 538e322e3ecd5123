"""BACKUP_RESTORE: no replica. Failover restores the newest physical backup plus every archived WAL segment
(point-in-time recovery to ``latest``) into ``restore_data_dir`` on ``restore_port``, starts it as the new
primary and runs the redirect hook; RTO is the restore time, RPO the WAL that never reached the archive.
Drills do the same into a scratch directory while marker rows are written, and measure both."""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any

from psycopg import sql

from engines.backup.physical.restore import pitr_restore
from engines.backup.physical.target import RecoveryTarget
from engines.dr.context import DRContext
from engines.dr.coord import Lease
from engines.dr.failover import Refused, check_rpo, fence, redirect, under_lease
from engines.dr.models import DREvent
from engines.dr.observe import node_status
from engines.dr.pgnode import lsn_int, pg_ctl, query, running
from engines.dr.warm import archive_id, archived_end, newest_archived
from engines.errors import ConfigError, DbfleetError

DRILL_MARKERS = "dbfleet_dr_restore_drill_markers"


def _sql(text: str) -> sql.Composed:
    """``text`` with ``{t}`` replaced by the quoted drill marker table."""
    return sql.SQL(text).format(t=sql.Identifier(DRILL_MARKERS))


def check_restorable(ctx: DRContext) -> list[str]:
    """Setup of a backup_restore group: the restore target is configured and the repository holds a physical
    backup and archived WAL of the primary (nothing is started)."""
    from engines.backup.physical.backup import physical_backups

    _target(ctx)
    backups = physical_backups(ctx.repo(), archive_id(ctx))
    if not backups:
        raise DbfleetError(f"no physical backup of {archive_id(ctx)} in the repository: take one with "
                           f"`dbfleet backups run {archive_id(ctx)} --physical`")
    newest, _at = newest_archived(ctx)
    return [f"newest physical backup {backups[-1]['backup_id']} ({backups[-1]['finished_at']})",
            f"newest archived WAL segment: {newest or 'none yet'}"]


def _target(ctx: DRContext) -> tuple[str, Path, int]:
    """(registry id, data directory, port) the newest backup is restored to on failover."""
    missing = [f"disaster_recovery.{ctx.dr_id}.{k}" for k in ("restore_data_dir", "restore_port", "restore_database")
               if getattr(ctx.cfg, k) in (None, "")]
    if missing:
        raise ConfigError([(k, "needed by strategy backup_restore: where failover restores the newest backup "
                               "(data directory, port, and the registry id that names the restored server)")
                           for k in missing])
    return str(ctx.cfg.restore_database), Path(str(ctx.cfg.restore_data_dir)), int(ctx.cfg.restore_port or 0)


def restore_latest(ctx: DRContext, data_dir: Path, port: int, timeout: float = 3600.0) -> dict[str, Any]:
    """PITR to ``latest`` of the archive's database into ``data_dir`` on ``port``; returns the restore report."""
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL", "TZ", "HOME")}
    return pitr_restore(ctx.repo(), ctx.db(archive_id(ctx)), RecoveryTarget("latest"), data_dir, port,
                        storage=ctx.cfg.repository, env={**env, **ctx.server_env}, timeout=timeout)


def failover(ctx: DRContext, *, reason: str = "", force: bool = False, emergency: bool = False) -> DREvent:
    """Restore the newest backup + WAL as the new primary (under the group's lease and fencing token)."""
    need_down = not emergency
    return under_lease(ctx, reason, force or emergency,
                       lambda event, lease: _run(ctx, event, lease, force or emergency, need_down))


def _run(ctx: DRContext, event: DREvent, lease: Lease, force: bool, need_down: bool) -> None:
    new_id, data_dir, port = _target(ctx)
    old = event.old_primary = ctx.current_primary()
    if old == new_id:
        raise Refused("refused", f"{new_id} is already the primary (restored earlier)")
    old_status, _ = node_status(old, ctx.db(old))
    old_up = old_status.reachable and old_status.role == "primary"
    if old_up and need_down and not force:
        raise Refused("refused", f"primary {old} is reachable and accepts writes; force to replace it anyway")
    seen = ctx.coord.last_primary_seen(ctx.dr_id)
    last = lsn_int(old_status.lsn) if old_up else lsn_int(seen["lsn"]) if seen else None
    newest, newest_at = newest_archived(ctx)
    reach = archived_end(ctx)
    if last is not None and reach is not None:
        event.data_loss_bytes = max(0, last - reach)
        # the WAL past the archive was written after its newest segment was pushed, and before the last sighting
        seen_at = ctx.clock() if old_up else float((seen or {}).get("at") or ctx.clock())
        event.data_loss_seconds = 0.0 if event.data_loss_bytes == 0 else round(max(0.0, seen_at - (newest_at or 0)), 3)
    event.steps.append(f"newest archived segment {newest}")
    if not force:
        check_rpo(ctx, event)
    fence(ctx, event, old, old_up)
    if old_up:
        from engines.dr.warm import archive_last_segment

        archive_last_segment(ctx, old, event)
    if not ctx.coord.claim_promotion(lease):
        raise Refused("stale", f"token {lease.token} is no longer current; not restoring")
    event.steps.append(f"promotion claimed with token {lease.token}; restoring the newest backup of "
                       f"{archive_id(ctx)} into {data_dir} (port {port})")
    try:
        report = restore_latest(ctx, data_dir, port)
    except DbfleetError as exc:
        raise Refused("failed", f"restore failed: {exc}") from None
    event.measures = {"restore_seconds": report["duration_seconds"], "backup_id": report["backup_id"],
                      "reached": report["reached"], "wal": report["wal"]}
    ctx.coord.set_primary(ctx.dr_id, new_id)
    event.new_primary, event.status = new_id, "promoted"
    event.steps.append(f"{new_id} restored ({report['wal'].get('segments')} segments replayed) and accepts writes")
    down = [o["since"] for o in ctx.coord.observers(ctx.dr_id).values() if o.get("state") == "down"]
    event.downtime_seconds = round(ctx.clock() - min([event.started_at, *down]), 3)
    ctx.coord.clear_observers(ctx.dr_id)
    redirect(ctx, event)


def observe_problems(ctx: DRContext, primary_up: bool) -> list[str]:
    """What threatens a backup_restore group's RPO: no physical backup, WAL not archived within the RPO."""
    from engines.backup.physical.backup import physical_backups

    try:
        if not physical_backups(ctx.repo(), archive_id(ctx)):
            return [f"no physical backup of {archive_id(ctx)}: a failover has nothing to restore"]
        newest, at = newest_archived(ctx)
    except DbfleetError as exc:
        return [f"repository unreadable: {exc}"]
    if newest is None:
        return [f"no archived WAL of {archive_id(ctx)}"]
    age = ctx.clock() - (at or 0)
    if primary_up and age > ctx.cfg.rpo_seconds > 0:
        return [f"newest archived WAL {newest} is {age:.0f}s old, over the RPO of {ctx.cfg.rpo_seconds:.0f}s "
                "(set archive_timeout below the RPO)"]
    return []


# --- drill ---------------------------------------------------------------------------------------------

def drill(ctx: DRContext, *, rate: float = 20.0, warmup: float = 3.0) -> DREvent:
    """Write markers to the primary, then restore the newest backup + WAL into a scratch directory as if the
    primary had just died: RTO = restore time (to the first write on the copy), RPO = acknowledged markers
    the copy lacks. The primary keeps running; the marker table is dropped afterwards."""
    from engines.dr.drill import _judge

    event = DREvent(dr_id=ctx.dr_id, kind="drill", status="failed", holder=ctx.observer, started_at=ctx.clock(),
                    reason="backup_restore drill: restore the newest backup into a scratch directory")
    primary = ctx.db(ctx.current_primary())
    from engines.dr.drill import _scratch_root
    from engines.embedded.redis import free_port

    root = _scratch_root(ctx)  # beside the primary's data directory, owned like it

    port, copy = free_port(), None
    try:
        query(primary, _sql("CREATE TABLE IF NOT EXISTS {t} (seq bigint PRIMARY KEY)"))
        _archive_now(ctx, event)  # the table itself must be in the archive; the markers are what is measured
        acked = _write_markers(primary, rate, warmup)
        fault_at = time.time()
        report = restore_latest(ctx, root / "data", port)
        copy = primary.model_copy(update={"host": "127.0.0.1", "port": port, "dbname": primary.dbname})
        query(copy, _sql("INSERT INTO {t} (seq) VALUES (-1)"))  # the first write on the restored copy
        rto = time.time() - fault_at
        present = {r[0] for r in query(copy, _sql("SELECT seq FROM {t}"))}
        lost = sorted(s for s in acked if s not in present)
        event.measures = {"rto_seconds": round(rto, 3), "restore_seconds": report["duration_seconds"],
                          "rpo_markers": len(lost), "markers_acknowledged": len(acked),
                          "rpo_seconds": round(max(acked[s] for s in lost) - min(acked[s] for s in lost) + 1.0 / rate,
                                               3) if lost else 0.0,
                          "backup_id": report["backup_id"], "rate_per_second": rate}
        _judge(ctx, event)
    except DbfleetError as exc:
        event.detail = f"{type(exc).__name__}: {exc}"
    finally:
        if (root / "data" / "PG_VERSION").exists() and running(root / "data"):
            pg_ctl(root / "data", "stop", "-m", "immediate")
        shutil.rmtree(root, ignore_errors=True)
        try:
            query(primary, _sql("DROP TABLE IF EXISTS {t}"))
        except DbfleetError:
            event.steps.append(f"could not drop {DRILL_MARKERS} on the primary")
    event.finished_at = ctx.clock()
    return ctx.record(event)


def _archive_now(ctx: DRContext, event: DREvent) -> None:
    from engines.dr.warm import archive_last_segment

    archive_last_segment(ctx, ctx.current_primary(), event, timeout=120.0)


def _write_markers(db: Any, rate: float, seconds: float) -> dict[int, float]:
    """Markers at ``rate`` per second for ``seconds``; seq -> acknowledgement time."""
    acked: dict[int, float] = {}
    stop = threading.Event()
    deadline = time.monotonic() + seconds
    seq = 0
    while time.monotonic() < deadline and not stop.is_set():
        seq += 1
        try:
            query(db, _sql("INSERT INTO {t} (seq) VALUES (%s)"), [seq], timeout=2)
            acked[seq] = time.time()
        except DbfleetError:
            pass
        stop.wait(1.0 / rate)
    return acked
