"""Set up standbys: a replication slot on the primary, ``pg_basebackup``, standby settings, start."""

from __future__ import annotations

import os
from pathlib import Path

from engines.backup.tools import pg_tool, run_tool
from engines.config import DatabaseConfig
from engines.dr.context import DRContext
from engines.dr.models import DREvent, DRStrategy
from engines.dr.pgnode import (
    as_owner,
    chown_like,
    pg_ctl,
    primary_conninfo,
    query,
    running,
    wait_until,
    write_auto_conf,
    write_passfile,
)
from engines.errors import DbfleetError


class SetupError(DbfleetError):
    """A standby cannot be set up as asked."""


def passfile_path(ctx: DRContext, standby_id: str) -> Path:
    """Where ``standby_id``'s replication passfile lives: beside its data directory, readable by its owner."""
    site = ctx.cfg.site(standby_id)
    if site.data_dir:
        data_dir = Path(site.data_dir)
        return data_dir.parent / f".dbfleet-{ctx.dr_id}-{data_dir.name}.pgpass"
    return ctx.group_dir() / f"{standby_id}.pgpass"


def passfile(ctx: DRContext, standby_id: str) -> Path | None:
    """Write ``standby_id``'s 0600 replication passfile from the secret (when this worker can) and return it."""
    path = passfile_path(ctx, standby_id)
    if not path.parent.is_dir():
        return path  # another host's standby: its own worker wrote the file there
    written = write_passfile(path, ctx.cfg.replication_user, ctx.replication_password())
    if written is not None:
        chown_like(written, path.parent)
    return written


def server_major(db: DatabaseConfig) -> int:
    """The major version of a running server."""
    return int(query(db, "SHOW server_version_num")[0][0]) // 10000


def ensure_slot(db: DatabaseConfig, slot: str) -> None:
    """Create a physical replication slot that reserves WAL now (no-op when it exists)."""
    exists = query(db, "SELECT 1 FROM pg_replication_slots WHERE slot_name = %s", [slot])
    if not exists:
        query(db, "SELECT pg_create_physical_replication_slot(%s, true)", [slot])


def drop_slot(db: DatabaseConfig, slot: str) -> None:
    """Drop an inactive slot (no-op when it does not exist)."""
    query(db, "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
              "WHERE slot_name = %s AND NOT active", [slot])


def standby_settings(ctx: DRContext, standby_id: str, upstream_id: str, pfile: Path | None) -> dict[str, str | None]:
    """postgresql.auto.conf settings that make ``standby_id`` stream from ``upstream_id`` through its slot."""
    standby = ctx.db(standby_id)
    slot = ctx.cfg.slot_name(standby_id)
    return {"primary_conninfo": primary_conninfo(ctx.db(upstream_id), ctx.cfg.replication_user, pfile, slot),
            "primary_slot_name": slot, "recovery_target_timeline": "latest",
            "restore_command": _archive_fallback(ctx),
            "port": str(standby.port), "listen_addresses": standby.host or "127.0.0.1",
            "hot_standby": "on", "default_transaction_read_only": None}


def _archive_fallback(ctx: DRContext) -> str | None:
    """With ``repository:`` set, a hot standby that falls behind its slot's WAL reads the archive instead."""
    if not ctx.cfg.repository:
        return None
    from engines.backup.physical.restore import fetch_command
    from engines.dr.warm import archive_id

    ctx.repo()  # PostgreSQL stops a standby whose restore_command fails hard: prove the repository opens first
    return fetch_command(archive_id(ctx), ctx.cfg.repository)


def standby_exists(data_dir: Path) -> bool:
    """True when ``data_dir`` already holds a standby (setup is idempotent); False when it is empty or missing.
    A primary's cluster or a non-empty directory that is no cluster is refused: setup never copies over data."""
    if (data_dir / "PG_VERSION").exists():
        if not (data_dir / "standby.signal").exists():
            raise SetupError(f"{data_dir} holds a cluster that is not a standby; refusing to touch it")
        return True
    if data_dir.exists() and any(data_dir.iterdir()):
        raise SetupError(f"{data_dir} is not empty and is not a PostgreSQL data directory")
    return False


