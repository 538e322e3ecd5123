"""MariaDB (and MySQL-compatible MariaDB) replicas in a DR group: GTID replication.

Setup clones the primary's user databases into a replica with ``mariadb-dump --single-transaction --gtid``
(the password in a 0600 defaults file, never on a command line), sets ``gtid_slave_pos`` from the dump and
``CHANGE MASTER ... MASTER_USE_GTID=slave_pos`` (the replication password as a driver parameter). Observe
reads ``Seconds_Behind_Master`` and GTID positions against the RPO. Failover runs under the same lease and
fencing token as PostgreSQL: fence the old primary (``read_only=ON`` + kill its client connections when it
answers, and the fence command), pick the replica that received the most (``Gtid_IO_Pos``), let it apply its
relay log, ``STOP SLAVE; RESET SLAVE ALL; read_only=OFF``, repoint the others, redirect. Rejoin makes an
old primary a read-only replica of the new one.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

from engines.backup.tools import private_dir, secret_file
from engines.config import DatabaseConfig
from engines.connectors.mysql import client_args, connect_kwargs
from engines.dr.context import DRContext
from engines.dr.coord import Lease
from engines.dr.failover import Refused, redirect, under_lease
from engines.dr.fence import run_hook
from engines.dr.models import DREvent, DRStatus, NodeStatus
from engines.dr.pgnode import wait_until
from engines.errors import DbfleetError
from engines.secrets import scrub

SYSTEM_SCHEMAS = ("mysql", "information_schema", "performance_schema", "sys")
_GTID_LINE = re.compile(r"gtid_slave_pos\s*=\s*'([0-9,\-]*)'")
APPLY_WAIT = 60


class MySQLDRError(DbfleetError):
    """A MariaDB replica cannot be set up, promoted or rejoined as asked."""


def connect(db: DatabaseConfig, timeout: float = 3.0) -> Any:
    """An autocommit PyMySQL connection returning dict rows."""
    import pymysql

    kwargs = connect_kwargs(db.model_copy(update={"connect_timeout": min(db.connect_timeout, timeout)}), db.password())
    kwargs["database"] = None
    return pymysql.connect(**kwargs, autocommit=True, cursorclass=pymysql.cursors.DictCursor,
                           read_timeout=int(max(timeout, 5)), write_timeout=int(max(timeout, 5)))


def run(db: DatabaseConfig, statement: str, params: Any = None, timeout: float = 3.0) -> list[dict[str, Any]]:
    """One statement on ``db``; its rows as dicts."""
    conn = connect(db, timeout)
    try:
        with conn.cursor() as cur:
            cur.execute(statement, params)
            return list(cur.fetchall() or [])
    finally:
        conn.close()


def gtid_map(text: str | None) -> dict[tuple[int, int], int]:
    """``'0-1-100,1-2-5'`` -> {(domain, server): seq}; the highest seq per domain is what counts."""
    out: dict[tuple[int, int], int] = {}
    for part in (text or "").split(","):
        part = part.strip()
        if part:
            domain, server, seq = (int(x) for x in part.split("-"))
            out[(domain, server)] = seq
    return out


def gtid_seq(text: str | None) -> dict[int, int]:
    """Per replication domain, the highest sequence number in a GTID position."""
    out: dict[int, int] = {}
    for (domain, _server), seq in gtid_map(text).items():
        out[domain] = max(out.get(domain, 0), seq)
    return out


def behind(primary: str | None, replica: str | None) -> int:
    """Transactions ``replica`` lacks compared to ``primary`` (summed over domains)."""
    have = gtid_seq(replica)
    return sum(max(0, seq - have.get(domain, 0)) for domain, seq in gtid_seq(primary).items())


def advance(text: str | None) -> tuple[int, ...]:
    """A sortable measure of how far a position got (total of the per-domain sequence numbers)."""
    seqs = gtid_seq(text)
    return (sum(seqs.values()),)


# --- nodes -------------------------------------------------------------------------------------------

def node(database_id: str, db: DatabaseConfig) -> tuple[NodeStatus, dict[str, Any]]:
    """Role, GTID positions, read_only and replication threads of one server."""
    try:
        (row,) = run(db, "SELECT @@gtid_binlog_pos AS binlog, @@gtid_slave_pos AS slave, @@read_only AS ro")
        status = run(db, "SHOW SLAVE STATUS")
    except Exception as exc:
        return NodeStatus(database=database_id, reachable=False, error=scrub(str(exc))[:300]), {}
    if not status:
        return NodeStatus(database=database_id, reachable=True, role="primary", lsn=row["binlog"],
                          read_only=bool(row["ro"])), {"row": row}
    s = status[0]
    io_pos = s.get("Gtid_IO_Pos") or row["slave"]
    return NodeStatus(database=database_id, reachable=True, role="standby", lsn=row["slave"], receive_lsn=io_pos,
                      read_only=bool(row["ro"]), streaming=s.get("Slave_IO_Running") == "Yes"
                      and s.get("Slave_SQL_Running") == "Yes",
                      lag_seconds=None if s.get("Seconds_Behind_Master") is None
                      else float(s["Seconds_Behind_Master"])), {"row": row, "slave": s}


def observe(ctx: DRContext, *, report: bool = True) -> DRStatus:
    """Primary up and writable, replicas running, Seconds_Behind_Master and GTID distance vs the RPO."""
    primary_id = ctx.current_primary()
    primary, _ = node(primary_id, ctx.db(primary_id))
    up = primary.reachable and primary.role == "primary" and not primary.read_only
    nodes, problems = [primary], [] if up else [f"primary {primary_id} unreachable, read-only or a replica"]
    for sid in ctx.standbys():
        replica, extra = node(sid, ctx.db(sid))
        nodes.append(replica)
        if not replica.reachable:
            problems.append(f"replica {sid} unreachable")
            continue
        if replica.role == "primary" and not replica.read_only and up:  # a second writable server: fence it
            fence_sql(ctx.db(sid))
            ctx.coord.set_fenced(ctx.dr_id, sid)
            problems.append(f"{sid} accepted writes beside {primary_id}: fenced (read_only=ON); dr rejoin {sid}")
            continue
        if replica.role != "standby":
            problems.append(f"{sid} is not replicating: dr rejoin {sid}")
            continue
        if up:
            replica.lag_bytes = behind(primary.lsn, replica.lsn)  # here: transactions not applied yet
            if replica.lag_bytes == 0:
                replica.lag_seconds = 0.0
        if replica.lag_seconds is not None and ctx.cfg.rpo_seconds > 0:
            replica.rpo_budget_ratio = round(replica.lag_seconds / ctx.cfg.rpo_seconds, 4)
        problems += _replica_problems(ctx, replica, extra)
    status = DRStatus(dr_id=ctx.dr_id, observed_at=ctx.clock(), observer=ctx.observer, primary=primary_id,
                      primary_reachable=up, nodes=nodes, rpo_seconds=ctx.cfg.rpo_seconds, ok=not problems,
                      problems=problems)
    if report:
        ctx.coord.save_status(ctx.dr_id, status.model_dump(mode="json"))
        ctx.coord.report(ctx.dr_id, ctx.observer, up, status.observed_at)
    return status


def _replica_problems(ctx: DRContext, replica: NodeStatus, extra: dict[str, Any]) -> list[str]:
    out = []
    if not replica.streaming:
        err = (extra.get("slave") or {}).get("Last_Error") or (extra.get("slave") or {}).get("Last_IO_Error") or ""
        out.append(f"replica {replica.database} replication stopped {scrub(str(err))[:200]}".rstrip())
    if replica.rpo_budget_ratio is not None and replica.rpo_budget_ratio > 1:
        out.append(f"replica {replica.database} lag {replica.lag_seconds:.0f}s exceeds RPO {ctx.cfg.rpo_seconds:.0f}s")
    if not replica.read_only:
        out.append(f"replica {replica.database} is not read_only")
    return out


# --- fence, promote, repoint --------------------------------------------------------------------------

def fence_sql(db: DatabaseConfig) -> bool:
    """``read_only=ON`` and every client connection killed (replication threads spared)."""
    try:
        run(db, "SET GLOBAL read_only = ON")
        for row in run(db, "SELECT id FROM information_schema.processlist WHERE id <> CONNECTION_ID() "
                           "AND command NOT IN ('Binlog Dump', 'Binlog Dump GTID', 'Daemon', 'Slave_IO', "
                           "'Slave_SQL', 'Slave_worker') AND user NOT IN ('system user', 'event_scheduler')"):
            try:
                run(db, "KILL CONNECTION %s", [int(row["id"])])
            except Exception:  # gone meanwhile
                pass
        return True
    except Exception:
        return False


def replicate_from(ctx: DRContext, replica: DatabaseConfig, source: DatabaseConfig, *, gtid: str | None = None) -> None:
    """Make ``replica`` a read-only GTID replica of ``source`` (password as a driver parameter)."""
    run(replica, "STOP SLAVE")
    run(replica, "SET GLOBAL read_only = ON")
    if gtid is not None:
        run(replica, "SET GLOBAL gtid_slave_pos = %s", [gtid])
    run(replica, "CHANGE MASTER TO MASTER_HOST = %s, MASTER_PORT = %s, MASTER_USER = %s, MASTER_PASSWORD = %s, "
                 "MASTER_USE_GTID = slave_pos, MASTER_CONNECT_RETRY = 1",
        [source.host or "127.0.0.1", int(source.port or 3306), ctx.cfg.replication_user,
         ctx.replication_password() or ""])
    run(replica, "START SLAVE")


def failover(ctx: DRContext, *, reason: str = "", force: bool = False, emergency: bool = False) -> DREvent:
    """Promote the most advanced MariaDB replica under the group's lease and fencing token."""
    return under_lease(ctx, reason, force or emergency, lambda event, lease: _run(ctx, event, lease, force or emergency))


