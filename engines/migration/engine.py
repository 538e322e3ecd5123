"""Migration operations, callable without Celery: plan, prepare, copy one batch, finalize, validate, rollback.

The Celery side (workers/migrations.py) runs them as chain(prepare, chord(group(copy_batch ...),
finalize), validate). Each function opens its own connections, so any worker can run any step.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from datetime import datetime, timezone
from functools import partial
from typing import Any

import psycopg
from psycopg import sql

from engines.config import DatabaseConfig
from engines.connectors import open_connector
from engines.errors import ConfigError, DbfleetError
from engines.migration import relay, textpath
from engines.migration.checksum import (
    PG_HASH_MIN_VERSION,
    STABLE_TYPES,
    line_hash_items,
    pg_hash_items,
    pg_row_hash,
    python_checksum,
)
from engines.migration.ddl import type_sql
from engines.migration.document_targets import ClickHouseTarget, DocumentTarget, ElasticsearchTarget, MongoTarget
from engines.migration.linehash import line_hash
from engines.migration.model import Batch, Embed, MigrationPlan, MigrationType, Table
from engines.migration.postgres_target import PostgresTarget, key_text, target_ident
from engines.migration.sources import MySQLSource, PostgresSource, my_ident, my_range, open_source, pg_ident, pg_range
from engines.migration.types import converter

TARGETS = ("postgresql", "mongodb", "elasticsearch", "clickhouse")


class MigrationFailed(DbfleetError):
    """A migration step failed in a way a retry will not fix (the message says what to do)."""


def new_id() -> str:
    return datetime.now(timezone.utc).strftime("mig-%Y%m%dT%H%M%S-") + uuid.uuid4().hex[:6]


@contextmanager
def connections(source: DatabaseConfig, target: DatabaseConfig,
                lock_timeout: float = 60.0) -> Iterator[tuple[Any, Any]]:
    """(source, target): a PostgresTarget, or a DocumentTarget for MongoDB, Elasticsearch, ClickHouse."""
    if target.kind not in TARGETS:
        raise ConfigError([("target", f"cannot migrate into {target.kind!r}; targets: {', '.join(TARGETS)}")])
    with open_connector(source) as s:
        src = open_source(source.kind, s.conn, source)
        try:
            if target.kind == "clickhouse":  # over HTTP: no connector
                url = target.dsn or f"http://{target.host}:{target.port}"
                yield src, ClickHouseTarget(url, target.user, target.password(), target.query_timeout * 3)
                return
            with open_connector(target) as t:
                if target.kind == "postgresql":
                    yield src, PostgresTarget(t.conn, lock_timeout)
                else:
                    yield src, (MongoTarget if target.kind == "mongodb" else ElasticsearchTarget)(t.conn)
        finally:
            if isinstance(src, MySQLSource):
                src.close()


_POOL: dict[str, tuple[ExitStack, Any, Any, float]] = {}
_POOL_PID = os.getpid()
POOL_IDLE_SECONDS = 300.0


@contextmanager
def batch_connections(source: DatabaseConfig, target: DatabaseConfig,
                      lock_timeout: float = 60.0) -> Iterator[tuple[Any, Any]]:
    """``connections`` kept open between the batches a worker process runs (PostgreSQL targets): a batch
    then costs no connection set-up (PyMySQL builds a TLS context per connection). An entry is dropped
    when its use raised, when a connection is not idle or does not answer, or after POOL_IDLE_SECONDS unused."""
    if target.kind != "postgresql":
        with connections(source, target, lock_timeout) as pair:
            yield pair
        return
    global _POOL_PID
    if os.getpid() != _POOL_PID:  # a forked child: the sockets are the parent's, forget them unclosed
        _POOL.clear()
        _POOL_PID = os.getpid()
    now = time.monotonic()
    for stale in [k for k, e in _POOL.items() if now - e[3] > POOL_IDLE_SECONDS]:
        _POOL.pop(stale)[0].close()
    key = json.dumps([source.public(), target.public(), lock_timeout], sort_keys=True, default=str)
    entry = _POOL.pop(key, None)
    if entry is not None and not _usable(entry[1], entry[2]):
        entry[0].close()
        entry = None
    if entry is None:
        stack = ExitStack()
        try:
            src, tgt = stack.enter_context(connections(source, target, lock_timeout))
        except BaseException:
            stack.close()
            raise
        entry = (stack, src, tgt, now)
    try:
        yield entry[1], entry[2]
    except BaseException:
        entry[0].close()  # the connections may be in any state: never reuse them
        raise
    _POOL[key] = (entry[0], entry[1], entry[2], time.monotonic())


def _usable(src: Any, tgt: Any) -> bool:
    """Both connections idle and answering (a restarted server, or a database dropped since, fails here)."""
    idle = psycopg.pq.TransactionStatus.IDLE
    try:
        for conn in (tgt.conn, src.conn) if isinstance(src, PostgresSource) else (tgt.conn,):
            if conn.closed or conn.info.transaction_status != idle:
                return False
            conn.execute("SELECT 1")
        if isinstance(src, MySQLSource):
            src.ping()
        return True
    except Exception:  # noqa: BLE001 - any failure means: open new connections
        return False


def plan_migration(source: DatabaseConfig, target: DatabaseConfig, kind: MigrationType = MigrationType.FULL,
                   batch_size: int = 1000, parallel_workers: int = 4, validation: bool = True,
                   tables: list[str] | None = None, watermark: str | None = None, max_rejects: int = 0,
                   migration_id: str | None = None, base: MigrationPlan | None = None,
                   lock_timeout: float = 60.0, embed: dict[str, Any] | None = None,
                   indexes: bool = True) -> MigrationPlan:
    """Discover the source, map types, split every table into key ranges. Reads only; writes nothing.

    ``embed`` (MongoDB targets): child table -> parent table (or ``{"into": parent, "as": field}``); the
    child's rows go into an array in their parent's document, following the child's foreign key.
    ``indexes`` (PostgreSQL targets): rebuild the source's secondary indexes and constraints (unique,
    check, exclusion; foreign keys between migrated tables) on the tables the migration creates."""
    if batch_size < 1 or parallel_workers < 1:
        raise ConfigError([("batch_size", "batch_size and parallel_workers must be at least 1")])
    if kind == MigrationType.INCREMENTAL and not watermark:
        raise ConfigError([("watermark", "an incremental migration needs a watermark column (e.g. updated_at)")])
    with connections(source, target) as (src, tgt):
        found = src.discover(tables)
        if embed:
            found = _plan_embeds(src, source, target, kind, found, embed)
        if indexes and target.kind == "postgresql":
            for table in found:
                table.schema = src.schema_objects(table, {t.source for t in found})
        batches: list[Batch] = []
        for table in found:
            batches += src.bounds(table, batch_size, len(batches))
        path = ("pg-pg" if source.kind == "postgresql" and target.kind == "postgresql" and kind == MigrationType.FULL
                else "rows")
        if path == "pg-pg" and validation:
            _check_hashable(src.conn, tgt.conn)
        plan = MigrationPlan(migration_id or new_id(), source.public(), target.public(), kind.value, batch_size,
                             parallel_workers, validation, found, batches, path, watermark, max_rejects=max_rejects,
                             lock_timeout=lock_timeout)
        if kind == MigrationType.INCREMENTAL:
            if not isinstance(tgt, PostgresTarget):
                raise ConfigError([("type", "incremental migrations write into PostgreSQL only in this version")])
            _incremental(plan, src, tgt, base)
    return plan


def _embed_spec(child: str, spec: Any) -> tuple[str, str | None]:
    if isinstance(spec, str):
        return spec, None
    if isinstance(spec, dict) and isinstance(spec.get("into"), str) and set(spec) <= {"into", "as"}:
        return spec["into"], spec.get("as")
    raise ConfigError([(f"embed.{child}", "give the parent table, or {'into': parent, 'as': field}")])


def _plan_embeds(src: Any, source: DatabaseConfig, target: DatabaseConfig, kind: MigrationType, found: list[Table],
                 embed: dict[str, Any]) -> list[Table]:
    """Attach each embedded child to its parent (by the child's foreign key); children get no batches."""
    if target.kind != "mongodb":
        raise ConfigError([("embed", f"embedding child tables is for MongoDB targets, not {target.kind}")])
    if source.kind != "postgresql" or not isinstance(src, PostgresSource):
        raise ConfigError([("embed", "embedding follows foreign keys of a PostgreSQL source")])
    if kind != MigrationType.FULL:
        raise ConfigError([("embed", "embedding is supported for full migrations only")])
    specs = {child: _embed_spec(child, spec) for child, spec in embed.items()}
    known = {t.source: t for t in src.discover([*specs, *(p for p, _ in specs.values())])}

    def lookup(name: str) -> Table:
        return next(t for t in known.values() if name in (t.source, t.source_name))

    children = {lookup(c).source for c in specs}
    for child_name, (parent_name, field) in specs.items():
        child, parent = lookup(child_name), lookup(parent_name)
        if parent.source in children:
            raise ConfigError([(f"embed.{child_name}", f"{parent.source} is embedded itself: one level of embedding")])
        mine = next((t for t in found if t.source == parent.source), None)
        if mine is None:
            raise ConfigError([(f"embed.{child_name}", f"{parent.source} is not among the migrated tables")])
        field = field or child.source_name
        if not field or field.startswith("$") or "." in field or "\x00" in field \
                or field in {c.name for c in parent.columns} | {"_id"} | {e.field for e in mine.embeds}:
            raise ConfigError([(f"embed.{child_name}", f"field {field!r} is not free in {parent.source}'s documents"
                                                       " (a column's name, or has '.'/'$'): choose one with 'as'")])
        fk = src.foreign_key(child, parent)
        mine.embeds.append(Embed(child.source, child.source_schema, child.source_name, field, fk,
                                 child.key or [c.name for c in child.columns], child.columns))
    return [t for t in found if t.source not in children]


def _check_hashable(*conns: Any) -> None:
    """Validating PostgreSQL -> PostgreSQL has both servers hash rows with hash_record_extended (14+)."""
    for side, conn in zip(("source", "target"), conns, strict=True):
        version = conn.info.server_version
        if version < PG_HASH_MIN_VERSION:
            raise ConfigError([("validation", f"the {side} runs PostgreSQL {version // 10000}: validating a PostgreSQL"
                                              " -> PostgreSQL migration needs 14 or later on both sides"
                                              " (hash_record_extended); migrate with validation disabled"
                                              " (--no-validate) and compare counts yourself")])


def _incremental(plan: MigrationPlan, src: Any, tgt: PostgresTarget, base: MigrationPlan | None) -> None:
    plan.base_id = base.id if base else plan.id
    plan.created = list(base.created) if base else []
    for table in plan.tables:
        if not table.key:
            raise ConfigError([("tables", f"{table.source} has no primary key: incremental upserts need one")])
        if plan.watermark not in {c.name for c in table.columns}:
            raise ConfigError([("watermark", f"{table.source} has no column {plan.watermark!r}")])
        try:
            plan.since[table.source] = tgt.watermark(plan.base_id, table.source)
        except psycopg.errors.UndefinedTable:  # no earlier run has prepared this target
            plan.since[table.source] = None
        plan.until[table.source] = _max_watermark(src, table, plan.watermark or "")


def _max_watermark(src: Any, table: Table, column: str) -> str | None:
    if isinstance(src, PostgresSource):
        value = src.conn.execute(sql.SQL("SELECT max({})::text FROM {}").format(
            sql.Identifier(column), pg_ident(table))).fetchone()[0]
    else:
        value = src.query(f"SELECT CAST(max({my_ident(column)}) AS CHAR) FROM {my_ident(table.source_name)}")[0][0]  # noqa: S608
    return None if value is None else str(value)


def prepare(plan: MigrationPlan, source: DatabaseConfig, target: DatabaseConfig) -> MigrationPlan:
    """Create the target schema (or check the existing one); records what it created for rollback. Tables
    copied by a streaming path get their primary key at finalize; the typed path reads each batch's range
    back as it writes it, so its tables get the key (and its index) now."""
    with connections(source, target) as (_, tgt):
        if isinstance(tgt, PostgresTarget):
            keyed_now = {t.source for t in plan.tables if plan.path != "pg-pg" and text_spec(plan, t) is None}
            plan.created = tgt.prepare(plan, keyed_now)
        else:
            plan.created = tgt.prepare(plan)
    return plan


def _source_rows(src: Any, plan: MigrationPlan, table: Table, batch: Batch) -> list[tuple[Any, ...]]:
    if plan.type != MigrationType.INCREMENTAL.value:
        return list(src.rows(table, batch))
    since, until = plan.since.get(table.source), plan.until.get(table.source)
    if until is None:
        return []
    col = plan.watermark or ""
    if isinstance(src, PostgresSource):
        where, params = pg_range(table.key, batch)
        cond = sql.SQL("{} <= {}").format(sql.Identifier(col), sql.Placeholder())
        params = [*params, until]
        if since is not None:
            cond = sql.SQL("{} AND {} > {}").format(cond, sql.Identifier(col), sql.Placeholder())
            params.append(since)
        cols = sql.SQL(", ").join(sql.Identifier(c.name) for c in table.columns)
        return list(src.conn.execute(sql.SQL("SELECT {} FROM {} WHERE {} AND {}").format(
            cols, pg_ident(table), where, cond), params).fetchall())
    assert isinstance(src, MySQLSource)
    return _mysql_changed(src, table, batch, col, since, until)


def _mysql_changed(src: MySQLSource, table: Table, batch: Batch, col: str, since: str | None,
                   until: str) -> list[tuple[Any, ...]]:
    in_range, args = my_range(table.key, batch)
    changed, args = f"{my_ident(col)} <= %s", [*args, until]
    if since is not None:
        changed, args = changed + f" AND {my_ident(col)} > %s", [*args, since]
    names = ", ".join(my_ident(c.name) for c in table.columns)
    return src.query(f"SELECT {names} FROM {my_ident(table.source_name)} WHERE {in_range} AND {changed}",  # noqa: S608
                     args)


def copy_batch(plan: MigrationPlan, batch_id: int, source: DatabaseConfig, target: DatabaseConfig) -> dict[str, Any]:
    """Copy one batch in one target transaction with its checkpoint; a batch already done is skipped."""
    batch = next(b for b in plan.batches if b.id == batch_id)
    table = plan.table(batch.table)
    started = time.perf_counter()
    with batch_connections(source, target, plan.lock_timeout) as (src, tgt):
        if isinstance(tgt, DocumentTarget):
            return _copy_documents(src, tgt, plan, table, batch, started)
        with tgt.conn.transaction():
            # the batch and its checkpoint commit together or not at all, so a crash that loses a recent
            # commit only means the batch runs again: no need to wait for the WAL flush (finalize's commit,
            # a normal one, makes every batch durable before the migration reports success)
            tgt.conn.execute("SET LOCAL synchronous_commit = off")
            if not tgt.claim(plan, batch):
                return {"batch": batch.id, "table": table.source, "skipped": True, **(tgt.done(plan, batch) or {})}
            upsert = plan.type == MigrationType.INCREMENTAL.value
            tgt.clear_range(plan, table, batch, upsert)
            written, escaped = None, True
            if plan.path == "pg-pg":
                n, checksum, rejects = _copy_pg(src, tgt, plan, table, batch)
            elif (spec := text_spec(plan, table)) is not None:
                n, checksum, rejects, escaped = _copy_text(src, tgt, plan, table, batch, spec)
            else:
                n, checksum, rejects = _copy_rows(src, tgt, plan, table, batch, upsert)
                if table.ranges_portable and not upsert:
                    written = _verify_written(plan, tgt, table, batch, n, checksum)
            tgt.record(plan, batch, n, checksum, rejects, written, escaped)
    return {"batch": batch.id, "table": table.source, "rows": n, "rejects": rejects, "skipped": False,
            "seconds": round(time.perf_counter() - started, 3)}


def _copy_pg(src: PostgresSource, tgt: PostgresTarget, plan: MigrationPlan, table: Table,
             batch: Batch) -> tuple[int, int, int]:
    """COPY the range out of the source and into the target as it comes (binary, or text for types whose
    binary form differs between servers and for tables that existed before). When validating, the source
    server first counts and hashes the range (``pg_hash_items``) in the same snapshot as the COPY;
    validation has the target hash its rows the same way. Rows the target refuses (an existing table's
    constraint) go to the rejects, and the source hashes them again to take them out of the checksum."""
    conn = src.conn
    expected: tuple[int, int] | None = None
    # binary COPY costs the target a third less than text; types whose binary form names OIDs go as text,
    # and so does a table that existed before (its column types may differ: binary would reinterpret)
    binary = f"table:{table.target}" in plan.created and all(
        c.source_type == c.target_type and STABLE_TYPES.match(c.target_type) for c in table.columns)
    # binary batches go through the C relay when it is here; it also takes each row's hash out of the COPY's
    # own scan (an extra last column), so the source reads the rows once
    in_scan = binary and relay.available(conn.pgconn)
    with src.snapshot():  # one snapshot for the checksum and the rows copied
        where, args = pg_range(table.key, batch)
        if plan.validation and not in_scan:
            n, checksum = conn.execute(sql.SQL("SELECT {} FROM {} WHERE {}").format(
                pg_hash_items(table.columns, source=True), pg_ident(table), where), args).fetchone()
            expected = (int(n), int(checksum))
        kept: list[bytes] = []
        split: list[list[bytes]] = []

        def lines() -> list[bytes]:  # only when the target refused some rows: the batch as text lines
            if not split:
                text = kept if not binary else list(src.copy_chunks(table, batch))  # same snapshot
                split.append([line for chunk in text for line in chunk.split(b"\n")[:-1]])
            return split[0]

        def chunks(stream: Iterator[bytes]) -> Iterator[bytes]:
            for chunk in stream:
                if not binary:
                    kept.append(chunk)
                yield chunk

        def relayed(target: Any) -> None:
            nonlocal expected
            measured = src.relay_into(table, batch, target,
                                      pg_row_hash(table.columns, source=True) if plan.validation else None)
            if measured is not None:
                expected = measured

        source = None if in_scan else src.copy_chunks(table, batch, binary=binary)
        try:
            rejected, copied = tgt.copy_text(plan, table, batch, relayed if source is None else chunks(source), lines,
                                             lambda i: json.dumps(_line_key(table, lines()[i])), binary)
        finally:
            if source is not None:
                source.close()  # a COPY the target gave up on: cancelled, so the connection is free again
        if rejected and expected is not None:
            n, checksum = conn.execute(sql.SQL("SELECT {} FROM {} WHERE {} AND {}").format(
                pg_hash_items(table.columns, source=True), pg_ident(table), where,
                _rows_like(table, [lines()[i] for i in rejected])), args).fetchone()
            expected = (expected[0] - int(n), (expected[1] - int(checksum)) % 2 ** 64)
    if expected is None:
        return copied, 0, len(rejected)
    if copied != expected[0]:
        raise MigrationFailed(f"batch {batch.id} of {table.source}: {expected[0]} rows counted, {copied} copied")
    return copied, expected[1], len(rejected)


def _line_key(table: Table, line: bytes) -> list[str | None]:
    """The key of a COPY line (every column for a table without one), as text."""
    fields = line.split(b"\t")
    names = [c.name for c in table.columns]
    return [textpath.unescape(fields[names.index(k)]) for k in (table.key or names)]


def _rows_like(table: Table, lines: list[bytes]) -> sql.Composable:
    """A condition matching the source rows the ``lines`` came from: by key, or by every column's text for a
    table without one (each field read by its type's input function, as COPY read it)."""
    cols = [c for c in table.columns if not table.key or c.name in table.key]
    names = [c.name for c in table.columns]
    row = sql.SQL("ROW({})").format(sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier(c.name))
                                                       for c in cols))
    wanted = []
    for line in lines:
        fields = line.split(b"\t")
        wanted.append(sql.SQL("ROW({})").format(sql.SQL(", ").join(
            sql.SQL("{}::{}::text").format(sql.Literal(textpath.unescape(fields[names.index(c.name)])),
                                           type_sql(c.source_type)) for c in cols)))
    return sql.SQL("({})").format(sql.SQL(" OR ").join(sql.SQL("{} IS NOT DISTINCT FROM {}").format(row, w)
                                                        for w in wanted))


