"""Connectors: one module per database kind, found through the kinds registry (engines/kinds.py)."""

from __future__ import annotations

from engines.config import DatabaseConfig
from engines.connectors.base import Connector, ServerInfo
from engines.kinds import load


def connector_class(kind: str) -> type[Connector]:
    """The connector class for ``kind``; kinds without one raise a ConfigError listing those with one."""
    cls: type[Connector] = load(kind, "connector")
    return cls


def open_connector(db: DatabaseConfig) -> Connector:
    """Resolve the database's secret here, in this process, and build its connector."""
    return connector_class(db.kind)(db, db.password())


__all__ = ["Connector", "ServerInfo", "connector_class", "open_connector"]
