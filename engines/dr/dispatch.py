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
    where the kind has them; ``restart``: try restarting a crashed primary in place before failing over)."""

    observe: Callable[..., Any]
    failover: Callable[..., Any]
    setup: Callable[..., Any] | None = None
    rejoin: Callable[..., Any] | None = None
    restart: Callable[..., Any] | None = None


class PostgresDR:
    """PostgreSQL groups: hot standbys (streaming), warm standbys (fed by the repository's WAL) and
    backup-restore (no replica: failover restores the newest physical backup + WAL)."""

    @staticmethod
    def engine(strategy: DRStrategy) -> DREngine:
        from engines.dr import failover, observe, rejoin, restore, setup
        from engines.dr.auto import restart_in_place

        if strategy == DRStrategy.BACKUP_RESTORE:
            return DREngine(observe.observe, restore.failover, setup.setup, restart=restart_in_place)
        return DREngine(observe.observe, failover.failover, setup.setup, rejoin.rejoin, restart=restart_in_place)


class MySQLDR:
    """MariaDB/MySQL groups: GTID replicas."""

    @staticmethod
    def engine(strategy: DRStrategy) -> DREngine:
        from engines.dr import mysql_replica as m

        return DREngine(m.observe, m.failover, m.setup, m.rejoin)


class RedisDR:
    """Redis groups: replica promotion (REPLICAOF NO ONE)."""

    @staticmethod
    def engine(strategy: DRStrategy) -> DREngine:
        from engines.dr import redis_replica

        return DREngine(redis_replica.observe, redis_replica.failover)


def engine_for(ctx: DRContext) -> DREngine:
    """The DR engine of the group's kind (from its current primary's registry entry: the kinds registry's
    ``dr`` column)."""
    from engines.errors import ConfigError
    from engines.kinds import kinds_with, load

    kind = ctx.db(ctx.current_primary()).kind
    try:
        cls = load(kind, "dr")
    except ConfigError:
        raise DbfleetError(f"disaster recovery for {kind} is not supported (supported: "
                           f"{', '.join(sorted(kinds_with('dr')))})") from None
    engine: DREngine = cls.engine(ctx.cfg.strategy)
    return engine
