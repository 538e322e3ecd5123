"""The per-kind discovery contract; the kinds registry (engines/kinds.py) picks a class for a database kind."""

from __future__ import annotations

import abc
import random
from dataclasses import dataclass, field
from typing import Any, ClassVar

from engines import kinds


@dataclass
class ColumnInfo:
    """One column (or document field path / Redis key field) as the catalog describes it."""

    name: str
    data_type: str
    family: str = "text"  # text | date | number | inet | other: which validators apply
    comment: str | None = None  # column comment or security label: may pin a classification
    readable: bool = True
    max_length: int | None = None


@dataclass
class TableInfo:
    """One table (collection, index, Redis key pattern) and its columns."""

    name: str  # as shown in findings: "users", "sales.orders", "session:*"
    columns: list[ColumnInfo]
    readable: bool = True
    reason: str | None = None  # why it cannot be read (no SELECT privilege ...)
    rows_estimate: int | None = None
    ident: Any = None  # what the discoverer needs to address it (schema/name tuple, ...)
    key_columns: list[str] = field(default_factory=list)


class CannotSample(Exception):
    """Sampling a table failed for a reason worth reporting (privilege, timeout); the message says which."""


class Discoverer(abc.ABC):
    """Reads a database's catalog and bounded random samples of its rows, read-only.

    Contract:
    - ``tables`` lists what can hold PII with its columns, marking tables (or columns) the role cannot read
      as not readable with the reason, rather than raising;
    - ``sample`` returns at most ``n`` rows of the given columns, chosen at random over the whole table
      (TABLESAMPLE, random key ranges), inside a read-only transaction bounded by ``statement_timeout``
      seconds; it raises :class:`CannotSample` with a reason for a privilege error or a timeout;
    - neither writes, neither keeps sampled values beyond the call.
    """

    kind: ClassVar[str]

    def __init__(self, connector: Any, settings: dict[str, Any]) -> None:
        self.connector = connector
        self.settings = settings
        self.timeout = float(settings.get("statement_timeout_seconds", 10.0))
        seed = settings.get("sample_seed")  # reproducible samples (tests, benchmarks); default: truly random
        self.seed = None if seed is None else int(seed)
        self.random = random.Random(self.seed)

    @abc.abstractmethod
    def tables(self) -> list[TableInfo]:
        """Every user table with its columns, readable or not."""

    @abc.abstractmethod
    def sample(self, table: TableInfo, columns: list[ColumnInfo], n: int) -> list[tuple[Any, ...]]:
        """Up to ``n`` randomly chosen rows of ``columns``."""


# kind -> "module:Class". The kinds registry (engines/kinds.py) can hold these; nothing else names a kind.
def load(kind: str, capability: str, what: str) -> Any:
    """The class the kinds registry (engines/kinds.py) names for ``kind``'s ``capability``; a kind without
    one is a ConfigError listing the kinds that have it."""
    return kinds.load(kind, capability, what)


def discoverer_class(kind: str) -> type[Discoverer]:
    """The discovery class of ``kind``."""
    cls: type[Discoverer] = load(kind, "discoverer", "PII discovery")
    return cls
