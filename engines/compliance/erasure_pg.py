"""PostgreSQL erasure: follow foreign keys from the subject's rows through the catalog, then delete or mask
each dependent table's rows, dependants first, in one transaction."""

from __future__ import annotations

from typing import Any

from engines.compliance.anonymize.postgres import split_name
from engines.compliance.anonymize.rules import parse_rule
from engines.compliance.erasure import Eraser, Step, Subject, check_plan
from engines.compliance.postgres import display_name
from engines.errors import ConfigError

FKS = """
SELECT con.conname, cn.nspname, c.relname, pn.nspname, p.relname,
       array(SELECT a.attname::text FROM unnest(con.conkey) WITH ORDINALITY k(n, i)
             JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.n ORDER BY k.i),
       array(SELECT a.attname::text FROM unnest(con.confkey) WITH ORDINALITY k(n, i)
             JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.n ORDER BY k.i)
FROM pg_constraint con
JOIN pg_class c ON c.oid = con.conrelid JOIN pg_namespace cn ON cn.oid = c.relnamespace
JOIN pg_class p ON p.oid = con.confrelid JOIN pg_namespace pn ON pn.oid = p.relnamespace
WHERE con.contype = 'f' ORDER BY 1
"""
COLUMN_TYPE = """
SELECT format_type(a.atttypid, a.atttypmod) FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = %s AND a.attname = %s
AND a.attnum > 0 AND NOT a.attisdropped
"""
MAX_DEPTH = 12
Node = tuple[str, str]


