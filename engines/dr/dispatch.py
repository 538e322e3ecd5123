"""Which DR engine runs a group: one table from the primary's kind to its observe/failover functions."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from engines.dr.context import DRContext
from engines.dr.models import DRStrategy
from engines.errors import DbfleetError


@dataclass(frozen=True)
class DREngine:
    """The operations a kind supports in a DR group (switchover and drills: PostgreSQL only; setup and rejoin
    where the kind has them)."""

    observe: Callable[..., Any]
    failover: Callable[..., Any]
    setup: Callable[..., Any] | None = None
    rejoin: Callable[..., Any] | None = None


def _postgresql() -> DREngine:
    from engines.dr import failover, observe, rejoin, setup

    return DREngine(observe.observe, failover.failover, setup.setup, rejoin.rejoin)


def _mysql() -> DREngine:
    from engines.dr import mysql_replica as m

    return DREngine(m.observe, m.failover, m.setup, m.rejoin)


def _redis() -> DREngine:
    from engines.dr import redis_replica

    return DREngine(redis_replica.observe, redis_replica.failover)


ENGINES: dict[str, Callable[[], DREngine]] = {"postgresql": _postgresql, "redis": _redis, "mysql": _mysql}


def engine_for(ctx: DRContext) -> DREngine:
    """The DR engine of the group's kind (from its current primary's registry entry)."""
    kind = ctx.db(ctx.current_primary()).kind
    if kind not in ENGINES:
        raise DbfleetError(f"disaster recovery for {kind} is not supported (supported: {', '.join(sorted(ENGINES))})")
    if kind == "postgresql" and ctx.cfg.strategy == DRStrategy.BACKUP_RESTORE:
        from engines.dr import observe, restore, setup

        return DREngine(observe.observe, restore.failover, setup.setup)
    return ENGINES[kind]()
