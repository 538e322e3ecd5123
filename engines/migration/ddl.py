"""Target DDL from what a source server says, never its text as is.

A source reports column types (``format_type``), index definitions (``pg_get_indexdef``) and constraint
definitions (``pg_get_constraintdef``) as SQL text. A hostile or compromised source (a proxy, a shadowed
catalog function) can put anything in that text, ``...; DROP TABLE ...`` included, and the target runs
what the migration sends it. So every such text is parsed with PostgreSQL's own parser (pglast), accepted
only as the one statement kind expected on the one table expected, and the target gets the parse tree
printed back (one statement by construction). Functions a definition calls are listed for the target to
check: volatile ones never run (a CHECK could otherwise call ``lo_create``, ``set_config``,
``pg_terminate_backend``, ... for every row; immutable and stable functions change nothing).
"""

# pglast types every parse-tree field Optional; the checks below test for what is there by hand
# mypy: disable-error-code="union-attr,index,arg-type"
from __future__ import annotations

from collections.abc import Iterator
from functools import lru_cache
from typing import Any

from psycopg import sql

from engines.errors import DbfleetError

try:  # the parser is a dependency (pyproject); a clear hint if an old environment lacks it
    from pglast import ast, parse_sql
    from pglast.enums import AlterTableType, ConstrType
    from pglast.parser import ParseError
    from pglast.stream import RawStream
except ImportError as exc:  # pragma: no cover - the dependency is installed with the project
    raise ImportError("migrations need pglast (pip install 'pglast>=7') to check definitions read from a"
                      " source") from exc


class UnsafeDefinition(DbfleetError):
    """A definition read from the source is not the single, expected statement: it is not executed."""


# pg_constraint.contype -> the parse tree's constraint type
CONTYPES = {"c": ConstrType.CONSTR_CHECK, "u": ConstrType.CONSTR_UNIQUE, "x": ConstrType.CONSTR_EXCLUSION,
            "f": ConstrType.CONSTR_FOREIGN}


def _parse_one(text: str, what: str) -> Any:
    try:
        stmts = parse_sql(text)
    except ParseError as exc:
        raise UnsafeDefinition(f"{what}: not valid SQL ({exc})") from None
    if len(stmts) != 1:
        raise UnsafeDefinition(f"{what}: holds {len(stmts)} statements, one expected")
    return stmts[0].stmt


def _short(text: str) -> str:
    return text if len(text) <= 120 else text[:117] + "..."


@lru_cache(maxsize=4096)
def safe_type(text: str) -> str:
    """The column type ``text`` printed back from its parse tree; UnsafeDefinition unless it is one plain type
    name (optionally with constant modifiers and array bounds) and nothing else."""
    what = f"column type {_short(text)!r}"
    stmt = _parse_one(f"CREATE TABLE t (c {text})", what)
    if not isinstance(stmt, ast.CreateStmt) or len(stmt.tableElts or ()) != 1 \
            or not isinstance(stmt.tableElts[0], ast.ColumnDef):
        raise UnsafeDefinition(f"{what}: is not a single type name")
    name = stmt.tableElts[0].typeName
    if name.setof or name.pct_type:
        raise UnsafeDefinition(f"{what}: is not a plain type name")
    for mod in name.typmods or ():
        constant = isinstance(mod, ast.A_Const) and isinstance(mod.val, ast.Integer)
        identifier = isinstance(mod, ast.ColumnRef) and len(mod.fields) == 1 and isinstance(mod.fields[0], ast.String)
        if not (constant or identifier):
            raise UnsafeDefinition(f"{what}: a type modifier that is not a number or a name")
    printed = str(RawStream()(name))
    # nothing but the type: the statement prints the same as one made of the printed type alone
    if RawStream()(stmt) != RawStream()(_parse_one(f"CREATE TABLE t (c {printed})", what)):
        raise UnsafeDefinition(f"{what}: carries more than a type name")
    return printed


def type_sql(text: str) -> sql.SQL:
    """``safe_type`` as a composable for psycopg.sql (the only way a source's type text reaches a statement)."""
    return sql.SQL(safe_type(text))


def _is(rv: Any, want: tuple[str, str]) -> bool:
    """The parsed relation is ``want`` (schema, name); the schema may be left out (the server prints it only
    when it is not on its search_path), and is then set, so the target never resolves it by search_path."""
    if rv.catalogname or rv.relname != want[1] or rv.schemaname not in (None, want[0]):
        return False
    rv.schemaname = want[0]
    return True


