"""Which Source and Target class serves which database kind: read from the kinds registry
(engines/kinds.py, its ``source`` and ``target`` columns), the one table of kinds. Classes are imported on
first use (a target's driver is needed only when it is used).
"""

from __future__ import annotations

from engines import kinds
from engines.errors import ConfigError
from engines.migration.base import Source, Target

SOURCES = {name: kinds.KINDS[name].source for name in kinds.kinds_with("source")}
TARGETS = {name: kinds.KINDS[name].target for name in kinds.kinds_with("target")}


def source_class(kind: str) -> type[Source]:
    """The Source class for ``kind``; a clear error naming the kinds a migration can read."""
    if not kinds.supports(kind, "source"):
        raise ConfigError([("source", f"cannot migrate from {kind!r}; sources: {', '.join(SOURCES)}")])
    cls: type[Source] = kinds.load(kind, "source", "migration source")
    return cls


def target_class(kind: str) -> type[Target]:
    """The Target class for ``kind``; a clear error naming the kinds a migration can write."""
    if not kinds.supports(kind, "target"):
        raise ConfigError([("target", f"cannot migrate into {kind!r}; targets: {', '.join(TARGETS)}")])
    cls: type[Target] = kinds.load(kind, "target", "migration target")
    return cls
