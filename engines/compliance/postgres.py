"""PostgreSQL discovery: catalog with privileges, comments and security labels; TABLESAMPLE samples."""

from __future__ import annotations

from typing import Any

from engines.compliance.base import CannotSample, ColumnInfo, Discoverer, TableInfo

CATALOG = """
SELECT n.nspname, c.relname,
       CASE WHEN c.relkind = 'p' THEN (SELECT coalesce(sum(greatest(k.reltuples, 0)), 0)::bigint FROM pg_inherits i
                                        JOIN pg_class k ON k.oid = i.inhrelid WHERE i.inhparent = c.oid)
            ELSE c.reltuples::bigint END,
       CASE WHEN c.relkind = 'p' THEN (SELECT coalesce(sum(k.relpages), 0)::int FROM pg_inherits i
                                        JOIN pg_class k ON k.oid = i.inhrelid WHERE i.inhparent = c.oid)
            ELSE c.relpages END,
       has_table_privilege(c.oid, 'SELECT'),
       a.attname, format_type(a.atttypid, a.atttypmod), t.typcategory,
       has_column_privilege(c.oid, a.attnum, 'SELECT'),
       col_description(c.oid, a.attnum),
       (SELECT string_agg(l.label, ' ') FROM pg_seclabel l
         WHERE l.objoid = c.oid AND l.classoid = 'pg_class'::regclass AND l.objsubid = a.attnum),
       CASE WHEN a.atttypmod > 4 AND t.typname IN ('varchar', 'bpchar') THEN a.atttypmod - 4 END,
       coalesce((SELECT array_agg(k.attname::text ORDER BY array_position(i.indkey::int2[], k.attnum))
                  FROM pg_index i JOIN pg_attribute k ON k.attrelid = i.indrelid AND k.attnum = ANY(i.indkey)
                 WHERE i.indrelid = c.oid AND i.indisprimary), '{}')
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
JOIN pg_type t ON t.oid = a.atttypid
WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_(toast|temp)'
ORDER BY n.nspname, c.relname, a.attnum
"""
# pg_type.typcategory -> validator family; inet/cidr are category I
FAMILY = {"S": "text", "D": "date", "I": "inet", "N": "number", "U": "text"}
SMALL_PAGES = 64  # tables this small are sampled with ORDER BY random() (they are read whole anyway)


def display_name(schema: str, table: str) -> str:
    """``users`` in the public schema, ``sales.orders`` elsewhere."""
    return table if schema == "public" else f"{schema}.{table}"


class PostgresDiscoverer(Discoverer):
    kind = "postgresql"

    def tables(self) -> list[TableInfo]:
        out: dict[tuple[str, str], TableInfo] = {}
        for row in self.connector.conn.execute(CATALOG).fetchall():
            schema, name, tuples, pages, can_select, col, dtype, cat, col_ok, comment, label, maxlen, pk = row
            info = out.get((schema, name))
            if info is None:
                reason = None if can_select else f"role has no SELECT privilege on {schema}.{name}"
                info = out[(schema, name)] = TableInfo(
                    display_name(schema, name), [], readable=True, reason=reason,
                    rows_estimate=max(int(tuples), -1), ident=(schema, name, int(pages)), key_columns=list(pk))
            info.columns.append(ColumnInfo(col, dtype, FAMILY.get(cat, "other"),
                                           " ".join(x for x in (comment, label) if x) or None, bool(col_ok),
                                           maxlen))
        for info in out.values():  # column grants can make part of a table readable
            info.readable = any(c.readable for c in info.columns)
        return list(out.values())

    def _query(self, table: TableInfo, columns: list[ColumnInfo], n: int, percent: float | None) -> list[tuple[Any, ...]]:
        from psycopg import sql

        schema, name, _ = table.ident
        cols = sql.SQL(", ").join(sql.Identifier(c.name) for c in columns)
        sample = sql.SQL(" TABLESAMPLE SYSTEM ({})").format(sql.Literal(percent)) if percent else sql.SQL("")
        if percent and self.seed is not None:
            sample = sql.SQL("{} REPEATABLE ({})").format(sample, sql.Literal(self.seed))
        stmt = sql.SQL("SELECT {} FROM {}{} ORDER BY random() LIMIT {}").format(
            cols, sql.Identifier(schema, name), sample, sql.Literal(n))
        return list(self.connector.conn.execute(stmt).fetchall())

    def sample(self, table: TableInfo, columns: list[ColumnInfo], n: int) -> list[tuple[Any, ...]]:
        import psycopg

        _, _, pages = table.ident
        rows = table.rows_estimate or 0
        percent = None if pages <= SMALL_PAGES or rows <= 0 else min(100.0, max(0.0001, 400.0 * n / rows))
        conn = self.connector.conn
        try:
            with conn.transaction():
                conn.execute("SET TRANSACTION READ ONLY")
                conn.execute("SELECT set_config('statement_timeout', %s, true)", (str(int(self.timeout * 1000)),))
                if self.seed is not None:
                    conn.execute("SELECT setseed(%s)", (self.random.random(),))
                got = self._query(table, columns, n, percent)
                while percent and percent < 100 and len(got) < n:  # pages sampled held too few rows
                    percent = min(100.0, percent * 10)
                    got = self._query(table, columns, n, percent)
                return got
        except psycopg.errors.InsufficientPrivilege as exc:
            raise CannotSample(f"permission denied: {str(exc).splitlines()[0]}") from None
        except psycopg.errors.QueryCanceled:
            raise CannotSample(f"sample of {table.name} exceeded the {self.timeout:g}s statement timeout") from None
