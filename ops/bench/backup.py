"""Benchmark: dbfleet backup/restore vs pg_dump -Fc, pg_restore -j 2 and restic, same data, same run.

    .venv/bin/python ops/bench/backup.py [--events 10000000] [--dir /tmp/dbfleet-bench] [--restore-runs 2]
                                         [--restore-only]

--restore-runs N repeats the restore pair (pg_restore -j 2, then dbfleet restore, same backup)
N times and prints each ratio; --restore-only skips the incremental backups and restic.

Runs on the demo's music database (Faker users with PII, a catalogue, play_events) in an
embedded PostgreSQL 18, generated once per --events and kept in --dir. Prints wall times,
bytes and ratios; asserts nothing about time (shared machines are noisy).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import psycopg  # noqa: E402

from engines.backup.dumpers.base import RestoreOptions, Target  # noqa: E402
from engines.backup.dumpers.pg_parallel import POST_DATA_SETTINGS  # noqa: E402
from engines.backup.engine import restore_backup, run_backup  # noqa: E402
from engines.backup.repository import Repository  # noqa: E402
from engines.backup.tools import pg_tool  # noqa: E402
from engines.config import DatabaseConfig  # noqa: E402
from engines.embedded import EmbeddedPostgres  # noqa: E402
from engines.embedded.music import generate_music_database  # noqa: E402
from engines.storage.filesystem import FilesystemStorage  # noqa: E402

PASSWORD = "bench-password"


def timed(label: str, fn: Any) -> tuple[float, Any]:
    start = time.perf_counter()
    value = fn()
    wall = time.perf_counter() - start
    print(f"  {label:<44} {wall:8.1f} s", flush=True)
    return wall, value


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def prepare(pg: EmbeddedPostgres, events: int) -> None:
    kw = {"host": "127.0.0.1", "port": pg.port, "user": "postgres", "password": PASSWORD}
    marker = f"bench events={events}"
    with psycopg.connect(dbname="postgres", autocommit=True, **kw) as admin:
        row = admin.execute("SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname='music'"
                            ).fetchone()
        if row and row[0] == marker:
            return
        admin.execute("DROP DATABASE IF EXISTS music WITH (FORCE)")
        admin.execute("CREATE DATABASE music")
        admin.execute(f"COMMENT ON DATABASE music IS '{marker}'")  # an int, not input
    with psycopg.connect(dbname="music", autocommit=True, **kw) as conn:
        timed(f"generate music database ({events:,} play events)", lambda: generate_music_database(conn, events))


def sql(pg: EmbeddedPostgres, dbname: str, query: str, params: tuple[Any, ...] = ()) -> Any:
    with psycopg.connect(host="127.0.0.1", port=pg.port, user="postgres", password=PASSWORD, dbname=dbname,
                         autocommit=True) as conn:
        cur = conn.execute(query, params or None)
        return cur.fetchone() if cur.description else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/dbfleet-bench"))
    parser.add_argument("--restore-runs", type=int, default=2)
    parser.add_argument("--restore-only", action="store_true")
    parser.add_argument("--pg-restore-tuned", action="store_true",
                        help="also time pg_restore -j 2 with dbfleet's post-data session settings in PGOPTIONS")
    args = parser.parse_args()
    root = args.dir.resolve()
    root.mkdir(parents=True, exist_ok=True)
    os.environ["DBFLEET_BENCH_PW"] = PASSWORD
    pg = EmbeddedPostgres(root / "pg", PASSWORD).start()
    try:
        run(pg, root, args.events, args.restore_runs, args.restore_only, args.pg_restore_tuned)
    finally:
        pg.stop()


def run(pg: EmbeddedPostgres, root: Path, events: int, restore_runs: int = 2, restore_only: bool = False,
        tuned: bool = False) -> None:
    prepare(pg, events)
    size = sql(pg, "music", "SELECT pg_database_size('music')")[0]
    print(f"music database: {size / 2**30:.2f} GiB on disk ({events:,} play events); 2 cores shared", flush=True)
    env = {**os.environ, "PGPASSWORD": PASSWORD}
    conn = ["-h", "127.0.0.1", "-p", str(pg.port), "-U", "postgres"]
    pg_dump, _ = pg_tool("pg_dump", 18)
    pg_restore, _ = pg_tool("pg_restore", 18)
    work = root / "work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    db = DatabaseConfig(id="music", kind="postgresql", host="127.0.0.1", port=pg.port, dbname="music",
                        user="postgres", password_env="DBFLEET_BENCH_PW")
    f = {}
    f["pg_dump"], _ = timed("pg_dump -Fc > file", lambda: subprocess.run(
        [str(pg_dump), "-Fc", *conn, "-d", "music", "-f", str(work / "music.dump")], env=env, check=True))
    dump_bytes = (work / "music.dump").stat().st_size
    repo = Repository.init(FilesystemStorage(work / "repo"), "bench-key")
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    f["backup"], first = timed("dbfleet backup (full, zstd 3, AES-GCM)", lambda: run_backup(repo, db, workdir=work))
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    stored1 = du(work / "repo")
    pairs: list[tuple[float, float]] = []
    tuned_walls: list[float] = []
    tuned_options = " ".join(f"-c {k}={v}" for k, v in POST_DATA_SETTINGS.items())
    for i in range(max(1, restore_runs)):
        for name in ("restore_pg", "restore_dbfleet"):
            sql(pg, "postgres", f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")  # constant names
        sql(pg, "postgres", "CHECKPOINT")
        sql(pg, "postgres", "CREATE DATABASE restore_pg")
        wall_pg, _ = timed(f"pg_restore -j 2 (from the -Fc file) #{i + 1}", lambda: subprocess.run(
            [str(pg_restore), "-j", "2", *conn, "-d", "restore_pg", str(work / "music.dump")], env=env, check=True))
        if tuned:
            sql(pg, "postgres", "DROP DATABASE restore_pg WITH (FORCE)")
            sql(pg, "postgres", "CHECKPOINT")
            sql(pg, "postgres", "CREATE DATABASE restore_pg")
            wall_tuned, _ = timed(f"pg_restore -j 2, PGOPTIONS as dbfleet's #{i + 1}", lambda: subprocess.run(
                [str(pg_restore), "-j", "2", *conn, "-d", "restore_pg", str(work / "music.dump")],
                env={**env, "PGOPTIONS": tuned_options}, check=True))
            tuned_walls.append(wall_tuned)
        sql(pg, "postgres", "CHECKPOINT")
        wall_db, detail = timed(f"dbfleet restore (streamed, TOC-scheduled) #{i + 1}", lambda: restore_backup(
            repo, db, Target(db, PASSWORD), options=RestoreOptions(target_dbname="restore_dbfleet", jobs=2),
            spool_dir=work / "spool"))
        print(f"    ratio {wall_db / wall_pg:.2f}; dbfleet phases: " + ", ".join(
            f"{k} {detail[k]}" for k in ("schema_seconds", "load_seconds", "index_seconds", "final_seconds")
            if k in detail) + f"; mode {detail.get('mode')}/{detail.get('scheduling', 'sequential')}", flush=True)
        pairs.append((wall_pg, wall_db))
    f["pg_restore"], f["restore"] = min(p[0] for p in pairs), min(p[1] for p in pairs)
    for name in ("restore_pg", "restore_dbfleet"):
        sql(pg, "postgres", f"DROP DATABASE {name}")
    if restore_only:
        print()
        for i, (wall_pg, wall_db) in enumerate(pairs, 1):
            print(f"restore #{i}: dbfleet {wall_db:.1f} s vs pg_restore -j 2 {wall_pg:.1f} s  ratio {wall_db / wall_pg:.2f}")
        print(f"restore (best of {len(pairs)} each): ratio {f['restore'] / f['pg_restore']:.2f} (target <= 0.9)")
        for i, wall_tuned in enumerate(tuned_walls, 1):
            print(f"restore #{i} vs pg_restore -j 2 with PGOPTIONS='{tuned_options}': {wall_tuned:.1f} s, "
                  f"ratio {pairs[i - 1][1] / wall_tuned:.2f}")
        return
    restic = restic_runs(pg_dump, conn, env, work) if shutil.which("restic") else None
    # 1% of play_events changed: a contiguous range (recent rows, the common case) ...
    n = sql(pg, "music", "SELECT max(id) FROM play_events")[0]
    sql(pg, "music", "UPDATE play_events SET ms_played = ms_played + 1 WHERE id > %s", (int(n * 0.99),))
    f["backup2"], second = timed("dbfleet backup after 1% contiguous update", lambda: run_backup(repo, db, workdir=work))
    restic2 = restic_again(pg_dump, conn, env, work) if restic else None
    # ... and 1% scattered over the whole table (the worst case for any chunker on a logical dump)
    sql(pg, "music", "UPDATE play_events SET ms_played = ms_played + 1 WHERE id % 100 = 7")
    f["backup3"], third = timed("dbfleet backup after 1% scattered update", lambda: run_backup(repo, db, workdir=work))
    print()
    print(f"full backup:  dbfleet {f['backup']:.1f} s vs pg_dump -Fc {f['pg_dump']:.1f} s  ratio "
          f"{f['backup'] / f['pg_dump']:.2f} (target <= 0.5)")
    print(f"              dbfleet stored {stored1 / 2**20:,.0f} MiB vs pg_dump -Fc {dump_bytes / 2**20:,.0f} MiB  "
          f"ratio {stored1 / dump_bytes:.2f}; dump stream {first['stats']['total_bytes'] / 2**20:,.0f} MiB")
    for i, (wall_pg, wall_db) in enumerate(pairs, 1):
        print(f"restore #{i}:   dbfleet {wall_db:.1f} s vs pg_restore -j 2 {wall_pg:.1f} s  ratio {wall_db / wall_pg:.2f}")
    print(f"restore:      best of {len(pairs)}: dbfleet {f['restore']:.1f} s vs pg_restore -j 2 {f['pg_restore']:.1f} s  "
          f"ratio {f['restore'] / f['pg_restore']:.2f} (target <= 0.9)")
    for label, res, wall in (("contiguous", second, f["backup2"]), ("scattered", third, f["backup3"])):
        share = res["stats"]["stored_bytes"] / first["stats"]["stored_bytes"]
        print(f"second backup ({label} 1%): new {res['stats']['new_bytes'] / 2**20:,.1f} MiB stored "
              f"{res['stats']['stored_bytes'] / 2**20:,.1f} MiB = {share:.1%} "
              f"of the first's stored bytes (target <= 10%), {wall:.1f} s")
    print(f"peak RSS of this process: {rss1 / 1024:,.0f} MiB (before the backup: {rss0 / 1024:,.0f} MiB)")
    if restic:
        print(f"restic backup --stdin of pg_dump -Fc -Z0: {restic[0]:.1f} s, repo {restic[1] / 2**20:,.0f} MiB; "
              f"dbfleet/restic wall {f['backup'] / restic[0]:.2f}, stored {stored1 / restic[1]:.2f}")
        if restic2:
            print(f"restic second backup (contiguous 1%): {restic2[0]:.1f} s, +{restic2[1] / 2**20:,.1f} MiB")
    else:
        print("restic: not installed (apt-get install restic) - skipped")


def restic_runs(pg_dump: Path, conn: list[str], env: dict[str, str], work: Path) -> tuple[float, int]:
    renv = {**env, "RESTIC_PASSWORD": "bench", "RESTIC_REPOSITORY": str(work / "restic")}
    subprocess.run(["restic", "init", "--quiet"], env=renv, check=True)
    wall, _ = timed("restic backup --stdin (pg_dump -Fc -Z0 |)", lambda: _restic_backup(pg_dump, conn, renv))
    return wall, du(work / "restic")


def restic_again(pg_dump: Path, conn: list[str], env: dict[str, str], work: Path) -> tuple[float, int]:
    renv = {**env, "RESTIC_PASSWORD": "bench", "RESTIC_REPOSITORY": str(work / "restic")}
    before = du(work / "restic")
    wall, _ = timed("restic backup --stdin after 1% contiguous", lambda: _restic_backup(pg_dump, conn, renv))
    return wall, du(work / "restic") - before


def _restic_backup(pg_dump: Path, conn: list[str], renv: dict[str, str]) -> None:
    dump = subprocess.Popen([str(pg_dump), "-Fc", "-Z0", *conn, "-d", "music"], env=renv, stdout=subprocess.PIPE)
    subprocess.run(["restic", "backup", "--quiet", "--stdin", "--stdin-filename", "music.dump"], env=renv,
                   stdin=dump.stdout, check=True)
    dump.wait()


if __name__ == "__main__":
    main()
