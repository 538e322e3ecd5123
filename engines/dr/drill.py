"""DR drill on a throwaway copy: clone the primary into scratch cluster A, give A a streaming standby B,
write marker rows to A at a fixed rate, crash A, let the observers fail over, and measure.

RTO = first failed write -> first successful write on the new primary. RPO = markers acknowledged by A
that B does not have. The real group is only read (one ``pg_basebackup``); its hooks never run.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from engines.config import DatabaseConfig
from engines.dr.auto import observe_and_act
from engines.dr.context import DRContext
from engines.dr.models import DRConfiguration, DREvent, DRStrategy
from engines.dr.observe import observe
from engines.dr.pgnode import chown_like, pg_ctl, query, running, wait_until, write_auto_conf
from engines.dr.setup import basebackup, passfile
from engines.embedded.redis import free_port
from engines.errors import DbfleetError

MARKERS = "dbfleet_dr_drill_markers"


@dataclass
class Markers:
    """The writer's log: acknowledged markers (seq -> time, node) and the outage edges."""

    acked: dict[int, tuple[float, str]] = field(default_factory=dict)
    first_failure: float | None = None
    first_success_after: float | None = None
    recovered_on: str | None = None


def _writer(ctx: DRContext, rate: float, stop: threading.Event, log: Markers) -> None:
    seq = 0
    while not stop.is_set():
        node = ctx.current_primary()
        try:
            query(ctx.db(node), f"INSERT INTO {MARKERS} (seq) VALUES (%s)", [seq + 1], timeout=1)  # noqa: S608
            seq += 1
            now = time.time()
            log.acked[seq] = (now, node)
            if log.first_failure is not None and log.first_success_after is None:
                log.first_success_after, log.recovered_on = now, node
        except Exception:
            if log.first_failure is None:
                log.first_failure = time.time()
        stop.wait(1.0 / rate)


def _scratch_config(ctx: DRContext, root: Path) -> DRConfiguration:
    primary = ctx.cfg.primary_site
    if primary is None:
        raise DbfleetError("a drill needs a primary site")
    return ctx.cfg.model_copy(update={
        "dr_id": f"{ctx.dr_id}-drill-{int(time.time())}", "fence_command": [], "redirect_command": [],
        "auto_failover_enabled": True, "lease_ttl": 30.0, "restart_in_place": False,
        "primary_site": primary.model_copy(update={"database": "drill_a", "data_dir": str(root / "a")}),
        "secondary_sites": [ctx.cfg.secondary_sites[0].model_copy(update={"database": "drill_b",
                                                                          "data_dir": str(root / "b")})]})


def _scratch_ctx(ctx: DRContext, root: Path) -> DRContext:
    source = ctx.db(ctx.current_primary())
    ports = {"drill_a": free_port(), "drill_b": free_port()}
    dbs = {name: source.model_copy(update={"id": name, "host": "127.0.0.1", "port": port})
           for name, port in ports.items()}

    def resolve(database_id: str) -> DatabaseConfig:
        return dbs[database_id]

    return DRContext(cfg=_scratch_config(ctx, root), resolve=resolve, coord=ctx.coord, state_dir=ctx.state_dir,
                     observer=f"{ctx.observer}-drill", history=None)


def _make_copy(ctx: DRContext, scratch: DRContext, root: Path) -> None:
    """A = base backup of the real primary started as a standalone primary; B = its streaming standby."""
    from engines.dr.setup import setup

    a = Path(scratch.cfg.site("drill_a").data_dir or "")
    basebackup(ctx, ctx.db(ctx.current_primary()), a, "", passfile(scratch, "drill_b"))
    (a / "standby.signal").unlink(missing_ok=True)
    write_auto_conf(a, {"port": str(scratch.db("drill_a").port), "listen_addresses": "127.0.0.1",
                        "unix_socket_directories": "", "primary_conninfo": None, "primary_slot_name": None,
                        "default_transaction_read_only": None, "synchronous_standby_names": "",
                        "archive_mode": "off"})
    pg_ctl(a, "start")
    query(scratch.db("drill_a"), f"CREATE TABLE {MARKERS} (seq bigint PRIMARY KEY, at timestamptz DEFAULT now())")
    scratch.coord.set_primary(scratch.dr_id, "drill_a")
    event = setup(scratch)
    if event.status != "done":
        raise DbfleetError(f"drill standby: {event.detail}")


