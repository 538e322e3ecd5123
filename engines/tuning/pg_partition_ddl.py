"""Catalog reads and DDL for the online partition conversion (engines/tuning/pg_partition.py).

Every identifier goes through ``psycopg.sql.Identifier``; the trigger functions' bodies are composed the
same way and passed to the server as one string literal. Server-made definitions (``pg_get_constraintdef``,
foreign keys) are the server's own quoting.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from psycopg import sql

from engines.tuning.base import CannotTune

INTEGER_KEYS = ("smallint", "integer", "bigint")
JOBS = sql.SQL("_dbfleet_tuning.partition_jobs")
MAX_PARTITIONS = 500
AHEAD = 3  # partitions created past the newest row (and past now), before pg_partman or the next run


def bounded(base: str, suffix: str) -> str:
    """``base + suffix`` cut to PostgreSQL's 63 bytes (a hash keeps long names distinct)."""
    name = base + suffix
    if len(name.encode()) <= 63:
        return name
    digest = hashlib.sha1(base.encode()).hexdigest()[:8]
    cut = base.encode()[: 63 - len(suffix.encode()) - 9].decode(errors="ignore")
    return f"{cut}_{digest}{suffix}"


def qualified(schema: str, name: str) -> sql.Composed:
    """``"schema"."name"``."""
    return sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(name))


@dataclass
class Layout:
    """The table being converted and the names the conversion uses."""

    schema: str
    table: str
    column: str  # the time column partitions range over
    interval: str  # month | week
    key: str  # the single-column integer primary key
    new: str  # the partitioned copy, until the swap
    old: str  # the original table after the swap (kept for revert)

    @classmethod
    def of(cls, schema: str, table: str, column: str, interval: str, key: str) -> Layout:
        """The names for converting ``schema.table`` (the same on every run: a rerun finds them)."""
        return cls(schema, table, column, interval, key, bounded(table, "_dbfleet_part"), bounded(table, "_dbfleet_old"))

    def ident(self, which: str) -> sql.Composed:
        """The qualified name of ``table``, ``new`` or ``old``."""
        return qualified(self.schema, str(getattr(self, which)))

    def function(self, direction: str) -> sql.Composed:
        """The mirroring trigger function (``fwd``: table -> copy, ``rev``: copy -> original)."""
        return qualified("_dbfleet_tuning", bounded(f"{self.schema}.{self.table}", f"_{direction}"))


def checks(conn: Any, schema: str, table: str, column: str) -> str:
    """The key column of a table the conversion can handle; CannotTune says why not."""
    row = conn.execute("SELECT c.oid, c.relkind, c.relispartition FROM pg_class c JOIN pg_namespace n"
                       " ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = %s", (schema, table)).fetchone()
    if row is None:
        raise CannotTune(f"no table {schema}.{table}")
    oid, relkind, is_partition = row
    if relkind != "r" or is_partition:
        raise CannotTune(f"{schema}.{table} is not a plain table (already partitioned, or a partition)")
    keys = conn.execute("SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_index i JOIN pg_attribute a"
                        " ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey) WHERE i.indrelid = %s"
                        " AND i.indisprimary", (oid,)).fetchall()
    if len(keys) != 1 or keys[0][1] not in INTEGER_KEYS:
        raise CannotTune(f"{schema}.{table} needs a single-column integer primary key (batches and the catch-up "
                         "go by key): none found")
    blockers = conn.execute("""
        SELECT 'foreign key ' || conname || ' of ' || conrelid::regclass FROM pg_constraint
         WHERE confrelid = %(oid)s AND contype = 'f'
        UNION ALL SELECT DISTINCT 'view ' || v.ev_class::regclass FROM pg_depend d JOIN pg_rewrite v ON v.oid = d.objid
         WHERE d.refobjid = %(oid)s AND d.classid = 'pg_rewrite'::regclass AND v.ev_class <> %(oid)s
        UNION ALL SELECT 'child table ' || inhrelid::regclass FROM pg_inherits WHERE inhparent = %(oid)s
        UNION ALL SELECT 'generated column ' || attname FROM pg_attribute WHERE attrelid = %(oid)s AND attgenerated <> ''
        """, {"oid": oid}).fetchall()
    if blockers:
        raise CannotTune(f"{schema}.{table} cannot be swapped online: {', '.join(b for (b,) in blockers)} "
                         "refer to it by oid and would keep pointing at the old table")
    nulls = conn.execute(sql.SQL("SELECT EXISTS (SELECT 1 FROM {} WHERE {} IS NULL)").format(
        qualified(schema, table), sql.Identifier(column))).fetchone()[0]
    if nulls:
        raise CannotTune(f"{schema}.{table}.{column} has NULLs: the partition key joins the primary key, so it "
                         "must be NOT NULL")
    return str(keys[0][0])


