"""ClickHouse as a first-class kind, against Debian's real clickhouse-server (started per session):
connector, health checks, and the Native-format backup round trip into a new database."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from engines.backup.check import verify
from engines.backup.drill import drill
from engines.backup.dumpers.base import RestoreOptions, Target
from engines.backup.engine import restore_backup, run_backup
from engines.backup.repository import Repository
from engines.connectors import open_connector
from engines.connectors.clickhouse import quote_ident, quote_str
from engines.errors import ConnectionFailed, RestoreRefused
from engines.health import run_health
from engines.storage.filesystem import FilesystemStorage
from tests.conftest import db
from tests.servers import CANARY, CANARY_WRONG, CLICKHOUSE_USER, ClickHouseServer

pytestmark = pytest.mark.integration
HOSTILE = "h5 weird`table'; DROP TABLE x; --"
SOURCE, RESTORED = "h5_ch_src", "h5_ch_dst"


def ch_db(server: ClickHouseServer, id: str = "olap", dbname: str = SOURCE, **kw: Any) -> Any:
    """A registry entry for the fixture's server as the user whose password is the canary."""
    fields = {"kind": "clickhouse", "host": server.host, "port": server.http_port, "dbname": dbname,
              "user": CLICKHOUSE_USER, "password_env": "DBFLEET_TEST_CANARY", **kw}
    return db(id, **fields)


def make_source(server: ClickHouseServer, name: str = SOURCE) -> None:
    """Types a naive dump gets wrong (NULLs, arrays, decimals, dates, UUIDs, NUL bytes, unicode), a hostile
    table name, a MATERIALIZED column, a Log table and a view."""
    q = server.query
    q(f"DROP DATABASE IF EXISTS {quote_ident(name)}")
    q(f"CREATE DATABASE {quote_ident(name)}")
    q(f"CREATE TABLE {quote_ident(name)}.events (id UInt64, user Nullable(String), tags Array(String),"
      " amount Decimal(12, 2), at DateTime, day Date, uid UUID, raw String,"
      " id2 UInt64 MATERIALIZED id * 2) ENGINE = MergeTree PARTITION BY toYYYYMM(day) ORDER BY id")
    events = f"{quote_ident(name)}.events"
    q("INSERT INTO " + events + " (id, user, tags, amount, at, day, uid, raw)"  # noqa: S608 - quoted
      " SELECT number, if(number % 7 = 0, NULL, concat('Zoë ', toString(number))), [toString(number), 'ñ'],"
      " toDecimal64(number * 1.25, 2), toDateTime('2026-01-01 00:00:00') + number, toDate('2026-01-01') + number % 90,"
      " generateUUIDv4(), concat('tab\\tnul\\0', toString(number)) FROM system.numbers LIMIT 5000")
    q(f"CREATE TABLE {quote_ident(name)}.{quote_ident(HOSTILE)} (k String, v Nullable(Int32)) ENGINE = Log")
    q(f"INSERT INTO {quote_ident(name)}.{quote_ident(HOSTILE)} VALUES ('a', 1), ('b\\nline', NULL)")  # noqa: S608
    q(f"CREATE VIEW {quote_ident(name)}.recent AS SELECT id FROM {quote_ident(name)}.events WHERE id > 4990")  # noqa: S608


def fingerprint(server: ClickHouseServer, name: str) -> dict[str, str]:
    """Row count and sha256 of every table's rows in order, and each table's column types."""
    out = {}
    tables = server.query(f"SELECT name FROM system.tables WHERE database = {quote_str(name)}"  # noqa: S608 - quoted
                          " AND engine != 'View' FORMAT TSVRaw").splitlines()
    for t in tables:
        rows = server.query(f"SELECT * FROM {quote_ident(name)}.{quote_ident(t)} ORDER BY tuple(*) FORMAT TSV")  # noqa: S608
        types = server.query(f"DESCRIBE TABLE {quote_ident(name)}.{quote_ident(t)} FORMAT TSV")
        out[t] = f"{rows.count(chr(10))}:{hashlib.sha256(rows.encode()).hexdigest()}:{types}"
    return out


def test_connector_pings_and_describes_with_a_password_that_never_leaks(clickhouse: ClickHouseServer) -> None:
    make_source(clickhouse)
    with open_connector(ch_db(clickhouse)) as conn:
        assert conn.ping() >= 0
        info = conn.describe()
    assert info.version.startswith("18.16") and info.role == "standalone" and info.size_bytes > 10_000
    assert info.extra["database"] == SOURCE
    dsn = db("viadsn", kind="clickhouse", dsn=f"http://{clickhouse.host}:{clickhouse.http_port}/?database={SOURCE}",
             user=CLICKHOUSE_USER, password_env="DBFLEET_TEST_CANARY")
    with open_connector(dsn) as conn:
        assert conn.describe().extra["database"] == SOURCE
    with pytest.raises(ConnectionFailed) as caught:
        open_connector(ch_db(clickhouse, password_env="DBFLEET_TEST_CANARY_WRONG")).ping()
    assert "'olap'" in str(caught.value) and CANARY_WRONG not in str(caught.value) and CANARY not in str(caught.value)