def drill(ctx: DRContext, *, rate: float = 20.0, warmup: float = 1.0, timeout: float | None = None) -> DREvent:
    """Run a failover drill on a copy of the group; measures RTO and RPO and compares them to the targets."""
    if ctx.cfg.strategy == DRStrategy.BACKUP_RESTORE:  # no standby to copy: the drill is a restore
        from engines.dr.restore import drill as restore_drill

        return restore_drill(ctx, rate=rate)
    event = DREvent(dr_id=ctx.dr_id, kind="drill", status="failed", holder=ctx.observer, started_at=ctx.clock(),
                    reason="drill on a throwaway copy")
    if not ctx.cfg.primary_site or not ctx.cfg.secondary_sites:
        event.detail = "a drill needs a primary and a secondary site"
        return ctx.record(event)
    kind = ctx.db(ctx.current_primary()).kind
    if kind != "postgresql":
        event.detail = f"drills run on PostgreSQL groups; this group's primary is {kind} (use dr failover on a copy)"
        return ctx.record(event)
    root = _scratch_root(ctx)
    scratch = _scratch_ctx(ctx, root)
    try:
        _make_copy(ctx, scratch, root)
        event.measures = _measure(scratch, rate, warmup, timeout or max(60.0, ctx.cfg.rto_seconds))
        _judge(ctx, event)
    except (DbfleetError, OSError) as exc:
        event.detail = f"{type(exc).__name__}: {exc}"
    finally:
        _teardown(scratch, root)
    event.finished_at = ctx.clock()
    return ctx.record(event)


def _measure(scratch: DRContext, rate: float, warmup: float, timeout: float) -> dict[str, float | int | str]:
    log, stop = Markers(), threading.Event()
    writer = threading.Thread(target=_writer, args=(scratch, rate, stop, log), daemon=True)
    writer.start()
    observers = [scratch, replace(scratch, observer=f"{scratch.observer}-2")]

    def tick() -> bool:
        if scratch.current_primary() != "drill_b":
            for obs in observers:
                observe_and_act(obs)
        return scratch.current_primary() == "drill_b"

    try:
        time.sleep(warmup)
        for obs in observers:  # the observers know where the primary was before the fault
            observe(obs)
        fault_at = time.time()
        pg_ctl(scratch.cfg.site("drill_a").data_dir or "", "stop", "-m", "immediate")
        promoted = wait_until(tick, timeout, interval=0.2)
        wait_until(lambda: log.first_success_after is not None, 30)
    finally:
        stop.set()
        writer.join(10)
    if not promoted or log.first_success_after is None or log.first_failure is None:
        raise DbfleetError(f"the drill copy did not fail over within {timeout:.0f}s")
    present = {r[0] for r in query(scratch.db("drill_b"), f"SELECT seq FROM {MARKERS}")}  # noqa: S608
    lost = sorted(s for s, (_t, node) in log.acked.items() if node == "drill_a" and s not in present)
    lost_times = [log.acked[s][0] for s in lost]
    return {"rto_seconds": round(log.first_success_after - log.first_failure, 3),
            "fault_to_write_seconds": round(log.first_success_after - fault_at, 3),
            "rpo_markers": len(lost), "markers_acknowledged": len(log.acked),
            "rpo_seconds": round(max(lost_times) - min(lost_times) + 1.0 / rate, 3) if lost else 0.0,
            "rate_per_second": rate}


def _judge(ctx: DRContext, event: DREvent) -> None:
    m = event.measures
    m["rto_target_seconds"], m["rpo_target_seconds"] = ctx.cfg.rto_seconds, ctx.cfg.rpo_seconds
    misses = [f"RTO {m['rto_seconds']}s > {ctx.cfg.rto_seconds:.0f}s"] if m["rto_seconds"] > ctx.cfg.rto_seconds else []
    if m["rpo_seconds"] > ctx.cfg.rpo_seconds:
        misses.append(f"RPO {m['rpo_seconds']}s ({m['rpo_markers']} markers) > {ctx.cfg.rpo_seconds:.0f}s")
    event.status = "failed" if misses else "done"
    event.detail = "; ".join(misses) or "within targets"


def _scratch_root(ctx: DRContext) -> Path:
    site = ctx.cfg.primary_site
    parent = Path(site.data_dir).parent if site and site.data_dir and Path(site.data_dir).parent.is_dir() \
        else ctx.group_dir()
    root = Path(tempfile.mkdtemp(prefix=f"dbfleet-drill-{ctx.dr_id}-", dir=parent))
    chown_like(root, parent)
    return root


def _teardown(scratch: DRContext, root: Path) -> None:
    for site in scratch.cfg.sites():
        if site.data_dir and (Path(site.data_dir) / "PG_VERSION").exists() and running(site.data_dir):
            pg_ctl(site.data_dir, "stop", "-m", "immediate")
    scratch.coord.forget(scratch.dr_id)
    shutil.rmtree(root, ignore_errors=True)
