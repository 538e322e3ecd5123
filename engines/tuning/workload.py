"""What a query asks of each table, read with PostgreSQL's own grammar (pglast), never with regexes.

For every table a statement reads, :func:`shape` lists the columns compared with ``=``/``IN`` to a
value (equality), with ``<``, ``>``, ``BETWEEN`` (range), joined to another table, and sorted on:
the raw material of candidate B-tree indexes. Subqueries are their own scopes.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from pglast import ast, parse_sql
from pglast.parser import ParseError

Table = tuple[str, str]  # (schema, name)
EQ_OPS = frozenset({"="})
RANGE_OPS = frozenset({"<", ">", "<=", ">="})


@dataclass
class TableUse:
    """How one statement uses one table's columns (ordered, without repeats)."""

    eq: list[str] = field(default_factory=list)
    range: list[str] = field(default_factory=list)
    join: list[str] = field(default_factory=list)
    order: list[str] = field(default_factory=list)

    def add(self, bucket: str, column: str) -> None:
        """Remember ``column`` once in ``bucket``."""
        cols = getattr(self, bucket)
        if column not in cols:
            cols.append(column)


@dataclass
class QueryShape:
    """The tables a statement reads, how it uses their columns, and its highest ``$n``."""

    kind: str
    uses: dict[Table, TableUse] = field(default_factory=dict)
    params: int = 0
    param_columns: dict[int, tuple[Table, str]] = field(default_factory=dict)  # $n -> the column it is compared to


class Catalog:
    """The user tables and their columns, to resolve unqualified names as the server would."""

    def __init__(self, columns: dict[Table, list[str]], search_path: tuple[str, ...] = ("public",)) -> None:
        self.columns = columns
        self.search_path = search_path

    def table(self, schema: str | None, name: str) -> Table | None:
        """The table ``[schema.]name`` refers to (first match on the search path), or None."""
        if schema:
            return (schema, name) if (schema, name) in self.columns else None
        for s in self.search_path:
            if (s, name) in self.columns:
                return (s, name)
        return None

    def has(self, table: Table, column: str) -> bool:
        """True when ``table`` has ``column``."""
        return column in self.columns.get(table, ())


class UnsupportedQuery(ValueError):
    """A statement the advisor does not analyse (not SELECT/UPDATE/DELETE, or unparsable)."""


def shape(sql: str, catalog: Catalog) -> QueryShape:
    """Parse one normalized statement (``$n`` parameters allowed) into its table uses."""
    try:
        stmts = parse_sql(sql)
    except ParseError as exc:
        raise UnsupportedQuery(f"cannot parse: {exc}") from None
    if len(stmts) != 1:
        raise UnsupportedQuery("not a single statement")
    stmt = stmts[0].stmt
    if not isinstance(stmt, (ast.SelectStmt, ast.UpdateStmt, ast.DeleteStmt)):
        raise UnsupportedQuery(f"{type(stmt).__name__} is not analysed")
    if isinstance(stmt, ast.SelectStmt) and stmt.intoClause is not None:
        raise UnsupportedQuery("SELECT INTO creates a table: not analysed")
    out = QueryShape(kind=type(stmt).__name__.removesuffix("Stmt").upper())
    _Scope(catalog, out).statement(stmt)
    out.params = _params(stmt)
    return out


def _params(tree: Any) -> int:
    return max((int(n.number or 0) for n in _walk(tree) if isinstance(n, ast.ParamRef)), default=0)


def param_count(sql: str) -> int:
    """The highest ``$n`` in a statement (how many parameters PREPARE needs)."""
    return _params(parse_sql(sql))


def _walk(node: Any) -> Iterator[Any]:
    """Every AST node below ``node`` (depth first)."""
    if isinstance(node, (list, tuple)):
        for item in node:
            yield from _walk(item)
    elif isinstance(node, ast.Node):
        yield node
        for name in node:
            yield from _walk(getattr(node, name))


