"""Migration sources: discover tables (keys, columns, row estimates), split them into key ranges, read a range.

Identifiers are quoted by psycopg.sql for PostgreSQL; PyMySQL has no identifier quoting, so MySQL
names are quoted with backticks (doubled inside), the server's own rule.
"""

from __future__ import annotations

import os
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import pq, sql

from engines.config import DatabaseConfig
from engines.errors import ConfigError
from engines.migration import relay
from engines.migration.ddl import UnsafeDefinition, safe_type
from engines.migration.model import Batch, Column, Embed, Table
from engines.migration.types import enum_values, map_mysql

# the same text forms on both sides (checksums compare row text); no statement timeout: a batch is bounded
# by its size, and the task's time limit bounds the rest; UTF-8 on the wire whatever the database's encoding
# (a SQL_ASCII database would otherwise make the driver send text parameters as bytes)
SESSION = ("SET client_encoding = 'UTF8'; SET TimeZone = 'UTC'; SET DateStyle = 'ISO, YMD'; SET extra_float_digits = 3; "
           "SET bytea_output = 'hex'; SET IntervalStyle = 'postgres'; SET statement_timeout = 0")


def _wanted(name: str, short: str, only: list[str] | None) -> bool:
    return not only or name in only or short in only


def batches_from_bounds(table: str, bounds: list[list[Any]], start_id: int) -> list[Batch]:
    """[None, b1), [b1, b2), ... [bn, None): the whole key space, whatever is inserted later."""
    if len(bounds) <= 1:
        return [Batch(start_id, table, None, None, "key")]
    edges: list[list[Any] | None] = [None, *bounds[1:], None]
    return [Batch(start_id + i, table, edges[i], edges[i + 1], "key") for i in range(len(edges) - 1)]


INT_TYPES = ("smallint", "integer", "bigint")
# tables estimated at least this large are split by the server's row estimate instead of count(*) (a full
# scan: MySQL 0.5 s per 2 M rows, PostgreSQL 50 ms per 1 M); batches may then hold somewhat more or fewer
# rows than asked
ESTIMATED_ROWS = 200_000