def _copy_rows(src: Any, tgt: PostgresTarget, plan: MigrationPlan, table: Table, batch: Batch,
               upsert: bool) -> tuple[int, int, int]:
    convert = converter([c.cast for c in table.columns])
    rows, bad = [], 0
    for raw in _source_rows(src, plan, table, batch):
        try:
            rows.append(convert(raw))
        except ValueError as exc:  # a value no PostgreSQL type can hold: a reject, like the target's own
            bad += 1
            tgt.conn.execute("INSERT INTO _dbfleet_migration.rejects (migration_id, batch_id, table_name, key, reason)"
                             " VALUES (%s, %s, %s, %s, %s)", (plan.id, batch.id, table.source, key_text(table, raw),
                                                              str(exc)))
    written, rejected = tgt.copy_rows(plan, table, batch, rows, upsert)
    n, checksum = python_checksum(written, [c.target_type for c in table.columns])
    return n, checksum, bad + rejected


def text_spec(plan: MigrationPlan, table: Table) -> Any:
    """The COPY-line handling of ``table`` when its batches are copied and checksummed as COPY text lines
    the worker encodes: MySQL -> PostgreSQL full copies of supported types."""
    if plan.path == "pg-pg":
        return None
    if plan.source.get("kind") != "mysql" or plan.target.get("kind") != "postgresql" or \
            plan.type != MigrationType.FULL.value:
        return None
    return textpath.plan_text(table)