def test_health_reports_parts_merges_replicas_and_says_why_disk_is_unknown(clickhouse: ClickHouseServer) -> None:
    name = "h5_ch_parts"
    clickhouse.query(f"DROP DATABASE IF EXISTS {name}")
    clickhouse.query(f"CREATE DATABASE {name}")
    clickhouse.query(f"CREATE TABLE {name}.t (id UInt32) ENGINE = MergeTree ORDER BY id")
    clickhouse.query(f"SYSTEM STOP MERGES {name}.t")
    for i in range(6):  # six inserts, merges stopped: six active parts in one partition
        clickhouse.query(f"INSERT INTO {name}.t VALUES ({i})")  # noqa: S608 - constant name
    entry = ch_db(clickhouse, dbname=name, thresholds={"parts_per_partition": 5})
    report = run_health(entry)
    assert report.error is None and report.status == "degraded", report.to_dict()
    parts = report.check("parts_per_partition")
    assert parts and parts.status == "warning" and parts.value == 6 and f"{name}.t" in (parts.hint or "")
    assert report.check("replicas").status == "ok" and report.check("replicas").hint == "no replicated tables"
    assert report.check("merges").status == "ok"
    disk = report.check("disk")
    assert disk.status == "unknown" and "19.15" in (disk.hint or "")  # 18.16 has no system.disks
    assert report.check("reachability").status == "ok" and report.check("response_time").value >= 0
    clickhouse.query(f"SYSTEM START MERGES {name}.t")
    clickhouse.query(f"OPTIMIZE TABLE {name}.t FINAL")
    assert run_health(entry).check("parts_per_partition").status == "ok"  # merged into one part
    assert CANARY not in json.dumps(report.to_dict())


def test_unreachable_clickhouse_is_down_not_an_exception(clickhouse: ClickHouseServer, closed_port: int) -> None:
    report = run_health(ch_db(clickhouse, port=closed_port))
    assert report.status == "down" and "'olap'" in (report.error or "")


def test_native_backup_restores_into_a_new_database_identically(clickhouse: ClickHouseServer, tmp_path: Path) -> None:
    make_source(clickhouse)
    clickhouse.query(f"DROP DATABASE IF EXISTS {RESTORED}")
    repo = Repository.init(FilesystemStorage(tmp_path / "repo"), "k")
    source = ch_db(clickhouse)
    result = run_backup(repo, source, workdir=tmp_path)
    assert result["dump"]["row_counts"] == {"events": 5000, HOSTILE: 2}
    assert result["dump"]["warnings"] == ["View 'recent' not dumped (recreate it after a restore)"]
    assert {s["format"] for s in result["streams"]} == {"json", "clickhouse-native"}
    assert verify(Repository.open(repo.storage, "k"), "olap", read_data=True)["ok"]
    restored = restore_backup(repo, source, Target(source, CANARY), options=RestoreOptions(target_dbname=RESTORED),
                              spool_dir=tmp_path / "spool")
    assert restored["created"] and restored["tables"] == 2
    assert fingerprint(clickhouse, RESTORED) == fingerprint(clickhouse, SOURCE)
    with pytest.raises(RestoreRefused, match="not empty"):
        restore_backup(repo, source, Target(source, CANARY), options=RestoreOptions(target_dbname=RESTORED),
                       spool_dir=tmp_path / "spool")
    report = drill(repo, source, spool_dir=tmp_path)
    assert report["ok"] and report["rows_restored"] == 5002
    left = clickhouse.query("SELECT name FROM system.databases WHERE name LIKE 'dbfleet_drill_%' FORMAT TSV")
    assert left == ""
    assert CANARY not in json.dumps(result) + json.dumps(restored) + json.dumps(report)


def test_a_failed_restore_drops_the_database_it_created(clickhouse: ClickHouseServer, tmp_path: Path) -> None:
    from engines.backup.dumpers.clickhouse import ClickHouseDumper
    from engines.connectors.clickhouse import ClickHouseError

    clickhouse.query("DROP DATABASE IF EXISTS h5_ch_broken")
    schema = {"database": SOURCE, "tables": [{"name": "t", "engine": "MergeTree", "engine_full": "MergeTree ORDER BY x",
                                              "columns": [{"name": "x", "type": "UInt64"}], "stream": "t00000"}]}
    files = {"schema": tmp_path / "schema.json", "t00000": tmp_path / "cut.native"}
    files["schema"].write_text(json.dumps(schema))
    files["t00000"].write_bytes(b"\x01\x05garbage")  # a Native stream cut short
    target = ch_db(clickhouse)
    with pytest.raises(ClickHouseError, match="Code: "):
        ClickHouseDumper(target, CANARY, tmp_path).restore(files, {}, Target(target, CANARY),
                                                           RestoreOptions(target_dbname="h5_ch_broken"))
    assert clickhouse.query("SELECT count() FROM system.databases WHERE name = 'h5_ch_broken'").strip() == "0"
