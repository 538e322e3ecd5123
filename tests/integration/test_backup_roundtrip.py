"""Backup -> restore round trips on real servers, data compared; S3 through moto over HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engines.backup.check import verify
from engines.backup.drill import drill
from engines.backup.dumpers.base import RestoreOptions, Target
from engines.backup.engine import restore_backup, run_backup
from engines.backup.repository import Repository
from engines.embedded import EmbeddedRedis
from engines.errors import RestoreRefused
from engines.storage.filesystem import FilesystemStorage
from engines.storage.s3 import S3Storage
from tests.conftest import db
from tests.integration import backup_cases as cases
from tests.integration.s3server import moto_s3
from tests.servers import CANARY, require

pytestmark = pytest.mark.integration
KEY = "repo-key-for-tests"


@pytest.fixture
def repo(tmp_path: Path) -> Repository:
    return Repository.init(FilesystemStorage(tmp_path / "repo"), KEY)


def _round_trip(repo: Repository, source: Any, target: Target, tmp_path: Path,
                options: RestoreOptions) -> tuple[dict[str, Any], dict[str, Any]]:
    result = run_backup(repo, source, workdir=tmp_path)
    reopened = Repository.open(repo.storage, KEY)
    assert verify(reopened, source.id, read_data=True)["ok"]
    restored = restore_backup(reopened, source, target, options=options, spool_dir=tmp_path / "spool")
    return result, restored


@pytest.mark.parametrize("server", ["pg15", "pg18"])
def test_postgresql_round_trip(server: str, repo: Repository, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    if server == "pg15":
        require("postgresql15")
        port, password = 5432, None
    else:
        pg = request.getfixturevalue("embedded_pg")
        port, password = pg.port, CANARY
    cases.make_pg("bk_rt_src", port, password)
    source = db("src", kind="postgresql", host="127.0.0.1", port=port, dbname="bk_rt_src", user="postgres",
                password_env="DBFLEET_TEST_CANARY" if password else None)
    with cases.pg_admin(port, password) as admin:
        admin.execute("DROP DATABASE IF EXISTS bk_rt_dst WITH (FORCE)")
    result, restored = _round_trip(repo, source, Target(source, password), tmp_path,
                                   RestoreOptions(target_dbname="bk_rt_dst"))
    assert result["dump"]["row_counts"] == {"public.users": 20_000, f"public.{cases.HOSTILE_PG}": 3}
    assert result["dump"]["row_counts_exact"] and restored["created"] and restored["mode"] == "streamed"
    assert cases.pg_fingerprint(port, "bk_rt_dst", password) == cases.pg_fingerprint(port, "bk_rt_src", password)
    assert str(server[2:]) in result["dump"]["tool_version"]  # the client matches the server's major


def test_postgresql_table_subset_and_non_empty_target(repo: Repository, tmp_path: Path) -> None:
    require("postgresql15")
    cases.make_pg("bk_sub_src", rows=500)
    source = db("src", kind="postgresql", host="127.0.0.1", dbname="bk_sub_src", user="postgres")
    run_backup(repo, source, workdir=tmp_path)
    with pytest.raises(RestoreRefused, match="not empty"):
        restore_backup(repo, source, Target(source, None), options=RestoreOptions(), spool_dir=tmp_path)
    assert cases.pg_fingerprint(5432, "bk_sub_src")["users"].startswith("500:")  # untouched
    with cases.pg_admin() as admin:
        admin.execute("DROP DATABASE IF EXISTS bk_sub_dst WITH (FORCE)")
    restore_backup(repo, source, Target(source, None), options=RestoreOptions(target_dbname="bk_sub_dst",
                   tables=["public.users"]), spool_dir=tmp_path)
    tables = {k for k in cases.pg_fingerprint(5432, "bk_sub_dst") if ":" not in k}
    assert tables == {"users"}


def test_mariadb_round_trip(repo: Repository, tmp_path: Path) -> None:
    require("mariadb")
    cases.make_mariadb("bk_rt_src")
    import pymysql

    with pymysql.connect(host="127.0.0.1", user="root", password="", autocommit=True).cursor() as cur:
        cur.execute("DROP DATABASE IF EXISTS bk_rt_dst")
    source = db("shop", kind="mariadb", host="127.0.0.1", user="root", dbname="bk_rt_src")
    result, restored = _round_trip(repo, source, Target(source, None), tmp_path,
                                   RestoreOptions(target_dbname="bk_rt_dst"))
    assert result["dump"]["row_counts"] == {"users": 3000, cases.HOSTILE_MY: 2}
    assert cases.mariadb_fingerprint("bk_rt_dst") == cases.mariadb_fingerprint("bk_rt_src")


@pytest.fixture
def two_redis(tmp_path: Path) -> Iterator[tuple[EmbeddedRedis, EmbeddedRedis]]:
    a, b = EmbeddedRedis(tmp_path / "ra").start(), EmbeddedRedis(tmp_path / "rb").start()
    yield a, b
    a.stop()
    b.stop()


def test_redis_round_trip(repo: Repository, tmp_path: Path, two_redis: tuple[EmbeddedRedis, EmbeddedRedis]) -> None:
    src, dst = two_redis
    cases.redis_fill(src.port)
    source = db("cache", kind="redis", host="127.0.0.1", port=src.port)
    target = db("cache2", kind="redis", host="127.0.0.1", port=dst.port)
    result, restored = _round_trip(repo, source, Target(target, None), tmp_path, RestoreOptions())
    assert result["dump"]["row_counts"] == {"db0": 2003, "db2": 1}
    assert restored["keys"] == 2004
    assert cases.redis_fingerprint(dst.port) == cases.redis_fingerprint(src.port)
    with pytest.raises(RestoreRefused, match="holds 2004 keys"):
        restore_backup(repo, source, Target(target, None), options=RestoreOptions(), spool_dir=tmp_path)
    report = drill(repo, source, spool_dir=tmp_path)
    assert report["ok"] and report["rows_restored"] == 2004


def test_sqlite_round_trip(repo: Repository, tmp_path: Path) -> None:
    source = cases.make_sqlite(tmp_path / "app.db")
    target = db("lite2", kind="sqlite", path=str(tmp_path / "restored.db"))
    result, _ = _round_trip(repo, source, Target(target, None), tmp_path, RestoreOptions())
    assert result["dump"]["row_counts"] == {'odd "name"': 5000}
    assert cases.sqlite_fingerprint(tmp_path / "restored.db") == cases.sqlite_fingerprint(tmp_path / "app.db")


def test_round_trip_on_s3_with_dedup(tmp_path: Path) -> None:
    require("postgresql15")
    cases.make_pg("bk_s3_src", rows=50_000)
    source = db("src", kind="postgresql", host="127.0.0.1", dbname="bk_s3_src", user="postgres")
    with moto_s3() as endpoint:
        storage = S3Storage("s3://dbfleet-test/backups/fleet", endpoint_url=endpoint)
        repo = Repository.init(storage, KEY)
        first = run_backup(repo, source, workdir=tmp_path)
        second = run_backup(repo, source, workdir=tmp_path)
        assert first["stats"]["new_chunks"] == first["stats"]["chunks"]
        # deduplicated: only the chunk holding pg_dump's archive header (it carries a timestamp) and the
        # tiny globals stream are new
        assert second["stats"]["new_chunks"] <= 2 and second["stats"]["chunks"] >= 6
        keys = [o.key for o in storage.list("")]
        assert "config" in keys and sum(k.startswith("backups/src/") for k in keys) == 2
        with cases.pg_admin() as admin:
            admin.execute("DROP DATABASE IF EXISTS bk_s3_dst WITH (FORCE)")
        restore_backup(Repository.open(storage, KEY), source, Target(source, None),
                       options=RestoreOptions(target_dbname="bk_s3_dst"), spool_dir=tmp_path)
        assert cases.pg_fingerprint(5432, "bk_s3_dst") == cases.pg_fingerprint(5432, "bk_s3_src")


def test_drill_measures_rto_rpo_and_cleans_up(repo: Repository, tmp_path: Path) -> None:
    require("postgresql15")
    cases.make_pg("bk_drill_src", rows=2000)
    source = db("src", kind="postgresql", host="127.0.0.1", dbname="bk_drill_src", user="postgres")
    run_backup(repo, source, workdir=tmp_path)
    report = drill(repo, source, spool_dir=tmp_path)
    assert report["ok"] and report["rows_expected"] == report["rows_restored"] == 2003
    assert report["rto_seconds"] > 0 and report["rpo_seconds"] >= 0 and report["mismatches"] == []
    with cases.pg_admin() as admin:
        left = admin.execute("SELECT datname FROM pg_database WHERE datname LIKE 'dbfleet_drill_%'").fetchall()
    assert left == []


def test_compression_off_is_honoured(tmp_path: Path) -> None:
    source = cases.make_sqlite(tmp_path / "app.db")
    repo = Repository.init(FilesystemStorage(tmp_path / "plain"), None, encryption=False)
    result = run_backup(repo, source, level=None, workdir=tmp_path)
    assert result["stats"]["stored_bytes"] > result["stats"]["total_bytes"]  # header + checksum, no zstd
    assert verify(repo, "lite", read_data=True)["ok"]


def test_clickhouse_round_trip(repo: Repository, tmp_path: Path, clickhouse: Any) -> None:
    from tests.integration.test_clickhouse import ch_db, fingerprint, make_source

    make_source(clickhouse, "h5_rt_ch_src")
    clickhouse.query("DROP DATABASE IF EXISTS h5_rt_ch_dst")
    source = ch_db(clickhouse, dbname="h5_rt_ch_src")
    result, restored = _round_trip(repo, source, Target(source, CANARY), tmp_path,
                                   RestoreOptions(target_dbname="h5_rt_ch_dst"))
    assert result["dump"]["row_counts"] == {"events": 5000, "h5 weird`table'; DROP TABLE x; --": 2}
    assert restored["created"] and fingerprint(clickhouse, "h5_rt_ch_dst") == fingerprint(clickhouse, "h5_rt_ch_src")
