"""Rejoin: an old primary comes back as a standby of the current primary (pg_rewind), never as a primary."""

from __future__ import annotations

from pathlib import Path

from engines.backup.dumpers.postgres import conn_params, passfile_text
from engines.backup.tools import private_dir, run_tool, secret_file
from engines.config import DatabaseConfig
from engines.dr.context import DRContext
from engines.dr.fence import fence_data_dir
from engines.dr.models import DREvent, DRStrategy
from engines.dr.pgnode import (
    as_owner,
    chown_like,
    data_major,
    pg_ctl,
    query,
    running,
    server_bin,
    shut_down_cleanly,
    wait_until,
    write_auto_conf,
)
from engines.dr.setup import SetupError, ensure_slot, passfile, standby_settings
from engines.errors import DbfleetError


def rewind(data_dir: Path, source: DatabaseConfig) -> str:
    """``pg_rewind`` the stopped cluster in ``data_dir`` onto ``source`` (admin role, password by passfile)."""
    from psycopg.conninfo import make_conninfo

    # a just-promoted source may not have checkpointed yet: its control file still names the old timeline,
    # and pg_rewind would then answer "no rewind required" for a node whose history diverged
    query(source, "CHECKPOINT", timeout=60)
    binary = server_bin("pg_rewind", data_major(data_dir))
    conninfo = make_conninfo("", host=source.host, port=source.port, user=source.user or "postgres",
                             dbname=source.dbname or "postgres", connect_timeout=10)
    with private_dir(prefix="dbfleet-rewind-") as tmp:
        env: dict[str, str] = {}
        password = source.password()
        if password is not None:  # a line for the source's host, port, database and user only
            params = conn_params(source)
            env["PGPASSFILE"] = str(secret_file(tmp, "pgpass", passfile_text(params, password, [params["dbname"]])))
            chown_like(Path(env["PGPASSFILE"]), data_dir)
            chown_like(tmp, data_dir)
        args = [str(binary), "--target-pgdata", str(data_dir), "--source-server", conninfo]
        out = run_tool(as_owner(args, data_dir), env=env, what="pg_rewind", timeout=6 * 3600)
    return out.strip().splitlines()[-1] if out.strip() else "pg_rewind done"


def make_clean(data_dir: Path, steps: list[str]) -> None:
    """Stop the node; after a crash, start it (fenced: in recovery) and stop it, so pg_rewind accepts it."""
    if running(data_dir):
        pg_ctl(data_dir, "stop", "-m", "fast")
        steps.append("stopped")
    if not shut_down_cleanly(data_dir):
        pg_ctl(data_dir, "start")
        pg_ctl(data_dir, "stop", "-m", "fast")
        steps.append("crash recovery run (read-only) and stopped cleanly")


def rejoin(ctx: DRContext, database_id: str, *, wait: float = 60.0) -> DREvent:
    """Rewind ``database_id`` onto the current primary and start it as a streaming standby."""
    event = DREvent(dr_id=ctx.dr_id, kind="rejoin", status="failed", holder=ctx.observer,
                    started_at=ctx.clock(), old_primary=database_id)
    try:
        event.new_primary = _rejoin(ctx, database_id, event.steps, wait)
        event.status = "done"
    except (DbfleetError, OSError) as exc:
        event.detail = f"{type(exc).__name__}: {exc}"
    event.finished_at = ctx.clock()
    return ctx.record(event)


def _rejoin(ctx: DRContext, database_id: str, steps: list[str], wait: float) -> str:
    primary = ctx.current_primary()
    if database_id == primary:
        raise SetupError(f"{database_id} is the current primary; rejoin is for an old primary or a broken standby")
    data_dir = ctx.local_data_dir(database_id)
    if data_dir is None:
        raise SetupError(f"{database_id}: no data_dir with its cluster on this host; run the rejoin on its host, "
                         "or dr setup to re-clone")
    fence_data_dir(data_dir)  # whatever happens next, a start comes up read-only
    make_clean(data_dir, steps)
    steps.append(f"pg_rewind onto {primary}: {rewind(data_dir, ctx.db(primary))}")
    (data_dir / "standby.signal").touch()
    if ctx.cfg.strategy == DRStrategy.WARM_STANDBY:  # back as a warm standby: fed by the archive again
        from engines.dr.warm import warm_settings

        write_auto_conf(data_dir, warm_settings(ctx, database_id))
        pg_ctl(data_dir, "start", env=ctx.server_env)
        up = wait_until(lambda: query(ctx.db(database_id), "SELECT pg_is_in_recovery()") == [(True,)], wait)
        steps.append(f"{database_id} started as a warm standby (archive of {primary}'s group): "
                     f"{'in recovery' if up else 'NOT up'}")
        if not up:
            raise SetupError(f"{database_id} did not come up as a warm standby within {wait:.0f}s")
        ctx.coord.set_fenced(ctx.dr_id, database_id, False)
        return primary
    pfile = passfile(ctx, database_id)
    ensure_slot(ctx.db(primary), ctx.cfg.slot_name(database_id))
    write_auto_conf(data_dir, standby_settings(ctx, database_id, primary, pfile))
    pg_ctl(data_dir, "start")
    streaming = wait_until(lambda: query(ctx.db(database_id), "SELECT status FROM pg_stat_wal_receiver")
                           == [("streaming",)], wait)
    steps.append(f"{database_id} started as a standby of {primary}: {'streaming' if streaming else 'NOT streaming'}")
    if not streaming:
        raise SetupError(f"{database_id} did not start streaming from {primary} within {wait:.0f}s")
    ctx.coord.set_fenced(ctx.dr_id, database_id, False)
    if ctx.cfg.synchronous:
        from engines.dr.sync import apply

        steps.append(f"{primary}: synchronous_standby_names = {apply(ctx, primary)!r}")
    return primary