def _copy_text(src: MySQLSource, tgt: PostgresTarget, plan: MigrationPlan, table: Table, batch: Batch,
               spec: Any) -> tuple[int, int, int, bool]:
    """Raw rows -> COPY text lines streamed into the target as they are read (PostgreSQL parses one chunk
    while the next is fetched). The checksum hashes the lines written; validation has PostgreSQL rebuild
    the same lines from the stored rows (escaped only when some line was). If the target rejects the
    batch, the kept lines are bisected to find the bad rows. Returns (rows, checksum, rejects, escaped)."""
    encoder = textpath.Encoder(spec, hashing=plan.validation)
    lines: list[bytes] = []
    total = 0
    raws: list[tuple[bytes | None, ...]] = []

    def chunks() -> Iterator[bytes]:
        nonlocal total
        for rows in src.raw_chunks(table, batch):
            data, chunk_lines, chunk_sum = encoder.encode(rows)
            lines.extend(chunk_lines)
            total += chunk_sum
            raws.extend(rows)
            yield data

    rejected, _ = tgt.copy_text(plan, table, batch, chunks(), lambda: lines, lambda i: key_text(table, raws[i]))
    if plan.validation:
        total -= sum(line_hash(lines[i]) for i in rejected)
    return len(lines) - len(rejected), total % 2 ** 64, len(rejected), encoder.escaped


