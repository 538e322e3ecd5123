"""ClickHouse as a migration target, over its HTTP interface (``engines.connectors.clickhouse``: Debian's 18.16
server is too old for clickhouse-connect).

- Types for the server version in use (``clickhouse_types``: DateTime64 where the server has it, else
  timestamps with a fraction as Int64 microseconds since the epoch; Nullable, Decimal, arrays, JSON as String).
- A ``ReplacingMergeTree`` per table ordered by the primary key: re-inserted keys collapse (reads use FINAL),
  so a redelivered batch or an incremental run's changed rows replace what is there. Incremental runs whose
  watermark column is a NOT NULL integer or timestamp make it the version column (the newest row wins at any
  merge order); otherwise the last inserted row wins.
- A batch is streamed as TabSeparated text: formatted by a PostgreSQL source's own server (``COPY (SELECT
  formatted columns) TO STDOUT`` straight into ``INSERT ... FORMAT TabSeparated``), or here from the driver's
  values for other sources. Its checkpoint is written after it (no transaction spans both; a rerun rewrites
  the same keys).
- Validation: the worker hashes each line it sends (PostgreSQL's hashtextextended, in C) into the batch's
  checkpoint; ClickHouse prints the stored rows (FINAL) back as the same lines, per key range (the batches'
  ranges, single integer keys; else per table), and counts and hash sums are compared; incremental runs
  compare with the source's lines now. The ranges that differ are named.
- Soft deletes (incremental, ``soft_delete``): the row arrives with its flag set and replaces the live one (a
  tombstone: query ``FINAL WHERE NOT flag``); hard deletes at the source are not seen.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from engines.connectors.clickhouse import ClickHouseError, ClickHouseHTTP, quote_ident, quote_str
from engines.migration import clickhouse_types as cht
from engines.migration.base import Checkpoints, Source, Target
from engines.migration.document_targets import CONTROL, DocumentTarget, Embedded, _require_keys
from engines.migration.linehash import sum_lines
from engines.migration.model import Batch, MigrationPlan, MigrationType, Table
from engines.migration.types import converter

if TYPE_CHECKING:
    from engines.config import DatabaseConfig

WATERMARKS = "_dbfleet_watermarks"
_VERSIONABLE = {"int", "epoch_us", "datetime", "date", "datetime64"}
ch_ident = quote_ident  # the old name


def ch_type(target_type: str, nullable: bool, version: tuple[int, ...] = (18, 16)) -> str:
    """The ClickHouse type of a PostgreSQL type on a server of ``version``."""
    from engines.migration.model import Column

    return cht.ch_column(Column("c", target_type, target_type, nullable), version).type


def version_column(plan: MigrationPlan, table: Table, columns: list[cht.ChColumn]) -> str | None:
    """The ReplacingMergeTree version column: the incremental watermark when ClickHouse allows it there."""
    if plan.type != MigrationType.INCREMENTAL.value or not plan.watermark:
        return None
    found = next((c for c in columns if c.name == plan.watermark), None)
    return found.name if found and found.fmt in _VERSIONABLE and not found.nullable else None


def clickhouse_ddl(table: Table, database: str, columns: list[cht.ChColumn], version: str | None = None) -> str:
    """CREATE TABLE ... ENGINE = ReplacingMergeTree[(version)] ORDER BY (key): re-inserted keys collapse."""
    cols = ", ".join([*(cht.float_columns(c, quote_ident)[0] if c.fmt == "float" else f"{quote_ident(c.name)} {c.type}"
                        for c in columns),
                      *(cht.float_columns(c, quote_ident)[1] for c in columns if c.fmt == "float")])
    order = ", ".join(quote_ident(k) for k in table.key)
    engine = f"ReplacingMergeTree({quote_ident(version)})" if version else "ReplacingMergeTree"
    return (f"CREATE TABLE IF NOT EXISTS {quote_ident(database)}.{quote_ident(table.target_name)} ({cols})"
            f" ENGINE = {engine} ORDER BY ({order})")


class _Counted:
    """Byte chunks of whole lines, counted and hashed (``linehash``, in C) as they pass."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self.chunks, self.lines, self.total = chunks, 0, 0

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self.chunks:
            n, h = sum_lines(chunk)
            self.lines, self.total = self.lines + n, self.total + h
            yield chunk