def _run(ctx: DRContext, event: DREvent, lease: Lease, force: bool) -> None:
    old = event.old_primary = ctx.current_primary()
    old_status, _ = node(old, ctx.db(old))
    old_up = old_status.reachable and old_status.role == "primary" and not old_status.read_only
    if old_up and not force:
        raise Refused("refused", f"primary {old} is reachable and writable; force (or emergency) to fail over anyway")
    usable = [n for n in (node(s, ctx.db(s))[0] for s in ctx.standbys()) if n.reachable and n.role == "standby"]
    if not usable:
        raise Refused("failed", "no reachable replica to promote")
    cand = max(usable, key=lambda n: advance(n.receive_lsn or n.lsn))
    event.steps.append(f"candidate {cand.database} at {cand.receive_lsn or cand.lsn}")
    _estimate(ctx, event, cand, old_status if old_up else None)
    if not force:
        _check_rpo(ctx, event)
    _fence(ctx, event, old, old_up, lease)
    if not ctx.coord.claim_promotion(lease):
        raise Refused("stale", f"token {lease.token} is no longer current; not promoting")
    event.steps.append(f"promotion claimed with token {lease.token}")
    _promote(ctx, event, cand)
    for sid in ctx.standbys():
        if sid in (cand.database, old) and not (sid == old and old_up):
            continue
        try:
            replicate_from(ctx, ctx.db(sid), ctx.db(cand.database))
            event.steps.append(f"{sid} now replicates {cand.database}")
        except Exception as exc:
            event.steps.append(f"{sid}: could not repoint ({type(exc).__name__}); dr rejoin {sid}")
    ctx.coord.clear_observers(ctx.dr_id)
    redirect(ctx, event)


