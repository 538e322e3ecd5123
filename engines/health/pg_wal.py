"""PostgreSQL WAL archiving health: archive lag, failing archiver, the repository's newest segment and gaps,
replication slot WAL retention, a stalled ``dbfleet wal stream`` (docs/pitr.md).

The archive checks run for databases that archive into dbfleet's repository (``archive_command`` runs
``dbfleet wal push``, ``backup.method: physical``, or a ``wal stream`` slot); on the others they report
nothing. The repository side needs ``context["wal_archive"]`` (a callable returning the database's
``WalArchive``), handed in by the health task; it is re-read at most every
``wal_repository_check_seconds`` (default 300) and kept in the check memory in between.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from engines.backup.wal import names
from engines.health.deep import CRITICAL, OK, WARNING, CannotCheck, CheckResult, HealthChecks, HealthContext, level, result


def register(checks: HealthChecks) -> None:
    """Add the WAL checks to a kind's checks (engines/health/postgres.py)."""
    checks.check("wal_archive_lag")(archive_lag)
    checks.check("wal_archive_failures")(archive_failures)
    checks.check("wal_archive_repository")(repository)
    checks.check("replication_slot_wal")(slot_retention)
    checks.check("wal_stream")(stream)


def _archiver(ctx: HealthContext) -> dict[str, Any]:
    """Archiving settings and pg_stat_archiver, read once per run."""
    def read() -> dict[str, Any]:
        row = ctx.conn.conn.execute(
            "SELECT current_setting('archive_mode'), current_setting('archive_command'), pg_is_in_recovery(),"
            " a.last_archived_wal, extract(epoch FROM now() - a.last_archived_time), a.failed_count,"
            " a.last_failed_wal, coalesce(a.last_failed_time > coalesce(a.last_archived_time, '-infinity'), false),"
            " CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_walfile_name(pg_current_wal_lsn()) END,"
            " current_setting('archive_timeout')::int"
            " FROM pg_stat_archiver a").fetchone()
        keys = ("archive_mode", "archive_command", "in_recovery", "last_archived_wal", "last_archived_age",
                "failed_count", "last_failed_wal", "failing", "current_wal", "archive_timeout")
        return dict(zip(keys, row, strict=True))
    info: dict[str, Any] = ctx.once("pg_archiver", read)
    return info


def archives_to_repository(ctx: HealthContext) -> bool:
    """True when this database's WAL goes to dbfleet's repository (archive_command or a stream)."""
    info = _archiver(ctx)
    pushes = info["archive_mode"] != "off" and "wal push" in (info["archive_command"] or "")
    return pushes or ctx.db.backup.method == "physical" or bool(_stream_slots(ctx))


def _pending(ctx: HealthContext, info: dict[str, Any]) -> tuple[int, float]:
    """(segments waiting for the archiver, age in seconds of the oldest one): the .ready files when
    pg_ls_archive_statusdir() is allowed (superuser, pg_monitor), else from pg_stat_archiver."""
    try:
        n, oldest = ctx.conn.conn.execute(
            "SELECT count(*), coalesce(extract(epoch FROM now() - min(modification)), 0)"
            " FROM pg_ls_archive_statusdir() WHERE name LIKE '%.ready'").fetchone()
        return int(n), float(oldest)
    except Exception as exc:
        if "permission denied" not in str(exc):
            raise
    current, last = info["current_wal"], info["last_archived_wal"]
    if not current or not last or last[:8] != current[:8]:
        return 0, 0.0
    n = max(0, names.segment_number(current) - names.segment_number(last) - 1)  # closed since the last archived
    return n, float(info["last_archived_age"] or 0) if n else 0.0


