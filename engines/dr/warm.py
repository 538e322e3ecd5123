"""WARM_STANDBY: a standby fed only by the repository's WAL archive (``restore_command = dbfleet wal fetch``),
no ``primary_conninfo``, no slot. Set up from the repository's newest physical base backup (the PITR
restore's extraction) or, without one, ``pg_basebackup``. Its lag is measured against the archive: how long
archived WAL has waited unreplayed, and how much WAL the primary has not archived yet. Failover first has
the old primary (when it answers) switch and archive its last segment, then waits until the candidate has
replayed the newest archived segment, then promotes."""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path
from typing import Any

from engines.backup.physical.restore import chain, fetch_command, materialize, verify_manifest
from engines.backup.physical.target import RecoveryTarget
from engines.backup.physical.walplan import choose_base
from engines.backup.wal import names
from engines.backup.wal.archive import WalArchive
from engines.dr.context import DRContext
from engines.dr.models import DREvent, NodeStatus
from engines.dr.pgnode import chown_like, lsn_int, pg_ctl, query, running, wait_until, write_auto_conf
from engines.errors import BackupNotFound, DbfleetError

RETRY_INTERVAL = "5s"  # how soon a warm standby asks the archive again (each ask starts a dbfleet process)


class WarmError(DbfleetError):
    """A warm standby cannot be set up or promoted as asked."""


def archive_id(ctx: DRContext) -> str:
    """The database id whose WAL archive feeds the group's warm standbys."""
    if ctx.cfg.archive_database:
        return ctx.cfg.archive_database
    if ctx.cfg.primary_site is None:
        raise WarmError(f"DR group {ctx.dr_id!r} has no primary_site")
    return ctx.cfg.primary_site.database


def warm_settings(ctx: DRContext, standby_id: str) -> dict[str, str | None]:
    """postgresql.auto.conf of a warm standby: restore_command from the repository, no streaming."""
    standby = ctx.db(standby_id)
    return {"restore_command": fetch_command(archive_id(ctx), ctx.cfg.repository),
            "primary_conninfo": None, "primary_slot_name": None, "recovery_target_timeline": "latest",
            "wal_retrieve_retry_interval": RETRY_INTERVAL, "port": str(standby.port),
            "listen_addresses": standby.host or "127.0.0.1", "hot_standby": "on",
            "default_transaction_read_only": None}


def _from_repository(ctx: DRContext, data_dir: Path) -> str | None:
    """Extract the newest physical base backup of the archive's database into ``data_dir``; None without one."""
    repo = ctx.repo()
    from engines.backup.physical.backup import physical_backups

    backups = physical_backups(repo, archive_id(ctx))
    try:
        base = choose_base(backups, RecoveryTarget("latest"))
    except BackupNotFound:
        return None
    major = int(base["dump"]["extra"]["server_major"])
    data_dir.mkdir(mode=0o700, exist_ok=True)
    materialize(repo, chain(backups, base), data_dir, major)
    verify_manifest(data_dir, major)
    for stale in ("postmaster.pid", "postmaster.opts", "recovery.signal"):
        (data_dir / stale).unlink(missing_ok=True)
    _give_to_owner(data_dir)
    return str(base["backup_id"])


def _give_to_owner(data_dir: Path) -> None:
    """As root, the extracted files go to the owner of the data directory's parent (the server's OS user)."""
    chown_like(data_dir, data_dir.parent)
    for path in data_dir.rglob("*"):
        chown_like(path, data_dir.parent)


def setup_warm_standby(ctx: DRContext, standby_id: str, *, start: bool = True, wait: float = 120.0) -> list[str]:
    """A warm standby in the site's data directory, replaying the archive; idempotent."""
    from engines.dr.setup import SetupError, basebackup, standby_exists

    data_dir = ctx.local_data_dir(standby_id, must_exist=False)
    if data_dir is None:
        raise SetupError(f"site {standby_id} has no data_dir, or its host is not this one: run dr setup there")
    steps: list[str] = []
    if standby_exists(data_dir):
        steps.append(f"{standby_id}: standby exists in {data_dir}")
    else:
        backup_id = _from_repository(ctx, data_dir)
        if backup_id is None:
            basebackup(ctx, ctx.db(ctx.current_primary()), data_dir, "", None)
            steps.append(f"{standby_id}: no physical backup in the repository: pg_basebackup of the primary")
        else:
            steps.append(f"{standby_id}: base backup {backup_id} from the repository into {data_dir}")
    (data_dir / "standby.signal").touch()
    write_auto_conf(data_dir, warm_settings(ctx, standby_id))
    if start and not running(data_dir):
        pg_ctl(data_dir, "start", env=ctx.server_env)
        steps.append(f"{standby_id}: started, replaying the WAL archive of {archive_id(ctx)}")
    if start and wait:
        up = wait_until(lambda: query(ctx.db(standby_id), "SELECT pg_is_in_recovery()") == [(True,)], wait)
        steps.append(f"{standby_id}: " + ("accepts read-only queries" if up else f"NOT up after {wait:.0f}s"))
    return steps


# --- observe ---------------------------------------------------------------------------------------

def newest_archived(ctx: DRContext) -> tuple[str | None, float | None]:
    """(newest archived segment, when it was archived as epoch seconds) of the archive's database."""
    archive = WalArchive(ctx.repo(), archive_id(ctx))
    segments = [n for n in archive.names() if names.is_segment(n)]
    if not segments:
        return None, None
    newest = max(segments, key=lambda n: (names.segment_number(n), names.timeline(n)))
    record = archive.load(newest)
    return newest, datetime.fromisoformat(record["pushed_at"]).timestamp() if record else None