def dense_int_bounds(low: Any, high: Any, rows: int, batch_size: int) -> list[list[Any]] | None:
    """Boundaries by key value for a dense integer key (auto-increment, sequences): no key scan needed.
    None when the keys are too sparse for equal-width ranges to hold about batch_size rows each."""
    if not rows or low is None:
        return []
    span = int(high) - int(low) + 1
    if span > 4 * rows:
        return None
    width = max(1, -(-batch_size * span // rows))
    return [[v] for v in range(int(low), int(high) + 1, width)]


# ---------------------------------------------------------------- PostgreSQL
def pg_ident(table: Table) -> sql.Composed:
    return sql.SQL("{}.{}").format(sql.Identifier(table.source_schema), sql.Identifier(table.source_name))


def pg_range(key: list[str], batch: Batch) -> tuple[sql.Composable, list[Any]]:
    """A WHERE clause for ``batch`` and its parameters."""
    if batch.by == "ctid":
        parts, params = [], []
        if batch.lo is not None:
            parts.append(sql.SQL("ctid >= {}::tid").format(sql.Placeholder()))
            params.append(f"({batch.lo[0]},0)")
        if batch.hi is not None:
            parts.append(sql.SQL("ctid < {}::tid").format(sql.Placeholder()))
            params.append(f"({batch.hi[0]},0)")
        return (sql.SQL(" AND ").join(parts) if parts else sql.SQL("true")), params
    if batch.by == "all" or not key:
        return sql.SQL("true"), []
    cols = sql.SQL("({})").format(sql.SQL(", ").join(sql.Identifier(k) for k in key))
    marks = sql.SQL("({})").format(sql.SQL(", ").join(sql.Placeholder() * len(key)))
    parts, params = [], []
    if batch.lo is not None:
        parts.append(sql.SQL("{} >= {}").format(cols, marks))
        params += batch.lo
    if batch.hi is not None:
        parts.append(sql.SQL("{} < {}").format(cols, marks))
        params += batch.hi
    return (sql.SQL(" AND ").join(parts) if parts else sql.SQL("true")), params


class PostgresSource:
    def __init__(self, conn: Any) -> None:
        self.conn = conn
        conn.execute(SESSION)

    def discover(self, only: list[str] | None) -> list[Table]:
        rows = self.conn.execute(
            "SELECT n.nspname, c.relname, c.oid, greatest(c.reltuples, 0)::bigint FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('r', 'p')"
            " AND n.nspname NOT IN ('pg_catalog', 'information_schema', '_dbfleet_migration')"
            " AND n.nspname !~ '^pg_' AND NOT c.relispartition ORDER BY 1, 2").fetchall()
        tables = []
        for schema, name, oid, estimate in rows:
            if not _wanted(f"{schema}.{name}", name, only):
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
            _check_types(f"{schema}.{name}", columns)
            tables.append(Table(f"{schema}.{name}", schema, name, schema, name, columns, key, int(estimate)))
        _check_found(only, tables)
        return tables

    def bounds(self, table: Table, batch_size: int, start_id: int) -> list[Batch]:
        if not table.key:
            return self._ctid_batches(table, batch_size, start_id)
        if len(table.key) == 1 and table.columns[[c.name for c in table.columns].index(table.key[0])].target_type \
                in INT_TYPES:
            k = sql.Identifier(table.key[0])
            if table.rows_estimate >= ESTIMATED_ROWS:  # the statistics size the ranges; min/max read the index
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
                 *extra: sql.Composable) -> Iterator[_CopyOut]:
        """``COPY (select) TO STDOUT`` of the batch, started; the caller reads the messages off ``.pg`` and
        sets ``.ended`` when libpq reports the end. Then the COPY's own result is checked (a server error
        raised mid-stream arrives there); leaving earlier (the consumer stopped, an error) cancels it and
        the connection stays usable. Holds the connection's lock throughout."""
        query, params = self.select(table, batch, *extra)
        statement = psycopg.ClientCursor(self.conn).mogrify(sql.SQL("COPY ({}) TO STDOUT{}").format(
            query, sql.SQL(" (FORMAT binary)" if binary else "")), params)
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

    def copy_chunks(self, table: Table, batch: Batch, rows_per_chunk: int = 2000,
                    binary: bool = False) -> Generator[bytes, None, None]:
        """The batch as COPY text (or binary), ``rows_per_chunk`` rows at a time. COPY TO sends a message
        per row: they are read with libpq's own call in a plain loop (psycopg's Copy object costs ~1 us of
        Python per message, as much as the server spends producing it). Closing the generator early
        cancels the COPY."""
        with self.copy_out(table, batch, binary) as out:
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
        query, params = self.select(table, batch)
        with self.conn.cursor(name=f"dbfleet_batch_{batch.id}") as cur:
            cur.itersize = 5000
            cur.execute(query, params)
            yield from cur

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


# ---------------------------------------------------------------- MySQL / MariaDB
def my_ident(*names: str) -> str:
    """Backtick-quote MySQL identifiers (a backtick inside is doubled)."""
    return ".".join("`" + n.replace("`", "``") + "`" for n in names)


def my_range(key: list[str], batch: Batch) -> tuple[str, list[Any]]:
    if batch.by == "all" or not key:
        return "1=1", []
    cols = "(" + ", ".join(my_ident(k) for k in key) + ")"
    marks = "(" + ", ".join(["%s"] * len(key)) + ")"
    parts, params = [], []
    if batch.lo is not None:
        parts.append(f"{cols} >= {marks}")
        params += batch.lo
    if batch.hi is not None:
        parts.append(f"{cols} < {marks}")
        params += batch.hi
    return (" AND ".join(parts) or "1=1"), params


def mysql_driver() -> str:
    """The driver raw reads use: mysqlclient (C, about 5x faster) when installed, else PyMySQL.
    ``DBFLEET_MYSQL_DRIVER=pymysql`` forces PyMySQL; ``=mysqlclient`` fails when it is missing."""
    wanted = os.environ.get("DBFLEET_MYSQL_DRIVER", "auto").lower()
    if wanted not in ("auto", "mysqlclient", "pymysql"):
        raise ConfigError([("DBFLEET_MYSQL_DRIVER", f"{wanted!r}: use auto, mysqlclient or pymysql")])
    if wanted == "pymysql":
        return wanted
    try:
        import MySQLdb._mysql  # noqa: F401
    except ImportError:
        if wanted == "mysqlclient":
            raise ConfigError([("DBFLEET_MYSQL_DRIVER", "mysqlclient is not installed: pip install mysqlclient"
                                " (it builds against libmariadb-dev and pkg-config)")]) from None
        return "pymysql"
    return "mysqlclient"


class MySQLSource:
    def __init__(self, conn: Any, db: DatabaseConfig) -> None:
        self.conn = conn
        self.db = db
        self._raw: Any = None
        self.query("SET time_zone = '+00:00'")

    def close(self) -> None:
        if self._raw is not None:
            self._raw.close()
            self._raw = None

    def ping(self) -> None:
        """Raise unless both connections (queries, raw reads) still answer."""
        self.conn.ping(reconnect=False)
        if self._raw is not None:
            self._raw.ping()

    def query(self, q: str, args: Any = None) -> list[tuple[Any, ...]]:
        with self.conn.cursor() as cur:
            cur.execute(q, args)
            return list(cur.fetchall())

    def discover(self, only: list[str] | None) -> list[Table]:
        schema = self.query("SELECT DATABASE()")[0][0]
        if not schema:
            raise ConfigError([("dbname", "the MySQL source needs a database (dbname)")])
        tables = []
        for name, estimate in self.query("SELECT table_name, coalesce(table_rows, 0) FROM information_schema.tables"
                                         " WHERE table_schema = %s AND table_type = 'BASE TABLE' ORDER BY 1",
                                         (schema,)):
            if not _wanted(name, name, only):
                continue
            columns, enums = [], {}
            for col, data_type, column_type, nullable, extra in self.query(
                    "SELECT column_name, data_type, column_type, is_nullable = 'YES', extra FROM"
                    " information_schema.columns WHERE table_schema = %s AND table_name = %s"
                    " ORDER BY ordinal_position", (schema, name)):
                target, cast, identity, nullable = map_mysql(data_type, column_type, extra, bool(nullable))
                if target == "enum":
                    enums[col] = enum_values(column_type)
                    target = f"{name}_{col}"[:63]
                columns.append(Column(col, column_type, target, nullable, cast, identity))
            key = [r[0] for r in self.query(
                "SELECT column_name FROM information_schema.key_column_usage WHERE table_schema = %s"
                " AND table_name = %s AND constraint_name = 'PRIMARY' ORDER BY ordinal_position", (schema, name))]
            _check_types(name, [c for c in columns if c.name not in enums], source_types=False)
            tables.append(Table(name, schema, name, "public", name, columns, key, int(estimate), enums))
        _check_found(only, tables)
        return tables

    def schema_objects(self, table: Table, migrated: set[str]) -> list[dict[str, Any]]:
        """Secondary indexes (prefix indexes as ``left(col, n)``; FULLTEXT and SPATIAL have no PostgreSQL
        equivalent and are left out) and foreign keys to migrated tables, as pgloader recreates them."""
        objects: list[dict[str, Any]] = []
        indexes: dict[str, dict[str, Any]] = {}
        for name, non_unique, column, sub_part, kind in self.query(
                "SELECT index_name, non_unique, column_name, sub_part, index_type FROM information_schema.statistics"
                " WHERE table_schema = DATABASE() AND table_name = %s AND index_name <> 'PRIMARY'"
                " ORDER BY index_name, seq_in_index", (table.source_name,)):
            if kind in ("FULLTEXT", "SPATIAL") or column is None:
                indexes[name] = {"skip": True}
                continue
            entry = indexes.setdefault(name, {"kind": "index", "name": name, "unique": not int(non_unique),
                                              "columns": [], "prefix": {}})
            if "skip" not in entry:
                entry["columns"].append(column)
                if sub_part is not None:
                    entry["prefix"][column] = int(sub_part)
        objects += [e for e in indexes.values() if "skip" not in e]
        fks: dict[str, dict[str, Any]] = {}
        for name, column, ref, ref_column, on_update, on_delete in self.query(
                "SELECT k.constraint_name, k.column_name, k.referenced_table_name, k.referenced_column_name,"
                " r.update_rule, r.delete_rule FROM information_schema.key_column_usage k JOIN"
                " information_schema.referential_constraints r ON r.constraint_schema = k.constraint_schema"
                " AND r.constraint_name = k.constraint_name AND r.table_name = k.table_name"
                " WHERE k.table_schema = DATABASE() AND k.table_name = %s AND k.referenced_table_name IS NOT NULL"
                " ORDER BY k.constraint_name, k.ordinal_position", (table.source_name,)):
            if ref not in migrated:
                continue
            fk = fks.setdefault(name, {"kind": "fk", "name": name, "columns": [], "ref": ref, "ref_columns": [],
                                       "on_update": on_update, "on_delete": on_delete})
            fk["columns"].append(column)
            fk["ref_columns"].append(ref_column)
        return objects + list(fks.values())

    def bounds(self, table: Table, batch_size: int, start_id: int) -> list[Batch]:
        if not table.key:
            return [Batch(start_id, table.source, None, None, "all")]  # no key: one batch, read whole
        key_col = next(c for c in table.columns if c.name == table.key[0])
        if len(table.key) == 1 and key_col.target_type in (*INT_TYPES, "numeric(20)"):
            k = my_ident(key_col.name)
            if table.rows_estimate >= ESTIMATED_ROWS:  # InnoDB counts by scanning; its statistics size ranges well
                low, high = self.query(f"SELECT min({k}), max({k}) FROM {my_ident(table.source_name)}")[0]  # noqa: S608
                count = table.rows_estimate
            else:
                low, high, count = self.query(
                    f"SELECT min({k}), max({k}), count(*) FROM {my_ident(table.source_name)}")[0]  # noqa: S608
            dense = dense_int_bounds(low, high, count, batch_size)
            if dense is not None:
                return batches_from_bounds(table.source, dense, start_id)
        keys = ", ".join(my_ident(k) for k in table.key)
        query = (f"SELECT {keys} FROM (SELECT {keys}, row_number() OVER (ORDER BY {keys}) AS dbfleet_rn"  # noqa: S608
                 f" FROM {my_ident(table.source_name)}) s WHERE mod(dbfleet_rn, %s) = 1 ORDER BY {keys}")
        rows = self.query(query, (batch_size,))
        return batches_from_bounds(table.source, [list(r) for r in rows], start_id)

    def rows(self, table: Table, batch: Batch) -> Iterator[tuple[Any, ...]]:
        """The batch's rows as Python values (the typed path)."""
        where, params = my_range(table.key, batch)
        cols = ", ".join(my_ident(c.name) for c in table.columns)
        yield from self.query(f"SELECT {cols} FROM {my_ident(table.source_name)} WHERE {where}", params)  # noqa: S608

    def raw_chunks(self, table: Table, batch: Batch, size: int = 10000) -> Iterator[list[tuple[bytes | None, ...]]]:
        """The batch's rows as the server sends them (bytes, None for NULL), ``size`` rows at a time, on a
        second connection that converts nothing (mysqlclient's C reader, or PyMySQL without decoding)."""
        where, params = my_range(table.key, batch)
        cols = ", ".join(my_ident(c.name) for c in table.columns)
        with self.conn.cursor() as cur:  # PyMySQL escapes the range's values for either driver
            query = cur.mogrify(f"SELECT {cols} FROM {my_ident(table.source_name)} WHERE {where}", params)  # noqa: S608
        if self._raw is None:
            self._raw = self._open_raw()
        if isinstance(self._raw, _RawPyMySQL):
            yield from self._raw.chunks(query, size)
            return
        self._raw.query(query.encode())
        result = self._raw.use_result()
        while True:
            rows = result.fetch_row(maxrows=size)
            if not rows:
                return
            yield list(rows)

    def _open_raw(self) -> Any:
        db = self.db
        kwargs = {"host": db.host, "port": db.port or 3306, "user": db.user or "root", "password": db.password() or "",
                  "database": db.dbname, "connect_timeout": int(db.connect_timeout), "charset": "utf8mb4"}
        if mysql_driver() == "pymysql":
            import pymysql

            return _RawPyMySQL(pymysql.connect(**kwargs, read_timeout=db.query_timeout, use_unicode=False,
                                               autocommit=True))
        from MySQLdb import _mysql

        raw = _mysql.connect(**kwargs, read_timeout=int(db.query_timeout))
        raw.query(b"SET time_zone = '+00:00'")
        return raw


class _RawPyMySQL:
    """PyMySQL reading bytes: opened with use_unicode=False, read without decoders."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        with conn.cursor() as cur:
            cur.execute("SET time_zone = '+00:00'")

    def chunks(self, query: str, size: int) -> Iterator[list[tuple[bytes | None, ...]]]:
        import pymysql

        self.conn.decoders = {}
        with self.conn.cursor(pymysql.cursors.SSCursor) as cur:
            cur.execute(query)
            while rows := cur.fetchmany(size):
                yield list(rows)

    def ping(self) -> None:
        self.conn.ping(reconnect=False)

    def close(self) -> None:
        self.conn.close()


def _check_types(table: str, columns: list[Column], source_types: bool = True) -> None:
    """Refuse a column whose PostgreSQL type (and ``source_types``: its type on a PostgreSQL source), as the
    source reports it, is more than a type name: a hostile source's text would otherwise reach the
    target's CREATE TABLE and the checksum casts."""
    for c in columns:
        for text in {c.source_type, c.target_type} if source_types else {c.target_type}:
            try:
                safe_type(text)
            except UnsafeDefinition as exc:
                raise ConfigError([("source", f"{table}.{c.name}: {exc}; the source's catalog is not to be"
                                              " trusted, nothing was written")]) from None


def _check_found(only: list[str] | None, tables: list[Table]) -> None:
    if only:
        found = {t.source for t in tables} | {t.source_name for t in tables}
        missing = [t for t in only if t not in found]
        if missing:
            raise ConfigError([("tables_or_collections", f"no such source table: {', '.join(missing)}")])


SOURCES = {"postgresql": PostgresSource, "mysql": MySQLSource}


def open_source(kind: str, conn: Any, db: DatabaseConfig) -> Any:
    if kind not in SOURCES:
        raise ConfigError([("source", f"cannot migrate from {kind!r}; sources: {', '.join(SOURCES)}")])
    return MySQLSource(conn, db) if kind == "mysql" else PostgresSource(conn)