def _copy_documents(src: Any, tgt: DocumentTarget, plan: MigrationPlan, table: Table, batch: Batch,
                    started: float) -> dict[str, Any]:
    """Idempotent writes by document id, then the checkpoint (a rerun rewrites the same ids)."""
    done = tgt.done(plan, batch.id)
    if done is not None:
        return {"batch": batch.id, "table": table.source, "skipped": True, "rows": int(done.get("rows", 0))}
    convert = converter([c.cast for c in table.columns])
    embedded: dict[str, dict[tuple[Any, ...], list[dict[str, Any]]]] = {}
    if table.embeds:  # parents and children from one snapshot
        with src.snapshot():
            rows = [convert(r) for r in _source_rows(src, plan, table, batch)]
            for e in table.embeds:
                embedded[e.field] = _children(src, e, batch)
    else:
        rows = [convert(r) for r in _source_rows(src, plan, table, batch)]
    n = tgt.write(plan, table, batch.id, rows, embedded)
    return {"batch": batch.id, "table": table.source, "rows": n, "rejects": 0, "skipped": False,
            "embedded": {f: sum(len(v) for v in by_key.values()) for f, by_key in embedded.items()},
            "seconds": round(time.perf_counter() - started, 3)}


def _children(src: PostgresSource, embed: Embed, batch: Batch) -> dict[tuple[Any, ...], list[dict[str, Any]]]:
    """The batch's child rows as sub-documents (without the foreign key columns), by parent key."""
    convert = converter([c.cast for c in embed.columns])
    names = [c.name for c in embed.columns]
    fk_at = [names.index(k) for k in embed.fk]
    keep = [i for i, name in enumerate(names) if name not in embed.fk]
    out: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for raw in src.children(embed, batch):
        row = convert(raw)
        out.setdefault(tuple(row[i] for i in fk_at), []).append({names[i]: row[i] for i in keep})
    return out


