"""Synchronous replication (``synchronous: true``): the primary waits for ANY 1 of the group's standbys.

Which standbys may acknowledge is the static set of the group's standbys (their application names are
their slot names), written into ``synchronous_standby_names`` by setup, promotion and rejoin - there is no
second copy of it in the coordination store that could lag behind (Patroni's DCS window). With ANY 1 of N,
every acknowledged commit is flushed on at least one of the N; when all N answer at failover time, the one
with the highest flushed LSN has every acknowledged write, so the failover does not refuse for lag. Live
``pg_stat_replication.sync_state`` is read when the primary answers.
"""

from __future__ import annotations

from psycopg import sql

from engines.dr.context import DRContext
from engines.dr.models import DREvent, NodeStatus
from engines.dr.pgnode import query


def standby_names(ctx: DRContext, primary_id: str) -> list[str]:
    """Application names of every site but ``primary_id`` (a standby's slot name is its application name)."""
    return [ctx.cfg.slot_name(s.database) for s in ctx.cfg.sites() if s.database != primary_id]


def names_setting(names: list[str]) -> str:
    """``ANY 1 ("a", "b")``, or '' (asynchronous) without names."""
    if not names:
        return ""
    return "ANY 1 (" + ", ".join('"' + n.replace('"', '""') + '"' for n in names) + ")"


def apply(ctx: DRContext, primary_id: str, *, only_streaming: bool = False) -> str:
    """Set ``synchronous_standby_names`` and ``synchronous_commit`` on the primary; returns the setting.

    ``only_streaming``: just after a promotion, list only standbys already streaming from it, so writes do
    not block on a node that is gone (the old primary); rejoin puts the full set back."""
    names = standby_names(ctx, primary_id)
    if only_streaming:
        live = {r[0] for r in query(ctx.db(primary_id), "SELECT application_name FROM pg_stat_replication "
                                                        "WHERE state = 'streaming'")}
        names = [n for n in names if n in live]
    setting = names_setting(names)
    db = ctx.db(primary_id)
    for name, value in (("synchronous_standby_names", setting), ("synchronous_commit", ctx.cfg.synchronous_commit)):
        query(db, sql.SQL("ALTER SYSTEM SET {} = {}").format(sql.Identifier(name), sql.Literal(value)))
    query(db, "SELECT pg_reload_conf()")
    return setting


def live_states(ctx: DRContext, primary_id: str) -> dict[str, str]:
    """application_name -> sync_state (sync | quorum | potential | async) as the primary reports it now."""
    return {r[0]: r[1] for r in query(ctx.db(primary_id), "SELECT application_name, sync_state "
                                                            "FROM pg_stat_replication", timeout=3)}


def holds_every_ack(ctx: DRContext, event: DREvent, candidate: NodeStatus, reachable: list[str],
                    old_up: bool) -> bool:
    """True when ``candidate`` is known to hold every acknowledged commit (then lag is no reason to refuse)."""
    members = [s for s in standby_names(ctx, event.old_primary or "")]
    mine = ctx.cfg.slot_name(candidate.database)
    if mine not in members:
        return False
    if old_up:  # the primary answers: its own view, read now
        states = live_states(ctx, event.old_primary or "")
        event.measures["sync_state"] = states
        return states.get(mine) in ("sync", "quorum")
    missing = [n for n in members if n not in {ctx.cfg.slot_name(r) for r in reachable}]
    if missing:
        event.steps.append(f"synchronous standbys unreachable ({', '.join(missing)}): an acknowledged commit may "
                           "be only there; the RPO check applies")
        return False
    event.steps.append(f"synchronous: {candidate.database} has the highest flushed LSN of all ANY 1 members, "
                       "so every acknowledged commit")
    return True


def maintain(ctx: DRContext, primary_id: str, streaming: set[str]) -> str | None:
    """Observe's part: put the full ANY 1 set back once one of its members streams (after a promotion left
    the primary asynchronous); never narrows it. Returns what it did, or None."""
    names = standby_names(ctx, primary_id)
    full = names_setting(names)
    current = query(ctx.db(primary_id), "SHOW synchronous_standby_names")[0][0]
    if current == full or not streaming & set(names):
        return None
    apply(ctx, primary_id)
    return f"{primary_id}: synchronous_standby_names restored to {full!r}"