def _estimate(ctx: DRContext, event: DREvent, cand: NodeStatus, old: NodeStatus | None) -> None:
    seen = ctx.coord.last_primary_seen(ctx.dr_id)
    primary_pos = old.lsn if old else (seen or {}).get("lsn")
    if primary_pos is None:
        return
    lost = behind(primary_pos, cand.receive_lsn or cand.lsn)
    event.measures["transactions_lost"] = lost
    lag = (seen or {}).get("lag_seconds", {}).get(cand.database)
    event.data_loss_seconds = 0.0 if lost == 0 else (float(lag) if lag is not None else None)


def _check_rpo(ctx: DRContext, event: DREvent) -> None:
    if "transactions_lost" not in event.measures:
        raise Refused("refused", "no observation of the primary's GTID position: data loss unknown; "
                                 "run dr observe first, or force")
    if event.measures["transactions_lost"] and event.data_loss_seconds is None:
        raise Refused("refused", f"candidate lacks {event.measures['transactions_lost']} transactions of unknown "
                                 "age; force to accept")
    if (event.data_loss_seconds or 0) > ctx.cfg.rpo_seconds:
        raise Refused("refused", f"candidate lag {event.data_loss_seconds:.1f}s exceeds RPO "
                                 f"{ctx.cfg.rpo_seconds:.0f}s; force to accept the loss")


