"""The contract of an in-place masking target, and the lookup from database kind to its class."""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any, ClassVar

from engines.compliance.base import load

CONTROL_TABLE = "dbfleet_anonymize_checkpoints"


class RowsChanged(Exception):  # noqa: N818 - a condition the loops recover from, not a failure
    """A compare-and-set write found rows changed (or deleted) since its unlocked read: the batch is rolled
    back and read again, locked."""


@dataclass
class ColumnShape:
    """What masking needs to know of a column."""

    name: str
    sql_type: str
    nullable: bool = True
    unique: bool = False
    max_length: int | None = None


@dataclass
class TableShape:
    """A table to mask: its key (ordered), its columns."""

    name: str
    key: list[str]
    columns: dict[str, ColumnShape] = field(default_factory=dict)
    ident: Any = None


@dataclass
class Checkpoint:
    """How far a job got: the last key masked (a list, one value per key column) and rows masked."""

    job_id: str
    last_key: list[Any] | None
    rows_done: int
    finished: bool = False


class MaskTarget(abc.ABC):
    """Masks one table of one database in batches, each batch and its checkpoint in one transaction.

    Contract:
    - ``describe`` reads the table's key, columns, nullability, single-column unique constraints;
    - ``checkpoint`` reads a job's row of the control table (created on first use), None when new;
    - ``batch`` returns up to ``n`` rows (key values then masked columns' values) with keys greater than
      ``after``, in key order, locked against concurrent writers until ``write`` commits (unless
      ``optimistic``: then read without locks, and ``write`` raises ``RowsChanged`` for rows changed since);
    - ``write`` updates those rows with the new values AND upserts the checkpoint in the same transaction,
      so a crash (kill -9) loses the batch and its checkpoint together and a resume masks each row once;
    - ``taken`` says which of ``values`` already appear anywhere in ``column`` (masked rows, rows not masked
      yet, the batch's originals): how unique columns avoid collisions, from database state alone, so a
      resumed run bumps exactly as the interrupted one would have.
    """

    kind: ClassVar[str]

    def __init__(self, connector: Any) -> None:
        self.connector = connector

    @abc.abstractmethod
    def describe(self, table: str) -> TableShape:
        """Key, columns, nullability and single-column unique constraints of ``table``."""

    @abc.abstractmethod
    def checkpoint(self, job_id: str) -> Checkpoint | None:
        """The job's checkpoint (control table created on first use), None when the job is new."""

    @abc.abstractmethod
    def reset(self, job_id: str) -> None:
        """Forget a finished job (``again``)."""

    @abc.abstractmethod
    def start(self, shape: TableShape, job_id: str, table: str, rules: str) -> None:
        """Record a new job (no key masked yet)."""

    @abc.abstractmethod
    def batch(self, shape: TableShape, columns: list[str], after: list[Any] | None, n: int) -> list[tuple[Any, ...]]:
        """Up to ``n`` rows (keys, then ``columns``) after ``after`` in key order, locked; opens the transaction."""

    @abc.abstractmethod
    def taken(self, shape: TableShape, column: str, values: list[Any]) -> set[Any]:
        """Which of ``values`` already appear in ``column``."""

    @abc.abstractmethod
    def write(self, shape: TableShape, columns: list[str], rows: list[tuple[Any, ...]], cp: Checkpoint,
              finished: bool) -> None:
        """Apply the masked rows and the checkpoint, then commit the batch's transaction."""

    @abc.abstractmethod
    def rollback(self) -> None:
        """Abandon the batch in progress."""

    def optimistic(self, on: bool) -> bool:
        """Read batches without locks and write them compare-and-set (a row changed since it was read makes
        ``write`` raise ``RowsChanged`` before committing); True when this kind supports it."""
        return False

    def fork(self) -> MaskTarget | None:
        """A second target on its own connection to the same database, for the pipelined loop (one connection
        writes a batch while the other reads and masks the next); None: this kind runs batch after batch."""
        return None

    def close(self) -> None:
        """Close what ``fork`` opened (the forked target's own connection)."""
        self.connector.close()

    def unique_violation(self, exc: BaseException) -> bool:
        """Whether ``exc`` is this driver's unique-constraint violation."""
        return False


def mask_target_class(kind: str) -> type[MaskTarget]:
    """The in-place masking class of ``kind``."""
    cls: type[MaskTarget] = load(kind, "masker", "in-place anonymisation")
    return cls
