"""Issue 14 on real servers: what client tools see (argv, environment, passfile lines), database
names that are conninfo strings or options, and restores a killed run left half done.

The client tools are wrapped: a shell script records its argv, its environment and the
host:port:db:user fields of its passfile, then execs the real pg_dump / pg_restore / mariadb."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from engines.backup import tools
from engines.backup.dumpers.base import RestoreOptions, Target
from engines.backup.dumpers.mysql import OWNER_TABLE
from engines.backup.dumpers.postgres import staging_name
from engines.backup.engine import dumper_for, restore_backup, run_backup, spooled
from engines.backup.repository import Repository
from engines.errors import RestoreRefused
from engines.storage.filesystem import FilesystemStorage
from tests.conftest import db
from tests.integration import backup_cases as cases
from tests.servers import CANARY, require

pytestmark = pytest.mark.integration
KEY = "h2-hardening-key"
WRAPPER = """#!/bin/sh
{{ echo "TOOL {name}"; echo "ARGS $*"; env | sed 's/^/ENV /'
  if [ -n "$PGPASSFILE" ]; then cut -d: -f1-4 "$PGPASSFILE" | sed 's/^/PASSLINE /'; fi; }} >> {log}
exec {real} "$@"
"""


@pytest.fixture
def spy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Wrap every client tool the dumpers find; returns the log the wrappers append to."""
    log, bindir = tmp_path / "tools.log", tmp_path / "wrappers"
    bindir.mkdir()
    real_pg, real_first = tools.pg_tool, tools.first_tool

    def wrap(real: Path) -> Path:
        path = bindir / real.name
        path.write_text(WRAPPER.format(name=real.name, log=log, real=real))
        path.chmod(0o755)
        return path

    monkeypatch.setattr(tools, "pg_tool", lambda tool, major: (wrap(real_pg(tool, major)[0]), real_pg(tool, major)[1]))
    monkeypatch.setattr(tools, "first_tool", lambda *names, hint: wrap(real_first(*names, hint=hint)))
    monkeypatch.setenv("DBFLEET_REPO_KEY", CANARY)  # a worker secret that is no database's password
    return log


def _lines(log: Path, prefix: str) -> list[str]:
    return [line[len(prefix):] for line in log.read_text().splitlines() if line.startswith(prefix)]


@pytest.fixture
def repo(tmp_path: Path) -> Repository:
    return Repository.init(FilesystemStorage(tmp_path / "repo"), KEY)


def test_postgresql_tools_get_no_dsn_in_argv_no_worker_secrets_and_exact_passfile_lines(
        spy: Path, repo: Repository, tmp_path: Path, embedded_pg: Any) -> None:
    port = embedded_pg.port
    cases.make_pg("h2_hard_src", port, CANARY, rows=500)
    source = db("h2src", kind="postgresql", host="127.0.0.1", port=port, dbname="h2_hard_src", user="postgres",
                password_env="DBFLEET_TEST_CANARY")
    with cases.pg_admin(port, CANARY) as admin:
        admin.execute("DROP DATABASE IF EXISTS h2_hard_dst WITH (FORCE)")
    run_backup(repo, source, workdir=tmp_path)
    restored = restore_backup(repo, source, Target(source, CANARY), spool_dir=tmp_path / "spool",
                              options=RestoreOptions(target_dbname="h2_hard_dst"))
    assert restored["created"] and cases.pg_fingerprint(port, "h2_hard_dst", CANARY) == \
        cases.pg_fingerprint(port, "h2_hard_src", CANARY)
    text = spy.read_text()
    assert {"pg_dump", "pg_dumpall", "pg_restore"} <= set(_lines(spy, "TOOL "))
    assert CANARY not in text  # neither the password_env variable nor DBFLEET_REPO_KEY reached a tool
    for args in _lines(spy, "ARGS "):
        assert "127.0.0.1" not in args and "host=" not in args and str(port) not in args, args
    assert "PGHOST=127.0.0.1" in _lines(spy, "ENV ") and f"PGPORT={port}" in _lines(spy, "ENV ")
    passlines = set(_lines(spy, "PASSLINE "))
    assert passlines and all(line.startswith(f"127.0.0.1:{port}:") and line.endswith(":postgres")
                             for line in passlines), passlines
    assert f"127.0.0.1:{port}:{staging_name('h2_hard_dst')}:postgres" in passlines
    assert not list((tmp_path / "spool").rglob("pgpass*"))


@pytest.mark.parametrize("name", ["host=127.0.0.1 port=1 dbname=postgres", "postgresql://evil.invalid/x",
                                  "-d", "--execute=DROP DATABASE mysql"])
def test_a_target_dbname_that_is_a_conninfo_string_or_an_option_is_refused(name: str, tmp_path: Path) -> None:
    require("postgresql15")
    require("mariadb")
    storage = FilesystemStorage(tmp_path / "never")
    for source in (db("pg", kind="postgresql", host="127.0.0.1", dbname="postgres", user="postgres"),
                   db("my", kind="mariadb", host="127.0.0.1", dbname="test", user="root")):
        dumper = dumper_for(source, tmp_path, resolve_password=False)
        with pytest.raises(RestoreRefused, match="refusing target_dbname"):
            dumper.restore({"dump": tmp_path / "none"}, {"dump": {"extra": {}}}, Target(source, None),
                           RestoreOptions(target_dbname=name))
    assert not storage.root.exists()


