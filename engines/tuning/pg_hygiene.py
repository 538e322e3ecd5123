"""PostgreSQL index hygiene, PgHero's set: one small function per query, findings into a list.

Unused, duplicate and prefix-redundant, invalid indexes; missing foreign-key indexes; sequences near
exhaustion; table and index bloat estimates. The fixes are statements to review, never run here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from psycopg import sql

from engines.tuning.base import Finding, TuningSettings

HygieneCheck = Callable[[Any, TuningSettings], list[Finding]]
CHECKS: list[tuple[str, HygieneCheck]] = []


def check(name: str) -> Callable[[HygieneCheck], HygieneCheck]:
    """Register a hygiene check under ``name``."""
    def register(fn: HygieneCheck) -> HygieneCheck:
        CHECKS.append((name, fn))
        return fn
    return register


def _rows(conn: Any, query: str, params: tuple[Any, ...] | None = None) -> list[tuple[Any, ...]]:
    return list(conn.execute(query, params).fetchall())


def _drop(conn: Any, schema: str, index: str) -> str:
    return sql.SQL("DROP INDEX CONCURRENTLY {}.{}").format(sql.Identifier(schema), sql.Identifier(index)).as_string(conn)


def _name(schema: str, rel: str) -> str:
    return f"{schema}.{rel}"


@check("unused_indexes")
def unused_indexes(conn: Any, settings: TuningSettings) -> list[Finding]:
    """Indexes never scanned since the statistics were reset, when that was long enough ago to judge."""
    age_days = float(_rows(conn, "SELECT extract(epoch FROM now() - coalesce(stats_reset, pg_postmaster_start_time()))"
                                 " / 86400 FROM pg_stat_database WHERE datname = current_database()")[0][0])
    if age_days < settings.unused_index_min_days:
        return [Finding("unused_indexes", "-", f"statistics cover only {age_days:.1f} days (< "
                        f"{settings.unused_index_min_days:g}): unused indexes are not judged yet", severity="info")]
    found = _rows(conn, """
        SELECT s.schemaname, s.relname, s.indexrelname, pg_relation_size(s.indexrelid)
        FROM pg_stat_user_indexes s JOIN pg_index i ON i.indexrelid = s.indexrelid
        WHERE s.idx_scan = 0 AND NOT i.indisunique AND NOT i.indisprimary AND i.indisvalid
          AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = s.indexrelid)
        ORDER BY 4 DESC""")
    return [Finding("unused_indexes", _name(s, ix), f"never scanned in {age_days:.0f} days of statistics on {t} "
                    f"({size} bytes); check replicas before dropping", _drop(conn, s, ix)) for s, t, ix, size in found]


@check("duplicate_indexes")
def duplicate_indexes(conn: Any, settings: TuningSettings) -> list[Finding]:
    """Indexes whose keys are a prefix of (or equal to) another index's on the same table (same method,
    no predicate, no expressions); a unique index is never called redundant to a non-unique one."""
    found = _rows(conn, """
        SELECT n.nspname, a.relname, b.relname, t.relname FROM pg_index ia
        JOIN pg_index ib ON ib.indrelid = ia.indrelid AND ib.indexrelid <> ia.indexrelid
        JOIN pg_class a ON a.oid = ia.indexrelid JOIN pg_class b ON b.oid = ib.indexrelid
        JOIN pg_class t ON t.oid = ia.indrelid JOIN pg_namespace n ON n.oid = t.relnamespace
        WHERE a.relam = b.relam AND ia.indpred IS NULL AND ib.indpred IS NULL
          AND ia.indexprs IS NULL AND ib.indexprs IS NULL AND ia.indisvalid AND ib.indisvalid
          AND n.nspname NOT IN ('pg_catalog', 'information_schema')
          AND (ia.indkey::int2[])[0:ia.indnkeyatts - 1] = (ib.indkey::int2[])[0:ia.indnkeyatts - 1]
          AND ia.indnkeyatts <= ib.indnkeyatts
          AND (NOT ia.indisunique OR (ib.indisunique AND ia.indnkeyatts = ib.indnkeyatts))
          AND NOT ia.indisprimary
          AND (ia.indnkeyatts < ib.indnkeyatts OR ia.indexrelid > ib.indexrelid)
        ORDER BY 1, 4, 2""")
    return [Finding("duplicate_indexes", _name(s, a), f"covered by {b} on {t} (same leading columns)", _drop(conn, s, a))
            for s, a, b, t in found]


@check("invalid_indexes")
def invalid_indexes(conn: Any, settings: TuningSettings) -> list[Finding]:
    """Indexes left invalid by a failed CREATE INDEX CONCURRENTLY (they cost writes and serve no reads)."""
    found = _rows(conn, """
        SELECT n.nspname, c.relname, t.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
        JOIN pg_class t ON t.oid = i.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE NOT i.indisvalid ORDER BY 1, 2""")
    return [Finding("invalid_indexes", _name(s, ix), f"invalid index on {t} (a failed CREATE INDEX CONCURRENTLY): "
                    "drop it and build it again", _drop(conn, s, ix), "critical") for s, ix, t in found]


@check("missing_fk_indexes")
def missing_fk_indexes(conn: Any, settings: TuningSettings) -> list[Finding]:
    """Foreign keys whose columns lead no index: deletes on the referenced table scan the referencing one."""
    found = _rows(conn, """
        SELECT n.nspname, t.relname, c.conname, c.conkey,
               array(SELECT a.attname FROM unnest(c.conkey) WITH ORDINALITY k(attnum, o)
                     JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum ORDER BY k.o)
        FROM pg_constraint c JOIN pg_class t ON t.oid = c.conrelid JOIN pg_namespace n ON n.oid = t.relnamespace
        WHERE c.contype = 'f' AND NOT EXISTS (
            SELECT 1 FROM pg_index i WHERE i.indrelid = c.conrelid AND i.indisvalid AND i.indpred IS NULL
              AND (i.indkey::int2[])[0:cardinality(c.conkey) - 1] @> c.conkey
              AND (i.indkey::int2[])[0:cardinality(c.conkey) - 1] <@ c.conkey)
        ORDER BY 1, 2, 3""")
    from engines.tuning.pg_plans import create_index_sql, index_name

    return [Finding("missing_fk_indexes", _name(s, t), f"foreign key {con} ({', '.join(cols)}) has no index",
                    create_index_sql(s, t, list(cols), index_name(t, list(cols))).as_string(conn))
            for s, t, con, _, cols in found]


@check("sequences")
def sequences(conn: Any, settings: TuningSettings) -> list[Finding]:
    """Sequences past 75 % of their range, or of the range of the column they feed."""
    found = _rows(conn, """
        SELECT s.schemaname, s.sequencename, s.last_value,
               least(s.max_value, CASE a.atttypid WHEN 'int2'::regtype THEN 32767
                                   WHEN 'int4'::regtype THEN 2147483647 ELSE s.max_value END)
        FROM pg_sequences s JOIN pg_class sc ON sc.relname = s.sequencename
        JOIN pg_namespace sn ON sn.oid = sc.relnamespace AND sn.nspname = s.schemaname
        LEFT JOIN pg_depend d ON d.objid = sc.oid AND d.deptype IN ('a', 'i') AND d.refobjsubid > 0
        LEFT JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
        WHERE s.last_value IS NOT NULL AND s.increment_by > 0""")
    out = []
    for schema, seq, last, limit in found:
        pct = 100.0 * float(last) / float(limit)
        if pct >= 75.0:
            out.append(Finding("sequences", _name(schema, seq), f"{pct:.1f}% of its range used ({last} of {limit}): "
                               "move the column to bigint", severity="critical" if pct >= 90 else "warning"))
    return out


@check("table_bloat")
def table_bloat(conn: Any, settings: TuningSettings) -> list[Finding]:
    """Tables whose dead tuples exceed 20 % (an estimate from the statistics; pgstattuple measures it)."""
    found = _rows(conn, """
        SELECT schemaname, relname, n_dead_tup, n_live_tup, pg_relation_size(relid) FROM pg_stat_user_tables
        WHERE n_dead_tup > 1000 AND n_dead_tup > 0.2 * (n_live_tup + n_dead_tup) ORDER BY 3 DESC LIMIT 20""")
    return [Finding("table_bloat", _name(s, t), f"about {100.0 * dead / max(dead + live, 1):.0f}% dead tuples of "
                    f"{size} bytes: autovacuum is behind (VACUUM it; pg_repack reclaims the space online)")
            for s, t, dead, live, size in found]


@check("index_bloat")
def index_bloat(conn: Any, settings: TuningSettings) -> list[Finding]:
    """B-tree indexes over twice the size their row count and key widths need (estimate from pg_stats)."""
    found = _rows(conn, """
        SELECT n.nspname, c.relname, c.relpages::bigint * current_setting('block_size')::int,
               ceil(c.reltuples * (12 + coalesce(sum(st.avg_width), 8)) / 0.9)::bigint
        FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        JOIN pg_am am ON am.oid = c.relam AND am.amname = 'btree'
        JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
        JOIN pg_class t ON t.oid = i.indrelid
        LEFT JOIN pg_stats st ON st.schemaname = n.nspname AND st.tablename = t.relname AND st.attname = a.attname
        WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND c.relpages > 128 AND c.reltuples > 0
        GROUP BY 1, 2, 3, c.reltuples""")
    return [Finding("index_bloat", _name(s, ix), f"{size} bytes where about {need} would do: REINDEX INDEX "
                    "CONCURRENTLY to rebuild it") for s, ix, size, need in found if size > 2 * need + 8192 * 16]


def run_hygiene(conn: Any, settings: TuningSettings, limits: list[str]) -> list[Finding]:
    """Every hygiene check; one that cannot run adds its reason to ``limits`` instead of failing."""
    out: list[Finding] = []
    for name, fn in CHECKS:
        try:
            out.extend(fn(conn, settings))
        except Exception as exc:
            limits.append(f"{name}: cannot check ({type(exc).__name__}: {str(exc).strip().splitlines()[0][:200]})")
    return out
