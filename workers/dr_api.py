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
    group = known[dr_id]
    return DRContext(cfg=group, resolve=cfg.database, coord=coordinator(), state_dir=cfg.fleet.state_path(),
                     observer=observer or observer_id(), history=runtime.history() if history else None,
                     repository=lambda: _open_repository(group.repository), server_env=_server_env(group.repository))


def _open_repository(storage: str | None) -> Any:
    """The backup repository a warm standby or a backup_restore group reads."""
    from engines.backup.engine import open_repository

    return open_repository(runtime.config(), storage)


def _server_env(storage: str | None) -> dict[str, str]:
    """What a server's restore_command needs (DBFLEET_* and the repository key's env var); {} without storage."""
    from engines.errors import ConfigError
    from workers.physical import server_env

    try:
        return server_env(runtime.config(), storage)
    except (ConfigError, KeyError, ValueError):
        return {}


def register(dr_config: DRConfiguration) -> None:
    """Check the group's sites against the registry and store it for every worker (no secrets inside)."""
    for site in dr_config.sites():
        runtime.config().database(site.database)
    coord = coordinator()
    coord.r.set(coord.key(dr_config.dr_id, "config"), dr_config.model_dump_json())


async def setup_disaster_recovery(dr_config: DRConfiguration | dict[str, Any]) -> DREvent:
    """Register a DR group and set up its standbys (those whose data_dir this worker holds)."""
    from engines.dr.dispatch import engine_for
    from engines.dr.setup import setup

    group = dr_config if isinstance(dr_config, DRConfiguration) else DRConfiguration.model_validate(dr_config)
    register(group)

    def run() -> DREvent:
        ctx = context(group.dr_id)
        event: DREvent = (engine_for(ctx).setup or setup)(ctx)
        return event

    return await asyncio.to_thread(run)


async def trigger_emergency_failover(dr_id: str, reason: str) -> DREvent:
    """Fail over now even though the primary may still answer (fenced first); RPO is not enforced."""
    from engines.dr.dispatch import engine_for

    def run() -> DREvent:
        ctx = context(dr_id)
        event: DREvent = engine_for(ctx).failover(ctx, reason=reason, emergency=True)
        return event

    return await asyncio.to_thread(run)