class _Scope:
    """One SELECT level: its FROM items by alias, and the predicates that name them."""

    def __init__(self, catalog: Catalog, out: QueryShape, parent: _Scope | None = None) -> None:
        self.catalog = catalog
        self.out = out
        self.parent = parent  # a correlated subquery sees the outer query's names
        self.aliases: dict[str, Table] = {}

    def statement(self, stmt: Any) -> None:
        if isinstance(stmt, ast.SelectStmt) and stmt.op and stmt.op.name != "SETOP_NONE":
            for side in (stmt.larg, stmt.rarg):
                _Scope(self.catalog, self.out).statement(side)
            return
        if isinstance(stmt, (ast.UpdateStmt, ast.DeleteStmt)):
            self.range_var(stmt.relation)
            for item in (getattr(stmt, "fromClause", None) or getattr(stmt, "usingClause", None) or ()):
                self.from_item(item)
        for item in getattr(stmt, "fromClause", None) or ():
            if isinstance(stmt, ast.SelectStmt):
                self.from_item(item)
        self.predicate(getattr(stmt, "whereClause", None))
        for sort in getattr(stmt, "sortClause", None) or ():
            self.column_use("order", sort.node)
        self.subqueries(stmt)

    def subqueries(self, stmt: Any) -> None:
        for name in ("targetList", "whereClause", "havingClause"):
            for node in _walk(getattr(stmt, name, None)):
                if isinstance(node, ast.SubLink) and node.subselect is not None:
                    _Scope(self.catalog, self.out, self).statement(node.subselect)
        for cte in getattr(getattr(stmt, "withClause", None), "ctes", None) or ():
            _Scope(self.catalog, self.out).statement(cte.ctequery)

    def from_item(self, item: Any) -> None:
        if isinstance(item, ast.RangeVar):
            self.range_var(item)
        elif isinstance(item, ast.JoinExpr):
            self.from_item(item.larg)
            self.from_item(item.rarg)
            self.predicate(item.quals)
        elif isinstance(item, ast.RangeSubselect) and item.subquery is not None:
            _Scope(self.catalog, self.out).statement(item.subquery)

    def range_var(self, rv: Any) -> None:
        table = self.catalog.table(rv.schemaname, rv.relname)
        if table is None:
            return  # a CTE name, a view or a catalog table: nothing to index here
        self.aliases[rv.alias.aliasname if rv.alias else rv.relname] = table
        self.out.uses.setdefault(table, TableUse())

    def resolve(self, node: Any) -> tuple[Table, str] | None:
        """(table, column) a plain column reference names in this scope."""
        if not isinstance(node, ast.ColumnRef):
            return None
        fields = tuple(node.fields or ())
        names = [str(f.sval) for f in fields if isinstance(f, ast.String)]
        if len(names) != len(fields) or not names:
            return None  # a.* and the like
        column = names[-1]
        if len(names) >= 2:
            table = self.aliases.get(names[-2])
            if table is None:
                return self.parent.resolve(node) if self.parent else None
            return (table, column) if self.catalog.has(table, column) else None
        owners = {t for t in self.aliases.values() if self.catalog.has(t, column)}
        if not owners and self.parent:
            return self.parent.resolve(node)
        return (owners.pop(), column) if len(owners) == 1 else None

    def column_use(self, bucket: str, node: Any) -> None:
        ref = self.resolve(node)
        if ref:
            self.out.uses[ref[0]].add(bucket, ref[1])

    def predicate(self, node: Any) -> None:
        if isinstance(node, ast.BoolExpr):
            if node.boolop is not None and node.boolop.name == "AND_EXPR":
                for arg in node.args or ():
                    self.predicate(arg)
        elif isinstance(node, ast.A_Expr):
            self.comparison(node)

    def comparison(self, node: Any) -> None:
        kind = node.kind.name
        op = node.name[-1].sval if node.name else ""
        left, right = self.resolve(node.lexpr), self.resolve(node.rexpr)
        if kind == "AEXPR_OP" and left and right and left[0] != right[0] and op == "=":
            self.out.uses[left[0]].add("join", left[1])
            self.out.uses[right[0]].add("join", right[1])
            return
        if left and right:
            return
        ref, other = (left, node.rexpr) if left else (right, node.lexpr)
        if ref is None or self.refers_to_columns(other):
            return
        for item in other if isinstance(other, (list, tuple)) else (other,):  # IN lists and BETWEEN bounds
            if isinstance(item, ast.ParamRef) and item.number:
                self.out.param_columns[int(item.number)] = ref
        if (kind == "AEXPR_OP" and op in EQ_OPS) or kind == "AEXPR_IN":
            self.out.uses[ref[0]].add("eq", ref[1])
        elif (kind == "AEXPR_OP" and op in RANGE_OPS) or kind.startswith("AEXPR_BETWEEN"):
            self.out.uses[ref[0]].add("range", ref[1])

    def refers_to_columns(self, node: Any) -> bool:
        """True when ``node`` reads a column (then the comparison is a filter between columns)."""
        return any(isinstance(n, (ast.ColumnRef, ast.SubLink)) for n in _walk(node))
