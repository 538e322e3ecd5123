"""The two plugin kinds of a migration: a ``Source`` it reads and a ``Target`` it writes.

The orchestrator (``plan``, ``copy``, ``finalize``, ``validate`` modules) knows only these two classes;
everything engine-specific (SQL, drivers, fast paths) lives in their subclasses, one module each. Which
class serves which database kind is looked up in ``engines.migration.registry``.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import TYPE_CHECKING, Any, ClassVar

from engines.migration.model import Batch, MigrationPlan, MigrationType, Table

if TYPE_CHECKING:
    from engines.config import DatabaseConfig

Checkpoints = dict[int, dict[str, Any]]


# Row transforms a plan may name (``MigrationPlan.transform["kind"]``), applied in the worker to each batch's
# rows before they go to the target (masked copies: engines/compliance). A fixed table, never a path from
# the plan: a plan read back from the store or the broker cannot make a worker import anything else.
TRANSFORMS = {"mask": "engines.compliance.anonymize.copy:batch_transform"}


def transform_rows(plan: MigrationPlan, table: Table, rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """``rows`` through the plan's transform for ``table`` (as they are when the plan has none)."""
    if not plan.transform or not rows:
        return rows
    import importlib

    module, _, name = TRANSFORMS[plan.transform["kind"]].partition(":")
    return list(getattr(importlib.import_module(module), name)(plan, table, rows))


class Source(abc.ABC):
    """A database a migration reads. The contract:

    - ``discover``, ``bounds``, ``max_watermark``, ``schema_objects`` and every read are **read-only**: a
      source is never written, whatever happens (a plan may be made and thrown away at no cost).
    - ``bounds`` covers the whole key space: its first batch starts unbounded and its last ends
      unbounded, so rows inserted after planning still fall in some batch.
    - ``rows`` of a batch are the same values in every call for unchanged data (a batch run twice writes
      the same rows), and reading stops cleanly when the consumer stops (the connection stays usable).
    - Checksums a source helps compute (``Target.validate``) are computed the same way on both sides:
      a pair that cannot do that refuses validation at plan time (``plan_path``) with what to do instead.
    """

    kind: ClassVar[str]
    supports_embeds: ClassVar[bool] = False  # child rows by foreign key (MongoDB embedding)

    @classmethod
    @abc.abstractmethod
    def connect(cls, db: DatabaseConfig) -> AbstractContextManager[Source]:
        """Open the source for ``db``; closing the context closes every connection it opened."""

    @abc.abstractmethod
    def discover(self, only: list[str] | None) -> list[Table]:
        """The tables to migrate (``only``: names, schema-qualified or not), with keys and mapped columns."""

    @abc.abstractmethod
    def bounds(self, table: Table, batch_size: int, start_id: int) -> list[Batch]:
        """``table`` split into batches of about ``batch_size`` rows, numbered from ``start_id``."""

    @abc.abstractmethod
    def rows(self, table: Table, batch: Batch) -> Iterator[tuple[Any, ...]]:
        """The batch's rows as driver values, in the table's column order."""

    @abc.abstractmethod
    def changed_rows(self, table: Table, batch: Batch, column: str, since: str | None,
                     until: str) -> list[tuple[Any, ...]]:
        """Incremental runs: the batch's rows whose ``column`` is in (``since``, ``until``]."""

    @abc.abstractmethod
    def max_watermark(self, table: Table, column: str) -> str | None:
        """The largest value of ``column`` now, as text (None: an empty table)."""

    @abc.abstractmethod
    def usable(self) -> bool:
        """Idle and answering: a pooled source is reused only then."""

    def rows_by_keys(self, table: Table, keys: list[list[Any]]) -> list[tuple[Any, ...]]:
        """The rows of ``table`` whose key is one of ``keys`` (``retry-rejects``), as driver values."""
        raise NotImplementedError(f"{self.kind} sources cannot re-read single rows")

    def schema_objects(self, table: Table, migrated: set[str]) -> list[dict[str, Any]]:
        """Secondary indexes and constraints for a PostgreSQL target to rebuild (none by default)."""
        return []

    def plan_path(self, target: Target, kind: MigrationType, validation: bool) -> str:
        """How batches travel into ``target``: "rows" (driver values) unless a subclass has a faster path."""
        return "rows"

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """Reads inside see one consistent state where the source can offer it (default: nothing to do)."""
        yield

    def batch_rows(self, plan: MigrationPlan, table: Table, batch: Batch) -> list[tuple[Any, ...]]:
        """The batch's rows to write as the driver reads them (full: every row; incremental: the changed);
        ``converter`` of the columns' casts maps them for the target."""
        if plan.type != MigrationType.INCREMENTAL.value:
            return transform_rows(plan, table, list(self.rows(table, batch)))
        since, until = plan.since.get(table.source), plan.until.get(table.source)
        if until is None:
            return []
        return transform_rows(plan, table, self.changed_rows(table, batch, plan.watermark or "", since, until))

    def clickhouse_chunks(self, plan: MigrationPlan, table: Table, batch: Batch,
                          columns: list[Any]) -> Iterator[bytes] | None:
        """ClickHouse targets: the batch (incremental: its changed rows) as TabSeparated text formatted by the
        source's server (``columns``: ``clickhouse_types.ChColumn``s); None: this source cannot, the target
        formats the driver's values itself."""
        return None

    def copy_binary(self, target: Any, plan: MigrationPlan, table: Table, batch: Batch) -> tuple[int, int, int]:
        """The "pg-pg" path, for sources whose ``plan_path`` chooses it: (rows, checksum, rejects)."""
        raise NotImplementedError(f"{self.kind} sources have no binary COPY path")

    def copy_text(self, target: Any, plan: MigrationPlan, table: Table, batch: Batch,
                  spec: Any) -> tuple[int, int, int, bool]:
        """The "text" path, for sources whose ``plan_path`` chooses it: (rows, checksum, rejects, escaped)."""
        raise NotImplementedError(f"{self.kind} sources have no COPY text path")


