"""PostgreSQL as a migration source: catalog discovery, key-range batches, snapshots, COPY out (text,
binary, or straight into a target through the C relay)."""

from __future__ import annotations

from collections.abc import Generator, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import pq, sql

from engines.connectors import open_connector
from engines.errors import ConfigError
from engines.migration import postgres_clickhouse, postgres_copy, relay, sources
from engines.migration.base import Source, Target
from engines.migration.checksum import PG_HASH_MIN_VERSION
from engines.migration.model import Batch, Column, Embed, MigrationPlan, MigrationType, Table
from engines.migration.sources import (
    INT_TYPES,
    SESSION,
    batches_from_bounds,
    check_found,
    check_types,
    dense_int_bounds,
    pg_ident,
    pg_range,
    wanted,
)

if TYPE_CHECKING:
    from engines.config import DatabaseConfig


def usable_pg(conn: Any) -> bool:
    """A psycopg connection idle and answering (a restarted server, or a dropped database, fails here)."""
    try:
        if conn.closed or conn.info.transaction_status != pq.TransactionStatus.IDLE:
            return False
        conn.execute("SELECT 1")
        return True
    except Exception:  # noqa: BLE001 - any failure means: open new connections
        return False


def check_hashable(*conns: Any) -> None:
    """Validating PostgreSQL -> PostgreSQL has both servers hash rows with hash_record_extended (14+)."""
    for side, conn in zip(("source", "target"), conns, strict=True):
        version = conn.info.server_version
        if version < PG_HASH_MIN_VERSION:
            raise ConfigError([("validation", f"the {side} runs PostgreSQL {version // 10000}: validating a PostgreSQL"
                                              " -> PostgreSQL migration needs 14 or later on both sides"
                                              " (hash_record_extended); migrate with validation disabled"
                                              " (--no-validate) and compare counts yourself")])