def basebackup(ctx: DRContext, upstream: DatabaseConfig, data_dir: Path, slot: str, pfile: Path | None) -> None:
    """``pg_basebackup`` of ``upstream`` into ``data_dir`` with the client matching its major version."""
    binary, _version = pg_tool("pg_basebackup", server_major(upstream))
    args = [str(binary), "-h", str(upstream.host), "-p", str(upstream.port), "-U", ctx.cfg.replication_user,
            "-D", str(data_dir), "-X", "stream", "-c", "fast", "-w", "--no-sync"]
    args += ["-S", slot] if slot else []
    env = {"PGPASSFILE": str(pfile)} if pfile else {}
    data_dir.mkdir(mode=0o700, exist_ok=True)
    chown_like(data_dir, data_dir.parent)
    run_tool(as_owner(args, data_dir), env=env, what=f"pg_basebackup of {upstream.id}", timeout=6 * 3600)
    os.chmod(data_dir, 0o700)


def setup_standby(ctx: DRContext, standby_id: str, *, start: bool = True, wait: float = 60.0) -> list[str]:
    """Clone the current primary into the standby's data directory and start it streaming; idempotent."""
    local = ctx.local_data_dir(standby_id, must_exist=False)
    if local is None:
        raise SetupError(f"site {standby_id} has no data_dir, or its host is not this one: run dr setup there")
    data_dir, steps = local, []
    primary_id = ctx.current_primary()
    pfile, slot = passfile(ctx, standby_id), ctx.cfg.slot_name(standby_id)
    settings = standby_settings(ctx, standby_id, primary_id, pfile)  # a bad repository fails here, before a copy
    if standby_exists(data_dir):
        steps.append(f"{standby_id}: standby exists in {data_dir}")
    else:
        ensure_slot(ctx.db(primary_id), slot)
        basebackup(ctx, ctx.db(primary_id), data_dir, slot, pfile)
        steps.append(f"{standby_id}: pg_basebackup of {primary_id} into {data_dir} (slot {slot})")
    (data_dir / "standby.signal").touch()
    ensure_slot(ctx.db(primary_id), slot)
    write_auto_conf(data_dir, settings)
    if start and not running(data_dir):
        pg_ctl(data_dir, "start")
        steps.append(f"{standby_id}: started")
    if start and wait:
        streaming = wait_until(lambda: query(ctx.db(standby_id), "SELECT status FROM pg_stat_wal_receiver")
                               == [("streaming",)], wait)
        steps.append(f"{standby_id}: " + ("streaming" if streaming else f"NOT streaming after {wait:.0f}s"))
    return steps


def setup(ctx: DRContext, *, start: bool = True) -> DREvent:
    """Set up every standby of the group this worker manages (sites with a data_dir)."""
    event = DREvent(dr_id=ctx.dr_id, kind="setup", status="done", holder=ctx.observer, started_at=ctx.clock(),
                    old_primary=ctx.current_primary())
    if ctx.cfg.strategy == DRStrategy.BACKUP_RESTORE:
        from engines.dr.restore import check_restorable

        try:
            event.steps += check_restorable(ctx)
        except DbfleetError as exc:
            event.status, event.detail = "failed", str(exc)
    else:
        build = setup_standby
        if ctx.cfg.strategy == DRStrategy.WARM_STANDBY:
            from engines.dr.warm import setup_warm_standby as build
        for standby_id in ctx.standbys():
            if ctx.local_data_dir(standby_id, must_exist=False) is None:
                event.steps.append(f"{standby_id}: not on this host (or no data_dir): skipped")
                continue
            try:
                event.steps += build(ctx, standby_id, start=start)
            except DbfleetError as exc:
                event.status, event.detail = "failed", f"{standby_id}: {exc}"
                break
    if ctx.cfg.synchronous and event.status == "done":
        from engines.dr.sync import apply

        event.steps.append(f"{ctx.current_primary()}: synchronous_standby_names = "
                           f"{apply(ctx, ctx.current_primary())!r}, synchronous_commit = {ctx.cfg.synchronous_commit}")
    if ctx.coord.primary(ctx.dr_id) is None:
        ctx.coord.set_primary(ctx.dr_id, ctx.current_primary())
    event.finished_at = ctx.clock()
    return ctx.record(event)

