"""PostgreSQL targets: validation. Count and checksum every batch's range on the target, computed the way
the batch's checkpoint was (server-side row hashes, COPY text lines, row text or driver values)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import TYPE_CHECKING, Any

from psycopg import sql

from engines.migration import textpath
from engines.migration.checksum import line_hash_items, pg_hash_items, python_checksum, sql_checksum
from engines.migration.model import Batch, MigrationPlan, MigrationType, Table
from engines.migration.postgres_schema import by_size, check_table, not_built, target_ident
from engines.migration.sources import pg_range

if TYPE_CHECKING:
    from engines.config import DatabaseConfig
    from engines.migration.base import Source
    from engines.migration.postgres_target import PostgresTarget


def text_spec(plan: MigrationPlan, table: Table) -> Any:
    """The COPY-line handling of ``table`` when its batches are copied and checksummed as COPY text lines
    the worker encodes (the "text" path: MySQL -> PostgreSQL full copies of supported types), else None."""
    return textpath.plan_text(table) if plan.path == "text" else None


class PostgresValidation:
    """The validation half of ``PostgresTarget`` (a mixin: it uses the target's ``conn``)."""

    conn: Any

    def validate(self, plan: MigrationPlan, db: DatabaseConfig, source: Source, cps: dict[int, dict[str, Any]],
                 report: dict[str, Any]) -> dict[str, Any]:
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
        escaped = {b for b, cp in cps.items() if cp.get("escaped", True)}
        batches = {t.source: sorted((b for b in plan.batches if b.table == t.source), key=lambda b: b.id)
                   for t in plan.tables}
        # a table with a single-column key is first measured whole (parts of its key space summed, no
        # grouping); only a table whose total differs is measured batch by batch, to name the ranges
        appended = {t.source: snapshot_table(plan, t) for t in plan.tables
                    if plan.if_exists == "append" and f"snapshot:{t.target}" in plan.created}
        whole = {t.source for t in plan.tables if t.ranges_portable and len(t.key) == 1
                 and len(batches[t.source]) > 1 and t.source not in appended}
        jobs: list[tuple[str, Callable[[PostgresTarget], dict[int | None, tuple[int, int]]]]] = []
        if plan.type != MigrationType.INCREMENTAL.value:
            for table in plan.tables:
                jobs += [(table.source, job) for job in measure_jobs(plan, table, batches[table.source], escaped,
                                                                     grouped=table.source not in whole)]
        measured, totals, differ = self._scan(plan, db, cps, jobs, batches, whole, escaped)
        for name, snap in appended.items():  # appended to: what the table held before is not the copy's
            if plan.type == MigrationType.INCREMENTAL.value:
                continue
            before: dict[int | None, tuple[int, int]] = {}
            for job in measure_jobs(plan, snap, batches[name], escaped):
                before.update(job(self))  # type: ignore[arg-type]
            measured[name] = {k: (n - before.get(k, (0, 0))[0], (c - before.get(k, (0, 0))[1]) % 2 ** 64)
                              for k, (n, c) in measured[name].items()}
        for table in plan.tables:
            verified = totals.get(table.source) if table not in differ else None
            report["tables"].append(table_report(plan, table, cps, measured[table.source], verified))
            report["ok"] = report["ok"] and report["tables"][-1]["ok"]
        report["rejects"] = self.rejects(plan)[:100]  # type: ignore[attr-defined]
        return report

    def _scan(self, plan: MigrationPlan, db: DatabaseConfig, cps: dict[int, dict[str, Any]], jobs: list[Any],
              batches: dict[str, list[Batch]], whole: set[str], escaped: set[int]) -> tuple[Any, Any, list[Table]]:
        """Run the measuring ``jobs`` and the tables' checks side by side; measure again, batch by batch, the
        tables measured ``whole`` whose totals differ. Returns (measured, totals, tables that differ)."""
        measured: dict[str, dict[int | None, tuple[int, int]]] = {t.source: {} for t in plan.tables}
        totals: dict[str, tuple[int, int]] = {}
        on_own = partial(self.on_new_connection, db, plan)  # type: ignore[attr-defined]
        # one connection more than the scans use: the largest table's checks start first and run beside them
        with ThreadPoolExecutor(max(1, min(plan.parallel_workers, 4, len(jobs))) + 1) as pool:
            tables = by_size(plan, cps)
            checked = [pool.submit(on_own, partial(check_table, plan, t)) for t in tables[:1]]
            scans = [pool.submit(on_own, job) for _, job in jobs]
            checked += [pool.submit(on_own, partial(check_table, plan, t)) for t in tables[1:]]
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
            again = [(t.source, job) for t in differ for job in measure_jobs(plan, t, batches[t.source], escaped)]
            for (name, _), found in zip(again, pool.map(lambda j: on_own(j[1]), again), strict=True):
                measured[name].update(found)
            failed = [f for future in checked for f in future.result()]
        if failed:
            raise not_built(plan, failed)
        return measured, totals, differ

    def measure(self, plan: MigrationPlan, table: Table, batch: Batch | None, method: str = "sql") -> tuple[int, int]:
        """(count, checksum) of the target rows of ``batch`` (None: the whole table), computed by the server
        (``sql``, over each row's text) or here over the driver's values (``python``)."""
        where, params = (pg_range(table.key, batch) if batch else (sql.SQL("true"), []))
        cols = sql.SQL(", ").join(sql.Identifier(c.name) for c in table.columns)
        select = sql.SQL("SELECT {} FROM {} WHERE {}").format(cols, target_ident(table), where)
        if method == "sql":
            n, checksum = self.conn.execute(sql_checksum(select), params).fetchone()
            return int(n), int(checksum)
        with self.conn.cursor() as cur:
            cur.execute(select, params)
            return python_checksum(cur, [c.target_type for c in table.columns])



def snapshot_table(plan: MigrationPlan, table: Table) -> Table:
    """``table`` as prepare snapshotted it before the run (``_dbfleet_migration."<id>:<name>"``): measured
    like the table itself, it is what validation subtracts from a table the run appended to (checksums add up)."""
    return dataclasses.replace(table, target_schema="_dbfleet_migration", target_name=f"{plan.id}:{table.target_name}"[:63])


def table_report(plan: MigrationPlan, table: Table, cps: dict[int, dict[str, int]],
                  measured: dict[int | None, tuple[int, int]], verified: tuple[int, int] | None = None
                  ) -> dict[str, Any]:
    """The table's validation entry. ``verified``: the target's whole-table (count, checksum), already found
    equal to the sum of the batches' checkpoints (checksums add up: every batch range agrees)."""
    batches = [b for b in plan.batches if b.table == table.source]
    copied = sum(cps.get(b.id, {}).get("rows", 0) for b in batches)
    refused = sum(cps.get(b.id, {}).get("rejects", 0) for b in batches)
    # rows read from the source = rows copied + rows the target refused (each batch records both)
    entry: dict[str, Any] = {"table": table.source, "target": table.target, "batches": len(batches),
                             "source_rows": copied + refused, "copied_rows": copied, "rejects": refused,
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
        want = (copied, sum(cps.get(b.id, {}).get("checksum", 0) for b in batches) % 2 ** 64)
        entry["target_rows"] = n
        if (n, checksum) != want:
            entry["mismatched_ranges"].append({"batch": None, "from": None, "to": None,
                                               "source_rows": want[0], "target_rows": n})
    entry["ok"] = not entry["mismatched_ranges"]
    return entry


def measure_jobs(plan: MigrationPlan, table: Table, batches: list[Batch], escaped: set[int], grouped: bool = True
                  ) -> list[Callable[[PostgresTarget], dict[int | None, tuple[int, int]]]]:
    """Measurements of the target, each on its own connection: batch id (None: the whole table, or with
    ``grouped`` False the part's total) -> (count, checksum). A single-column key: the batches split into up
    to ``parallel_workers`` parts of consecutive ranges, each part one scan (bucketed by batch when
    ``grouped``); other portable keys range by range. ``escaped``: the batches whose COPY lines were
    escaped (MySQL text path)."""
    if not table.ranges_portable:  # no key, or a text-like key: the whole table at once
        anything = any(b.id in escaped for b in batches)
        return [lambda tgt: {None: measure_range(plan, tgt, table, None, "python", anything)}]
    if len(table.key) != 1 or len(batches) < 2:
        return [lambda tgt: {b.id: measure_range(plan, tgt, table, b, "sql", b.id in escaped) for b in batches}]
    parts = min(plan.parallel_workers, 4, len(batches))
    size = -(-len(batches) // parts)
    return [partial(measure_part, plan, table, batches[i:i + size], escaped, grouped=grouped)
            for i in range(0, len(batches), size)]


def measure_part(plan: MigrationPlan, table: Table, part: list[Batch], escaped: set[int], tgt: PostgresTarget,
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


def measure_range(plan: MigrationPlan, tgt: PostgresTarget, table: Table, batch: Batch | None,
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
