"""Index advice, Dexter's method: candidate B-tree indexes from the workload's predicates, each tested
as a hypothetical index; kept greedily while the calls-weighted cost of the queries it serves drops by
at least ``min_cost_savings``. Without HypoPG: advice for sequential scans, marked as not proven."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from engines.tuning.base import IndexAdvice, QueryRef, TuningSettings
from engines.tuning.pg_plans import Hypothetical, Planner, create_index_sql, index_name
from engines.tuning.pg_workload import ExistingIndex, Statement
from engines.tuning.workload import Table, TableUse

MAX_CANDIDATES = 80
MAX_PICKS = 20


@dataclass
class Candidate:
    """A possible index and the statements that might use it."""

    table: Table
    columns: tuple[str, ...]
    queryids: set[str] = field(default_factory=set)


def _key_columns(table: Table, use: TableUse, ndistinct: dict[tuple[str, str, str], float]) -> list[str]:
    """Equality and join columns, most selective first (pg_stats), for the leading index keys."""
    cols = list(dict.fromkeys(use.eq + use.join))
    return sorted(cols, key=lambda c: -ndistinct.get((*table, c), 0.0))


def column_sets(table: Table, use: TableUse, ndistinct: dict[tuple[str, str, str], float],
                width: int) -> list[tuple[str, ...]]:
    """Single columns and composites (equality keys, then one range or sort column) for one use."""
    keys = _key_columns(table, use, ndistinct)
    tail = (use.range[:1] or use.order[:1])
    sets: list[tuple[str, ...]] = [(c,) for c in dict.fromkeys(keys + use.range + use.order[:1])]
    for n in range(2, min(len(keys), width) + 1):
        sets.append(tuple(keys[:n]))
    if tail and tail[0] not in keys and keys:
        sets.append(tuple((keys[: width - 1]) + tail))
    return list(dict.fromkeys(sets))


def covered(table: Table, columns: tuple[str, ...], existing: list[ExistingIndex]) -> bool:
    """True when an existing index on ``table`` starts with exactly ``columns`` (it would duplicate it)."""
    return any((i.schema, i.table) == table and tuple(i.columns[: len(columns)]) == columns for i in existing)


def candidates(statements: list[Statement], existing: list[ExistingIndex],
               ndistinct: dict[tuple[str, str, str], float], width: int) -> list[Candidate]:
    """Every candidate index of the workload not already covered by an existing index's prefix."""
    found: dict[tuple[Table, tuple[str, ...]], Candidate] = {}
    weight: dict[tuple[Table, tuple[str, ...]], float] = {}
    for st in statements:
        for table, use in st.shape.uses.items():
            for cols in column_sets(table, use, ndistinct, width):
                if covered(table, cols, existing):
                    continue
                cand = found.setdefault((table, cols), Candidate(table, cols))
                cand.queryids.add(st.queryid)
                weight[(table, cols)] = weight.get((table, cols), 0.0) + st.total_ms
    ranked = sorted(found, key=lambda k: -weight[k])[:MAX_CANDIDATES]
    return [found[k] for k in ranked]


