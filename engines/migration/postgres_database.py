"""A PostgreSQL target's database itself: does it exist, may the role create it, create it (``--create-target``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql

from engines.connectors.postgres import PostgresConnector
from engines.errors import ConfigError

if TYPE_CHECKING:
    from engines.config import DatabaseConfig

MAINTENANCE_DB = "postgres"


def _kwargs(db: DatabaseConfig, dbname: str | None = None) -> tuple[str, dict[str, Any]]:
    kw = PostgresConnector(db, db.password()).conninfo()
    conninfo = kw.pop("conninfo", "")
    if dbname:
        kw["dbname"] = dbname
    return conninfo, kw


def target_name(db: DatabaseConfig) -> str:
    """The database the entry names (its ``dbname``, else the dsn's, else the user's name as libpq does)."""
    conninfo, kw = _kwargs(db)
    parts = psycopg.conninfo.conninfo_to_dict(conninfo) if conninfo else {}
    return str(kw.get("dbname") or parts.get("dbname") or kw.get("user") or parts.get("user") or "postgres")


def missing(db: DatabaseConfig) -> bool:
    """True when the server answers but has no such database (any other failure: False, and the
    connector reports it when the migration connects, in its own scrubbed words)."""
    conninfo, kw = _kwargs(db)
    try:
        psycopg.connect(conninfo, autocommit=True, **kw).close()
    except psycopg.OperationalError as exc:
        return getattr(exc, "sqlstate", None) == "3D000" or (
            f'database "{kw.get("dbname", "")}" does not exist' in str(exc))
    return False


def _admin(db: DatabaseConfig) -> psycopg.Connection[Any]:
    conninfo, kw = _kwargs(db, MAINTENANCE_DB)
    return psycopg.connect(conninfo, autocommit=True, **kw)


def may_create(db: DatabaseConfig) -> bool:
    """True when the entry's role may CREATE DATABASE (superuser or CREATEDB)."""
    with _admin(db) as conn:
        row = conn.execute("SELECT rolsuper OR rolcreatedb FROM pg_roles WHERE rolname = current_user").fetchone()
    return bool(row and row[0])


def ensure(db: DatabaseConfig, create: bool) -> bool:
    """Make sure the target database exists: create it when missing and ``create`` (True when created);
    otherwise a ConfigError saying what to run."""
    if not missing(db):
        return False
    name = target_name(db)
    command = f"createdb -h {db.host or 'localhost'} -p {db.port or 5432} -U <an admin role> {name}"
    if not create:
        raise ConfigError([("target", f"database {name!r} does not exist on the target server of {db.id!r}: "
                                      f"create it ({command}), or let the migration create it (--create-target)")])
    if not may_create(db):
        raise ConfigError([("target", f"database {name!r} does not exist on the target server of {db.id!r} and "
                                      f"its role may not create databases: run {command}, or grant the role "
                                      "CREATEDB")])
    with _admin(db) as conn:
        try:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        except psycopg.errors.DuplicateDatabase:  # created meanwhile (another plan): it exists, as wanted
            return False
    return True
