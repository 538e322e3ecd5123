"""MySQL/MariaDB index advice from EXPLAIN on the workload, and its proof at apply.

Advice: tables the workload's statements read with a full scan (EXPLAIN ``type: ALL``) get the candidate
B-tree index (engines/tuning/pg_indexes.py's candidates) that serves the most of their time, its leading
columns weighed by how many of them each statement can use. MariaDB and MySQL have no hypothetical
indexes, so the advice is unproven until apply proves it: the index is built IGNORED (MariaDB 10.6+) /
INVISIBLE (MySQL 8) — the optimizer does not see it, so the "before" measure is taken with it built — then
made visible and measured again (EXPLAIN's examined-row estimates, or with ``verify: execute`` timed
executions of the logged statements in a READ ONLY transaction, timed by MariaDB itself with ``ANALYZE
FORMAT=JSON``); visible when it helps, else dropped.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from typing import Any

from engines.migration.sources import my_ident
from engines.tuning.base import Change, IndexAdvice, QueryRef, TuningSettings
from engines.tuning.pg_indexes import candidates
from engines.tuning.pg_plans import index_name
from engines.tuning.pg_workload import ExistingIndex, Statement
from engines.tuning.workload import Table

Query = Callable[..., list[tuple[Any, ...]]]
NOTE = ("MariaDB/MySQL have no hypothetical indexes: proven at apply (built IGNORED/INVISIBLE, then EXPLAIN "
        "and, with verify: execute, timed runs decide)")


def existing(q: Query, schema: str) -> list[ExistingIndex]:
    """The schema's B-tree indexes on plain columns, in key order."""
    found: dict[tuple[str, str], list[str]] = {}
    for table, index, column in q("SELECT table_name, index_name, column_name FROM information_schema.statistics"
                                  " WHERE table_schema = %s AND index_type = 'BTREE' AND column_name IS NOT NULL"
                                  " ORDER BY table_name, index_name, seq_in_index", (schema,)):
        found.setdefault((str(table), str(index)), []).append(str(column))
    return [ExistingIndex(schema, t, i, cols) for (t, i), cols in found.items()]


def explain(q: Query, text: str) -> list[dict[str, Any]]:
    """EXPLAIN's rows as dicts (table, type, key, rows ...)."""
    cur_rows = q("EXPLAIN " + text)  # the statement text as the server logged it; EXPLAIN runs nothing
    names = ["id", "select_type", "table", "type", "possible_keys", "key", "key_len", "ref", "rows", "Extra"]
    return [dict(zip(names, r, strict=False)) for r in cur_rows]


def examined(q: Query, text: str) -> float:
    """EXPLAIN's estimate of rows examined (the product of each join level's rows, summed per select)."""
    total: dict[Any, float] = {}
    for row in explain(q, text):
        total[row["id"]] = total.get(row["id"], 1.0) * float(row["rows"] or 1)
    return sum(total.values())


def _usable(columns: tuple[str, ...], st: Statement, table: Table) -> int:
    """How many leading index columns the statement can use (equalities, then one range)."""
    use, n = st.shape.uses[table], 0
    for col in columns:
        if col in use.eq or col in use.join:
            n += 1
            continue
        return n + (1 if col in use.range or col in use.order else 0)
    return n


def advise(q: Query, schema: str, statements: list[Statement], width: int, limits: list[str]) -> list[IndexAdvice]:
    """One index per full-scanned table and round (up to 3 rounds), serving the most statement time."""
    scans: dict[Table, list[Statement]] = {}
    for st in statements:
        try:
            plan = explain(q, st.text)
        except Exception as exc:  # a logged statement that no longer runs (dropped column ...)
            limits.append(f"indexes: EXPLAIN of {st.queryid} failed: {str(exc)[:120]}")
            continue
        st.total_ms = max(st.total_ms, 0.001)
        for row in plan:
            if row["type"] == "ALL":
                table = next((t for t in st.shape.uses if t[1] == row["table"]), None)
                if table is not None:
                    scans.setdefault(table, []).append(st)
    have = existing(q, schema)
    out = []
    for table, sts in scans.items():
        for _ in range(3):
            options = [c for c in candidates(sts, have, {}, width) if c.table == table]
            scored = [(sum(st.total_ms * _usable(c.columns, st, table) for st in sts), -len(c.columns), c)
                      for c in options]
            scored = [s for s in scored if s[0] > 0]
            if not scored:
                break
            _, _, best = max(scored, key=lambda s: (s[0], s[1]))
            served = [st for st in sts if _usable(best.columns, st, table)]
            refs = [QueryRef(st.queryid, st.text, st.calls, examined(q, st.text), 0.0) for st in served]
            name = index_name(table[1], list(best.columns))
            statement = (f"ALTER TABLE {my_ident(*table)} ADD INDEX {my_ident(name)} "
                         f"({', '.join(my_ident(c) for c in best.columns)})")
            before = sum(r.calls * r.cost_before for r in refs)
            out.append(IndexAdvice(table[0], table[1], list(best.columns), name, statement, refs, before, 0.0, None,
                                   proven=False, note=NOTE))
            have.append(ExistingIndex(table[0], table[1], name, list(best.columns)))
            sts = [st for st in sts if st not in served]
    return out