def archive_lag(ctx: HealthContext) -> list[CheckResult]:
    """Seconds since the oldest WAL segment still waiting for archive_command was closed (0: none waits)."""
    info = _archiver(ctx)
    if info["in_recovery"] or not archives_to_repository(ctx) or (info["archive_mode"] == "off" and _stream_slots(ctx)):
        return []
    if info["archive_mode"] == "off":
        return [CheckResult("wal_archive_lag", WARNING, None, "s", None,
                            "backup.method is physical but archive_mode is off: base backups restore to their end "
                            "only; set archive_mode = on and archive_command = 'dbfleet wal push %p --db ID' (or run "
                            "dbfleet wal stream) for point-in-time recovery")]
    n, age = _pending(ctx, info)
    warn = ctx.threshold("wal_archive_lag_seconds", 300.0)
    r = result("wal_archive_lag", round(age, 1), "s", warn, 6 * warn,
               f"{n} WAL segments wait for archive_command (oldest closed {age:.0f} s ago): check the "
               "server log for archive_command errors and the repository's reachability")
    r.hint = r.hint or f"{n} segments waiting"
    age_of_last = info["last_archived_age"]
    return [r, CheckResult("wal_archive_last_archived_age", OK, None if age_of_last is None else
                           round(float(age_of_last), 1), "s", None, f"last archived {info['last_archived_wal']}")]


def archive_failures(ctx: HealthContext) -> list[CheckResult]:
    """archive_command failures since the previous run; critical while the newest attempt failed."""
    info = _archiver(ctx)
    if info["in_recovery"] or info["archive_mode"] == "off" or not archives_to_repository(ctx):
        return []
    new = ctx.delta("pg_archiver_failed_count", float(info["failed_count"]))
    status = CRITICAL if info["failing"] else (WARNING if new else OK)
    hint = None
    if status != OK:
        hint = (f"archive_command failed on {info['last_failed_wal']} ({info['failed_count']} failures since the "
                "statistics reset)" + ("; it is still failing, WAL piles up in pg_wal" if info["failing"] else ""))
    return [CheckResult("wal_archive_failures", status, int(new or 0), "failures", 0, hint)]


def repository(ctx: HealthContext) -> list[CheckResult]:
    """The repository's side: age of the newest archived segment and gaps after the base backups."""
    if not archives_to_repository(ctx):
        return []
    opener = ctx.scratch.get("wal_archive")
    if opener is None:
        raise CannotCheck("no repository given to this health check (run it through the health task)")
    view = _repository_view(ctx, opener)
    age = None
    if view.get("newest_at"):
        age = round((datetime.now(timezone.utc) - datetime.fromisoformat(view["newest_at"])).total_seconds(), 1)
    limit = _age_limit(ctx)
    age_status = OK if limit is None or age is None else level(age, limit, 6 * limit)
    gaps = int(view.get("gap_segments") or 0)
    return [
        CheckResult("wal_archive_last_segment_age", age_status, age, "s", limit,
                    None if age_status == OK else f"the newest segment in the repository, {view.get('newest_segment')}, "
                    f"was archived {age:.0f} s ago although archive_timeout is {_archiver(ctx)['archive_timeout']} s"
                    if age is not None else None),
        CheckResult("wal_archive_gaps", CRITICAL if gaps else OK, gaps, "segments", 0,
                    f"{gaps} WAL segments missing after base backup {view.get('gap_backup')} (first: "
                    f"{view.get('first_missing')}): point-in-time recovery past them is impossible; take a new "
                    "base backup (dbfleet backups run --physical) and see dbfleet wal status" if gaps else None),
    ]


def _age_limit(ctx: HealthContext) -> float | None:
    """A threshold for the newest segment's age: configured, or 2 x archive_timeout + 60 s when one is set
    (without archive_timeout an idle server closes no segment, so age alone proves nothing)."""
    configured = (ctx.db.thresholds.model_extra or {}).get("wal_archive_age_seconds")
    if configured is not None:
        return float(configured)
    timeout = int(_archiver(ctx)["archive_timeout"] or 0)
    return 2.0 * timeout + 60 if timeout > 0 else None