def test_a_killed_postgresql_restore_leaves_a_staging_database_the_retry_drops(
        repo: Repository, tmp_path: Path) -> None:
    require("postgresql15")
    cases.make_pg("h2_hard_src15", rows=300)
    source = db("h2src15", kind="postgresql", host="127.0.0.1", dbname="h2_hard_src15", user="postgres")
    run_backup(repo, source, workdir=tmp_path)
    staging = staging_name("h2_hard_dst15")
    with cases.pg_admin() as admin:
        admin.execute("DROP DATABASE IF EXISTS h2_hard_dst15 WITH (FORCE)")
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(staging)))
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(staging)))  # what a kill -9 leaves
    with psycopg.connect(host="127.0.0.1", user="postgres", dbname=staging, autocommit=True) as half:
        half.execute("CREATE TABLE users (id int)")  # half a load
    for mode in ("streamed", "spooled"):
        options = RestoreOptions(target_dbname="h2_hard_dst15")
        if mode == "spooled":  # the spool-first path into a new database stages too
            with cases.pg_admin() as admin:
                admin.execute("DROP DATABASE h2_hard_dst15 WITH (FORCE)")
            dumper = dumper_for(source, tmp_path)
            with spooled(repo, "h2src15", None, tmp_path / "spool", "restore") as (manifest, files, _tmp):
                result = dumper.restore(files, manifest, Target(source, None), options)
        else:
            result = restore_backup(repo, source, Target(source, None), options=options, spool_dir=tmp_path / "spool")
        assert result["mode"] == mode and result["created"]
        assert cases.pg_fingerprint(5432, "h2_hard_dst15") == cases.pg_fingerprint(5432, "h2_hard_src15")
        with cases.pg_admin() as admin:
            names = {r[0] for r in admin.execute("SELECT datname FROM pg_database WHERE datname LIKE 'dbfleet_restoring%'")}
        assert staging not in names


def test_mariadb_names_never_reach_the_client_as_bare_arguments_and_a_killed_restore_is_redone(
        spy: Path, repo: Repository, tmp_path: Path) -> None:
    require("mariadb")
    import pymysql

    cases.make_mariadb("h2_hard_my")
    source = db("h2my", kind="mariadb", host="127.0.0.1", dbname="h2_hard_my", user="root")
    run_backup(repo, source, workdir=tmp_path)
    conn = pymysql.connect(host="127.0.0.1", user="root", password="", autocommit=True)
    with conn.cursor() as cur:
        cur.execute("DROP DATABASE IF EXISTS h2_hard_my_dst")
        cur.execute("CREATE DATABASE h2_hard_my_dst")  # a killed restore's leftover: owned, half loaded
        cur.execute(f"CREATE TABLE h2_hard_my_dst.{OWNER_TABLE} (started TIMESTAMP)")
        cur.execute("CREATE TABLE h2_hard_my_dst.users (id INT)")
    restored = restore_backup(repo, source, Target(source, None), spool_dir=tmp_path / "spool",
                              options=RestoreOptions(target_dbname="h2_hard_my_dst"))
    assert restored["created"]
    assert cases.mariadb_fingerprint("h2_hard_my_dst") == cases.mariadb_fingerprint("h2_hard_my")
    with conn.cursor() as cur:
        cur.execute("CREATE DATABASE IF NOT EXISTS h2_hard_my_full")
        cur.execute("CREATE TABLE IF NOT EXISTS h2_hard_my_full.mine (id INT)")  # not ours: refused
    with pytest.raises(RestoreRefused, match="not empty"):
        restore_backup(repo, source, Target(source, None), spool_dir=tmp_path / "spool",
                       options=RestoreOptions(target_dbname="h2_hard_my_full"))
    conn.close()
    args = _lines(spy, "ARGS ")
    assert any(a.endswith("-- h2_hard_my") for a in args)  # mariadb-dump: the name after "--"
    assert any("--database=h2_hard_my_dst" in a for a in args)
    assert CANARY not in spy.read_text()


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def test_redis_cli_runs_with_no_worker_secret_in_its_environ_or_cmdline(
        embedded_redis: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from engines.backup.dumpers.redis import RedisDumper
    from engines.backup.pipeline import StreamRecord

    monkeypatch.setenv("DBFLEET_REPO_KEY", CANARY)
    source = db("h2redis", kind="redis", host="127.0.0.1", port=embedded_redis.port)
    seen: list[tuple[bytes, bytes]] = []

    def write(name: str, fmt: str, reader: Any) -> StreamRecord:
        for child in _children(os.getpid()):  # the live redis-cli, read while it streams
            try:
                seen.append((Path(f"/proc/{child}/cmdline").read_bytes(), Path(f"/proc/{child}/environ").read_bytes()))
            except OSError:
                continue
        while reader.read(1 << 20):
            pass
        return StreamRecord(name, fmt)

    RedisDumper(source, None, tmp_path).backup(write)
    tools = [(cmdline, environ) for cmdline, environ in seen if b"redis-cli" in cmdline]  # not the session's fleet
    assert tools
    for cmdline, environ in tools:
        assert CANARY.encode() not in cmdline and CANARY.encode() not in environ
        assert b"DBFLEET_TEST_CANARY" not in environ
