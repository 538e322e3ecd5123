"""Benchmark: `dbfleet tune --apply` on the music database with a realistic read workload run by pgbench.

    .venv/bin/python ops/bench/tuning.py [--events 300000] [--transactions 300] [--verify plan|execute]
                                         [--partition]

Creates a PostgreSQL 15 cluster with initdb (pg_stat_statements preloaded, HypoPG) on a free loopback
port, fills the music database (engines/embedded/music.py) WITHOUT its secondary indexes, runs the
workload (pgbench custom scripts), lets the tuner analyse and apply, runs the workload again. Then it
looks for the smallest subset of the created indexes that reaches the same time (dropping them one
by one) and compares with the music schema's hand-written indexes. With ``--partition`` it also converts
play_events to monthly partitions online (checkpointed batches, mirroring trigger, swap) and compares with
the offline lower bound: one ``INSERT ... SELECT`` into the same partitioned layout, no writers allowed.
Prints times and ratios; asserts nothing about time (shared machines are noisy).
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import psycopg  # noqa: E402
from psycopg import sql  # noqa: E402

from engines.config import DatabaseConfig  # noqa: E402
from engines.embedded.music import INDEXES, generate_music_database  # noqa: E402
from engines.tuning import analyze_and_apply  # noqa: E402
from engines.tuning.base import TuningSettings  # noqa: E402

BIN = Path("/usr/lib/postgresql/15/bin")
SCRIPTS = {  # pgbench scripts: what the demo app asks (values drawn per transaction)
    "recent_plays": "\\set uid random(1, {users})\nSELECT track_id, played_at FROM play_events WHERE user_id = :uid"
                    " ORDER BY played_at DESC LIMIT 20;\n",
    "track_plays": "\\set tid random(1, {tracks})\nSELECT count(*) FROM play_events WHERE track_id = :tid;\n",
    "album_tracks": "\\set aid random(1, {albums})\nSELECT id, title FROM tracks WHERE album_id = :aid ORDER BY id;\n",
    "artist_albums": "\\set rid random(1, {artists})\nSELECT id, title FROM albums WHERE artist_id = :rid;\n",
    "user_playlists": "\\set uid random(1, {users})\nSELECT id, name FROM playlists WHERE user_id = :uid;\n",
}


def as_postgres(args: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


def start_cluster(base: Path) -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    if os.geteuid() == 0:
        shutil.chown(base, "postgres")
    subprocess.run(as_postgres([str(BIN / "initdb"), "-D", str(base / "data"), "-U", "postgres", "-A", "trust"]),
                   check=True, capture_output=True)
    opts = f"-h 127.0.0.1 -p {port} -k {base} -c shared_preload_libraries=pg_stat_statements -c fsync=off"
    subprocess.run(as_postgres([str(BIN / "pg_ctl"), "-D", str(base / "data"), "-w", "-l", str(base / "log"),
                                "-o", opts, "start"]), check=True, capture_output=True)
    return port


def run_workload(port: int, scripts: dict[str, Path], transactions: int) -> float:
    """Wall time of every script run ``transactions`` times by pgbench (2 clients)."""
    args = [str(BIN / "pgbench"), "-n", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-c", "2",
            "-t", str(transactions)]
    for path in scripts.values():
        args += ["-f", str(path)]
    start = time.perf_counter()
    subprocess.run([*args, "music"], check=True, capture_output=True)
    return time.perf_counter() - start


def secondary_indexes(conn: psycopg.Connection) -> list[str]:
    rows = conn.execute("SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_namespace n"
                        " ON n.oid = c.relnamespace WHERE n.nspname = 'public' AND NOT i.indisunique").fetchall()
    return sorted(r[0] for r in rows)


def minimal_set(conn: psycopg.Connection, port: int, scripts: dict[str, Path], created: list[str],
                target: float, transactions: int) -> list[str]:
    """Drop each created index in turn; keep it dropped when the workload stays within 10 % of ``target``."""
    kept = list(created)
    for name in created:
        row = conn.execute("SELECT pg_get_indexdef(%s::regclass)", (name,)).fetchone()
        ddl = str(row[0]) if row else ""  # the server's own definition, to rebuild it
        conn.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(name)))
        if run_workload(port, scripts, transactions) <= target * 1.1:
            kept.remove(name)
        else:
            conn.execute(ddl)
    return kept


def prepare(conn: psycopg.Connection, base: Path, events: int) -> dict[str, Path]:
    """The music database without its secondary indexes, and the pgbench scripts sized to it."""
    conn.execute("CREATE EXTENSION pg_stat_statements; CREATE EXTENSION hypopg")
    t0 = time.perf_counter()
    counts = generate_music_database(conn, events=events)
    print(f"music database: {counts} in {time.perf_counter() - t0:.0f} s")
    for name in secondary_indexes(conn):
        conn.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(name)))
    scale = {"users": counts["users"], "tracks": counts["tracks"], "albums": counts["albums"],
             "artists": counts["artists"]}
    scripts = {}
    for name, body in SCRIPTS.items():
        scripts[name] = base / f"{name}.sql"
        scripts[name].write_text(body.format(**scale))
    return scripts


def partition_bench(conn: psycopg.Connection, settings: TuningSettings) -> None:
    """Online conversion of play_events vs the offline lower bound: the same partitioned layout (partitions,
    primary key, indexes, foreign keys: engines/tuning/pg_partition_ddl.create_copy) filled by one
    INSERT ... SELECT with no writers to capture, no checkpoints and no swap."""
    from engines.tuning.base import PartitionAdvice
    from engines.tuning.pg_partition import convert
    from engines.tuning.pg_partition_ddl import Layout, create_copy

    found = conn.execute("SELECT count(*) FROM play_events").fetchone()
    rows = int(found[0]) if found else 0
    layout = Layout.of("public", "play_events", "played_at", "month", "id")
    create_copy(conn, layout)
    t0 = time.perf_counter()
    conn.execute(sql.SQL("INSERT INTO {} SELECT * FROM play_events").format(layout.ident("new")))
    offline = time.perf_counter() - t0
    conn.execute(sql.SQL("DROP TABLE {}").format(layout.ident("new")))
    advice = PartitionAdvice("public", "play_events", "played_at", "month", 0, rows, [], 0.0, [], "")
    t0 = time.perf_counter()
    change = convert(conn, advice, settings, "music")
    online = time.perf_counter() - t0
    e = change.evidence
    print(f"partition play_events ({rows} rows, by month, PK + 2 indexes + 2 foreign keys): online conversion "
          f"{online:.2f} s ({change.status}; copy {e.get('copy_seconds')} s in {e.get('batches')} batches of "
          f"{settings.partition_batch_rows}, verify + swap {e.get('swap_seconds')} s, exclusive lock held "
          f"{e.get('locked_ms')} ms) vs offline INSERT ... SELECT into the "
          f"same layout {offline:.2f} s -> ratio {online / offline:.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--transactions", type=int, default=300)
    parser.add_argument("--verify", choices=["plan", "execute"], default="plan",
                        help="execute: timed read-only runs of sampled parameters decide keep/rollback")
    parser.add_argument("--partition", action="store_true", help="also time the online partition conversion")
    parser.add_argument("--batch-rows", type=int, default=10_000, help="--partition: rows per checkpointed batch")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="h7_bench_tuning_"))
    port = start_cluster(base)
    try:
        with psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres", autocommit=True) as c:
            c.execute("CREATE DATABASE music")
        conn = psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname="music", autocommit=True)
        scripts = prepare(conn, base, args.events)
        conn.execute("SELECT pg_stat_statements_reset()")
        before = run_workload(port, scripts, args.transactions)
        print(f"workload without secondary indexes: {before:.2f} s ({len(SCRIPTS)} scripts x {args.transactions})")
        db = DatabaseConfig(id="music", kind="postgresql", host="127.0.0.1", port=port, dbname="music", user="postgres")
        t0 = time.perf_counter()
        report = analyze_and_apply(db, TuningSettings(only=("indexes",), verify=args.verify))
        tune_time = time.perf_counter() - t0
        created = [c.target["index"] for c in report.changes if c.status == "kept"]
        print(f"tune --apply: {tune_time:.1f} s; {len(report.indexes)} advised, kept {created}, "
              f"rolled back {[c.target['index'] for c in report.changes if c.status == 'rolled_back']}")
        after = run_workload(port, scripts, args.transactions)
        print(f"workload after tune --apply: {after:.2f} s  -> speedup {before / after:.1f}x")
        minimal = minimal_set(conn, port, scripts, created, after, args.transactions)
        print(f"minimal subset reaching the same time (+10%): {len(minimal)} of {len(created)} indexes {minimal}")
        for name in secondary_indexes(conn):
            conn.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(name)))
        conn.execute(INDEXES)
        hand = run_workload(port, scripts, args.transactions)
        print(f"workload with the music schema's 4 hand-written indexes: {hand:.2f} s -> speedup {before / hand:.1f}x; "
              f"dbfleet's set / hand-written time ratio {after / hand:.2f}")
        if args.partition:
            partition_bench(conn, TuningSettings(partition_batch_rows=args.batch_rows))
        conn.close()
    finally:
        subprocess.run(as_postgres([str(BIN / "pg_ctl"), "-D", str(base / "data"), "-m", "immediate", "stop"]),
                       capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
