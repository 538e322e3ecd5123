"""`dbfleet migrate ... --local` as a new user meets it, against MariaDB and PostgreSQL 15 with no worker:
the target database is created, non-empty target tables are refused at plan time (a keyless table cannot
double), rejects are listed (key, column, reason; no values) and retried after the source is fixed,
rollback starts the migration over, and a registry id added to the config while running is found."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pymysql
import pytest
from click.testing import CliRunner

from tests.integration.backup_cases import pg_admin
from tests.servers import require
from workers import runtime
from workers.cli import cli

pytestmark = pytest.mark.integration

SECRET_TIME = "838:59:59"  # a value no PostgreSQL time holds: the row is refused, the value never shown


@pytest.fixture
def fleet_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """A MariaDB source database (keyed and keyless tables, one bad TIME), a PostgreSQL 15 target database
    name that does not exist yet, and a config naming both (history in a temp SQLite)."""
    host, port = require("mariadb")
    require("postgresql15")
    suffix = uuid.uuid4().hex[:8]
    src, dst = f"mcli_s_{suffix}", f"mcli_t_{suffix}"
    conn = pymysql.connect(host=host, port=port, user="root", autocommit=True, charset="utf8mb4")
    with conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{src}`")
        cur.execute(f"USE `{src}`")
        cur.execute("SET SESSION sql_mode = ''")
        cur.execute("CREATE TABLE people (id INT PRIMARY KEY, name VARCHAR(20), t TIME)")
        cur.execute("INSERT INTO people VALUES (1, 'ann', '01:00:00'), (2, 'bob', '02:00:00'),"
                    " (3, 'cy', %s), (4, 'di', NULL), (5, 'ed', '05:00:00')", (SECRET_TIME,))
        cur.execute("CREATE TABLE bag (a INT, b TEXT)")
        cur.execute("INSERT INTO bag VALUES (1, 'x'), (1, 'x'), (NULL, NULL)")
    config = tmp_path / "dbfleet.yaml"
    config.write_text(f"""databases:
  msrc: {{kind: mariadb, host: {host}, port: {port}, dbname: {src}, user: root}}
  pdst: {{kind: postgresql, host: 127.0.0.1, dbname: {dst}, user: postgres}}
fleet:
  history_url: sqlite:///{tmp_path}/history.db
  state_dir: {tmp_path}/state