class MyIndexApplier:
    """Builds each advised index hidden from the optimizer, measures, shows it, measures again, keeps or drops."""

    def __init__(self, q: Query, mariadb: bool, database_id: str, settings: TuningSettings) -> None:
        self.q = q
        self.hidden, self.shown = ("IGNORED", "NOT IGNORED") if mariadb else ("INVISIBLE", "VISIBLE")
        self.time_limit = "max_statement_time" if mariadb else "max_execution_time"  # seconds / milliseconds
        self.database_id = database_id
        self.settings = settings
        q(f"SET SESSION lock_wait_timeout = {max(1, math.ceil(settings.lock_timeout_ms / 1000))}")

    def apply(self, advice: IndexAdvice) -> Change:
        """One index: built hidden, proven visible, kept or dropped; the change has the evidence."""
        table, index = my_ident(advice.schema, advice.table), my_ident(advice.name)
        drop = f"ALTER TABLE {table} DROP INDEX {index}"
        change = Change("create_index", self.database_id, {"schema": advice.schema, "table": advice.table,
                                                           "index": advice.name, "columns": advice.columns},
                        "failed", {}, {"action": "drop_index_mysql", "schema": advice.schema, "table": advice.table,
                                       "index": advice.name, "statement": drop},
                        f"{advice.statement} {self.hidden}")
        if any(i.table == advice.table and i.name == advice.name for i in existing(self.q, advice.schema)):
            change.status, change.evidence["reason"] = "skipped", f"an index named {advice.name} already exists"
            return change
        try:
            self.q(f"{advice.statement} {self.hidden}, ALGORITHM=INPLACE, LOCK=NONE")
        except Exception as exc:
            change.evidence["reason"] = f"building the index failed: {str(exc)[:300]}"
            return change
        before = self.measure(advice)
        self.q(f"ALTER TABLE {table} ALTER INDEX {index} {self.shown}")
        after = self.measure(advice)
        keep, why = self.verdict(advice, before, after, change)
        if keep:
            change.status = "kept"
            return change
        self.q(drop)
        change.status, change.evidence["reason"] = "rolled_back", f"{why}: dropped again"
        return change

    def measure(self, advice: IndexAdvice) -> dict[str, Any]:
        """Examined-row estimates, the indexes EXPLAIN uses, and (verify: execute) timed runs per query."""
        out: dict[str, Any] = {"rows": {}, "keys": {}, "seconds": {}}
        for ref in advice.queries:
            out["rows"][ref.queryid] = examined(self.q, ref.query)
            out["keys"][ref.queryid] = sorted({str(r["key"]) for r in explain(self.q, ref.query) if r["key"]})
            if self.settings.verify == "execute":
                out["seconds"][ref.queryid] = self.timed(ref.query)
        return out

    def timed(self, text: str) -> float | str:
        """The fastest of ``verify_repeats`` runs in a READ ONLY transaction under max_statement_time."""
        best, ms = math.inf, int(self.settings.verify_timeout_ms)
        limit = f"{ms / 1000:.3f}" if self.time_limit == "max_statement_time" else str(ms)
        try:
            self.q(f"SET SESSION {self.time_limit} = {limit}")
            self.q("START TRANSACTION READ ONLY")
            self.q(text)  # warm the buffer pool once
            for _ in range(max(1, int(self.settings.verify_repeats))):
                best = min(best, self.run_once(text))
        except Exception as exc:  # a write refused by the read-only transaction, a timeout
            return f"not timed: {str(exc)[:200]}"
        finally:
            self.q("ROLLBACK")
            self.q(f"SET SESSION {self.time_limit} = 0")
        return best

    def run_once(self, text: str) -> float:
        """Seconds of one execution: MariaDB's own (ANALYZE FORMAT=JSON's r_total_time_ms, no round trip),
        else the client's wall clock."""
        if self.time_limit == "max_statement_time":
            got = json.loads(str(self.q("ANALYZE FORMAT=JSON " + text)[0][0]))
            block = got.get("query_block") or {}
            if "r_total_time_ms" in block:
                return float(block["r_total_time_ms"]) / 1000.0
        started = time.perf_counter()
        self.q(text)
        return time.perf_counter() - started

    def verdict(self, advice: IndexAdvice, before: dict[str, Any], after: dict[str, Any],
                change: Change) -> tuple[bool, str]:
        calls = {r.queryid: r.calls for r in advice.queries}
        used = [q for q, keys in after["keys"].items() if advice.name in keys]
        was = sum(calls[q] * before["rows"][q] for q in calls)
        now = sum(calls[q] * after["rows"][q] for q in calls)
        saved = 0.0 if was <= 0 else 100.0 * (1 - now / was)
        change.evidence |= {"built": self.hidden, "rows_before": round(was, 1), "rows_after": round(now, 1),
                            "savings_percent": round(saved, 1), "used_by": used, "decided_by": "EXPLAIN rows"}
        keep, why = bool(used) and saved >= self.settings.min_cost_savings, (
            f"EXPLAIN estimates {saved:.1f}% fewer rows examined (threshold {self.settings.min_cost_savings:g}%)"
            + ("" if used else "; no query uses the index"))
        timed = [q for q in calls if isinstance(before["seconds"].get(q), float)
                 and isinstance(after["seconds"].get(q), float)]
        if timed:
            t0 = sum(calls[q] * before["seconds"][q] for q in timed)
            t1 = sum(calls[q] * after["seconds"][q] for q in timed)
            t_saved = 0.0 if t0 <= 0 else 100.0 * (1 - t1 / t0)
            change.evidence |= {"decided_by": "measured time", "timed_queries": len(timed),
                                "time_savings_percent": round(t_saved, 1)}
            keep = bool(used) and t_saved >= self.settings.min_time_savings
            why = f"timed runs show {t_saved:.1f}% less time (threshold {self.settings.min_time_savings:g}%)"
        return keep, why