class Target(abc.ABC):
    """A database a migration writes. The contract:

    - ``prepare`` creates what is missing and records it in ``plan.created``; run again, it creates
      nothing new (a resumed migration prepares again).
    - ``write_batch`` writes a batch and its checkpoint **atomically**: after a crash either both are
      there or neither (transactional targets), or a rerun rewrites the same ids before the checkpoint
      (targets without transactions). A batch with a checkpoint is skipped: redelivery is harmless.
    - ``rollback`` drops what ``prepare`` recorded and restores what it snapshotted; it is **idempotent**
      (rolling back twice, or after a partial rollback, ends in the same state).
    - ``validate`` compares the target with the checkpoints' counts and checksums, computed the same way
      on both sides; ``ok`` False names the differing ranges (or tables).
    """

    kind: ClassVar[str]
    poolable: ClassVar[bool] = False  # connections kept between batches of one worker process
    accepts_pg_copy: ClassVar[bool] = False  # PostgreSQL COPY paths (binary relay, text lines) write into it
    supports_incremental: ClassVar[bool] = False
    supports_embeds: ClassVar[bool] = False
    builds_schema: ClassVar[bool] = False  # rebuilds a source's secondary indexes and constraints

    @classmethod
    @abc.abstractmethod
    def connect(cls, db: DatabaseConfig, lock_timeout: float = 60.0) -> AbstractContextManager[Target]:
        """Open the target for ``db``; closing the context closes its connections."""

    @abc.abstractmethod
    def prepare(self, plan: MigrationPlan) -> list[str]:
        """Create the schema (or check the existing one); return every object created so far."""

    @abc.abstractmethod
    def write_batch(self, plan: MigrationPlan, table: Table, batch: Batch, source: Source) -> dict[str, Any]:
        """Copy one batch with its checkpoint; a batch already done is skipped (``skipped`` True)."""

    @abc.abstractmethod
    def checkpoints(self, plan: MigrationPlan) -> Checkpoints:
        """batch id -> what its write recorded (rows, checksum, rejects, ...)."""

    @abc.abstractmethod
    def finalize(self, plan: MigrationPlan, db: DatabaseConfig, cps: Checkpoints) -> list[str]:
        """After every batch: keys, indexes, constraints, watermarks. Returns what could not be built."""

    @abc.abstractmethod
    def validate(self, plan: MigrationPlan, db: DatabaseConfig, source: Source, cps: Checkpoints,
                 report: dict[str, Any]) -> dict[str, Any]:
        """Fill ``report`` (tables, ok, rejects) by comparing the target with the checkpoints."""

    @abc.abstractmethod
    def rollback(self, plan: MigrationPlan) -> list[str]:
        """Undo what prepare created (idempotent); return what was undone."""

    def usable(self) -> bool:
        """Idle and answering: a pooled target is reused only then."""
        return False

    def plan_notes(self, plan: MigrationPlan) -> list[str]:
        """What the plan should say plainly about this target (type mappings, deletes); at plan time."""
        if plan.type != MigrationType.INCREMENTAL.value:
            return []
        blind = [t.source for t in plan.tables if plan.soft_delete not in {c.name for c in t.columns}]
        if not blind:
            return []
        return [f"deletes at the source are not copied by incremental runs for {', '.join(blind)} (rows deleted there"
                " stay in the target): give a soft-delete column (soft_delete) to carry them"]

    @classmethod
    def ensure_database(cls, db: DatabaseConfig, create: bool) -> bool:
        """Before planning: make sure the database ``db`` names exists, creating it when ``create`` and the
        kind can (True when created); otherwise fail saying what to run. Default: nothing to check."""
        return False

    def nonempty(self, tables: list[Table]) -> list[str]:
        """The target tables of ``tables`` that exist and hold rows (read-only; default: none known)."""
        return []

    def retry_rejects(self, plan: MigrationPlan, source: Source) -> dict[int, dict[str, Any]]:
        """Read the refused rows again from ``source`` by key and write them, each batch with its checkpoint;
        batch id -> its counts (rows, rejects) and the rows still refused."""
        raise NotImplementedError(f"{self.kind} targets cannot retry refused rows: roll back and run again")

    def last_watermark(self, migration_id: str, table: str) -> str | None:
        """Incremental targets: the watermark the last run of ``migration_id`` copied (None: none has)."""
        raise NotImplementedError(f"{self.kind} targets take no incremental runs")