""")
    monkeypatch.setenv("DBFLEET_CONFIG", str(config))
    monkeypatch.setenv("COLUMNS", "250")
    runtime.reset()
    yield {"config": config, "src": src, "dst": dst, "mysql": conn}
    runtime.reset()
    with conn.cursor() as cur:
        cur.execute(f"DROP DATABASE `{src}`")
    conn.close()
    with pg_admin() as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{dst}" WITH (FORCE)')


def dbfleet(*args: str) -> tuple[int, str]:
    """Run `dbfleet ARGS` in this process: (exit code, what it printed)."""
    result = CliRunner().invoke(cli, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result.exit_code, result.output


def target_rows(env: dict[str, Any], query: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(host="127.0.0.1", user="postgres", dbname=env["dst"]) as c:
        return c.execute(query).fetchall()


def test_local_run_creates_the_target_lists_rejects_and_retries_them_after_the_source_is_fixed(
        fleet_env: dict[str, Any]) -> None:
    code, out = dbfleet("migrate", "plan", "msrc", "pdst", "--local", "--id", "cli-rej", "--max-rejects", "1")
    assert code == 0, out
    assert "t: time -> time (time)" in out and "id: int(11) -> integer" in out  # the type mapping, not a count
    assert "dbfleet migrate run cli-rej --local" in out
    assert target_rows(fleet_env, "SELECT current_database()") == [(fleet_env["dst"],)]  # created by the plan

    code, out = dbfleet("migrate", "run", "cli-rej", "--local")
    assert code == 0, out
    row = next(line for line in out.splitlines() if re.search(r"\bpeople\b.*\b1/1\b", line))
    assert re.search(r"1/1\D+5\D+4\D+1\D+0", row), row  # source rows read 5, copied 4, rejected 1
    assert re.search(r"people\W+\[\"3\"\]\W+t\W+date/time field value out of range", out), out  # key, column, why
    assert SECRET_TIME not in out  # ... and never the value
    assert target_rows(fleet_env, "SELECT count(*) FROM people") == [(4,)]

    code, out = dbfleet("migrate", "status", "cli-rej")
    assert code == 0 and '["3"]' in out and SECRET_TIME not in out and "retry-rejects cli-rej" in out

    with fleet_env["mysql"].cursor() as cur:  # the user fixes the source row
        cur.execute(f"USE `{fleet_env['src']}`")
        cur.execute("UPDATE people SET t = '03:00:00' WHERE id = 3")
    code, out = dbfleet("migrate", "retry-rejects", "cli-rej", "--local")
    assert code == 0, out
    assert "1 rows read again, 1 copied, 0 still refused" in out and "rejected rows" not in out
    assert target_rows(fleet_env, "SELECT id, t::text FROM people ORDER BY id") == [
        (1, "01:00:00"), (2, "02:00:00"), (3, "03:00:00"), (4, None), (5, "05:00:00")]
    from workers.migration_steps import store

    final = store().progress("cli-rej")
    assert final["status"] == "completed" and final["report"]["ok"] and final["rejected"] == []
    assert {t["table"]: (t["source_rows"], t["target_rows"], t["rejects"]) for t in final["report"]["tables"]} == {
        "people": (5, 5, 0), "bag": (3, 3, 0)}


def test_non_empty_targets_are_refused_at_plan_time_and_rollback_starts_over(fleet_env: dict[str, Any]) -> None:
    assert dbfleet("migrate", "run", "msrc", "pdst", "--local")[0] == 1  # one reject, max 0: failed, but copied
    assert target_rows(fleet_env, "SELECT count(*) FROM bag") == [(3,)]
    code, out = dbfleet("migrate", "plan", "msrc", "pdst", "--local", "--tables", "bag")
    assert code == 2 and "already hold rows: public.bag" in out and "--if-exists" in out  # no 3 -> 6 -> 9
    assert target_rows(fleet_env, "SELECT count(*) FROM bag") == [(3,)]

    code, out = dbfleet("migrate", "plan", "msrc", "pdst", "--local", "--tables", "bag", "--if-exists", "append",
                        "--id", "cli-app")
    assert code == 0 and dbfleet("migrate", "run", "cli-app", "--local")[0] == 0
    assert target_rows(fleet_env, "SELECT count(*) FROM bag") == [(6,)]  # appending was asked for

    code, out = dbfleet("migrate", "plan", "msrc", "pdst", "--local", "--tables", "bag", "--if-exists", "truncate",
                        "--id", "cli-tr")
    assert code == 0, out
    code, out = dbfleet("migrate", "run", "cli-tr", "--local")
    assert code == 0, out
    assert target_rows(fleet_env, "SELECT count(*) FROM bag") == [(3,)]  # emptied at run start, copied once

    code, out = dbfleet("migrate", "rollback", "cli-tr", "--local")
    assert code == 0 and "snapshot:public.bag" in out
    assert target_rows(fleet_env, "SELECT count(*) FROM bag") == [(6,)]  # what it held before the run
    code, out = dbfleet("migrate", "status", "cli-tr")
    assert code == 0 and "rolled_back" in out and "0 / 1" in out and "validation" not in out  # the truth
    code, out = dbfleet("migrate", "run", "cli-tr", "--local")  # starts over: no "batches have no checkpoint"
    assert code == 0, out
    assert target_rows(fleet_env, "SELECT count(*) FROM bag") == [(3,)]


def test_a_missing_target_the_role_cannot_create_is_explained(fleet_env: dict[str, Any]) -> None:
    role = f"mcli_nocreate_{uuid.uuid4().hex[:6]}"
    with pg_admin() as admin:
        admin.execute(f'CREATE ROLE "{role}" LOGIN NOCREATEDB')
    try:
        config = fleet_env["config"]
        config.write_text(config.read_text().replace("user: postgres", f"user: {role}"))
        runtime.reset()
        code, out = dbfleet("migrate", "plan", "msrc", "pdst", "--local")
        assert code == 2 and "may not create databases" in out and "createdb -h 127.0.0.1 -p 5432" in out
        code, out = dbfleet("migrate", "plan", "msrc", "pdst", "--local", "--no-create-target")
        assert code == 2 and f"database '{fleet_env['dst']}' does not exist" in out and "--create-target" in out
    finally:
        with pg_admin() as admin:
            admin.execute(f'DROP ROLE "{role}"')


def test_an_id_added_to_the_config_while_running_is_found(fleet_env: dict[str, Any]) -> None:
    from workers.migration_steps import resolve

    assert resolve("msrc").id == "msrc"  # the registry is loaded
    config = fleet_env["config"]
    config.write_text(config.read_text().replace("fleet:", "  added: {kind: postgresql, host: 127.0.0.1}\nfleet:"))
    assert resolve("added").id == "added"  # the file changed: loaded again, not "unknown database id"
    with pytest.raises(Exception, match=r"^unknown database id 'nope' \(known: added, msrc, pdst\)$"):
        resolve("nope")


def test_a_worker_side_unknown_id_reads_as_one_message() -> None:
    """Celery rebuilds an exception from its args: the message must not nest inside itself."""
    from celery import Celery
    from celery.backends.base import Backend

    from engines.errors import UnknownDatabaseError

    backend = Backend(Celery(set_as_current=False))
    sent = json.loads(json.dumps(backend.prepare_exception(UnknownDatabaseError("x", ["a", "b"]), "json")))
    assert str(backend.exception_to_python(sent)) == "unknown database id 'x' (known: a, b)"