def _verify_written(plan: MigrationPlan, tgt: PostgresTarget, table: Table, batch: Batch, n: int,
                    checksum: int) -> int:
    """Read the range back inside the batch's transaction: the target must hold exactly the mapped source
    rows (count and checksum of the values on both sides). Returns the server-side checksum of the range,
    which later validation recomputes to catch anything changed since."""
    if tgt.measure(plan, table, batch, "python") != (n, checksum):
        raise MigrationFailed(f"batch {batch.id} of {table.source}: the rows read back from the target differ "
                              "from the source rows just written (a cast changed values)")
    return tgt.measure(plan, table, batch, "sql")[1]


def finalize(plan: MigrationPlan, source: DatabaseConfig, target: DatabaseConfig) -> dict[str, Any]:
    """After every batch: on the tables the migration created, primary keys, secondary indexes and
    constraints (``_build_schema``); identity sequences, statistics, reject threshold, incremental
    watermarks."""
    with connections(source, target) as (_, tgt):
        cps = tgt.checkpoints(plan)
        missing = [b.id for b in plan.batches if b.id not in cps]
        if missing:
            raise MigrationFailed(f"migration {plan.id}: batches {missing[:10]} have no checkpoint; resume it")
        rejects = sum(c.get("rejects", 0) for c in cps.values())
        if isinstance(tgt, DocumentTarget):
            return {"rows": sum(c["rows"] for c in cps.values()), "rejects": 0}
        # validating: the foreign keys' validation and ANALYZE run in validate, beside the checksum scans
        failed = _build_schema(plan, target, tgt, cps, checks=not plan.validation)
        if failed:
            raise _not_built(plan, failed)
        if plan.type == MigrationType.INCREMENTAL.value:
            for table in plan.tables:
                if plan.until.get(table.source) is not None:
                    tgt.watermark(plan.base_id or plan.id, table.source, plan.until[table.source])
    if rejects > plan.max_rejects:
        raise MigrationFailed(f"migration {plan.id}: {rejects} rows rejected, more than max_rejects "
                              f"{plan.max_rejects} (see dbfleet migrate status {plan.id} for the rejects)")
    return {"rows": sum(c["rows"] for c in cps.values()), "rejects": rejects}


def _not_built(plan: MigrationPlan, failed: list[str]) -> MigrationFailed:
    return MigrationFailed(f"migration {plan.id}: the rows are copied, but {len(failed)} index(es) or"
                           f" constraint(s) could not be built on the target: {'; '.join(failed[:10])}."
                           f" Fix the target (or the rows) and resume it, or plan with --no-indexes")


