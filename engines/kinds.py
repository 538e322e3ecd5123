"""The one registry of database kinds: aliases, default port and the classes behind each capability.

Every other part reads this table: config validation (which kinds and aliases exist, default
ports), connectors, backups, health, security audits, beat (schedule only what a kind supports),
the ``dbfleet kinds`` command and the contract tests. Paths are ``module:attribute`` strings (or a
bare module) imported lazily, so an optional driver is only needed by the kinds that use it; a
missing one becomes a :class:`DriverMissingError` naming the extra to install.

Adding a kind = one row here + its modules + its contract-test parameter (docs/adding-a-kind.md).
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from typing import Any

from engines.errors import ConfigError, DriverMissingError

# the capability columns, in the order the matrix shows them
CAPABILITIES = ("connector", "dumper", "health", "auditor", "tuner", "discoverer", "masker", "eraser", "source",
                "target", "dr")
LABELS = {"connector": "connect", "dumper": "backup", "health": "health", "auditor": "audit", "tuner": "tuning",
          "discoverer": "PII scan", "masker": "anonymise", "eraser": "erase", "source": "migrate from",
          "target": "migrate into", "dr": "DR"}


@dataclass(frozen=True)
class Kind:
    """One database kind. Each capability is a ``module:Class`` (or module) path, or None when unsupported.

    ``health`` names the kind's deep checks (a ``HealthChecks``); the basic checks (reachability,
    response time, version, role, size) run for every kind with a connector. ``driver`` is the
    optional Python package the kind's modules import (module name, pip extra), None when the
    driver ships with dbfleet's required dependencies. ``file_based`` kinds are configured by ``path``.
    """

    name: str
    aliases: tuple[str, ...] = ()
    default_port: int | None = None
    connector: str | None = None
    dumper: str | None = None
    health: str | None = None
    auditor: str | None = None
    tuner: str | None = None
    discoverer: str | None = None  # compliance: PII discovery
    masker: str | None = None  # compliance: in-place anonymisation
    eraser: str | None = None  # compliance: right to erasure
    source: str | None = None
    target: str | None = None
    dr: str | None = None  # disaster recovery: a class whose ``engine(strategy)`` gives the group's operations
    driver: tuple[str, str] | None = None
    file_based: bool = False  # addressed by ``path`` (a file), not host/port/dsn

    def path(self, capability: str) -> str | None:
        """The registered path of ``capability`` (one of CAPABILITIES)."""
        if capability not in CAPABILITIES:
            raise ValueError(f"unknown capability {capability!r}; known: {', '.join(CAPABILITIES)}")
        value: str | None = getattr(self, capability)
        return value

    def supports(self, capability: str) -> bool:
        """Whether the kind can do ``capability``; ``health`` needs only a connector (the basic checks)."""
        if capability == "health":
            return self.connector is not None
        return self.path(capability) is not None


_M = "engines.migration."
_C = "engines.compliance."
KINDS: dict[str, Kind] = {k.name: k for k in (
    Kind("postgresql", ("postgres", "pg"), 5432,
         connector="engines.connectors.postgres:PostgresConnector",
         dumper="engines.backup.dumpers.postgres:PostgresDumper",
         health="engines.health.postgres:CHECKS",
         auditor="engines.security.postgres", tuner="engines.tuning.postgres:PostgresTuner",
         discoverer=_C + "postgres:PostgresDiscoverer", masker=_C + "anonymize.postgres:PostgresMaskTarget",
         eraser=_C + "erasure_pg:PostgresEraser",
         source=_M + "postgres_source:PostgresSource", target=_M + "postgres_target:PostgresTarget",
         dr="engines.dr.dispatch:PostgresDR"),
    Kind("mysql", ("mariadb",), 3306,
         connector="engines.connectors.mysql:MySQLConnector",
         dumper="engines.backup.dumpers.mysql:MySQLDumper",
         health="engines.health.mysql:CHECKS",
         auditor="engines.security.mysql", tuner="engines.tuning.mysql:MySQLTuner",
         discoverer=_C + "mysql:MySQLDiscoverer", masker=_C + "anonymize.dbapi:MySQLMaskTarget",
         eraser=_C + "erasure_dbapi:MySQLEraser",
         source=_M + "mysql_source:MySQLSource", dr="engines.dr.dispatch:MySQLDR"),
    Kind("redis", (), 6379,
         connector="engines.connectors.redis:RedisConnector",
         dumper="engines.backup.dumpers.redis:RedisDumper",
         health="engines.health.redis:CHECKS",
         auditor="engines.security.redis", tuner="engines.tuning.redis:RedisTuner",
         discoverer=_C + "redis:RedisDiscoverer", dr="engines.dr.dispatch:RedisDR"),
    Kind("mongodb", ("mongo",), 27017,
         connector="engines.connectors.mongodb:MongoConnector",
         dumper="engines.backup.dumpers.mongodb:MongoDumper",
         health="engines.health.mongodb:CHECKS",
         auditor="engines.security.mongodb", discoverer=_C + "documents:MongoDiscoverer",
         target=_M + "document_targets:MongoTarget", driver=("pymongo", "mongodb")),
    Kind("elasticsearch", ("es",), 9200,
         connector="engines.connectors.elasticsearch:ElasticsearchConnector",
         dumper="engines.backup.dumpers.elasticsearch:ElasticsearchDumper",
         health="engines.health.elasticsearch:CHECKS",
         auditor="engines.security.elasticsearch", discoverer=_C + "documents:ElasticsearchDiscoverer",
         target=_M + "document_targets:ElasticsearchTarget", driver=("elasticsearch", "elasticsearch")),
    Kind("sqlite", (), file_based=True,
         connector="engines.connectors.sqlite:SQLiteConnector",
         dumper="engines.backup.dumpers.sqlite:SQLiteDumper",
         discoverer=_C + "sqlite:SQLiteDiscoverer", masker=_C + "anonymize.dbapi:SQLiteMaskTarget",
         eraser=_C + "erasure_dbapi:SQLiteEraser"),
    Kind("clickhouse", (), 8123,
         connector="engines.connectors.clickhouse:ClickHouseConnector",
         dumper="engines.backup.dumpers.clickhouse:ClickHouseDumper",
         health="engines.health.clickhouse:CHECKS",
         target=_M + "clickhouse_target:ClickHouseTarget"),  # raw HTTP: see engines/connectors/clickhouse.py
)}

# every accepted spelling -> canonical kind
KIND_ALIASES: dict[str, str] = {alias: k.name for k in KINDS.values() for alias in (k.name, *k.aliases)}
DEFAULT_PORTS: dict[str, int] = {k.name: k.default_port for k in KINDS.values() if k.default_port is not None}


def canonical(name: str) -> str | None:
    """The kind an alias (any case) stands for, None when no kind has it."""
    return KIND_ALIASES.get(name.strip().lower())


def get_kind(name: str) -> Kind:
    """The registry row of ``name`` (canonical or alias); unknown names list the known kinds."""
    kind = canonical(name)
    if kind is None:
        raise ConfigError([("kind", f"unknown kind {name!r}; known: {', '.join(sorted(KINDS))}")])
    return KINDS[kind]


def kinds_with(capability: str) -> list[str]:
    """The kinds that support ``capability``, in registry order."""
    return [k.name for k in KINDS.values() if k.supports(capability)]


def supports(kind: str, capability: str) -> bool:
    """Whether ``kind`` (canonical or alias) supports ``capability``; unknown kinds support nothing."""
    name = canonical(kind)
    return name is not None and KINDS[name].supports(capability)


def load(kind: str, capability: str, what: str | None = None) -> Any:
    """Import and return ``kind``'s ``capability`` object (class, checks object or module).

    A kind without it raises a ConfigError naming the kinds that have it (``what`` words the message:
    "no backup engine for 'x'"); a missing optional driver raises DriverMissingError with the extra.
    """
    row = get_kind(kind)
    target = row.path(capability)
    if target is None:
        with_it = ", ".join(k for k in kinds_with(capability) if KINDS[k].path(capability))
        raise ConfigError([("kind", f"no {what or LABELS[capability]} for {row.name!r}; known: {with_it}")])
    return import_path(target, row.driver)


def import_path(target: str, driver: tuple[str, str] | None = None) -> Any:
    """Import ``module:attribute`` (or a bare module); an ImportError of the optional driver becomes its install hint."""
    module_name, _, attribute = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        if driver and exc.name and exc.name.split(".")[0] == driver[0]:
            raise DriverMissingError(driver[0].replace("_", "-"), driver[1]) from None
        raise
    return getattr(module, attribute) if attribute else module


def driver_installed(kind: str) -> bool:
    """Whether the optional driver ``kind`` needs (if any) is importable here."""
    driver = get_kind(kind).driver
    return driver is None or importlib.util.find_spec(driver[0]) is not None


def matrix() -> list[dict[str, Any]]:
    """The capability matrix as JSON-able rows: kind, aliases, port, driver and one path (or None) per capability."""
    rows = []
    for k in KINDS.values():
        row: dict[str, Any] = {"kind": k.name, "aliases": list(k.aliases), "default_port": k.default_port,
                               "driver": None if k.driver is None else {"package": k.driver[0].replace("_", "-"),
                                                                        "extra": k.driver[1],
                                                                        "installed": driver_installed(k.name)}}
        row.update({c: k.path(c) for c in CAPABILITIES})
        row["basic_health"] = k.supports("health")
        rows.append(row)
    return rows


__all__ = ["CAPABILITIES", "DEFAULT_PORTS", "KINDS", "KIND_ALIASES", "LABELS", "Kind", "canonical", "driver_installed",
           "get_kind", "import_path", "kinds_with", "load", "matrix", "supports"]