class PostgresEraser(Eraser):
    kind = "postgresql"

    def _walk(self, subject: Subject) -> tuple[dict[Node, tuple[Any, list[Any], int, str]], dict[str, list[str]]]:
        """node -> (predicate, params, depth, via) for the subject's table and every table depending on it."""
        from psycopg import sql

        conn = self.connector.conn
        schema, name = split_name(subject.table)
        row = conn.execute(COLUMN_TYPE, (schema, name, subject.column)).fetchone()
        if row is None:
            raise ConfigError([("--subject", f"no column {subject.column!r} in table {subject.table!r}")])
        children: dict[Node, list[tuple[str, Node, list[str], list[str]]]] = {}
        for con, cs, cn, ps, pn, ccols, pcols in conn.execute(FKS).fetchall():
            if (cs, cn) != (ps, pn):  # self-references link other subjects' rows: not followed
                children.setdefault((ps, pn), []).append((con, (cs, cn), ccols, pcols))
        root: Node = (schema, name)
        pred = sql.SQL("{} = %s::{}").format(sql.Identifier(subject.column), sql.SQL(row[0]))
        nodes: dict[Node, tuple[Any, list[Any], int, str]] = {root: (pred, [subject.value], 0, "subject")}
        parents: dict[str, list[str]] = {}
        frontier = [root]
        while frontier:
            parent = frontier.pop(0)
            ppred, pparams, depth, _ = nodes[parent]
            if depth >= MAX_DEPTH:
                continue
            for con, child, ccols, pcols in children.get(parent, []):
                sub = sql.SQL("({}) IN (SELECT {} FROM {} WHERE {})").format(
                    sql.SQL(", ").join(map(sql.Identifier, ccols)), sql.SQL(", ").join(map(sql.Identifier, pcols)),
                    sql.Identifier(*parent), ppred)
                parents.setdefault(display_name(*child), []).append(display_name(*parent))
                via = f"fk {con} -> {display_name(*parent)}"
                if child in nodes:  # reached twice: rows on either path
                    opred, oparams, odepth, ovia = nodes[child]
                    nodes[child] = (sql.SQL("({}) OR ({})").format(opred, sub), [*oparams, *pparams],
                                    max(odepth, depth + 1), f"{ovia}; {via}")
                elif child != root:
                    nodes[child] = (sub, list(pparams), depth + 1, via)
                    frontier.append(child)
        return nodes, parents

    def _count(self, node: Node, pred: Any, params: list[Any]) -> int:
        from psycopg import sql

        stmt = sql.SQL("SELECT count(*) FROM {} WHERE {}").format(sql.Identifier(*node), pred)
        return int(self.connector.conn.execute(stmt, params).fetchone()[0])

    def plan(self, subject: Subject) -> list[Step]:
        nodes, parents = self._walk(subject)
        steps = []
        for node, (pred, params, depth, via) in nodes.items():
            name = display_name(*node)
            action = self.policies.get(name, "delete")
            rules = self.rules.get(name, {})
            if action == "anonymize" and not rules:
                raise ConfigError([(f"compliance.erasure_rules.{name}", f"{name} is anonymised on erasure: give "
                                    "its column rules (column: rule)")])
            steps.append(Step(name, via, self._count(node, pred, params), action, depth, rules))
        steps.sort(key=lambda s: (-s.depth, s.table))
        check_plan(steps, parents)
        return steps

    def _mask(self, node: Node, pred: Any, params: list[Any], rules: dict[str, str], masker: Any) -> int:
        from psycopg import sql

        from engines.compliance.anonymize.postgres import table_shape

        shape = table_shape(self.connector.conn, f"{node[0]}.{node[1]}")
        cols = list(rules)
        parsed = {c: parse_rule(r, f"erasure_rules.{display_name(*node)}.{c}") for c, r in rules.items()}
        keys = sql.SQL(", ").join(map(sql.Identifier, shape.key))
        stmt = sql.SQL("SELECT {}, {} FROM {} WHERE {} FOR UPDATE").format(
            keys, sql.SQL(", ").join(map(sql.Identifier, cols)), sql.Identifier(*node), pred)
        n = len(shape.key)
        for row in self.connector.conn.execute(stmt, params).fetchall():
            new = [masker.apply(parsed[c], row[n + i], shape.columns[c].max_length) for i, c in enumerate(cols)]
            upd = sql.SQL("UPDATE {} SET {} WHERE ({}) = ({})").format(
                sql.Identifier(*node), sql.SQL(", ").join(sql.SQL("{} = %s").format(sql.Identifier(c)) for c in cols),
                keys, sql.SQL(", ").join(sql.SQL("%s") for _ in shape.key))
            self.connector.conn.execute(upd, [*new, *row[:n]])
        return self._count(node, pred, params)

    def linked_values(self, subject: Subject, column: str) -> list[str]:
        from psycopg import sql

        conn = self.connector.conn
        schema, name = split_name(subject.table)
        row = conn.execute(COLUMN_TYPE, (schema, name, subject.column)).fetchone()
        if row is None or conn.execute(COLUMN_TYPE, (schema, name, column)).fetchone() is None:
            missing = subject.column if row is None else column
            raise ConfigError([("compliance.erasure_links", f"no column {missing!r} in table {subject.table!r}")])
        stmt = sql.SQL("SELECT DISTINCT {}::text FROM {} WHERE {} = %s::{} AND {} IS NOT NULL").format(
            sql.Identifier(column), sql.Identifier(schema, name), sql.Identifier(subject.column), sql.SQL(row[0]),
            sql.Identifier(column))
        return [r[0] for r in conn.execute(stmt, [subject.value]).fetchall()]

    def execute(self, subject: Subject, steps: list[Step], masker: Any) -> dict[str, int]:
        from psycopg import sql

        conn = self.connector.conn
        done: dict[str, int] = {}
        with conn.transaction():
            nodes, _ = self._walk(subject)
            by_name = {display_name(*n): (n, v) for n, v in nodes.items()}
            for step in steps:  # dependants first
                node, (pred, params, _, _) = by_name[step.table]
                if step.action == "delete":
                    cur = conn.execute(sql.SQL("DELETE FROM {} WHERE {}").format(sql.Identifier(*node), pred), params)
                    done[step.table] = cur.rowcount
                elif step.action == "anonymize":
                    done[step.table] = self._mask(node, pred, params, step.rules, masker)
                else:
                    done[step.table] = 0
        return done
