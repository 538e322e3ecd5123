"""Which Source and Target class serves which database kind: the one lookup of the migration package.

Kept as ``module:Class`` strings, imported on first use (a target's driver is needed only when it is
used). The fleet-wide registry of kinds (``engines/kinds.py``) is meant to hold these two columns; this
table is then read from it.
"""

from __future__ import annotations

import importlib

from engines.errors import ConfigError
from engines.migration.base import Source, Target

SOURCES = {"postgresql": "engines.migration.postgres_source:PostgresSource",
           "mysql": "engines.migration.mysql_source:MySQLSource"}
TARGETS = {"postgresql": "engines.migration.postgres_target:PostgresTarget",
           "mongodb": "engines.migration.document_targets:MongoTarget",
           "elasticsearch": "engines.migration.document_targets:ElasticsearchTarget",
           "clickhouse": "engines.migration.clickhouse_target:ClickHouseTarget"}


def _load(path: str) -> type:
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)  # type: ignore[no-any-return]


def source_class(kind: str) -> type[Source]:
    """The Source class for ``kind``; a clear error naming the kinds a migration can read."""
    if kind not in SOURCES:
        raise ConfigError([("source", f"cannot migrate from {kind!r}; sources: {', '.join(SOURCES)}")])
    return _load(SOURCES[kind])


def target_class(kind: str) -> type[Target]:
    """The Target class for ``kind``; a clear error naming the kinds a migration can write."""
    if kind not in TARGETS:
        raise ConfigError([("target", f"cannot migrate into {kind!r}; targets: {', '.join(TARGETS)}")])
    return _load(TARGETS[kind])