def _fence(ctx: DRContext, event: DREvent, old: str, old_up: bool, lease: Lease) -> None:
    event.fenced_sql = fence_sql(ctx.db(old)) if old_up else None
    hook = run_hook("fence", ctx.cfg.fence_command, {"DBFLEET_DR_ID": ctx.dr_id, "DBFLEET_DR_TOKEN": str(lease.token),
                                                     "DBFLEET_DR_OLD_PRIMARY": old}, ctx.cfg.command_timeout)
    event.hooks.append(hook)
    ctx.coord.set_fenced(ctx.dr_id, old)
    if old_up and not event.fenced_sql and hook.returncode != 0:
        raise Refused("failed", f"cannot fence {old}: read_only failed and the fence command did not succeed")


def _promote(ctx: DRContext, event: DREvent, cand: NodeStatus) -> None:
    """Apply what was received, stop replicating, forget the source, accept writes."""
    db = ctx.db(cand.database)
    run(db, "STOP SLAVE IO_THREAD")
    received = cand.receive_lsn or cand.lsn or ""
    if received:
        (row,) = run(db, "SELECT MASTER_GTID_WAIT(%s, %s) AS w", [received, APPLY_WAIT], timeout=APPLY_WAIT + 5)
        event.steps.append(f"{cand.database} applied its relay log up to {received}" if row["w"] == 0 else
                           f"{cand.database} did NOT apply up to {received} within {APPLY_WAIT}s")
    run(db, "STOP SLAVE")
    run(db, "RESET SLAVE ALL")
    run(db, "SET GLOBAL read_only = OFF")
    if not wait_until(lambda: run(db, "SELECT @@read_only AS ro")[0]["ro"] == 0, 10):
        raise Refused("failed", f"{cand.database} stayed read-only")
    ctx.coord.set_primary(ctx.dr_id, cand.database)
    ctx.coord.set_fenced(ctx.dr_id, cand.database, False)
    event.new_primary, event.status = cand.database, "promoted"
    event.steps.append(f"{cand.database} promoted (STOP SLAVE, RESET SLAVE ALL, read_only=OFF)")
    down = [o["since"] for o in ctx.coord.observers(ctx.dr_id).values() if o.get("state") == "down"]
    event.downtime_seconds = round(ctx.clock() - min([event.started_at, *down]), 3)


# --- setup and rejoin ---------------------------------------------------------------------------------

def _user_databases(db: DatabaseConfig) -> list[str]:
    return [r["Database"] for r in run(db, "SHOW DATABASES") if r["Database"] not in SYSTEM_SCHEMAS]


def _client(tool: str, db: DatabaseConfig, tmp: Path, extra: list[str], stdin: Any = None,
            stdout: Any = None) -> None:
    """Run ``mariadb``/``mariadb-dump`` with the password in a 0600 defaults file (never on the command line)."""
    password = db.password() or ""
    escaped = password.replace("\\", "\\\\").replace('"', '\\"')
    defaults = secret_file(tmp, f"{db.id}.cnf", f'[client]\npassword="{escaped}"\n')
    proc = subprocess.run([tool, *client_args(db, defaults), *extra], stdin=stdin, stdout=stdout,
                          stderr=subprocess.PIPE, timeout=6 * 3600)
    if proc.returncode != 0:
        message = scrub(proc.stderr.decode(errors="replace"))[-800:]
        raise MySQLDRError(f"{tool} ({db.id}) exited {proc.returncode}: {message}")