def validate(plan: MigrationPlan, source: DatabaseConfig, target: DatabaseConfig) -> dict[str, Any]:
    """Count and checksum every batch's range on the target against what copy_batch recorded from the source.

    The target is read once when it agrees: a table with a single-column key in one scan per part of its
    key space, summed and compared with the sum of its batches' checkpoints (checksums add up); only a
    table whose total differs is read again, rows bucketed by the batch boundaries (width_bucket), to name
    the ranges. The parts (and the tables) are measured on ``parallel_workers`` connections at once (at
    most 4), so PostgreSQL checksums on as many cores. Meanwhile, on one more
    connection, the last step of the schema rebuild (``check_table``: foreign keys added NOT VALID are
    validated, statistics gathered), the largest table first and the others as connections come free:
    it is single-threaded and lock-bound, and the checksum scans take no conflicting lock.
    A foreign key that does not hold fails the migration as finalize would."""
    report: dict[str, Any] = {"migration_id": plan.id, "tables": [], "ok": True}
    with connections(source, target) as (src, tgt):
        cps = tgt.checkpoints(plan)
        if isinstance(tgt, DocumentTarget):
            return _validate_documents(plan, src, tgt, cps, report)
        escaped = {b for b, cp in cps.items() if cp.get("escaped", True)}
        batches = {t.source: sorted((b for b in plan.batches if b.table == t.source), key=lambda b: b.id)
                   for t in plan.tables}
        # a table with a single-column key is first measured whole (parts of its key space summed, no
        # grouping); only a table whose total differs is measured batch by batch, to name the ranges
        whole = {t.source for t in plan.tables if t.ranges_portable and len(t.key) == 1 and len(batches[t.source]) > 1}
        jobs: list[tuple[str, Callable[[PostgresTarget], dict[int | None, tuple[int, int]]]]] = []
        if plan.type != MigrationType.INCREMENTAL.value:
            for table in plan.tables:
                jobs += [(table.source, job) for job in _measure_jobs(plan, table, batches[table.source], escaped,
                                                                      grouped=table.source not in whole)]
        measured: dict[str, dict[int | None, tuple[int, int]]] = {t.source: {} for t in plan.tables}
        totals: dict[str, tuple[int, int]] = {}
        # one connection more than the scans use: the largest table's checks start first and run beside them
        with ThreadPoolExecutor(max(1, min(plan.parallel_workers, 4, len(jobs))) + 1) as pool:
            tables = _by_size(plan, cps)
            checked = [pool.submit(_on_new_connection, target, plan, partial(_check_table, plan, t))
                       for t in tables[:1]]
            scans = [pool.submit(_on_new_connection, target, plan, job) for _, job in jobs]
            checked += [pool.submit(_on_new_connection, target, plan, partial(_check_table, plan, t))
                        for t in tables[1:]]
            for (name, _), future in zip(jobs, scans, strict=True):
                found = future.result()
                if name in whole:
                    n, c = totals.get(name, (0, 0))
                    totals[name] = (n + found[None][0], (c + found[None][1]) % 2 ** 64)
                else:
                    measured[name].update(found)
            differ = [t for t in plan.tables if t.source in totals and totals[t.source] != (
                sum(cps.get(b.id, {}).get("rows", 0) for b in batches[t.source]),
                sum(cps.get(b.id, {}).get("written", 0) for b in batches[t.source]) % 2 ** 64)]
            again = [(t.source, job) for t in differ for job in _measure_jobs(plan, t, batches[t.source], escaped)]
            for (name, _), found in zip(again, pool.map(lambda j: _on_new_connection(target, plan, j[1]), again),
                                        strict=True):
                measured[name].update(found)
            failed = [f for future in checked for f in future.result()]
        if failed:
            raise _not_built(plan, failed)
        for table in plan.tables:
            verified = totals.get(table.source) if table not in differ else None
            report["tables"].append(_table_report(plan, table, cps, measured[table.source], verified))
            report["ok"] = report["ok"] and report["tables"][-1]["ok"]
        report["rejects"] = tgt.rejects(plan)[:100]
    return report


def _by_size(plan: MigrationPlan, cps: dict[int, dict[str, Any]]) -> list[Table]:
    """The plan's tables, the most rows copied first."""
    rows = {t.source: sum(cps.get(b.id, {}).get("rows", 0) for b in plan.batches if b.table == t.source)
            for t in plan.tables}
    return sorted(plan.tables, key=lambda t: -rows[t.source])


def _build_schema(plan: MigrationPlan, target: DatabaseConfig, tgt: PostgresTarget,
                  cps: dict[int, dict[str, Any]], checks: bool = True) -> list[str]:
    """Keys, indexes and constraints after the load, as pg_restore --jobs does: in phases whose locks do not
    conflict, each phase's jobs on ``parallel_workers`` connections at once (at most 4), largest tables
    first. 1: per table, primary key and constraints (ACCESS EXCLUSIVE); 2: every index on its own
    (SHARE locks share); 3: foreign keys added NOT VALID, one at a time (brief); 4 (``checks``; else
    validate does it): per table, validate them and ANALYZE. Returns what failed."""
    tables = _by_size(plan, cps)

    def run(jobs: list[Callable[[PostgresTarget], Any]]) -> list[Any]:
        with ThreadPoolExecutor(max(1, min(plan.parallel_workers, 4, len(jobs) or 1))) as pool:
            return list(pool.map(lambda job: _on_new_connection(target, plan, job), jobs))

    try:
        failed = [f for found in run([partial(_prepare_table, plan, t) for t in tables]) for f in found]
    except DbfleetError as exc:
        raise MigrationFailed(str(exc)) from None
    failed += [f for f in run([partial(_build_one, plan, t, o) for t in tables for o in t.schema
                               if o["kind"] == "index"]) if f]
    failed += [f for t in tables for o in t.schema if o["kind"] == "fk" and (f := tgt.build(plan, t, o))]
    if not checks:
        return failed
    return failed + [f for found in run([partial(_check_table, plan, t) for t in tables]) for f in found]