def _repository_view(ctx: HealthContext, opener: Any) -> dict[str, Any]:
    from engines.backup.wal.status import archive_status

    every = ctx.threshold("wal_repository_check_seconds", 300.0)
    cached = ctx.memory.get("wal_repository")
    if cached and ctx.now - float(cached["at"]) < every:
        return dict(cached["view"])
    report = archive_status(opener(ctx.db))
    worst = max(report["base_backups"], key=lambda b: b["missing_count"], default=None)
    view = {"newest_segment": report["newest_segment"], "newest_at": report["newest_at"],
            "gap_segments": worst["missing_count"] if worst else 0,
            "gap_backup": worst["backup_id"] if worst else None,
            "first_missing": (worst["missing"] or [None])[0] if worst else None}
    ctx.memory["wal_repository"] = {"at": ctx.now, "view": view}
    return view


def slot_retention(ctx: HealthContext) -> CheckResult:
    """The most WAL any replication slot holds back (bytes); a slot that lost WAL is critical."""
    rows = ctx.conn.conn.execute(
        "SELECT slot_name, active, coalesce(wal_status, ''), pg_wal_lsn_diff(CASE WHEN pg_is_in_recovery()"
        " THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END, restart_lsn)"
        " FROM pg_replication_slots WHERE restart_lsn IS NOT NULL ORDER BY 4 DESC").fetchall()
    if not rows:
        return CheckResult("replication_slot_wal", OK, 0, "bytes", None, None)
    name, active, wal_status, retained = rows[0]
    lost = [r[0] for r in rows if r[2] in ("lost", "unreserved")]
    warn = ctx.threshold("slot_wal_retention_bytes", float(1 << 30))
    r = result("replication_slot_wal", int(retained or 0), "bytes", warn, 4 * warn,
               f"slot {name} ({'active' if active else 'inactive'}) holds back {int(retained or 0)} bytes of WAL: "
               "its consumer is behind or gone; reconnect it or pg_drop_replication_slot() it")
    if lost:
        r.status = CRITICAL
        r.hint = (f"slots {', '.join(lost)} passed max_slot_wal_keep_size (wal_status lost/unreserved): their "
                  "consumers will miss WAL; for a dbfleet wal stream take a new base backup after it resumes")
    return r


def _stream_slots(ctx: HealthContext) -> list[tuple[Any, ...]]:
    """Physical slots of ``dbfleet wal stream`` for this database: (name, active, seconds since the stream's
    last reply or None, bytes not yet flushed by the stream)."""
    def read() -> list[tuple[Any, ...]]:
        return list(ctx.conn.conn.execute(
            "SELECT s.slot_name, s.active, extract(epoch FROM now() - r.reply_time),"
            " CASE WHEN pg_is_in_recovery() THEN NULL"
            " ELSE pg_wal_lsn_diff(pg_current_wal_lsn(), coalesce(r.flush_lsn, s.restart_lsn)) END"
            " FROM pg_replication_slots s LEFT JOIN pg_stat_replication r ON r.pid = s.active_pid"
            " WHERE s.slot_type = 'physical' AND s.slot_name = %s", (names.stream_slot(ctx.db.id),)).fetchall())
    rows: list[tuple[Any, ...]] = ctx.once("pg_stream_slots", read)
    return rows


def stream(ctx: HealthContext) -> list[CheckResult]:
    """A ``dbfleet wal stream`` whose slot exists must be connected and keep up."""
    rows = _stream_slots(ctx)
    if not rows:
        return []
    name, active, silent, behind = rows[0]
    limit = ctx.threshold("wal_stream_stall_seconds", 120.0)
    if not active:
        return [CheckResult("wal_stream", CRITICAL, None, "s", limit,
                            f"no pg_receivewal is connected to slot {name}: the WAL stream stopped (is "
                            "`dbfleet wal stream` running?); the slot keeps WAL on the server until it resumes")]
    stalled = silent is not None and float(silent) > limit
    return [CheckResult("wal_stream", CRITICAL if stalled else OK, round(float(silent or 0), 1), "s", limit,
                        f"the stream on slot {name} has not replied for {float(silent):.0f} s "
                        f"({int(behind or 0)} bytes not flushed)" if stalled else None)]