def clone(ctx: DRContext, replica_id: str, primary_id: str) -> str:
    """Dump the primary's user databases into the replica; returns the dump's GTID position."""
    primary, replica = ctx.db(primary_id), ctx.db(replica_id)
    schemas = _user_databases(primary)
    with private_dir(prefix="dbfleet-dr-mysql-") as tmp:
        dump = tmp / "dump.sql"
        with open(dump, "wb") as out:
            _client("mariadb-dump", primary, tmp, ["--single-transaction", "--gtid", "--master-data=2", "--routines",
                                                  "--events", "--triggers", "--databases", *schemas], stdout=out)
        gtid = None
        with open(dump, errors="replace") as fh:
            for line in fh:  # a commented line at the very end of the dump (MariaDB 10.11)
                if line.startswith("--"):
                    match = _GTID_LINE.search(line)
                    gtid = match.group(1) if match else gtid
        if gtid is None:
            raise MySQLDRError(f"the dump of {primary_id} carries no GTID position (is log_bin on?)")
        run(replica, "STOP SLAVE")
        run(replica, "SET GLOBAL read_only = ON")
        with open(dump, "rb") as inp:
            _client("mariadb", replica, tmp, [], stdin=inp)
    return gtid


def setup(ctx: DRContext, *, wait: float = 60.0) -> DREvent:
    """Every replica: clone (when it has none of the primary's databases) and replicate with GTID."""
    event = DREvent(dr_id=ctx.dr_id, kind="setup", status="done", holder=ctx.observer, started_at=ctx.clock(),
                    old_primary=ctx.current_primary())
    primary_id = ctx.current_primary()
    try:
        for sid in ctx.standbys():
            replica, _ = node(sid, ctx.db(sid))
            if replica.role == "standby" and replica.streaming:
                event.steps.append(f"{sid}: already replicating")
                continue
            gtid = clone(ctx, sid, primary_id)
            replicate_from(ctx, ctx.db(sid), ctx.db(primary_id), gtid=gtid)
            ok = wait_until(lambda s=sid: node(s, ctx.db(s))[0].streaming, wait)
            event.steps.append(f"{sid}: cloned from {primary_id} at {gtid}, " + ("replicating" if ok else
                                                                                "NOT replicating"))
            if not ok:
                raise MySQLDRError(f"{sid} did not start replicating within {wait:.0f}s")
    except (DbfleetError, OSError) as exc:
        event.status, event.detail = "failed", scrub(str(exc))
    if ctx.coord.primary(ctx.dr_id) is None:
        ctx.coord.set_primary(ctx.dr_id, primary_id)
    event.finished_at = ctx.clock()
    return ctx.record(event)


def rejoin(ctx: DRContext, database_id: str, *, wait: float = 60.0) -> DREvent:
    """An old primary becomes a read-only replica of the current primary, from its own binlog position."""
    event = DREvent(dr_id=ctx.dr_id, kind="rejoin", status="failed", holder=ctx.observer, started_at=ctx.clock(),
                    old_primary=database_id)
    primary = ctx.current_primary()
    try:
        if database_id == primary:
            raise MySQLDRError(f"{database_id} is the current primary")
        db = ctx.db(database_id)
        fence_sql(db)
        (row,) = run(db, "SELECT @@gtid_binlog_pos AS pos")
        replicate_from(ctx, db, ctx.db(primary), gtid=row["pos"])
        ok = wait_until(lambda: node(database_id, db)[0].streaming, wait)
        status, extra = node(database_id, db)
        if not ok:
            err = (extra.get("slave") or {}).get("Last_IO_Error") or (extra.get("slave") or {}).get("Last_Error")
            raise MySQLDRError(f"{database_id} does not replicate from {primary} ({scrub(str(err))[:300]}); its "
                               "history may have diverged: re-clone it with dr setup")
        event.steps.append(f"{database_id} replicates {primary} from {row['pos']} (read_only)")
        event.new_primary, event.status = primary, "done"
        ctx.coord.set_fenced(ctx.dr_id, database_id, False)
    except (DbfleetError, OSError) as exc:
        event.detail = scrub(str(exc))
    except Exception as exc:  # the server refused a statement
        event.detail = f"{type(exc).__name__}: {scrub(str(exc))[:300]}"
    event.finished_at = ctx.clock()
    return ctx.record(event)
