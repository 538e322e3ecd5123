"""`dbfleet dr setup|status|failover|switchover|drill|rejoin`: run in this process (this worker's host)."""

from __future__ import annotations

import sys
from typing import Any

import click

from workers.render import console, err_console, key_value_table, rows_table


def _ctx(group: str | None) -> Any:
    from workers.dr_api import context, groups

    if group is None:
        known = sorted(groups())
        if len(known) != 1:
            raise click.UsageError(f"name the DR group with --group (known: {', '.join(known) or 'none configured'})")
        group = known[0]
    return context(group)


def _show(event: Any) -> None:
    rows = [("group", event.dr_id), ("status", event.status), ("detail", event.detail or "-"),
            ("old primary", event.old_primary or "-"), ("new primary", event.new_primary or "-"),
            ("fencing token", event.token if event.token is not None else "-")]
    if event.downtime_seconds is not None:
        rows.append(("downtime", f"{event.downtime_seconds:.2f} s"))
    if event.data_loss_bytes is not None:
        rows.append(("data loss (estimate)", f"{event.data_loss_bytes} bytes"))
    rows += [(k.replace("_", " "), v) for k, v in event.measures.items()]
    rows += [(f"hook {h.what}", f"{' '.join(h.argv) or '-'} -> {h.returncode}") for h in event.hooks]
    rows += [("step", s) for s in event.steps]
    console.print(key_value_table(f"dr {event.kind}", rows))
    if not event.ok:
        sys.exit(1)


@click.group("dr")
def dr() -> None:
    """Disaster recovery: standbys, lag against RPO, fenced failover, switchover, rejoin, drills."""


_group = click.option("--group", "-g", help="DR group id (default: the only one configured)")


@dr.command("setup")
@_group
def dr_setup(group: str | None) -> None:
    """Create the standbys whose data_dir is on this host (pg_basebackup, slot, passfile) and start them."""
    from engines.dr.dispatch import engine_for
    from engines.dr.setup import setup

    ctx = _ctx(group)
    err_console.print(f"setting up {', '.join(ctx.standbys()) or 'the restore target'} from "
                      f"{ctx.current_primary()} ({ctx.cfg.strategy.value}) ...")
    _show((engine_for(ctx).setup or setup)(ctx))


@dr.command("status")
@_group
def dr_status(group: str | None) -> None:
    """Observe the group: roles, streaming, replay lag vs RPO, timeline, slots."""
    from engines.dr.dispatch import engine_for

    ctx = _ctx(group)
    status = engine_for(ctx).observe(ctx)
    rows = [[n.database, n.role, "yes" if n.reachable else "NO", n.timeline or "-", n.lsn or "-",
             "-" if n.streaming is None else ("yes" if n.streaming else "NO"),
             "-" if n.lag_bytes is None else n.lag_bytes, "-" if n.lag_seconds is None else f"{n.lag_seconds:.2f}",
             "-" if n.rpo_budget_ratio is None else f"{n.rpo_budget_ratio:.0%}",
             "-" if n.slot_retained_bytes is None else n.slot_retained_bytes] for n in status.nodes]
    console.print(rows_table(f"dr {status.dr_id} (RPO {status.rpo_seconds:.0f} s)",
                             ["node", "role", "reachable", "timeline", "lsn", "streaming", "lag bytes", "lag s",
                              "RPO used", "slot retains"], rows))
    for problem in status.problems:
        err_console.print(f"[yellow]problem:[/yellow] {problem}")
    if not status.ok:
        sys.exit(1)


@dr.command("failover")
@_group
@click.option("--reason", default="manual failover", show_default=True)
@click.option("--force", is_flag=True, help="promote even when the lag exceeds the RPO or the primary answers")
@click.option("--emergency", is_flag=True, help="the primary site is lost: fence it, promote, ignore RPO")
def dr_failover(group: str | None, reason: str, force: bool, emergency: bool) -> None:
    """Fence the primary and promote the most advanced standby (needs the group's lease)."""
    from engines.dr.dispatch import engine_for

    ctx = _ctx(group)
    _show(engine_for(ctx).failover(ctx, reason=reason, force=force, emergency=emergency))


@dr.command("switchover")
@_group
@click.option("--to", "target", help="the standby to promote (default: the most advanced streaming one)")
def dr_switchover(group: str | None, target: str | None) -> None:
    """Planned change of primary with zero data loss; the old primary becomes a standby."""
    from engines.dr.switchover import switchover

    _show(switchover(_ctx(group), target))


@dr.command("drill")
@_group
@click.option("--rate", default=20.0, show_default=True, help="marker rows written per second")
def dr_drill(group: str | None, rate: float) -> None:
    """Fail over a throwaway copy of the group while writing markers; report RTO and RPO vs the targets."""
    from engines.dr.drill import drill

    ctx = _ctx(group)
    err_console.print("restoring the newest backup into a scratch directory while writing markers ..."
                      if ctx.cfg.strategy.value == "backup_restore" else
                      "cloning the primary into a scratch pair and crashing its copy ...")
    _show(drill(ctx, rate=rate))


@dr.command("rejoin")
@_group
@click.argument("database")
def dr_rejoin(group: str | None, database: str) -> None:
    """Bring an old primary (or broken standby) back as a standby of the current primary (pg_rewind)."""
    from engines.dr.dispatch import engine_for
    from engines.dr.rejoin import rejoin

    ctx = _ctx(group)
    _show((engine_for(ctx).rejoin or rejoin)(ctx, database))
