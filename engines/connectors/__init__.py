"""Connectors: one module per database kind, chosen through one alias table."""

from __future__ import annotations

import importlib

from engines.config import DatabaseConfig
from engines.connectors.base import Connector, ServerInfo
from engines.errors import ConfigError

# kind -> "module:Class"; modules import their drivers lazily.
CONNECTORS = {
    "postgresql": "engines.connectors.postgres:PostgresConnector",
    "mysql": "engines.connectors.mysql:MySQLConnector",
    "redis": "engines.connectors.redis:RedisConnector",
    "sqlite": "engines.connectors.sqlite:SQLiteConnector",
    "mongodb": "engines.connectors.mongodb:MongoConnector",
    "elasticsearch": "engines.connectors.elasticsearch:ElasticsearchConnector",
}


def connector_class(kind: str) -> type[Connector]:
    """The connector class for ``kind``; unknown kinds list the known ones."""
    target = CONNECTORS.get(kind)
    if target is None:
        raise ConfigError([("kind", f"no connector for {kind!r}; known: {', '.join(sorted(CONNECTORS))}")])
    module, _, name = target.partition(":")
    cls: type[Connector] = getattr(importlib.import_module(module), name)
    return cls


def open_connector(db: DatabaseConfig) -> Connector:
    """Resolve the database's secret here, in this process, and build its connector."""
    return connector_class(db.kind)(db, db.password())


__all__ = ["Connector", "ServerInfo", "CONNECTORS", "connector_class", "open_connector"]