def _prepare_table(plan: MigrationPlan, table: Table, tgt: PostgresTarget) -> list[str]:
    return tgt.prepare_table(plan, table)


def _build_one(plan: MigrationPlan, table: Table, obj: dict[str, Any], tgt: PostgresTarget) -> str | None:
    return tgt.build(plan, table, obj)


def _check_table(plan: MigrationPlan, table: Table, tgt: PostgresTarget) -> list[str]:
    return tgt.check_table(plan, table)


def _on_new_connection(target: DatabaseConfig, plan: MigrationPlan, job: Callable[[PostgresTarget], Any]) -> Any:
    with open_connector(target) as t:
        return job(PostgresTarget(t.conn, plan.lock_timeout))


def _table_report(plan: MigrationPlan, table: Table, cps: dict[int, dict[str, int]],
                  measured: dict[int | None, tuple[int, int]], verified: tuple[int, int] | None = None
                  ) -> dict[str, Any]:
    """The table's validation entry. ``verified``: the target's whole-table (count, checksum), already found
    equal to the sum of the batches' checkpoints (checksums add up: every batch range agrees)."""
    batches = [b for b in plan.batches if b.table == table.source]
    entry: dict[str, Any] = {"table": table.source, "target": table.target, "batches": len(batches),
                             "source_rows": sum(cps.get(b.id, {}).get("rows", 0) for b in batches),
                             "rejects": sum(cps.get(b.id, {}).get("rejects", 0) for b in batches),
                             "mismatched_ranges": []}
    if plan.type == MigrationType.INCREMENTAL.value:
        entry["target_rows"] = None  # upserts of changed rows: counts do not add up by design
    elif verified is not None:
        entry["target_rows"] = verified[0]
    elif table.ranges_portable:
        for b in batches:  # server-side checksums: they catch any change since the write
            cp = cps.get(b.id, {"rows": 0, "written": 0})
            n = measured.get(b.id, (0, 0))[0]
            if measured.get(b.id, (0, 0)) != (cp["rows"], cp["written"]):
                entry["mismatched_ranges"].append({"batch": b.id, "from": b.lo, "to": b.hi,
                                                   "source_rows": cp["rows"], "target_rows": n})
        entry["target_rows"] = sum(v[0] for v in measured.values())
    else:  # ranges are not portable (no key, or a text key): compare the whole table
        n, checksum = measured[None]
        want = (entry["source_rows"], sum(cps.get(b.id, {}).get("checksum", 0) for b in batches) % 2 ** 64)
        entry["target_rows"] = n
        if (n, checksum) != want:
            entry["mismatched_ranges"].append({"batch": None, "from": None, "to": None,
                                               "source_rows": want[0], "target_rows": n})
    entry["ok"] = not entry["mismatched_ranges"]
    return entry