class PostgresSource(Source):
    """A PostgreSQL database read over one psycopg connection (REPEATABLE READ snapshots, COPY out)."""

    kind = "postgresql"
    supports_embeds = True

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        conn.execute(SESSION)

    @classmethod
    @contextmanager
    def connect(cls, db: DatabaseConfig) -> Iterator[PostgresSource]:
        """The source over the database's connector."""
        with open_connector(db) as c:
            yield cls(c.conn)

    def usable(self) -> bool:
        """Idle and answering."""
        return usable_pg(self.conn)

    def plan_path(self, target: Target, kind: MigrationType, validation: bool) -> str:
        """Full copies into PostgreSQL: binary COPY ("pg-pg"), validated by both servers' row hashes."""
        if not (target.accepts_pg_copy and kind == MigrationType.FULL):
            return "rows"
        if validation:
            check_hashable(self.conn, target.conn)  # type: ignore[attr-defined]
        return "pg-pg"

    def copy_binary(self, target: Any, plan: MigrationPlan, table: Table, batch: Batch) -> tuple[int, int, int]:
        """The batch COPYed into a PostgreSQL target (``postgres_copy``)."""
        return postgres_copy.copy_binary(self, target, plan, table, batch)

    def clickhouse_chunks(self, plan: MigrationPlan, table: Table, batch: Batch,
                          columns: list[Any]) -> Iterator[bytes]:
        """The batch (incremental: its changed rows) as ClickHouse TabSeparated text, formatted by the server
        (``postgres_clickhouse``; ``columns``: the ``ChColumn`` of each column)."""
        exprs = [postgres_clickhouse.travel_expr(c, ch) for c, ch in zip(table.columns, columns, strict=True)]
        where, params = pg_range(table.key, batch)
        if plan.type == MigrationType.INCREMENTAL.value:
            where, params = self._changed(where, params, plan, table)
        query = sql.SQL("SELECT {} FROM {} WHERE {}").format(sql.SQL(", ").join(exprs), pg_ident(table), where)
        if postgres_clickhouse.psql_binary() is not None and self.conn.info.transaction_status == pq.TransactionStatus.IDLE:
            statement = psycopg.ClientCursor(self.conn).mogrify(sql.SQL("COPY ({}) TO STDOUT").format(query), params)
            return postgres_clickhouse.psql_copy(self.conn.info, statement)
        return self.copy_chunks(table, batch, 50000, query=(query, params))

    def _changed(self, where: sql.Composable, params: list[Any], plan: MigrationPlan,
                 table: Table) -> tuple[sql.Composable, list[Any]]:
        since, until = plan.since.get(table.source), plan.until.get(table.source)
        column = sql.Identifier(plan.watermark or "")
        if until is None:
            return sql.SQL("false"), []
        where = sql.SQL("{} AND {} <= {}").format(where, column, sql.Placeholder())
        params = [*params, until]
        if since is not None:
            where = sql.SQL("{} AND {} > {}").format(where, column, sql.Placeholder())
            params.append(since)
        return where, params

    def changed_rows(self, table: Table, batch: Batch, column: str, since: str | None,
                     until: str) -> list[tuple[Any, ...]]:
        """The batch's rows whose ``column`` is in (since, until]."""
        where, params = pg_range(table.key, batch)
        cond = sql.SQL("{} <= {}").format(sql.Identifier(column), sql.Placeholder())
        params = [*params, until]
        if since is not None:
            cond = sql.SQL("{} AND {} > {}").format(cond, sql.Identifier(column), sql.Placeholder())
            params.append(since)
        cols = sql.SQL(", ").join(sql.Identifier(c.name) for c in table.columns)
        return list(self.conn.execute(sql.SQL("SELECT {} FROM {} WHERE {} AND {}").format(
            cols, pg_ident(table), where, cond), params).fetchall())

    def max_watermark(self, table: Table, column: str) -> str | None:
        """max(column) as text."""
        value = self.conn.execute(sql.SQL("SELECT max({})::text FROM {}").format(
            sql.Identifier(column), pg_ident(table))).fetchone()[0]
        return None if value is None else str(value)

    def orphans(self, table: Table, embed: Embed) -> int:
        """Child rows no document can hold: a NULL foreign key, or one whose parent row is missing."""
        match = sql.SQL(" AND ").join(sql.SQL("p.{} = c.{}").format(sql.Identifier(k), sql.Identifier(f))
                                      for k, f in zip(table.key, embed.fk, strict=True))
        return int(self.conn.execute(sql.SQL("SELECT count(*) FROM {}.{} c WHERE NOT EXISTS (SELECT 1 FROM {} p"
                                             " WHERE {})").format(sql.Identifier(embed.schema),
                                                                  sql.Identifier(embed.name), pg_ident(table),
                                                                  match)).fetchone()[0])

    def discover(self, only: list[str] | None) -> list[Table]:
        """Tables and partitioned tables outside the system schemas, with their primary keys."""
        rows = self.conn.execute(
            "SELECT n.nspname, c.relname, c.oid, greatest(c.reltuples, 0)::bigint FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('r', 'p')"
            " AND n.nspname NOT IN ('pg_catalog', 'information_schema', '_dbfleet_migration')"
            " AND n.nspname !~ '^pg_' AND NOT c.relispartition ORDER BY 1, 2").fetchall()
        tables = []
        for schema, name, oid, estimate in rows:
            if not wanted(f"{schema}.{name}", name, only):
                continue
            cols = self.conn.execute(
                "SELECT a.attname, format_type(a.atttypid, a.atttypmod), NOT a.attnotnull,"
                " a.attidentity <> '' OR coalesce(pg_get_expr(d.adbin, d.adrelid), '') LIKE 'nextval(%%',"
                " t.typtype, format_type(t.typbasetype, t.typtypmod) FROM pg_attribute a"
                " JOIN pg_type t ON t.oid = a.atttypid LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid"
                " AND d.adnum = a.attnum WHERE a.attrelid = %s AND a.attnum > 0"
                " AND NOT a.attisdropped ORDER BY a.attnum", (oid,)).fetchall()
            key = [r[0] for r in self.conn.execute(
                "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid"
                " AND a.attnum = ANY(i.indkey) WHERE i.indrelid = %s AND i.indisprimary"
                " ORDER BY array_position(i.indkey, a.attnum)", (oid,)).fetchall()]
            columns = [Column(c, t, {"e": "text", "d": base}.get(kind, t), nullable,
                              "json" if t in ("json", "jsonb") else None, ident)
                       for c, t, nullable, ident, kind, base in cols]
            check_types(f"{schema}.{name}", columns)
            tables.append(Table(f"{schema}.{name}", schema, name, schema, name, columns, key, int(estimate)))
        check_found(only, tables)
        return tables

    def bounds(self, table: Table, batch_size: int, start_id: int) -> list[Batch]:
        """Dense integer keys by value, other keys by every batch_size-th key, keyless tables by pages."""
        if not table.key:
            return self._ctid_batches(table, batch_size, start_id)
        if len(table.key) == 1 and table.columns[[c.name for c in table.columns].index(table.key[0])].target_type \
                in INT_TYPES:
            k = sql.Identifier(table.key[0])
            if table.rows_estimate >= sources.ESTIMATED_ROWS:  # the statistics size the ranges; min/max read the index
                low, high = self.conn.execute(sql.SQL("SELECT min({k}), max({k}) FROM {t}").format(
                    k=k, t=pg_ident(table))).fetchone()
                rows = table.rows_estimate
            else:
                low, high, rows = self.conn.execute(sql.SQL("SELECT min({k}), max({k}), count(*) FROM {t}").format(
                    k=k, t=pg_ident(table))).fetchone()
            dense = dense_int_bounds(low, high, rows, batch_size)
            if dense is not None:
                return batches_from_bounds(table.source, dense, start_id)
        keys = sql.SQL(", ").join(sql.Identifier(k) for k in table.key)
        query = sql.SQL("SELECT {k} FROM (SELECT {k}, row_number() OVER (ORDER BY {k}) AS dbfleet_rn FROM {t}) s"
                        " WHERE mod(dbfleet_rn, {n}) = 1 ORDER BY {k}").format(
            k=keys, t=pg_ident(table), n=sql.Literal(batch_size))
        return batches_from_bounds(table.source, [list(r) for r in self.conn.execute(query)], start_id)

    def _ctid_batches(self, table: Table, batch_size: int, start_id: int) -> list[Batch]:
        pages, rows = self.conn.execute(
            sql.SQL("SELECT pg_relation_size({t}::regclass) / current_setting('block_size')::int,"
                    " (SELECT count(*) FROM {i})").format(t=sql.Literal(f"{table.source_schema}.{table.source_name}"),
                                                           i=pg_ident(table))).fetchone()
        per_batch = max(1, int(pages * batch_size / max(rows, 1))) if rows else max(pages, 1)
        edges: list[int | None] = [None, *range(per_batch, int(pages), per_batch), None]
        return [Batch(start_id + i, table.source, None if lo is None else [lo], None if hi is None else [hi], "ctid")
                for i, (lo, hi) in enumerate(zip(edges, edges[1:], strict=False))]

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """A read-only REPEATABLE READ transaction: every read inside sees the same rows."""
        with self.conn.transaction():
            self.conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            yield

    def select(self, table: Table, batch: Batch, *extra: sql.Composable) -> tuple[sql.Composed, list[Any]]:
        """The batch's rows: its columns (then any ``extra`` expressions) in its key range."""
        where, params = pg_range(table.key, batch)
        cols = sql.SQL(", ").join([*(sql.Identifier(c.name) for c in table.columns), *extra])
        return sql.SQL("SELECT {} FROM {} WHERE {}").format(cols, pg_ident(table), where), params

    @contextmanager
    def copy_out(self, table: Table, batch: Batch, binary: bool = False,
                 *extra: sql.Composable, query: tuple[sql.Composable, list[Any]] | None = None) -> Iterator[_CopyOut]:
        """``COPY (select) TO STDOUT`` of the batch, started; the caller reads the messages off ``.pg`` and
        sets ``.ended`` when libpq reports the end. Then the COPY's own result is checked (a server error
        raised mid-stream arrives there); leaving earlier (the consumer stopped, an error) cancels it and
        the connection stays usable. Holds the connection's lock throughout. ``query``: (select, params) instead
        of the batch's columns."""
        select, params = query or self.select(table, batch, *extra)
        statement = psycopg.ClientCursor(self.conn).mogrify(sql.SQL("COPY ({}) TO STDOUT{}").format(
            select, sql.SQL(" (FORMAT binary)" if binary else "")), params)
        pg = self.conn.pgconn
        with self.conn.lock:
            pg.send_query(statement.encode(self.conn.info.encoding))
            result = pg.get_result()
            if result is None or result.status != pq.ExecStatus.COPY_OUT:
                _drain(pg)
                raise _result_error(result, pg)
            out = _CopyOut(pg)
            try:
                yield out
                if out.ended:
                    result = pg.get_result()
                    if result is None or result.status != pq.ExecStatus.COMMAND_OK:
                        raise _result_error(result, pg)
            finally:
                if not out.ended:  # stop the server, leave the link usable
                    self.conn.cancel()
                    while pg.get_copy_data(0)[0] > 0:
                        pass
                _drain(pg)

    def copy_chunks(self, table: Table, batch: Batch, rows_per_chunk: int = 2000, binary: bool = False,
                    query: tuple[sql.Composable, list[Any]] | None = None) -> Generator[bytes, None, None]:
        """The batch as COPY text (or binary), ``rows_per_chunk`` rows at a time. COPY TO sends a message
        per row: they are read with libpq's own call in a plain loop (psycopg's Copy object costs ~1 us of
        Python per message, as much as the server spends producing it). Closing the generator early
        cancels the COPY. ``query``: (select, params) instead of the batch's columns."""
        with self.copy_out(table, batch, binary, query=query) as out:
            get, pending = out.pg.get_copy_data, []
            while True:
                n, data = get(0)
                if n > 0:
                    pending.append(data)
                    if len(pending) >= rows_per_chunk:
                        yield b"".join(pending)
                        pending.clear()
                elif n == -1:
                    out.ended = True
                    break
                else:
                    raise _copy_broken(table, out.pg)
            if pending:
                yield b"".join(pending)

    def relay_into(self, table: Table, batch: Batch, target: Any, hash_expr: sql.Composable | None = None
                   ) -> tuple[int, int] | None:
        """COPY the batch (binary) straight into ``target``, a psycopg PGconn whose COPY FROM STDIN (FORMAT
        binary) is started, through the C relay (``relay.available()``). With ``hash_expr`` the source computes
        each row's hash in the same scan: returns (rows, sum of the hashes modulo 2**64); else None."""
        with self.copy_out(table, batch, True, *([hash_expr] if hash_expr is not None else [])) as out:
            status, rows, total = relay.relay(out.pg, target, hash_expr is not None)
            if status == relay.SOURCE_FAILED:
                raise _copy_broken(table, out.pg)
            if status == relay.TARGET_FAILED:
                raise psycopg.OperationalError(f"COPY into the target of {table.source} failed: "
                                               f"{target.error_message.decode(errors='replace')}")
            if status == relay.LAYOUT:
                raise psycopg.OperationalError(f"COPY out of {table.source}: unexpected binary layout")
            out.ended = True
        return (rows, total) if hash_expr is not None else None

    def rows(self, table: Table, batch: Batch) -> Iterator[tuple[Any, ...]]:
        """The batch's rows through a server-side cursor."""
        query, params = self.select(table, batch)
        if self.conn.info.transaction_status == pq.TransactionStatus.IDLE:
            with self.snapshot():  # a server-side cursor needs a transaction (a target reading rows outside one)
                yield from self.rows(table, batch)
            return
        with self.conn.cursor(name=f"dbfleet_batch_{batch.id}") as cur:
            cur.itersize = 5000
            cur.execute(query, params)
            yield from cur

    def rows_by_keys(self, table: Table, keys: list[list[Any]]) -> list[tuple[Any, ...]]:
        """The rows whose key is one of ``keys`` (row comparison, key values bound as parameters)."""
        if not keys:
            return []
        cols = sql.SQL(", ").join(sql.Identifier(c.name) for c in table.columns)
        key = sql.SQL(", ").join(sql.Identifier(k) for k in table.key)
        one = sql.SQL("({})").format(sql.SQL(", ").join(sql.Placeholder() for _ in table.key))
        query = sql.SQL("SELECT {} FROM {} WHERE ({}) IN ({})").format(
            cols, pg_ident(table), key, sql.SQL(", ").join(one for _ in keys))
        return list(self.conn.execute(query, [v for k in keys for v in k]).fetchall())

    def schema_objects(self, table: Table, migrated: set[str]) -> list[dict[str, Any]]:
        """Secondary indexes and constraints (unique, check, exclusion, foreign keys to migrated tables) as
        the server prints them (pg_get_indexdef, pg_get_constraintdef), for the target to build after the
        load; NOT NULL and the primary key are part of the table already."""
        objects: list[dict[str, Any]] = []
        for name, definition in self.conn.execute(
                "SELECT ic.relname, pg_get_indexdef(i.indexrelid) FROM pg_index i JOIN pg_class ic"
                " ON ic.oid = i.indexrelid JOIN pg_class c ON c.oid = i.indrelid JOIN pg_namespace n"
                " ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = %s AND NOT i.indisprimary"
                " AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid"
                " AND k.conrelid = i.indrelid) ORDER BY 1", (table.source_schema, table.source_name)).fetchall():
            objects.append({"kind": "index", "name": name, "sql": definition})
        for name, kind, definition, ref_schema, ref_name in self.conn.execute(
                "SELECT k.conname, k.contype, pg_get_constraintdef(k.oid), rn.nspname, r.relname"
                " FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid JOIN pg_namespace n"
                " ON n.oid = c.relnamespace LEFT JOIN pg_class r ON r.oid = k.confrelid LEFT JOIN pg_namespace rn"
                " ON rn.oid = r.relnamespace WHERE n.nspname = %s AND c.relname = %s AND k.contype IN"
                " ('u', 'c', 'x', 'f') AND k.conislocal ORDER BY k.contype <> 'f' DESC, 1",
                (table.source_schema, table.source_name)).fetchall():
            if kind == "f":
                if f"{ref_schema}.{ref_name}" not in migrated:
                    continue  # the referenced table is not part of the migration
                objects.append({"kind": "fk", "name": name, "sql": definition, "ref": f"{ref_schema}.{ref_name}",
                                "contype": kind})
            else:
                objects.append({"kind": "constraint", "name": name, "sql": definition, "contype": kind})
        return objects

    def foreign_key(self, child: Table, parent: Table) -> list[str]:
        """The child's columns of its one foreign key to ``parent``'s primary key, in the key's order."""
        found = self.conn.execute(
            "SELECT c.conname, (SELECT array_agg(a.attname ORDER BY array_position(c.confkey, r.attnum))"
            " FROM unnest(c.conkey, c.confkey) AS k(attnum, refnum)"
            " JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum"
            " JOIN pg_attribute r ON r.attrelid = c.confrelid AND r.attnum = k.refnum),"
            " (SELECT array_agg(r.attname ORDER BY array_position(c.confkey, r.attnum)) FROM pg_attribute r"
            "  WHERE r.attrelid = c.confrelid AND r.attnum = ANY(c.confkey))"
            " FROM pg_constraint c JOIN pg_class ct ON ct.oid = c.conrelid JOIN pg_namespace cn ON cn.oid = ct.relnamespace"
            " JOIN pg_class pt ON pt.oid = c.confrelid JOIN pg_namespace pn ON pn.oid = pt.relnamespace"
            " WHERE c.contype = 'f' AND cn.nspname = %s AND ct.relname = %s AND pn.nspname = %s AND pt.relname = %s",
            (child.source_schema, child.source_name, parent.source_schema, parent.source_name)).fetchall()
        if not found:
            raise ConfigError([("embed", f"{child.source} has no foreign key to {parent.source}: embedding follows"
                                         " a foreign key")])
        if len(found) > 1:
            raise ConfigError([("embed", f"{child.source} has {len(found)} foreign keys to {parent.source} "
                                         f"({', '.join(r[0] for r in found)}): embedding needs exactly one")])
        name, fk, ref = found[0]
        if sorted(ref) != sorted(parent.key):
            raise ConfigError([("embed", f"foreign key {name} of {child.source} references {', '.join(ref)}, not the"
                                         f" primary key of {parent.source} (the document id)")])
        by_ref = dict(zip(ref, fk, strict=True))
        return [by_ref[k] for k in parent.key]

    def children(self, embed: Embed, batch: Batch) -> list[tuple[Any, ...]]:
        """The child rows whose foreign key falls in the parent batch's key range, in the child's order."""
        where, params = pg_range(embed.fk, batch)
        cols = sql.SQL(", ").join(sql.Identifier(c.name) for c in embed.columns)
        order = sql.SQL(", ").join(sql.Identifier(c) for c in embed.order)
        query = sql.SQL("SELECT {} FROM {}.{} WHERE {} ORDER BY {}").format(
            cols, sql.Identifier(embed.schema), sql.Identifier(embed.name), where, order)
        return list(self.conn.execute(query, params).fetchall())



class _CopyOut:
    def __init__(self, pg: Any) -> None:
        self.pg, self.ended = pg, False


def _copy_broken(table: Table, pg: Any) -> psycopg.OperationalError:
    return psycopg.OperationalError(f"COPY out of {table.source} failed: {pg.error_message.decode(errors='replace')}")


def _drain(pg: Any) -> None:
    while pg.get_result() is not None:
        pass


def _result_error(result: Any, pg: Any) -> Exception:
    if result is None:
        return psycopg.OperationalError(pg.error_message.decode(errors="replace"))
    return psycopg.errors.error_from_result(result)