def _archived_segments(ctx: DRContext) -> list[str]:
    return sorted((n for n in WalArchive(ctx.repo(), archive_id(ctx)).names() if names.is_segment(n)),
                  key=lambda n: (names.segment_number(n), names.timeline(n)))


def replayed_archive(standby: NodeStatus, newest: str | None) -> bool:
    """True when the standby has reached the newest archived segment (replays it, or is past it)."""
    replay = lsn_int(standby.lsn)
    if newest is None or replay is None:
        return newest is None
    return replay // names.DEFAULT_SEGMENT_SIZE >= names.segment_number(newest)


def fill_lag(ctx: DRContext, standby: NodeStatus, primary: NodeStatus, primary_archiver: dict[str, Any],
             now: float) -> list[str]:
    """Lag of a warm standby against the archive (and the primary's unarchived WAL); returns problems."""
    problems: list[str] = []
    try:
        segments = _archived_segments(ctx)
    except DbfleetError as exc:
        return [f"repository unreadable: {exc}"]
    newest = segments[-1] if segments else None
    standby.archived_wal, standby.streaming = newest, None
    replay = lsn_int(standby.lsn) or 0
    waiting = [n for n in segments if names.segment_number(n) > replay // names.DEFAULT_SEGMENT_SIZE]
    archive = WalArchive(ctx.repo(), archive_id(ctx))
    replay_wait = 0.0
    if waiting and not replayed_archive(standby, newest):
        record = archive.load(waiting[0])
        if record:
            replay_wait = max(0.0, now - datetime.fromisoformat(record["pushed_at"]).timestamp())
    standby.archive_lag_seconds = round(replay_wait, 3)
    unarchived = 0.0
    if primary.reachable and primary.role == "primary":
        standby.lag_bytes = max(0, (lsn_int(primary.lsn) or 0) - replay)
        last_at = primary_archiver.get("last_archived_at")
        if primary_archiver.get("unarchived") and last_at is not None:
            unarchived = max(0.0, now - last_at)  # WAL written since the last archived switch exists only there
        if primary_archiver.get("failed"):
            problems.append(f"primary {primary.database} fails to archive WAL: {primary_archiver['failed']}")
    standby.lag_seconds = round(max(replay_wait, unarchived), 3)
    if ctx.cfg.rpo_seconds > 0:
        standby.rpo_budget_ratio = round(standby.lag_seconds / ctx.cfg.rpo_seconds, 4)
    if standby.rpo_budget_ratio is not None and standby.rpo_budget_ratio > 1:
        problems.append(f"warm standby {standby.database} lag {standby.lag_seconds:.1f}s (archive) exceeds "
                        f"RPO {ctx.cfg.rpo_seconds:.0f}s")
    return problems


_ARCHIVER_SQL = """
SELECT extract(epoch FROM last_archived_time)::float8, last_archived_wal,
       pg_walfile_name(pg_current_wal_lsn()), last_failed_wal,
       last_failed_time > coalesce(last_archived_time, '-infinity'), current_setting('archive_timeout')
FROM pg_stat_archiver
"""


def primary_archiver(ctx: DRContext, primary_id: str) -> dict[str, Any]:
    """The primary's archiver: when it last archived, whether newer WAL exists, the latest failure."""
    (row,) = query(ctx.db(primary_id), _ARCHIVER_SQL)
    last_at, last_wal, current, failed_wal, failing, timeout = row
    return {"last_archived_at": last_at, "unarchived": bool(last_wal is None or current[8:] > last_wal[8:]),
            "failed": failed_wal if failing else None, "archive_timeout": timeout}


# --- failover ----------------------------------------------------------------------------------------

def archive_last_segment(ctx: DRContext, old: str, event: DREvent, timeout: float = 30.0) -> None:
    """The old primary still answers (forced/emergency failover): switch its WAL and wait until archived."""
    try:
        closed = query(ctx.db(old), "SELECT pg_walfile_name(pg_switch_wal())", timeout=3)[0][0]
        archived = wait_until(lambda: (query(ctx.db(old), "SELECT last_archived_wal FROM pg_stat_archiver")[0][0]
                                       or "") >= closed, timeout, interval=0.3)
        event.steps.append(f"{old}: switched WAL; {closed} " + ("archived" if archived else
                                                                  f"NOT archived within {timeout:.0f}s"))
    except Exception as exc:  # it died meanwhile: what is archived is what the standby gets
        event.steps.append(f"{old}: could not switch WAL ({type(exc).__name__})")


def replay_archive(ctx: DRContext, event: DREvent, candidate: str, timeout: float = 120.0) -> None:
    """Wait until ``candidate`` has replayed up to the newest archived segment (then promotion loses nothing
    the archive holds)."""
    from engines.dr.observe import node_status

    newest, _at = newest_archived(ctx)
    t0 = time.monotonic()
    done = wait_until(lambda: replayed_archive(node_status(candidate, ctx.db(candidate))[0], newest), timeout,
                      interval=0.3)
    event.steps.append(f"{candidate} replayed the archive up to {newest} in {time.monotonic() - t0:.1f}s" if done
                       else f"{candidate} had NOT reached {newest} after {timeout:.0f}s; promoting what it has")


def archived_end(ctx: DRContext) -> int | None:
    """The LSN just past the newest archived segment (everything before it a warm standby can replay)."""
    newest, _at = newest_archived(ctx)
    return None if newest is None else (names.segment_number(newest) + 1) * names.DEFAULT_SEGMENT_SIZE