def _measure_jobs(plan: MigrationPlan, table: Table, batches: list[Batch], escaped: set[int], grouped: bool = True
                  ) -> list[Callable[[PostgresTarget], dict[int | None, tuple[int, int]]]]:
    """Measurements of the target, each on its own connection: batch id (None: the whole table, or with
    ``grouped`` False the part's total) -> (count, checksum). A single-column key: the batches split into up
    to ``parallel_workers`` parts of consecutive ranges, each part one scan (bucketed by batch when
    ``grouped``); other portable keys range by range. ``escaped``: the batches whose COPY lines were
    escaped (MySQL text path)."""
    if not table.ranges_portable:  # no key, or a text-like key: the whole table at once
        anything = any(b.id in escaped for b in batches)
        return [lambda tgt: {None: _measure(plan, tgt, table, None, "python", anything)}]
    if len(table.key) != 1 or len(batches) < 2:
        return [lambda tgt: {b.id: _measure(plan, tgt, table, b, "sql", b.id in escaped) for b in batches}]
    parts = min(plan.parallel_workers, 4, len(batches))
    size = -(-len(batches) // parts)
    return [partial(_measure_part, plan, table, batches[i:i + size], escaped, grouped=grouped)
            for i in range(0, len(batches), size)]


def _measure_part(plan: MigrationPlan, table: Table, part: list[Batch], escaped: set[int], tgt: PostgresTarget,
                  grouped: bool = True) -> dict[int | None, tuple[int, int]]:
    """One scan of consecutive batches' key ranges: rows bucketed by the batch boundaries (width_bucket), or
    with ``grouped`` False the part's total under the key None (no grouping: a third cheaper)."""
    thresholds = [b.lo[0] for b in part[1:] if b.lo is not None]
    bucket = sql.SQL("width_bucket({}, {})").format(sql.Identifier(table.key[0]), sql.Literal(thresholds))
    dirty = [i for i, b in enumerate(part) if b.id in escaped]
    items = checksum_items(plan, table, sql.Literal(bool(dirty)) if len(dirty) in (0, len(part))
                           else sql.SQL("{} = ANY({})").format(bucket, sql.Literal(dirty)))
    source: sql.Composable = target_ident(table)
    if items is None:
        cols = sql.SQL(", ").join(sql.Identifier(c.name) for c in table.columns)
        items, source = line_hash_items(sql.SQL("r::text")), sql.SQL("(SELECT {} FROM {}) r").format(cols, source)
    where, params = pg_range(table.key, Batch(-1, table.source, part[0].lo, part[-1].hi, "key"))
    if not grouped:
        n, c = tgt.conn.execute(sql.SQL("SELECT {} FROM {} WHERE {}").format(items, source, where), params).fetchone()
        return {None: (int(n), int(c))}
    query = sql.SQL("SELECT {}, {} FROM {} WHERE {} GROUP BY 1").format(bucket, items, source, where)
    found = {int(bucket): (int(n), int(c)) for bucket, n, c in tgt.conn.execute(query, params).fetchall()}
    return {b.id: found.get(i, (0, 0)) for i, b in enumerate(part)}


def _measure(plan: MigrationPlan, tgt: PostgresTarget, table: Table, batch: Batch | None,
             method: str = "sql", escaped: bool = True) -> tuple[int, int]:
    """(count, checksum) of the target rows of ``batch`` (None: the whole table), the way the batch's
    checkpoint was computed: server-side row hashes (PostgreSQL -> PostgreSQL), COPY lines (MySQL text
    path), row text (``sql``) or driver values (``python``)."""
    items = checksum_items(plan, table, sql.Literal(escaped))
    if items is None:
        return tgt.measure(plan, table, batch, method)
    where, params = pg_range(table.key, batch) if batch else (sql.SQL("true"), [])
    n, checksum = tgt.conn.execute(sql.SQL("SELECT {} FROM {} WHERE {}").format(
        items, target_ident(table), where), params).fetchone()
    return int(n), int(checksum)


def checksum_items(plan: MigrationPlan, table: Table, escaped: sql.Composable = sql.Literal(True)
                   ) -> sql.Composable | None:
    """Select items ``count(*), checksum`` over the target table's rows, computed the way the batches'
    checkpoints were; None for the typed path (its own two ways: ``PostgresTarget.measure``).
    ``escaped``: a condition true for rows whose batch's COPY lines were escaped (MySQL text path)."""
    if plan.path == "pg-pg":
        return pg_hash_items(table.columns)
    spec = text_spec(plan, table)
    if spec is None:
        return None
    line = sql.SQL("CASE WHEN {} THEN {} ELSE {} END").format(
        escaped, textpath.row_line(spec), textpath.row_line(spec, escaped=False))
    return line_hash_items(line)


def _validate_documents(plan: MigrationPlan, src: Any, tgt: DocumentTarget, cps: dict[int, dict[str, Any]],
                        report: dict[str, Any]) -> dict[str, Any]:
    """Per table: the documents' count and id checksum against what the batches wrote; per embedded child
    table, the sub-documents in each document against what the batches embedded, and the child rows that
    could not be embedded (a NULL foreign key)."""
    for table in plan.tables:
        batches = [b.id for b in plan.batches if b.table == table.source]
        want = (sum(cps.get(b, {}).get("rows", 0) for b in batches),
                sum(cps.get(b, {}).get("checksum", 0) for b in batches) % 2 ** 64)
        n, checksum = tgt.measure(plan, table)
        ok = (n, checksum) == want
        entry: dict[str, Any] = {
            "table": table.source, "target": table.target_name, "batches": len(batches), "source_rows": want[0],
            "target_rows": n, "rejects": 0, "ok": ok,
            "mismatched_ranges": [] if ok else [{"batch": None, "from": None, "to": None, "source_rows": want[0],
                                                 "target_rows": n}]}
        if table.embeds and isinstance(tgt, MongoTarget):
            entry["embedded"] = [_embedded_report(plan, src, tgt, table, e, [cps.get(b, {}) for b in batches])
                                 for e in table.embeds]
            entry["ok"] = ok = ok and all(e["ok"] for e in entry["embedded"])
        report["tables"].append(entry)
        report["ok"] = report["ok"] and ok
    report["rejects"] = []
    return report


def _embedded_report(plan: MigrationPlan, src: Any, tgt: MongoTarget, table: Table, embed: Embed,
                     cps: list[dict[str, Any]]) -> dict[str, Any]:
    written = [cp.get("embedded", {}).get(embed.field, (0, 0)) for cp in cps]
    want = (sum(w[0] for w in written), sum(w[1] for w in written) % 2 ** 64)
    n, checksum = tgt.measure_embedded(plan, table, embed.field)
    # child rows no document can hold: a NULL foreign key, or one whose parent row is missing (NOT VALID key)
    match = sql.SQL(" AND ").join(sql.SQL("p.{} = c.{}").format(sql.Identifier(k), sql.Identifier(f))
                                  for k, f in zip(table.key, embed.fk, strict=True))
    orphans = src.conn.execute(sql.SQL("SELECT count(*) FROM {}.{} c WHERE NOT EXISTS (SELECT 1 FROM {} p WHERE {})")
                               .format(sql.Identifier(embed.schema), sql.Identifier(embed.name), pg_ident(table),
                                       match)).fetchone()[0]
    return {"table": embed.table, "field": embed.field, "source_rows": want[0], "target_rows": n,
            "not_embedded": int(orphans), "ok": (n, checksum) == want}


def rollback(plan: MigrationPlan, source: DatabaseConfig, target: DatabaseConfig) -> list[str]:
    """Drop the tables and types the migration created; restore tables it wrote into from their snapshots."""
    with connections(source, target) as (_, tgt):
        return tgt.rollback(plan)
