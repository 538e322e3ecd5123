"""Erasure on SQLite and MySQL/MariaDB: foreign keys from PRAGMA foreign_key_list / information_schema,
predicates built with the driver's placeholders and quoted identifiers, one transaction."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any

from engines.backup.dumpers.mysql import quote_ident as mysql_ident
from engines.backup.dumpers.sqlite import TABLES_SQL
from engines.backup.dumpers.sqlite import quote_ident as sqlite_ident
from engines.compliance.anonymize.rules import parse_rule
from engines.compliance.erasure import Eraser, Step, Subject, check_plan
from engines.errors import ConfigError

MAX_DEPTH = 12
Fk = tuple[str, str, list[str], str, list[str]]  # name, child, child cols, parent, parent cols


class DbApiEraser(Eraser):
    """The foreign-key walk of :class:`PostgresEraser` over a DB-API connection."""

    quote: Callable[[str], str]
    mark = "%s"
    db: Any

    def _rows(self, sql: str, args: list[Any] | tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        cur = self.db.cursor()
        try:
            cur.execute(sql, tuple(args))
            return list(cur.fetchall()) if cur.description else []
        finally:
            cur.close()

    def foreign_keys(self) -> list[Fk]:
        """Every foreign key of the database: (name, child, child columns, parent, parent columns)."""
        raise NotImplementedError

    def columns(self, table: str) -> list[str]:
        """Column names of ``table``."""
        raise NotImplementedError

    def key(self, table: str) -> list[str]:
        """Primary-key columns of ``table``."""
        raise NotImplementedError

    def linked_values(self, subject: Subject, column: str) -> list[str]:
        q = type(self).quote
        columns = self.columns(subject.table)
        for c in (subject.column, column):
            if c not in columns:
                raise ConfigError([("compliance.erasure_links", f"no column {c!r} in table {subject.table!r}")])
        rows = self._rows(f"SELECT DISTINCT {q(column)} FROM {q(subject.table)} WHERE {q(subject.column)} = "  # noqa: S608
                          f"{self.mark} AND {q(column)} IS NOT NULL", [subject.value])
        return [str(r[0]) for r in rows]

    def _walk(self, subject: Subject) -> tuple[dict[str, tuple[str, list[Any], int, str]], dict[str, list[str]]]:
        q = type(self).quote
        if subject.column not in self.columns(subject.table):
            raise ConfigError([("--subject", f"no column {subject.column!r} in table {subject.table!r}")])
        children: dict[str, list[Fk]] = {}
        for fk in self.foreign_keys():
            if fk[1] != fk[3]:  # self-references link other subjects' rows
                children.setdefault(fk[3], []).append(fk)
        nodes = {subject.table: (f"{q(subject.column)} = {self.mark}", [subject.value], 0, "subject")}
        parents: dict[str, list[str]] = {}
        frontier = [subject.table]
        while frontier:
            parent = frontier.pop(0)
            ppred, pargs, depth, _ = nodes[parent]
            for name, child, ccols, _, pcols in children.get(parent, []) if depth < MAX_DEPTH else []:
                sub = (f"({', '.join(map(q, ccols))}) IN (SELECT {', '.join(map(q, pcols))} FROM {q(parent)}"  # noqa: S608
                       f" WHERE {ppred})")
                parents.setdefault(child, []).append(parent)
                via = f"fk {name} -> {parent}"
                if child in nodes:
                    o = nodes[child]
                    nodes[child] = (f"({o[0]}) OR ({sub})", [*o[1], *pargs], max(o[2], depth + 1), f"{o[3]}; {via}")
                elif child != subject.table:
                    nodes[child] = (sub, list(pargs), depth + 1, via)
                    frontier.append(child)
        return nodes, parents

    def plan(self, subject: Subject) -> list[Step]:
        nodes, parents = self._walk(subject)
        steps = []
        for name, (pred, args, depth, via) in nodes.items():
            action = self.policies.get(name, "delete")
            if action == "anonymize" and not self.rules.get(name):
                raise ConfigError([(f"compliance.erasure_rules.{name}", f"{name} is anonymised on erasure: give "
                                    "its column rules (column: rule)")])
            count = self._rows(f"SELECT count(*) FROM {type(self).quote(name)} WHERE {pred}", args)[0][0]  # noqa: S608
            steps.append(Step(name, via, int(count), action, depth, dict(self.rules.get(name, {}))))
        steps.sort(key=lambda s: (-s.depth, s.table))
        check_plan(steps, parents)
        self.db.commit()
        return steps

    def _mask(self, table: str, pred: str, args: list[Any], rules: dict[str, str], masker: Any) -> int:
        q, m = type(self).quote, self.mark
        key, cols = self.key(table), list(rules)
        parsed = {c: parse_rule(r, f"erasure_rules.{table}.{c}") for c, r in rules.items()}
        rows = self._rows(f"SELECT {', '.join(map(q, key + cols))} FROM {q(table)} WHERE {pred}", args)  # noqa: S608
        for row in rows:
            new = [masker.apply(parsed[c], row[len(key) + i]) for i, c in enumerate(cols)]
            sets = ", ".join(f"{q(c)} = {m}" for c in cols)
            self._rows(f"UPDATE {q(table)} SET {sets} WHERE {' AND '.join(f'{q(k)} = {m}' for k in key)}",  # noqa: S608
                       [*new, *row[: len(key)]])
        return len(rows)

    def execute(self, subject: Subject, steps: list[Step], masker: Any) -> dict[str, int]:
        q = type(self).quote
        done: dict[str, int] = {}
        self._begin()
        try:
            nodes, _ = self._walk(subject)
            for step in steps:
                pred, args, _, _ = nodes[step.table]
                if step.action == "delete":
                    cur = self.db.cursor()
                    cur.execute(f"DELETE FROM {q(step.table)} WHERE {pred}", tuple(args))  # noqa: S608
                    done[step.table] = cur.rowcount
                    cur.close()
                elif step.action == "anonymize":
                    done[step.table] = self._mask(step.table, pred, args, step.rules, masker)
                else:
                    done[step.table] = 0
            self.db.commit()
        except BaseException:
            self.db.rollback()
            raise
        return done

    def _begin(self) -> None:
        self._rows("BEGIN")


class SQLiteEraser(DbApiEraser):
    kind = "sqlite"
    quote = staticmethod(sqlite_ident)
    mark = "?"

    def __init__(self, connector: Any, policies: dict[str, str], rules: dict[str, dict[str, str]]) -> None:
        super().__init__(connector, policies, rules)  # the connector's connection is read-only
        self.db = sqlite3.connect(connector.db.path, timeout=connector.db.query_timeout, isolation_level=None)
        self.db.execute("PRAGMA foreign_keys = ON")

    def _begin(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def foreign_keys(self) -> list[Fk]:
        out: list[Fk] = []
        for (table,) in self.db.execute(TABLES_SQL).fetchall():
            groups: dict[int, list[tuple[Any, ...]]] = {}
            for row in self.db.execute(f"PRAGMA foreign_key_list({sqlite_ident(table)})").fetchall():
                groups.setdefault(row[0], []).append(row)
            for fid, rows in groups.items():
                parent = rows[0][2]
                pcols = [r[4] or self.key(parent)[i] for i, r in enumerate(sorted(rows, key=lambda r: r[1]))]
                out.append((f"{table}_fk{fid}", table, [r[3] for r in sorted(rows, key=lambda r: r[1])], parent, pcols))
        return out

    def columns(self, table: str) -> list[str]:
        return [r[1] for r in self.db.execute(f"PRAGMA table_info({sqlite_ident(table)})").fetchall()]

    def key(self, table: str) -> list[str]:
        info = self.db.execute(f"PRAGMA table_info({sqlite_ident(table)})").fetchall()
        return [r[1] for r in sorted((r for r in info if r[5]), key=lambda r: r[5])] or ["rowid"]


class MySQLEraser(DbApiEraser):
    kind = "mysql"
    quote = staticmethod(mysql_ident)

    def __init__(self, connector: Any, policies: dict[str, str], rules: dict[str, dict[str, str]]) -> None:
        super().__init__(connector, policies, rules)
        self.db = connector.conn
        self.db.autocommit(False)

    def foreign_keys(self) -> list[Fk]:
        rows = self._rows("SELECT constraint_name, table_name, column_name, referenced_table_name,"
                          " referenced_column_name FROM information_schema.key_column_usage WHERE table_schema ="
                          " DATABASE() AND referenced_table_name IS NOT NULL ORDER BY constraint_name, table_name,"
                          " ordinal_position")
        out: dict[tuple[str, str], Fk] = {}
        for name, child, col, parent, pcol in rows:
            fk = out.setdefault((name, child), (name, child, [], parent, []))
            fk[2].append(col)
            fk[4].append(pcol)
        return list(out.values())

    def columns(self, table: str) -> list[str]:
        return [r[0] for r in self._rows("SELECT column_name FROM information_schema.columns WHERE table_schema ="
                                         " DATABASE() AND table_name = %s", (table,))]

    def key(self, table: str) -> list[str]:
        return [r[0] for r in self._rows("SELECT column_name FROM information_schema.statistics WHERE table_schema ="
                                         " DATABASE() AND table_name = %s AND index_name = 'PRIMARY'"
                                         " ORDER BY seq_in_index", (table,))]
