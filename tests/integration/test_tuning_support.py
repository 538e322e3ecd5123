"""Shared by the tuning tests: a PostgreSQL 15 cluster created with initdb (pg_stat_statements and
pg_qualstats preloaded, HypoPG), once per session, and helpers to fill and query its databases."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from engines.config import DatabaseConfig
from engines.tuning.base import IndexAdvice, QueryRef

TEMPLATE = "h7_tuning_template"  # an analysed copy of SCHEMA every test database starts from
PG_BIN = Path("/usr/lib/postgresql/15/bin")
EXT_DIR = Path("/usr/share/postgresql/15/extension")


def missing(reason: str) -> None:
    """Skip locally, fail under CI=true (the rule of tests/servers.py)."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI must not skip: {reason}")
    pytest.skip(reason)


def free_port() -> int:
    """A loopback port nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def as_postgres(args: list[str]) -> list[str]:
    """Run as the postgres system user when root (initdb refuses root)."""
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


@pytest.fixture(scope="session")
def tuning_cluster() -> Iterator[int]:
    """A PostgreSQL 15 cluster on a free loopback port (pg_stat_statements, pg_qualstats preloaded); its port."""
    if not (PG_BIN / "initdb").exists():
        missing(f"no PostgreSQL 15 binaries in {PG_BIN} (apt-get install postgresql-15)")
    for ext, package in (("hypopg", "postgresql-15-hypopg"), ("pg_qualstats", "postgresql-15-pg-qualstats")):
        if not (EXT_DIR / f"{ext}.control").exists():
            missing(f"{ext} is not installed (ops/scripts/ensure-services.sh installs {package})")
    base = Path(tempfile.mkdtemp(prefix="h7_tuning_pg_"))  # not under pytest's 0700 root-owned tree
    if os.geteuid() == 0:
        shutil.chown(base, "postgres")
    data, port = base / "data", free_port()
    subprocess.run(as_postgres([str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust",
                                 "--no-instructions", "--no-sync"]), check=True, capture_output=True)
    opts = (f"-h 127.0.0.1 -p {port} -k {base} -c shared_preload_libraries=pg_stat_statements,pg_qualstats "
            "-c pg_qualstats.sample_rate=1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off")
    subprocess.run(as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(data), "-w", "-l", str(base / "log"),
                                 "-o", opts, "start"]), check=True, capture_output=True)
    try:
        with admin(port) as c:
            c.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(TEMPLATE)))
        with admin(port, TEMPLATE) as c:
            c.execute("CREATE EXTENSION pg_stat_statements; CREATE EXTENSION hypopg")
            c.execute(SCHEMA)
        yield port
    finally:
        subprocess.run(as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]),
                       capture_output=True)
        subprocess.Popen(["rm", "-rf", str(base)])  # a slow shared disk: do not wait for the deletion


def admin(port: int, dbname: str = "postgres") -> psycopg.Connection[Any]:
    """An autocommit superuser connection to the test cluster."""
    return psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname=dbname, autocommit=True)


def make_db(port: int, name: str, hypopg: bool = True, schema: bool = True) -> DatabaseConfig:
    """A fresh database ``name`` with pg_stat_statements (and hypopg), copied from the template that holds
    the schema below (analysed) when ``schema``; the registry entry for it."""
    with admin(port) as c:
        c.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        c.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {} STRATEGY FILE_COPY").format(
            sql.Identifier(name), sql.Identifier(TEMPLATE if schema else "template1")))
    with admin(port, name) as c:
        c.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        c.execute("CREATE EXTENSION IF NOT EXISTS hypopg" if hypopg else "DROP EXTENSION IF EXISTS hypopg")
    return DatabaseConfig(id=name, kind="postgresql", host="127.0.0.1", port=port, dbname=name, user="postgres")


SCHEMA = """
CREATE TABLE accounts (id serial PRIMARY KEY, email text NOT NULL, country text NOT NULL);
CREATE TABLE events (id bigserial PRIMARY KEY, account_id int NOT NULL, a int NOT NULL, b int NOT NULL,
                     note text, created_at timestamptz NOT NULL);
INSERT INTO accounts (email, country) SELECT 'user' || g || '@example.org', (ARRAY['de','fr','us','uk'])[1 + g % 4]
  FROM generate_series(1, 10000) g;
INSERT INTO events (account_id, a, b, note, created_at)
  SELECT 1 + g % 10000, g % 200, (g / 200) % 50, 'n' || g % 7, now() - g * interval '2 minutes'
  FROM generate_series(1, 50000) g;
ANALYZE;
"""


def run_workload(db: DatabaseConfig, queries: list[tuple[Any, tuple[Any, ...]]], times: int = 10) -> None:
    """Run each query ``times`` (with varying values) so pg_stat_statements records it."""
    with psycopg.connect(host=db.host, port=db.port, user=db.user, dbname=db.dbname, autocommit=True) as c:
        c.execute("SELECT pg_stat_statements_reset()")
        for i in range(times):
            for query, params in queries:
                c.execute(query, tuple(p if not isinstance(p, int) else p + i for p in params)).fetchall()


def indexes(db: DatabaseConfig) -> dict[str, bool]:
    """Index name -> valid, in the public schema."""
    with psycopg.connect(host=db.host, port=db.port, user="postgres", dbname=db.dbname) as c:
        return {name: valid for name, valid in c.execute(
            "SELECT c.relname, i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
            " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public'").fetchall()}


WORKLOAD = [
    ("SELECT id FROM accounts WHERE email = %s", ("user17@example.org",)),
    ("SELECT id, note FROM events WHERE a = %s AND b = %s", (3, 7)),
    ("SELECT count(*) FROM events WHERE a = %s", (5,)),
    ("SELECT * FROM accounts WHERE id = %s", (42,)),
]


def advice_for(table: str, columns: list[str], query: str, name: str) -> IndexAdvice:
    ref = QueryRef("1", query, 10, 0.0, 0.0)
    stmt = "(built by the applier)"
    return IndexAdvice("public", table, columns, name, stmt, [ref], 0.0, 0.0, 8192)
