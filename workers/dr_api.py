"""The documented DR API for application code: ``setup_disaster_recovery`` and ``trigger_emergency_failover``.

Both run the engine in this process (off the event loop); the CLI and the ``dr`` tasks use ``context``.
A group set up through the API is registered in the coordination store, so every worker can find it.
"""

from __future__ import annotations

import asyncio
import os
import socket
from typing import Any

from engines.dr.context import DRContext
from engines.dr.coord import Coordinator
from engines.dr.models import DRConfiguration, DREvent
from engines.errors import DbfleetError
from workers import runtime


class UnknownDRGroup(DbfleetError):
    """A DR group id that neither dbfleet.yaml nor the coordination store knows."""


def observer_id() -> str:
    """This process as an observer: host and pid."""
    return f"{socket.gethostname()}:{os.getpid()}"


def coordinator() -> Coordinator:
    """The coordination store: the fleet's cache Redis."""
    return Coordinator(runtime.cache())


def groups() -> dict[str, DRConfiguration]:
    """Every DR group: dbfleet.yaml's, then those registered through the API."""
    out = dict(runtime.config().database_scripts.disaster_recovery.all_groups())
    coord = coordinator()
    for key in coord.r.scan_iter(match=f"{coord.prefix}*:config"):
        group = DRConfiguration.model_validate_json(coord.r.get(key))
        out.setdefault(group.dr_id, group)
    return out


def context(dr_id: str, observer: str | None = None, *, history: bool = True) -> DRContext:
    """A DRContext for ``dr_id`` (or the one group a database id belongs to), bound to this process's
    registry, cache and history."""
    known = groups()
    if dr_id not in known:  # a database id names the group it belongs to (ScriptType.DISASTER_RECOVERY runs)
        owners = [g for g in known.values() if dr_id in {s.database for s in g.sites()}]
        dr_id = owners[0].dr_id if len(owners) == 1 else dr_id
    if dr_id not in known:
        raise UnknownDRGroup(f"unknown DR group {dr_id!r} (known: {', '.join(sorted(known)) or 'none configured'})")
    cfg = runtime.config()
    return DRContext(cfg=known[dr_id], resolve=cfg.database, coord=coordinator(), state_dir=cfg.fleet.state_path(),
                     observer=observer or observer_id(), history=runtime.history() if history else None)


def register(dr_config: DRConfiguration) -> None:
    """Check the group's sites against the registry and store it for every worker (no secrets inside)."""
    for site in dr_config.sites():
        runtime.config().database(site.database)
    coord = coordinator()
    coord.r.set(coord.key(dr_config.dr_id, "config"), dr_config.model_dump_json())


async def setup_disaster_recovery(dr_config: DRConfiguration | dict[str, Any]) -> DREvent:
    """Register a DR group and set up its standbys (those whose data_dir this worker holds)."""
    from engines.dr.setup import setup

    group = dr_config if isinstance(dr_config, DRConfiguration) else DRConfiguration.model_validate(dr_config)
    register(group)
    return await asyncio.to_thread(lambda: setup(context(group.dr_id)))


async def trigger_emergency_failover(dr_id: str, reason: str) -> DREvent:
    """Fail over now even though the primary may still answer (fenced first); RPO is not enforced."""
    from engines.dr.dispatch import engine_for

    def run() -> DREvent:
        ctx = context(dr_id)
        event: DREvent = engine_for(ctx).failover(ctx, reason=reason, emergency=True)
        return event

    return await asyncio.to_thread(run)