def partition_bounds(conn: Any, lay: Layout) -> list[tuple[str, str]]:
    """(from, to) of one partition per month/week from the oldest row to AHEAD intervals past the newest (or now)."""
    step = sql.SQL("{}::interval").format(sql.Literal(f"1 {lay.interval}"))
    unit = sql.Literal(lay.interval)
    got = conn.execute(sql.SQL("""
        SELECT g::text, (g + {step})::text
        FROM (SELECT date_trunc({unit}, coalesce(min({col})::timestamp, now()::timestamp)) lo,
               date_trunc({unit}, greatest(max({col})::timestamp, now()::timestamp)) + {ahead} * {step} hi FROM {tbl}) b,
               generate_series(b.lo, b.hi, {step}) g ORDER BY g""").format(
        step=step, unit=unit, col=sql.Identifier(lay.column), ahead=sql.Literal(AHEAD), tbl=lay.ident("table"))).fetchall()
    if len(got) > MAX_PARTITIONS:
        raise CannotTune(f"{lay.schema}.{lay.table} spans {len(got)} {lay.interval}s: more than {MAX_PARTITIONS} "
                         "partitions; partition by a longer interval")
    return [(str(a), str(b)) for a, b in got]


def create_copy(conn: Any, lay: Layout) -> list[str]:
    """The partitioned copy with its partitions, primary key (key, column), the table's plain B-tree indexes and
    outgoing foreign keys; the statements run, for the change's record."""
    ran: list[sql.Composable] = [sql.SQL(
        "CREATE TABLE {} (LIKE {} INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING IDENTITY INCLUDING STORAGE"
        " INCLUDING COMMENTS INCLUDING STATISTICS) PARTITION BY RANGE ({})").format(
        lay.ident("new"), lay.ident("table"), sql.Identifier(lay.column))]
    for low, high in partition_bounds(conn, lay):
        ran.append(sql.SQL("CREATE TABLE {} PARTITION OF {} FOR VALUES FROM ({}) TO ({})").format(
            qualified(lay.schema, bounded(lay.table, "_p" + low[:10].replace("-", ""))), lay.ident("new"),
            sql.Literal(low), sql.Literal(high)))
    ran.append(sql.SQL("CREATE TABLE {} PARTITION OF {} DEFAULT").format(
        qualified(lay.schema, bounded(lay.table, "_pdefault")), lay.ident("new")))
    ran.append(sql.SQL("ALTER TABLE {} ADD PRIMARY KEY ({}, {})").format(
        lay.ident("new"), sql.Identifier(lay.key), sql.Identifier(lay.column)))
    for (columns,) in conn.execute("""
            SELECT array(SELECT a.attname FROM unnest(i.indkey) WITH ORDINALITY k(attnum, o)
                         JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum ORDER BY k.o)
            FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am am ON am.oid = c.relam
            WHERE i.indrelid = %s::regclass AND NOT i.indisunique AND am.amname = 'btree' AND i.indexprs IS NULL
              AND i.indpred IS NULL AND i.indisvalid""", (lay.ident("table").as_string(conn),)).fetchall():
        ran.append(sql.SQL("CREATE INDEX ON {} ({})").format(
            lay.ident("new"), sql.SQL(", ").join(sql.Identifier(c) for c in columns)))
    for name, definition in conn.execute("SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint WHERE"
                                         " conrelid = %s::regclass AND contype = 'f'",
                                         (lay.ident("table").as_string(conn),)).fetchall():
        ran.append(sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} ").format(lay.ident("new"), sql.Identifier(name))
                   + sql.SQL(definition))  # the server's own text of the constraint
    for statement in ran:
        conn.execute(statement)
    return [s.as_string(conn) for s in ran]


