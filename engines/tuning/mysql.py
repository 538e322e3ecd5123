"""MySQL/MariaDB tuner, MySQLTuner's core: buffer pool vs data, redo log, connections, temporary tables on
disk, table cache, slow query log; duplicate indexes from information_schema, unused ones from sys
(performance_schema); index advice from EXPLAIN on the workload (engines/tuning/my_indexes.py), applied
hidden first (IGNORED / INVISIBLE) and kept only when proven. Settings are advice only."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from engines.connectors import open_connector
from engines.migration.sources import my_ident  # the one MySQL identifier quoting helper
from engines.tuning.base import CannotTune, Change, Finding, SettingAdvice, Tuner, TuningReport
from engines.tuning.my_indexes import MyIndexApplier, advise
from engines.tuning.my_workload import Query, read_workload
from engines.tuning.targets import parse_targets

MB = 1024**2
Facts = dict[str, Any]
Check = Callable[[Facts], "list[SettingAdvice | Finding]"]
CHECKS: list[Check] = []


def check(fn: Check) -> Check:
    """Register one MySQLTuner-style rule over the facts read once per run."""
    CHECKS.append(fn)
    return fn


def _mb(n: float) -> str:
    return f"{n / MB:.0f}M"


@check
def buffer_pool(f: Facts) -> list[SettingAdvice | Finding]:
    """The InnoDB buffer pool should hold the InnoDB data and indexes (capped at 75 % of the host's RAM)."""
    pool, data = int(f["var"]["innodb_buffer_pool_size"]), f["innodb_bytes"]
    if pool >= data:
        return []
    want = int(data * 1.1)
    if f.get("memory_bytes"):
        want = min(want, int(f["memory_bytes"] * 0.75))
    if want <= pool:
        return []
    return [SettingAdvice("innodb_buffer_pool_size", _mb(pool), _mb(want), f"InnoDB data and indexes take "
                          f"{_mb(data)}: the pool should hold them (at most 75% of RAM)", False)]


@check
def redo_log(f: Facts) -> list[SettingAdvice | Finding]:
    """Redo log about a quarter of the buffer pool (MySQLTuner's rule of thumb)."""
    v = f["var"]
    size = int(v.get("innodb_log_file_size", 0)) * int(v.get("innodb_log_files_in_group", 1) or 1)
    want = int(v["innodb_buffer_pool_size"]) // 4
    if not size or abs(size - want) <= want * 0.5:
        return []
    return [SettingAdvice("innodb_log_file_size", _mb(size), _mb(want), "redo log about 25% of the buffer pool", True)]


@check
def connections(f: Facts) -> list[SettingAdvice | Finding]:
    """Peak connections against max_connections."""
    peak, limit = int(f["status"]["Max_used_connections"]), int(f["var"]["max_connections"])
    if peak >= 0.85 * limit:
        return [SettingAdvice("max_connections", str(limit), str(int(peak * 1.5)), f"peak {peak} of {limit} "
                              "connections used (add a pool or raise the limit)", False)]
    return []


@check
def tmp_tables(f: Facts) -> list[SettingAdvice | Finding]:
    """Implicit temporary tables that spill to disk (over 25 %): raise tmp_table_size with max_heap_table_size."""
    s, v = f["status"], f["var"]
    disk, total = int(s["Created_tmp_disk_tables"]), int(s["Created_tmp_tables"])
    if total < 100 or disk <= 0.25 * total:
        return []
    now = min(int(v["tmp_table_size"]), int(v["max_heap_table_size"]))
    reason = f"{100.0 * disk / total:.0f}% of {total} temporary tables went to disk"
    return [SettingAdvice(name, _mb(int(v[name])), _mb(max(now * 2, 64 * MB)), reason + " (raise both together)", False)
            for name in ("tmp_table_size", "max_heap_table_size")]


@check
def table_cache(f: Facts) -> list[SettingAdvice | Finding]:
    """A full table cache with many tables opened since start: raise table_open_cache."""
    s, v = f["status"], f["var"]
    cache, opened = int(v["table_open_cache"]), int(s["Opened_tables"])
    if int(s["Open_tables"]) < cache * 0.95 or opened < cache:
        return []
    return [SettingAdvice("table_open_cache", str(cache), str(cache * 2), f"the cache is full and {opened} tables "
                          "were opened since start", False)]


@check
def slow_log(f: Facts) -> list[SettingAdvice | Finding]:
    """The slow query log is what index advice reads: it should be on."""
    if str(f["var"].get("slow_query_log", "OFF")).upper() in ("ON", "1"):
        return []
    return [SettingAdvice("slow_query_log", "OFF", "ON", "without it slow statements go unseen (long_query_time "
                          f"is {f['var'].get('long_query_time')} s)", False)]


def duplicate_indexes(rows: list[tuple[Any, ...]]) -> list[Finding]:
    """Indexes whose columns lead another index of the same table (a non-unique one only)."""
    by_table: dict[tuple[str, str], dict[str, tuple[bool, list[str]]]] = {}
    for schema, table, index, non_unique, _seq, column in rows:
        entry = by_table.setdefault((schema, table), {}).setdefault(index, (bool(non_unique), []))
        entry[1].append(column)
    out = []
    for (schema, table), idx in sorted(by_table.items()):
        for name, (non_unique, cols) in sorted(idx.items()):
            if not non_unique or name == "PRIMARY":
                continue
            wider = [o for o, (_, c) in idx.items() if o != name and c[: len(cols)] == cols
                     and (len(c) > len(cols) or o < name)]
            if wider:
                out.append(Finding("duplicate_indexes", f"{schema}.{table}.{name}",
                                   f"covered by {wider[0]} ({', '.join(idx[wider[0]][1])})",
                                   f"ALTER TABLE {my_ident(schema, table)} DROP INDEX {my_ident(name)}"))
    return out


def _raw(connector: Any) -> Query:
    """Run one statement on the connector's session; parameters only when given (a logged statement's own ``%``
    must not be read as a placeholder)."""
    def q(statement: str, args: tuple[Any, ...] | None = None) -> list[tuple[Any, ...]]:
        with connector.conn.cursor() as cur:
            cur.execute(statement, args)
            return list(cur.fetchall())
    return q


class MySQLTuner(Tuner):
    """MySQLTuner's core checks, read-only."""

    kind = "mysql"

    def analyze(self) -> TuningReport:
        """Read variables, status and the schema; return settings advice and index findings."""
        report = TuningReport(self.db.id, self.kind)
        with open_connector(self.db) as connector:
            q = _raw(connector)
            facts = self._facts(q)
            report.server_version = str(q("SELECT VERSION()")[0][0])
            if self.settings.wants("settings"):
                for fn in CHECKS:
                    report.settings.extend(a for a in fn(facts) if isinstance(a, SettingAdvice))
            if self.settings.wants("hygiene"):
                report.hygiene = self._indexes(q, facts, report.limits)
            if self.settings.wants("indexes"):
                self._advice(q, facts, report)
        return report

    def _advice(self, q: Query, facts: Facts, report: TuningReport) -> None:
        """Index advice from EXPLAIN on the digest (or slow-log) workload of the configured schema."""
        if not self.db.dbname:
            report.limits.append("indexes: no dbname configured: index advice reads one schema's workload")
            return
        statements = read_workload(q, self.db.dbname, facts["var"], self.memory, report.limits,
                                   parse_targets(self.settings.optimization_targets))
        report.workload = {"statements": len(statements), "calls": sum(s.calls for s in statements)}
        report.indexes = advise(q, self.db.dbname, statements, self.settings.max_index_columns, report.limits)

    def apply(self, report: TuningReport) -> list[Change]:
        """Build each advised index hidden from the optimizer, prove it visible, keep or drop it."""
        with open_connector(self.db) as connector:
            q = _raw(connector)
            if connector._replica_status() or str(q("SELECT @@read_only")[0][0]) in ("1", "ON"):  # type: ignore[attr-defined]
                report.limits.append("apply refused: the server is a replica or read-only (apply on the primary)")
                return []
            mariadb = "mariadb" in str(q("SELECT VERSION()")[0][0]).lower()
            applier = MyIndexApplier(q, mariadb, self.db.id, self.settings)
            changes = [applier.apply(advice) for advice in report.indexes]
        report.changes.extend(changes)
        return changes

    def revert(self, change: dict[str, Any]) -> dict[str, Any]:
        """Drop the index a recorded change created (idempotent)."""
        reverse = change.get("reverse") or {}
        if reverse.get("action") != "drop_index_mysql":
            raise CannotTune(f"change {change.get('change_id')} has no reversible action ({reverse.get('action')!r})")
        with open_connector(self.db) as connector:
            q = _raw(connector)
            there = q("SELECT 1 FROM information_schema.statistics WHERE table_schema = %s AND table_name = %s"
                      " AND index_name = %s", (reverse["schema"], reverse["table"], reverse["index"]))
            if there:
                q(reverse["statement"])
        return {"change_id": change.get("change_id"), "statement": reverse["statement"],
                "result": "dropped" if there else "already gone"}

    def _facts(self, q: Callable[..., list[tuple[Any, ...]]]) -> Facts:
        innodb = q("SELECT COALESCE(SUM(data_length + index_length), 0) FROM information_schema.tables"
                   " WHERE engine = 'InnoDB' AND table_schema NOT IN ('mysql', 'sys', 'performance_schema')")[0][0]
        return {"var": {k.lower(): v for k, v in q("SHOW GLOBAL VARIABLES")},
                "status": dict(q("SHOW GLOBAL STATUS")), "innodb_bytes": int(innodb),
                "memory_bytes": self.settings.host.get("memory_bytes")}

    def _indexes(self, q: Callable[..., list[tuple[Any, ...]]], facts: Facts, limits: list[str]) -> list[Finding]:
        only = (self.db.dbname, self.db.dbname)  # NULL: every schema
        rows = q("SELECT table_schema, table_name, index_name, non_unique, seq_in_index, column_name"
                 " FROM information_schema.statistics WHERE table_schema NOT IN"
                 " ('mysql', 'sys', 'performance_schema', 'information_schema')"
                 " AND (%s IS NULL OR table_schema = %s) ORDER BY 1, 2, 3, 5", only)
        found = duplicate_indexes(rows)
        if str(facts["var"].get("performance_schema", "OFF")).upper() not in ("ON", "1"):
            limits.append("unused indexes: performance_schema is OFF (set performance_schema=ON and restart; "
                          "sys.schema_unused_indexes then lists them)")
            return found
        for schema, table, index in q("SELECT object_schema, object_name, index_name FROM sys.schema_unused_indexes"
                                      " WHERE %s IS NULL OR object_schema = %s", only):
            found.append(Finding("unused_indexes", f"{schema}.{table}.{index}", "no reads since the server started"))
        return found