class Advisor:
    """Greedy search over hypothetical indexes on one session."""

    def __init__(self, conn: Any, statements: list[Statement], existing: list[ExistingIndex],
                 settings: TuningSettings) -> None:
        self.conn = conn
        self.planner = Planner(conn)
        self.hypo = Hypothetical(conn)
        self.by_id = {st.queryid: st for st in statements}
        self.existing = list(existing)
        self.settings = settings
        self.costs: dict[str, float] = {}
        self.unbuildable: dict[str, str] = {}  # candidate -> why it cannot be a B-tree index
        # evaluations stay valid until an index is kept on a table their statements read
        self.results: dict[tuple[Table, tuple[str, ...]], tuple[list[QueryRef], int, str] | None] = {}

    def baseline(self) -> None:
        """Current generic-plan cost of every statement that can be planned."""
        for st in self.by_id.values():
            if not st.shape.uses:
                continue  # reads no user table (catalog queries, SELECT 1): nothing to index, nothing to plan
            got = self.planner.cost(st)
            if got is not None:
                self.costs[st.queryid] = got[0]

    def touching(self, table: Table) -> list[Statement]:
        return [st for st in self.by_id.values() if table in st.shape.uses and st.queryid in self.costs]

    def evaluate(self, cand: Candidate) -> tuple[list[QueryRef], int, str] | None:
        """The statements a hypothetical index serves (used, cheaper), its size, and its hypo name."""
        try:
            oid, hname = self.hypo.create(cand.table[0], cand.table[1], list(cand.columns))
        except Exception as exc:  # e.g. a type without a B-tree operator class (box, xml)
            self.unbuildable[f"{cand.table[1]} ({', '.join(cand.columns)})"] = str(exc).strip().splitlines()[0][:150]
            return None
        try:
            served = []
            for st in self.touching(cand.table):
                got = self.planner.cost(st)
                if got and hname in got[1] and got[0] < self.costs[st.queryid]:
                    served.append(QueryRef(st.queryid, st.text, st.calls, self.costs[st.queryid], got[0]))
            return served, self.hypo.size(oid), hname
        finally:
            self.hypo.drop(oid)

    def qualifies(self, served: list[QueryRef]) -> tuple[float, float] | None:
        """(weighted before, after) when the saving reaches ``min_cost_savings``."""
        before = sum(q.calls * q.cost_before for q in served)
        after = sum(q.calls * q.cost_after for q in served)
        if before <= 0 or after > before * (1 - self.settings.min_cost_savings / 100.0):
            return None
        return before, after

    def pick(self, cands: list[Candidate]) -> tuple[Candidate, list[QueryRef], int] | None:
        """The candidate saving the most weighted cost (fewer columns on a tie)."""
        best: tuple[float, int, Candidate, list[QueryRef], int] | None = None
        for cand in cands:
            key_ = (cand.table, cand.columns)
            if key_ not in self.results:
                self.results[key_] = self.evaluate(cand)
            got = self.results[key_]
            if not got or not self.qualifies(got[0]):
                continue
            before, after = self.qualifies(got[0]) or (0.0, 0.0)
            key = (before - after, -len(cand.columns))
            if best is None or key > (best[0], best[1]):
                best = (before - after, -len(cand.columns), cand, got[0], got[1])
        return None if best is None else (best[2], best[3], best[4])

    def advise(self, cands: list[Candidate]) -> list[IndexAdvice]:
        """Pick indexes one by one; each kept one stays as a hypothetical index for the next round."""
        self.baseline()
        out: list[IndexAdvice] = []
        try:
            for _ in range(MAX_PICKS):
                got = self.pick(cands)
                if got is None:
                    break
                cand, served, size = got
                out.append(self.advice(cand, served, size))
                self.keep(cand)
                cands = [c for c in cands if c is not cand and not covered(c.table, c.columns, self.existing)]
        finally:
            self.hypo.reset()
        return out

    def keep(self, cand: Candidate) -> None:
        """Leave ``cand`` in place hypothetically and re-cost the statements of its table."""
        self.hypo.create(cand.table[0], cand.table[1], list(cand.columns))
        self.existing.append(ExistingIndex(cand.table[0], cand.table[1], "(advised)", list(cand.columns)))
        changed = set()
        for st in self.touching(cand.table):
            got = self.planner.cost(st)
            if got:
                self.costs[st.queryid] = got[0]
                changed.add(st.queryid)
        for table, columns in list(self.results):
            if any(st.queryid in changed for st in self.touching(table)):
                del self.results[(table, columns)]

    def advice(self, cand: Candidate, served: list[QueryRef], size: int | None, proven: bool = True,
               note: str | None = None) -> IndexAdvice:
        schema, table = cand.table
        name = index_name(table, list(cand.columns))
        stmt = create_index_sql(schema, table, list(cand.columns), name).as_string(self.conn)
        before = sum(q.calls * q.cost_before for q in served)
        after = sum(q.calls * q.cost_after for q in served)
        return IndexAdvice(schema, table, list(cand.columns), name, stmt, served, round(before, 2),
                           round(after, 2), size, proven, note)


def unproven_advice(conn: Any, statements: list[Statement], cands: list[Candidate], note: str) -> list[IndexAdvice]:
    """Without HypoPG: for each table some statements read with a sequential scan, the candidate that
    serves the most of their time (cost after unknown: the advice says so)."""
    advisor = Advisor(conn, statements, [], TuningSettings())
    by_table: dict[Table, list[Statement]] = {}
    for st in statements:
        scans = advisor.planner.seq_scans(st)
        for table in st.shape.uses:
            if table[1] in scans:
                by_table.setdefault(table, []).append(st)
    out = []
    for table, sts in by_table.items():
        ids = {st.queryid: st for st in sts}
        options = [c for c in cands if c.table == table and c.queryids & set(ids)]
        if not options:
            continue
        best = max(options, key=lambda c: (sum(ids[q].total_ms for q in c.queryids & set(ids)), -len(c.columns)))
        served = []
        for q in sorted(best.queryids & set(ids)):
            got = advisor.planner.cost(ids[q])
            cost = got[0] if got else 0.0
            served.append(QueryRef(q, ids[q].text, ids[q].calls, cost, cost))
        out.append(advisor.advice(best, served, None, proven=False, note=note))
    return out
