"""The tuning contract: one ``Tuner`` per kind, typed advice, and the settings every tuner reads.

A tuner analyses one database (read-only) and returns a :class:`TuningReport`; ``apply`` makes the
changes a report proposes, one at a time, each proven or rolled back; ``revert`` undoes one recorded
change. Checks that cannot look (privilege, extension, version) become ``limits`` with the reason
instead of failing the report (the health engine's ``CannotCheck`` rule).
"""

from __future__ import annotations

import abc
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

from engines.config import DatabaseConfig

AREAS = ("indexes", "hygiene", "settings", "mviews", "partitions")


class CannotTune(Exception):
    """An analysis cannot run (privilege, extension, version); the message says what to do."""


@dataclass
class TuningSettings:
    """The ``performance_tuning`` section as a tuner sees it (plus per-run options)."""

    optimize_for: str = "mixed"
    min_cost_savings: float = 50.0  # percent
    auto_apply: bool = False
    only: tuple[str, ...] = AREAS
    max_queries: int = 200
    max_index_columns: int = 3
    unused_index_min_days: float = 7.0
    lock_timeout_ms: int = 5000
    statement_timeout_ms: int = 30 * 60 * 1000
    disk_headroom_factor: float = 2.0
    host: dict[str, Any] = field(default_factory=dict)  # memory_bytes, cpus, storage (ssd|hdd|san)
    create_materialized_views: bool = False
    partitioning_strategy: str = "none"
    mview_min_calls: int = 3
    mview_min_share_percent: float = 5.0  # of the workload's time
    partition_min_rows: int = 1_000_000
    apply_mviews: bool = False  # --apply also creates the advised materialized views (only on request)
    apply_settings: str = "never"  # reload_only: ALTER SYSTEM + pg_reload_conf for settings needing no restart
    optimization_targets: list[str] = field(default_factory=list)  # engines/tuning/targets.py
    apply_partitions: bool = False  # --apply converts tables only when the run names the area: --only partitions
    partition_batch_rows: int = 10_000  # rows per checkpointed batch of the online conversion
    partition_batch_pause_ms: int = 0  # pause between batches (spares the server's I/O)
    partition_swap_attempts: int = 5  # swap tries under lock_timeout, with backoff, before giving up
    verify: str = "plan"  # execute: also time sampled executions (read-only) before and after, decide on time
    verify_samples: int = 5  # parameter sets per query
    verify_repeats: int = 3  # executions per parameter set (the fastest counts)
    verify_timeout_ms: int = 5000  # statement_timeout of each timed execution
    min_time_savings: float = 30.0  # percent of measured time an index must save to be kept (verify: execute)

    def wants(self, area: str) -> bool:
        """True when ``area`` is among the areas this run analyses."""
        return area in self.only


@dataclass
class QueryRef:
    """One workload query an index serves, with its cost before and after."""

    queryid: str
    query: str
    calls: int
    cost_before: float
    cost_after: float


@dataclass
class IndexAdvice:
    """A proposed B-tree index with its proof (``proven`` False when no hypothetical index could test it)."""

    schema: str
    table: str
    columns: list[str]
    name: str
    statement: str
    queries: list[QueryRef]
    cost_before: float  # calls-weighted sum over the queries it serves
    cost_after: float
    estimated_bytes: int | None
    proven: bool = True
    note: str | None = None

    @property
    def savings_percent(self) -> float:
        """Weighted cost saved, in percent of the cost before."""
        return 0.0 if self.cost_before <= 0 else round(100.0 * (1 - self.cost_after / self.cost_before), 1)


@dataclass
class Finding:
    """An index-hygiene finding (unused, duplicate, invalid, missing FK index, sequence, bloat)."""

    check: str
    object: str
    detail: str
    statement: str | None = None  # the fix, when there is one (never run automatically)
    severity: str = "warning"


@dataclass
class SettingAdvice:
    """One server setting: current -> advised, why, and whether it needs a restart."""

    name: str
    current: str
    advised: str
    reason: str
    restart: bool


@dataclass
class ViewAdvice:
    """A materialized view for a heavy repeated aggregate, with the unique index REFRESH CONCURRENTLY needs."""

    name: str
    queryid: str
    query: str
    calls: int
    total_ms: float
    statements: list[str]
    refresh_schedule: str
    note: str | None = None


@dataclass
class PartitionAdvice:
    """A range-partitioning plan for a large append-mostly table filtered on a time column."""

    schema: str
    table: str
    column: str
    interval: str  # month | week
    partitions: int
    rows: int
    pruning_queries: list[str]  # queryids whose range filter on the column prunes partitions
    pruning_share_percent: float  # of the table's calls-weighted workload time
    statements: list[str]
    note: str


@dataclass
class Change:
    """One applied change: what ran, the evidence, and how to reverse it (as data, not SQL text)."""

    kind: str  # create_index
    database_id: str
    target: dict[str, Any]  # schema, table, index, columns
    status: str  # kept | rolled_back | failed
    evidence: dict[str, Any]
    reverse: dict[str, Any]  # e.g. {"action": "drop_index", "schema": ..., "index": ...}
    statement: str = ""
    change_id: str = field(default_factory=lambda: f"chg-{uuid.uuid4().hex[:12]}")
    at: float = field(default_factory=time.time)


@dataclass
class TuningReport:
    """Everything one analysis (and optionally apply) found for one database."""

    database_id: str
    kind: str
    analyzed_at: float = field(default_factory=time.time)
    server_version: str | None = None
    limits: list[str] = field(default_factory=list)  # what could not be analysed, and why
    workload: dict[str, Any] = field(default_factory=dict)
    indexes: list[IndexAdvice] = field(default_factory=list)
    hygiene: list[Finding] = field(default_factory=list)
    settings: list[SettingAdvice] = field(default_factory=list)
    mviews: list[ViewAdvice] = field(default_factory=list)
    partitions: list[PartitionAdvice] = field(default_factory=list)
    changes: list[Change] = field(default_factory=list)
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (what tasks return and history stores)."""
        out = asdict(self)
        for advice, raw in zip(self.indexes, out["indexes"], strict=True):
            raw["savings_percent"] = advice.savings_percent
        return out


class Tuner(abc.ABC):
    """Tuning of one kind. Contract:

    * ``analyze`` is read-only on the database (hypothetical indexes live in the session only) and
      never raises for a missing privilege or extension: it adds a line to ``report.limits``.
    * ``apply`` changes one thing at a time, proves each change by re-planning the affected queries
      and rolls back the ones that do not reach ``min_cost_savings``; it refuses on a replica.
    * ``revert`` is idempotent: reverting a change already undone succeeds.
    ``memory`` is carried between runs by the caller (workload counters for deltas).
    """

    kind = ""

    def __init__(self, db: DatabaseConfig, settings: TuningSettings, memory: dict[str, Any] | None = None) -> None:
        self.db = db
        self.settings = settings
        self.memory = memory if memory is not None else {}

    @abc.abstractmethod
    def analyze(self) -> TuningReport:
        """Read the workload and the server; return advice."""

    def apply(self, report: TuningReport) -> list[Change]:
        """Apply the report's proposals safely; kinds without an apply path change nothing."""
        report.limits.append(f"apply is not supported for {self.kind}: advice only")
        return []

    def revert(self, change: dict[str, Any]) -> dict[str, Any]:
        """Undo one recorded change."""
        raise CannotTune(f"revert is not supported for {self.kind}")

    def refresh(self, schema: str, view: str) -> dict[str, Any]:
        """Refresh one materialized view an apply created."""
        raise CannotTune(f"materialized views are not supported for {self.kind}")