def index_statement(definition: str, on: tuple[str, str], to: tuple[str, str], name: str) -> tuple[str, set[str]]:
    """A source's ``CREATE INDEX`` for index ``name`` on table ``on`` (schema, name), moved onto ``to``: the
    statement text and the functions it calls."""
    what = f"index {name!r} of {on[0]}.{on[1]}"
    stmt = _parse_one(definition, what)
    if not isinstance(stmt, ast.IndexStmt):
        raise UnsafeDefinition(f"{what}: the source's definition is not a CREATE INDEX")
    if stmt.idxname != name or not _is(stmt.relation, on):
        raise UnsafeDefinition(f"{what}: the source's definition creates {stmt.idxname!r} on "
                               f"{stmt.relation.schemaname}.{stmt.relation.relname}")
    if stmt.tableSpace or stmt.concurrent or stmt.if_not_exists:
        raise UnsafeDefinition(f"{what}: the source's definition has clauses pg_get_indexdef never prints")
    stmt.relation.schemaname, stmt.relation.relname = to
    return str(RawStream()(stmt)), _calls(stmt, what)


def constraint_statement(definition: str, table: tuple[str, str], name: str, contype: str | None,
                         ref: tuple[str, str] | None = None) -> tuple[str, set[str]]:
    """``ALTER TABLE ONLY <table> ADD CONSTRAINT <name> <definition>`` for a source's constraint definition:
    one constraint of ``contype`` (pg_constraint's letter; None: check, unique or exclusion), a foreign key
    referencing ``ref`` only and added NOT VALID. Returns the statement text and the functions it calls."""
    what = f"constraint {name!r} of {table[0]}.{table[1]}"
    head = sql.SQL("ALTER TABLE {}.{} ADD CONSTRAINT {} ").format(
        sql.Identifier(table[0]), sql.Identifier(table[1]), sql.Identifier(name)).as_string(None)
    stmt = _parse_one(head + definition, what)
    if not isinstance(stmt, ast.AlterTableStmt) or not _is(stmt.relation, table) or len(stmt.cmds or ()) != 1:
        raise UnsafeDefinition(f"{what}: the source's definition is more than one constraint")
    cmd = stmt.cmds[0]
    con = cmd.def_
    if cmd.subtype != AlterTableType.AT_AddConstraint or not isinstance(con, ast.Constraint) or con.conname != name:
        raise UnsafeDefinition(f"{what}: the source's definition is not a constraint")
    allowed = {CONTYPES[contype]} if contype else {CONTYPES["c"], CONTYPES["u"], CONTYPES["x"]}
    if con.contype not in allowed:
        raise UnsafeDefinition(f"{what}: a {con.contype.name} where the source's catalog says {contype or 'c/u/x'}")
    if con.contype == ConstrType.CONSTR_FOREIGN:
        if ref is None or not _is(con.pktable, ref):
            raise UnsafeDefinition(f"{what}: references {con.pktable.relname!r}, not the migrated table"
                                   f" {'.'.join(ref or ('?', '?'))}")
        con.skip_validation, con.initially_valid = True, False  # check_table validates it after the load
    elif con.indexname or con.indexspace:
        raise UnsafeDefinition(f"{what}: names an index or tablespace of the target")
    return str(RawStream()(stmt)), _calls(stmt, what)


def _nodes(node: Any) -> Iterator[Any]:
    if isinstance(node, (list, tuple)):
        for item in node:
            yield from _nodes(item)
    elif isinstance(node, ast.Node):
        yield node
        for attr in getattr(type(node), "__slots__", ()):
            yield from _nodes(getattr(node, attr, None))


def _calls(stmt: Any, what: str) -> set[str]:
    """The functions ``stmt`` calls, as dotted names (a subquery is refused: no definition holds one)."""
    names = set()
    for node in _nodes(stmt):
        if isinstance(node, (ast.SubLink, ast.SelectStmt, ast.RangeFunction)):
            raise UnsafeDefinition(f"{what}: the source's definition holds a query")
        if isinstance(node, ast.FuncCall):
            names.add(".".join(part.sval for part in node.funcname))
    return names


def volatile(conn: Any, names: set[str]) -> list[str]:
    """Of the function ``names`` (dotted), those the target does not know as non-volatile: a name counts as
    safe only when it exists there and none of its overloads (in the schema named, or on the search path) is
    volatile. A definition that calls one is not run."""
    bad = []
    for dotted in sorted(names):
        schema, _, fn = dotted.rpartition(".")
        row = conn.execute(
            "SELECT count(*) > 0 AND bool_and(p.provolatile <> 'v') FROM pg_proc p JOIN pg_namespace n"
            " ON n.oid = p.pronamespace WHERE p.proname = %s AND CASE WHEN %s = '' THEN"
            " n.nspname = ANY(current_schemas(true)) ELSE n.nspname = %s END", (fn, schema, schema)).fetchone()
        if not row[0]:
            bad.append(dotted)
    return bad
