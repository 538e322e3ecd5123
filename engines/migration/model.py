"""What a migration is: tables with their keys and mapped columns, split into key-range batches."""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field
from typing import Any

from engines.errors import DbfleetError


class MigrationFailed(DbfleetError):
    """A migration step failed in a way a retry will not fix (the message says what to do)."""


class MigrationType(str, enum.Enum):
    """FULL copies every row; INCREMENTAL copies rows whose watermark column moved since the last run."""

    FULL = "full"
    INCREMENTAL = "incremental"


@dataclass
class Column:
    name: str
    source_type: str
    target_type: str
    nullable: bool = True
    cast: str | None = None  # a value converter name (engines/migration/types.py), None: as is
    identity: bool = False


@dataclass
class Embed:
    """A child table embedded in its parent's documents (MongoDB): rows whose foreign key ``fk`` points at
    the parent's primary key become an array ``field`` of sub-documents, in ``order`` (the child's key)."""

    table: str  # the child's Table.source
    schema: str
    name: str
    field: str
    fk: list[str]  # child columns, in the order of the parent's key columns they reference
    order: list[str]
    columns: list[Column]


@dataclass
class Table:
    """One source table and where it goes. ``key`` is empty for tables without a primary key."""

    source: str  # schema.table (PostgreSQL) or table (MySQL), as shown
    source_schema: str
    source_name: str
    target_schema: str
    target_name: str
    columns: list[Column]
    key: list[str]
    rows_estimate: int = 0
    enums: dict[str, list[str]] = field(default_factory=dict)  # column -> values (MySQL ENUM -> a PostgreSQL type)
    embeds: list[Embed] = field(default_factory=list)  # MongoDB: child tables embedded in this table's documents
    # PostgreSQL targets: secondary indexes and constraints, built after the load (see the sources' schema_objects)
    schema: list[dict[str, Any]] = field(default_factory=list)

    @property
    def target(self) -> str:
        return f"{self.target_schema}.{self.target_name}"

    @property
    def ranges_portable(self) -> bool:
        """True when a key range means the same rows on both sides: no text-like key (collations differ
        between servers, so 'a' < 'ä' may hold on one and not the other). Otherwise the target is never
        deleted by range and validation compares whole tables (checksums add up, so that stays exact)."""
        types = {c.name: c.target_type.lower() for c in self.columns}
        textual = ("text", "char", "varchar", "character", "citext", "name", "json", "xml")
        return bool(self.key) and not any(types[k].startswith(textual) or k in self.enums for k in self.key)


@dataclass
class Batch:
    """Rows of ``table`` with key in [lo, hi) (None: unbounded), or CTID pages [lo, hi) for keyless tables."""

    id: int
    table: str  # Table.source
    lo: list[Any] | None
    hi: list[Any] | None
    by: str = "key"  # key | ctid | all


@dataclass
class MigrationPlan:
    id: str
    source: dict[str, Any]  # the registry entry (public fields) or the inline config, never a secret value
    target: dict[str, Any]
    type: str
    batch_size: int
    parallel_workers: int
    validation: bool
    tables: list[Table]
    batches: list[Batch]
    path: str  # "pg-pg" (binary COPY pass-through, SQL checksums) or "rows" (Python rows, casts)
    watermark: str | None = None  # incremental: the column that moves when a row changes
    since: dict[str, str | None] = field(default_factory=dict)  # incremental: table -> last watermark copied
    until: dict[str, str | None] = field(default_factory=dict)  # incremental: table -> watermark at plan time
    base_id: str | None = None  # incremental: the migration whose watermarks this run continues
    max_rejects: int = 0
    lock_timeout: float = 60.0
    created: list[str] = field(default_factory=list)  # objects prepare created (rollback drops them)
    # a row transform applied in the worker before rows go to the target (base.TRANSFORMS; "rows" path only):
    # {"kind": "mask", ...} for masked copies; key references, never key values
    transform: dict[str, Any] | None = None
    soft_delete: str | None = None  # incremental: a boolean column marking rows deleted at the source
    notes: list[str] = field(default_factory=list)  # what the plan says plainly (type mappings, deletes)
    if_exists: str = "fail"  # target tables holding rows: fail (at plan time) | truncate (at run start) | append

    def table(self, source: str) -> Table:
        return next(t for t in self.tables if t.source == source)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MigrationPlan:
        tables = [Table(**{**t, "columns": [Column(**c) for c in t["columns"]],
                           "embeds": [Embed(**{**e, "columns": [Column(**c) for c in e["columns"]]})
                                      for e in t.get("embeds", [])]}) for t in d["tables"]]
        return cls(**{**d, "tables": tables, "batches": [Batch(**b) for b in d["batches"]]})