def mirror(conn: Any, lay: Layout, source: str, target: str, direction: str) -> None:
    """A trigger on ``source`` applying every row change to ``target`` (same columns, same key)."""
    dst, key = lay.ident(target), sql.Identifier(lay.key)
    body = sql.SQL("""BEGIN
  IF TG_OP = 'DELETE' OR TG_OP = 'UPDATE' THEN
    DELETE FROM {dst} WHERE {key} = OLD.{key};
  END IF;
  IF TG_OP = 'INSERT' OR TG_OP = 'UPDATE' THEN
    INSERT INTO {dst} OVERRIDING SYSTEM VALUE SELECT NEW.*;
  END IF;
  RETURN NULL;
END""").format(dst=dst, key=key).as_string(conn)
    conn.execute(sql.SQL("CREATE OR REPLACE FUNCTION {}() RETURNS trigger LANGUAGE plpgsql AS {}").format(
        lay.function(direction), sql.Literal(body)))
    conn.execute(sql.SQL("CREATE TRIGGER {} AFTER INSERT OR UPDATE OR DELETE ON {} FOR EACH ROW EXECUTE FUNCTION {}()")
                 .format(sql.Identifier(f"dbfleet_partition_{direction}"), lay.ident(source), lay.function(direction)))


def disarm(conn: Any, lay: Layout, direction: str) -> None:
    """Make a mirroring trigger do nothing, without any table lock (CREATE OR REPLACE FUNCTION)."""
    conn.execute(sql.SQL("CREATE OR REPLACE FUNCTION {}() RETURNS trigger LANGUAGE plpgsql AS {}").format(
        lay.function(direction), sql.Literal("BEGIN RETURN NULL; END")))


def drop_mirror(conn: Any, lay: Layout, source: str, direction: str) -> None:
    """Drop a mirroring trigger and its function (the table must exist)."""
    conn.execute(sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(
        sql.Identifier(f"dbfleet_partition_{direction}"), lay.ident(source)))
    conn.execute(sql.SQL("DROP FUNCTION IF EXISTS {}()").format(lay.function(direction)))


def fingerprint(conn: Any, lay: Layout, which: str) -> tuple[int, int]:
    """(rows, checksum of every row's text) of ``table``, ``new`` or ``old``."""
    n, total = conn.execute(sql.SQL("SELECT count(*), coalesce(sum(hashtextextended(t::text, 0)), 0) FROM {} t")
                            .format(lay.ident(which))).fetchone()
    return int(n), int(total)


def move_sequence(conn: Any, lay: Layout, src: str, dst: str) -> None:
    """After a rename: the key's serial sequence follows the live table; an identity's is set to continue."""
    before = conn.execute("SELECT pg_get_serial_sequence(%s, %s)", (lay.ident(src).as_string(conn), lay.key)).fetchone()[0]
    after = conn.execute("SELECT pg_get_serial_sequence(%s, %s)", (lay.ident(dst).as_string(conn), lay.key)).fetchone()[0]
    if before is None:
        return
    if after is None:  # serial: the default still names the sequence; make the live table own it
        conn.execute(sql.SQL("ALTER SEQUENCE {} OWNED BY {}.{}").format(
            sql.SQL(before), lay.ident(dst), sql.Identifier(lay.key)))  # pg_get_serial_sequence quotes its result
        return
    if after != before:  # identity: each table has its own; continue where the previous one was
        conn.execute(sql.SQL("SELECT setval({}, s.last_value, s.is_called) FROM {} s").format(
            sql.Literal(after), sql.SQL(before)))