def _chain(first: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    yield first
    yield from rest


class ClickHouseTarget(DocumentTarget):
    """ClickHouse over HTTP: idempotent by ReplacingMergeTree keys, validated by row hashes on both sides."""

    kind = "clickhouse"
    supports_incremental = True

    @classmethod
    @contextmanager
    def connect(cls, db: DatabaseConfig, lock_timeout: float = 60.0) -> Iterator[ClickHouseTarget]:
        """The target at the database's URL (dsn) or host:port."""
        yield cls(db.dsn or f"http://{db.host}:{db.port or 8123}", db.user, db.password(), db.query_timeout * 3,
                  db.dbname)

    def __init__(self, url: str, user: str | None = None, password: str | None = None, timeout: float = 30,
                 dbname: str | None = None) -> None:
        super().__init__(None)
        self.dbname = dbname
        base = url.split("?", 1)[0]
        self.http = ClickHouseHTTP(base, user, password, None, timeout, timeout)
        self._version: tuple[int, ...] | None = None

    @classmethod
    def ensure_database(cls, db: DatabaseConfig, create: bool) -> bool:
        """Create the target database when it is missing and ``create`` (the user must be allowed to);
        otherwise a ConfigError saying what to run."""
        from engines.errors import ConfigError

        name = db.dbname or "default"
        with cls.connect(db) as target:
            sql_text = f"SELECT count() FROM system.databases WHERE name = {quote_str(name)}"  # noqa: S608 - quoted
            found = target.query(sql_text).strip()
            if found not in ("", "0"):
                return False
            if not create:
                raise ConfigError([("target", f"the ClickHouse database {name!r} does not exist on {db.host}: create "
                                              f"it (clickhouse client --query 'CREATE DATABASE {quote_ident(name)}') "
                                              "or plan without --no-create-target")], "migration plan")
            try:
                target.query(f"CREATE DATABASE IF NOT EXISTS {quote_ident(name)}")
            except ClickHouseError as exc:
                raise ConfigError([("target", f"the ClickHouse database {name!r} does not exist and cannot be created"
                                              f" by this user ({exc}): create it as an admin")],
                                  "migration plan") from None
        return True

    def nonempty(self, tables: list[Table]) -> list[str]:
        """The existing target tables that hold at least one row."""
        database = self.dbname or "default"
        full = []
        for table in tables:
            name = f"{quote_ident(database)}.{quote_ident(table.target_name)}"
            if self.query(f"EXISTS TABLE {name}").strip() == "1" and \
                    self.query(f"SELECT count() FROM (SELECT 1 FROM {name} LIMIT 1)"  # noqa: S608 - quoted names
                               ).strip() not in ("", "0"):
                full.append(table.target_name)
        return full

    # ------------------------------------------------------------ plumbing
    def query(self, sql_text: str, body: Any = None) -> str:
        """One statement (``body``: bytes or an iterable of byte chunks, streamed); a server error raises
        ``ClickHouseError`` with the server's message."""
        return self.http.execute(sql_text, body, database=None)

    def version(self) -> tuple[int, ...]:
        """The server's version (``SELECT version()``), asked once per connection."""
        if self._version is None:
            self._version = cht.parse_version(self.query("SELECT version()"))
        return self._version

    def columns(self, table: Table) -> list[cht.ChColumn]:
        return cht.ch_columns(table, self.version())

    def database(self, plan: MigrationPlan) -> str:
        return str(plan.target.get("dbname") or "default")

    def name(self, plan: MigrationPlan, table: str) -> str:
        return f"{quote_ident(self.database(plan))}.{quote_ident(table)}"

    def plan_notes(self, plan: MigrationPlan) -> list[str]:
        """The type mappings a reader must know, and how deletes travel."""
        notes = [n for t in plan.tables for n in cht.mapping_notes(self.columns(t), t)]
        if plan.type == MigrationType.INCREMENTAL.value and plan.soft_delete:
            notes.append(f"soft deletes: rows with {plan.soft_delete} set replace the live row in ClickHouse (query"
                         f" FINAL WHERE NOT {plan.soft_delete}); rows deleted outright at the source are not seen")
        return notes + Target.plan_notes(self, plan)

    # ------------------------------------------------------------ schema
    def prepare(self, plan: MigrationPlan) -> list[str]:
        _require_keys(plan)
        created = list(plan.created)
        self.query(f"CREATE TABLE IF NOT EXISTS {self.name(plan, CONTROL)} (migration_id String, batch_id Int64,"
                   " table_name String, rows Int64, checksum String, seq UInt64) ENGINE = ReplacingMergeTree(seq)"
                   " ORDER BY (migration_id, batch_id)")
        self.query(f"CREATE TABLE IF NOT EXISTS {self.name(plan, WATERMARKS)} (migration_id String,"
                   " table_name String, value String, seq UInt64) ENGINE = ReplacingMergeTree(seq)"
                   " ORDER BY (migration_id, table_name)")
        for t in plan.tables:
            if self.query(f"EXISTS TABLE {self.name(plan, t.target_name)}").strip() != "1":
                columns = self.columns(t)
                self.query(clickhouse_ddl(t, self.database(plan), columns, version_column(plan, t, columns)))
                created.append(f"chtable:{t.target_name}")
        return created

    # ------------------------------------------------------------ batches
    def write_batch(self, plan: MigrationPlan, table: Table, batch: Batch, source: Source) -> dict[str, Any]:
        """The batch streamed as TabSeparated text into the table, then its checkpoint."""
        done = self.done(plan, batch.id)
        if done is not None:
            return {"batch": batch.id, "table": table.source, "skipped": True, "rows": int(done.get("rows", 0))}
        columns = self.columns(table)
        chunks = source.clickhouse_chunks(plan, table, batch, columns)
        if chunks is None:
            chunks = _python_chunks(source.batch_rows(plan, table, batch), table, columns)
        n, checksum = self.insert(plan, table, columns, chunks)
        self._checkpoint(plan, batch.id, table.source, n, checksum)
        return {"batch": batch.id, "table": table.source, "rows": n, "rejects": 0, "skipped": False}

    def insert(self, plan: MigrationPlan, table: Table, columns: list[cht.ChColumn],
               chunks: Iterable[bytes]) -> tuple[int, int]:
        """Stream ``chunks`` (TabSeparated lines, whole) into the table in one request as the source produces
        them (chunked transfer: the source's server and ClickHouse work at once); returns (lines, their hash
        sum: ``linehash``, for the checkpoint)."""
        counted = _Counted(chunks)
        stream = iter(counted)
        first = next(stream, None)
        if first is None:
            return 0, 0
        cols = ", ".join(quote_ident(c.insert_name) for c in columns)
        self.query(f"INSERT INTO {self.name(plan, table.target_name)} ({cols}) FORMAT TabSeparated",
                   _chain(first, stream))
        return counted.lines, counted.total % cht.MOD

    def write(self, plan: MigrationPlan, table: Table, batch_id: int, rows: list[tuple[Any, ...]],
              embedded: Embedded | None = None) -> int:
        """Write driver rows (already converted) and the batch's checkpoint."""
        columns = self.columns(table)
        n, checksum = self.insert(plan, table, columns, [cht.tsv_line(r, columns).encode() for r in rows])
        self._checkpoint(plan, batch_id, table.source, n, checksum)
        return n

    def _checkpoint(self, plan: MigrationPlan, batch_id: int, table: str, rows: int, checksum: int = 0) -> None:
        line = "\t".join([_tsv(plan.id), str(int(batch_id)), _tsv(table), str(int(rows)), str(int(checksum)),
                          str(time.time_ns())]) + "\n"
        self.query(f"INSERT INTO {self.name(plan, CONTROL)} FORMAT TabSeparated", line.encode())

    def done(self, plan: MigrationPlan, batch_id: int) -> dict[str, Any] | None:
        found = self.http.rows(f"SELECT rows FROM {self.name(plan, CONTROL)} FINAL WHERE migration_id = "  # noqa: S608 - quoted
                               f"{quote_str(plan.id)} AND batch_id = {int(batch_id)} AND rows >= 0", database=None)
        return found[0] if found else None

    def checkpoints(self, plan: MigrationPlan) -> dict[int, dict[str, int]]:
        try:
            found = self.http.rows(f"SELECT batch_id, rows, checksum FROM {self.name(plan, CONTROL)} FINAL"  # noqa: S608
                                   f" WHERE migration_id = {quote_str(plan.id)} AND rows >= 0", database=None)
        except ClickHouseError as exc:
            if "doesn't exist" in str(exc):  # nothing prepared yet
                return {}
            raise
        return {int(r["batch_id"]): {"rows": int(r["rows"]), "checksum": int(r["checksum"] or 0), "rejects": 0}
                for r in found}

    # ------------------------------------------------------------ incremental
    def finalize(self, plan: MigrationPlan, db: DatabaseConfig, cps: Checkpoints) -> list[str]:
        """Incremental runs: record each table's watermark (the next run starts after it)."""
        if plan.type == MigrationType.INCREMENTAL.value:
            lines = "".join("\t".join([_tsv(plan.base_id or plan.id), _tsv(t.source), _tsv(str(plan.until[t.source])),
                                       str(time.time_ns())]) + "\n"
                            for t in plan.tables if plan.until.get(t.source) is not None)
            if lines:
                self.query(f"INSERT INTO {self.name(plan, WATERMARKS)} FORMAT TabSeparated", lines.encode())
        return []

    def last_watermark(self, migration_id: str, table: str) -> str | None:
        """The watermark the last incremental run of ``migration_id`` recorded (None: none has)."""
        name = f"{quote_ident(self.dbname or 'default')}.{quote_ident(WATERMARKS)}"
        if self.query(f"EXISTS TABLE {name}").strip() != "1":
            return None
        found = self.http.rows(f"SELECT argMax(value, seq) AS v, count() AS n FROM {name} WHERE migration_id ="  # noqa: S608 - quoted
                               f" {quote_str(migration_id)} AND table_name = {quote_str(table)}", database=None)
        return str(found[0]["v"]) if found and int(found[0]["n"]) else None

    # ------------------------------------------------------------ validation
    def validate(self, plan: MigrationPlan, db: DatabaseConfig, source: Source, cps: Checkpoints,
                 report: dict[str, Any]) -> dict[str, Any]:
        """Per key range (the batches', for a single integer key; else the table): ClickHouse prints the rows
        (FINAL) as the text they were sent as, and their count and line-hash sum are compared with the batches'
        checkpoints (full runs: the hashes of the lines sent) or, for incremental runs, with the source's lines
        now. The ranges that differ are named."""
        for table in plan.tables:
            batches = sorted((b for b in plan.batches if b.table == table.source), key=lambda b: b.id)
            columns = self.columns(table)
            cuts = _cuts(table, batches)
            ranges = [(b.lo[0] if b.lo else None, b.hi[0] if b.hi else None) for b in batches] if cuts else [(None, None)]
            final = plan.type == MigrationType.INCREMENTAL.value or self.stored_rows(plan, table) != sum(
                int(cps.get(b.id, {}).get("rows", 0)) for b in batches)
            with ThreadPoolExecutor(max(1, min(plan.parallel_workers, 4, len(ranges)))) as pool:
                mine = [pool.submit(self.measure_range, plan, table, columns, lo, hi, final) for lo, hi in ranges]
                if plan.type == MigrationType.INCREMENTAL.value:
                    theirs = [_source_lines(plan, source, table, columns, b) for b in batches]
                else:
                    theirs = [(int(cps.get(b.id, {}).get("rows", 0)), int(cps.get(b.id, {}).get("checksum", 0)))
                              for b in batches]
                ours = [m.result() for m in mine]
            entry = _entry(table, batches, cuts is not None, theirs, ours)
            report["tables"].append(entry)
            report["ok"] = report["ok"] and entry["ok"]
        report["rejects"] = []
        if plan.notes:
            report["notes"] = list(plan.notes)
        return report

    def stored_rows(self, plan: MigrationPlan, table: Table) -> int:
        """Rows stored, replaced versions included (no FINAL: from the parts' metadata)."""
        return int(self.query(f"SELECT count() FROM {self.name(plan, table.target_name)}").strip() or 0)  # noqa: S608

    def measure_range(self, plan: MigrationPlan, table: Table, columns: list[cht.ChColumn], lo: int | None = None,
                      hi: int | None = None, final: bool = True) -> tuple[int, int]:
        """(rows, line-hash sum) of the table's rows with key in [lo, hi) (None: unbounded), printed as the lines
        they were sent as (``clickhouse_types.output_expr`` and ``fixed``). ``final`` False reads every stored
        row without FINAL (a third cheaper): a full run whose stored rows number what its batches wrote has no
        second version of any row to hide (a duplicate would come with a missing row, and differ anyway)."""
        where = [f"{quote_ident(table.key[0])} {op} {int(v)}" for op, v in ((">=", lo), ("<", hi)) if v is not None]
        exprs = ", ".join(cht.output_expr(c) for c in columns)
        with self.http.stream(f"SELECT {exprs} FROM {self.name(plan, table.target_name)}{' FINAL' if final else ''}"  # noqa: S608
                              f" WHERE {' AND '.join(where) or '1'} FORMAT TabSeparated", database=None) as out:
            data = out.read()
        n, total = sum_lines(cht.fixed(data))
        return int(n), int(total) % cht.MOD

    def measure(self, plan: MigrationPlan, table: Table) -> tuple[int, int]:
        """(rows, line-hash sum) of the whole table (FINAL)."""
        return self.measure_range(plan, table, self.columns(table))

    def rollback(self, plan: MigrationPlan) -> list[str]:
        """Drop the tables the migration created; its checkpoints are superseded (rows -1), so a run starts over."""
        done = []
        for obj in reversed(plan.created):
            kind, _, name = obj.partition(":")
            if kind == "chtable":
                self.query(f"DROP TABLE IF EXISTS {self.name(plan, name)}")
                done.append(obj)
        if self.query(f"EXISTS TABLE {self.name(plan, CONTROL)}").strip() == "1":
            self.query(f"INSERT INTO {self.name(plan, CONTROL)} SELECT migration_id, batch_id, table_name, -1, '',"  # noqa: S608 - quoted
                       f" seq + 1 FROM {self.name(plan, CONTROL)} FINAL WHERE migration_id = {quote_str(plan.id)}"
                       " AND rows >= 0")
        return done


def _tsv(text: str) -> str:
    return text.translate(cht._TSV_ESCAPES)


def _python_chunks(rows: Iterable[tuple[Any, ...]], table: Table, columns: list[cht.ChColumn],
                   per_chunk: int = 2000) -> Iterator[bytes]:
    """Driver rows (converted by the columns' casts) as TabSeparated text, ``per_chunk`` rows at a time."""
    convert = converter([c.cast for c in table.columns])
    pending: list[str] = []
    for raw in rows:
        pending.append(cht.tsv_line(convert(raw), columns))
        if len(pending) >= per_chunk:
            yield "".join(pending).encode()
            pending.clear()
    if pending:
        yield "".join(pending).encode()


def _cuts(table: Table, batches: list[Batch]) -> list[int] | None:
    """The batches' lower bounds after the first, when the key is one integer column (ranges = batches)."""
    if len(table.key) != 1 or len(batches) < 2 or not table.ranges_portable or any(b.by != "key" for b in batches):
        return None
    cuts = [b.lo[0] for b in batches[1:] if b.lo is not None]
    if len(cuts) != len(batches) - 1 or not all(isinstance(c, int) and not isinstance(c, bool) for c in cuts):
        return None
    return cuts


def _source_lines(plan: MigrationPlan, source: Source, table: Table, columns: list[cht.ChColumn],
                  batch: Batch) -> tuple[int, int]:
    """(rows, line-hash sum) of the batch's range at the source now, as a full run would send it."""
    whole = dataclasses.replace(plan, type=MigrationType.FULL.value)
    chunks = source.clickhouse_chunks(whole, table, batch, columns)
    n = total = 0
    with source.snapshot():
        for chunk in chunks if chunks is not None else _python_chunks(source.rows(table, batch), table, columns):
            lines, h = sum_lines(chunk)
            n, total = n + lines, total + h
    return n, total % cht.MOD


def _entry(table: Table, batches: list[Batch], by_range: bool, theirs: list[tuple[int, int]],
           ours: list[tuple[int, int]]) -> dict[str, Any]:
    """The table's validation entry: the ranges (batches, or the whole table) whose count or line-hash sum differ."""
    want = (sum(n for n, _ in theirs), sum(c for _, c in theirs) % cht.MOD)
    got = (sum(n for n, _ in ours), sum(c for _, c in ours) % cht.MOD)
    entry: dict[str, Any] = {"table": table.source, "target": table.target_name, "batches": len(batches),
                             "source_rows": want[0], "target_rows": got[0], "rejects": 0, "mismatched_ranges": []}
    if by_range:
        for b, w, g in zip(batches, theirs, ours, strict=True):
            if w != g:
                entry["mismatched_ranges"].append({"batch": b.id, "from": b.lo, "to": b.hi, "source_rows": w[0],
                                                   "target_rows": g[0]})
    elif want != got:
        entry["mismatched_ranges"].append({"batch": None, "from": None, "to": None, "source_rows": want[0],
                                           "target_rows": got[0]})
    entry["ok"] = not entry["mismatched_ranges"]
    return entry
