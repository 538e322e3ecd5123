"""Benchmark: dbfleet physical backup/restore and WAL push vs pg_basebackup -Ft and pgBackRest, same data, same run.

    .venv/bin/python ops/bench/pitr.py [--events 1000000] [--dir /tmp/h6-bench-pitr] [--segments 8]
    .venv/bin/python ops/bench/pitr.py --wal-only [--segments 8]    # just the WAL push comparison

Creates a PostgreSQL 15 cluster with initdb (as the `postgres` OS user when run as root),
loads the music database (Faker users, catalogue, play_events), then times:
  - dbfleet physical backup (pg_basebackup tar stream -> chunks, zstd 3, AES-256-GCM)
  - pg_basebackup -Ft to a local directory (no compression, no encryption)
  - pgBackRest full backup (compress-type=zst level 3, repo1-cipher-type=aes-256-cbc), if installed
  - restore of each into a new data directory (dbfleet: verified chunks, tar -x, pg_verifybackup)
  - WAL push of --segments segments, one process per segment as archive_command runs them:
    `dbfleet wal push` (the lean entry), the full CLI (`python -m workers.cli wal push`, what every
    push ran before the lean entry) and `pgbackrest archive-push`, interleaved segment by segment
Prints wall times, bytes, ratios and the command lines; asserts nothing about time.
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

from engines.backup.physical.backup import run_physical_backup  # noqa: E402
from engines.backup.physical.restore import extract, verify_manifest  # noqa: E402
from engines.backup.repository import Repository  # noqa: E402
from engines.config import DatabaseConfig  # noqa: E402
from engines.embedded.music import generate_music_database  # noqa: E402
from engines.embedded.redis import free_port  # noqa: E402
from engines.storage.filesystem import FilesystemStorage  # noqa: E402

PG15 = Path("/usr/lib/postgresql/15/bin")
PASSWORD = "bench-password"
USER = "postgres" if os.geteuid() == 0 else None
DBFLEET = str(Path(sys.executable).with_name("dbfleet"))


def timed(label: str, fn: Any) -> tuple[float, Any]:
    start = time.perf_counter()
    value = fn()
    wall = time.perf_counter() - start
    print(f"  {label:<52} {wall:8.1f} s", flush=True)
    return wall, value


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def as_user(args: list[str], **kw: Any) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(args, user=USER, check=True, capture_output=True, **kw)


def own(path: Path) -> None:
    if USER:
        shutil.chown(path, USER, USER)


def cluster(root: Path, port: int) -> Path:
    """initdb + start a PostgreSQL 15 cluster archiving with cp into root/walcopy."""
    data, walcopy = root / "pg15", root / "walcopy"
    if not (data / "PG_VERSION").exists():
        pw = root / "pw"
        pw.write_text(PASSWORD + "\n")
        own(pw)
        as_user([str(PG15 / "initdb"), "-D", str(data), "-U", "postgres", "--auth-host=scram-sha-256",
                 "--auth-local=trust", f"--pwfile={pw}"])
        walcopy.mkdir(exist_ok=True)
        own(walcopy)
        conf = {"listen_addresses": "127.0.0.1", "unix_socket_directories": str(root), "wal_level": "replica",
                "archive_mode": "on", "archive_command": f"cp %p {walcopy}/%f", "max_wal_size": "2GB"}
        with open(data / "postgresql.conf", "a") as fh:
            fh.writelines(f"{k} = '{v}'\n" for k, v in conf.items())
    as_user([str(PG15 / "pg_ctl"), "-D", str(data), "-w", "-o", f"-p {port}", "-l", str(root / "pg15.log"), "start"])
    return data


def prepare(port: int, events: int) -> None:
    kw = {"host": "127.0.0.1", "port": port, "user": "postgres", "password": PASSWORD}
    with psycopg.connect(dbname="postgres", autocommit=True, **kw) as admin:
        if admin.execute("SELECT 1 FROM pg_database WHERE datname = 'music'").fetchone():
            return
        admin.execute("CREATE DATABASE music")
    with psycopg.connect(dbname="music", autocommit=True, **kw) as conn:
        timed(f"generate music database ({events:,} play events)", lambda: generate_music_database(conn, events))


def pgbackrest_conf(root: Path, data: Path, port: int) -> Path:
    repo = root / "pgbackrest-repo"
    shutil.rmtree(repo, ignore_errors=True)  # a fresh repository each run: sizes and pushes comparable
    repo.mkdir()
    own(repo)
    conf = root / "pgbackrest.conf"
    conf.write_text(f"[global]\nrepo1-path={repo}\nrepo1-cipher-type=aes-256-cbc\nrepo1-cipher-pass=bench-cipher\n"
                    f"compress-type=zst\ncompress-level=3\nprocess-max=2\nlog-level-console=warn\n"
                    f"log-path={root}\nlock-path={root}\nspool-path={root}\narchive-check=n\nstart-fast=y\n"
                    f"[bench]\npg1-path={data}\npg1-port={port}\npg1-socket-path={root}\n")
    own(conf)
    return conf


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/h6-bench-pitr"))
    parser.add_argument("--segments", type=int, default=8)
    parser.add_argument("--wal-only", action="store_true", help="only the WAL push comparison")
    args = parser.parse_args()
    root = args.dir.resolve()
    root.mkdir(parents=True, exist_ok=True)
    own(root)
    port = free_port()
    data = cluster(root, port)
    try:
        run(root, data, port, args)
    finally:
        as_user([str(PG15 / "pg_ctl"), "-D", str(data), "-w", "-m", "fast", "stop"])


def run(root: Path, data: Path, port: int, args: argparse.Namespace) -> None:
    if args.wal_only:
        return wal_only(root, port, args.segments)
    prepare(port, args.events)
    print(f"cluster: {du(data) / 2**20:,.0f} MiB data directory; 2 cores shared with other work", flush=True)
    work = root / "work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    own(work)
    os.environ["H6_BENCH_PW"] = PASSWORD
    db = DatabaseConfig(id="bench", kind="postgresql", host="127.0.0.1", port=port, dbname="postgres",
                        user="postgres", password_env="H6_BENCH_PW")
    f: dict[str, float] = {}
    repo = Repository.init(FilesystemStorage(work / "dbfleet-repo"), "bench-key")
    f["dbfleet"], res = timed("dbfleet physical backup (zstd 3, AES-256-GCM)", lambda: run_physical_backup(repo, db))
    stored = du(work / "dbfleet-repo")
    env = {"PATH": os.environ["PATH"], "PGPASSWORD": PASSWORD}
    base_cmd = [str(PG15 / "pg_basebackup"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-Ft",
                "-X", "fetch", "-c", "fast", "-D", str(work / "pg_basebackup")]
    f["pg_basebackup"], _ = timed("pg_basebackup -Ft -X fetch -D dir (plain)", lambda: subprocess.run(
        base_cmd, env=env, check=True))
    plain = du(work / "pg_basebackup")
    manifest = next(m for m in [repo.load_manifest("bench", res["backup_id"])])
    restore_dir = work / "restore-dbfleet"
    restore_dir.mkdir(mode=0o700)
    f["dbfleet_restore"], _ = timed("dbfleet restore (verify chunks, tar -x, pg_verifybackup)", lambda: (
        extract(repo, manifest, restore_dir), verify_manifest(restore_dir, 15)))
    rest = pgbackrest_runs(root, data, port, work) if shutil.which("pgbackrest") else None
    pushes = wal_pushes(root, work, args.segments, rest is not None)
    report(f, stored, plain, res, rest, pushes, base_cmd)


def pgbackrest_runs(root: Path, data: Path, port: int, work: Path) -> dict[str, Any]:
    conf = pgbackrest_conf(root, data, port)
    pb = ["pgbackrest", f"--config={conf}", "--stanza=bench"]
    as_user([*pb, "stanza-create"])
    backup_wall, _ = timed("pgbackrest backup --type=full (zst 3, aes-256-cbc)",
                           lambda: as_user([*pb, "--type=full", "backup"]))
    size = du(root / "pgbackrest-repo" / "backup")
    target = work / "restore-pgbackrest"
    target.mkdir(mode=0o700)
    own(target)
    restore_wall, _ = timed("pgbackrest restore", lambda: as_user([*pb, f"--pg1-path={target}", "restore"]))
    return {"backup": backup_wall, "size": size, "restore": restore_wall, "cmd": pb, "conf": conf}


def wal_pushes(root: Path, work: Path, count: int, with_pgbackrest: bool) -> dict[str, Any]:
    """Push ``count`` archived segments one process each, as archive_command does: the lean entry, the full
    CLI and pgBackRest interleaved per segment (each into its own fresh repository), wall and CPU each."""
    segments = sorted(p for p in (root / "walcopy").iterdir() if len(p.name) == 24)[-count:]
    key = work / "repo.key"
    key.write_text("bench-key")
    cfgs = {}
    for name in ("lean", "full"):
        path = work / f"dbfleet-wal-{name}"
        shutil.rmtree(path, ignore_errors=True)
        Repository.init(FilesystemStorage(path), "bench-key")
        cfgs[name] = work / f"dbfleet-{name}.yaml"
        cfgs[name].write_text(f"storage:\n  repo:\n    type: filesystem\n    path: {path}\n    key_file: {key}\n"
                               f"databases:\n  bench:\n    kind: postgresql\n    host: 127.0.0.1\n"
                               f"fleet:\n  state_dir: {work / 'state'}\n")
    commands = {
        "lean": lambda s: [DBFLEET, "--config", str(cfgs["lean"]), "wal", "push", str(s), "--db", "bench"],
        "full": lambda s: [sys.executable, "-m", "workers.cli", "--config", str(cfgs["full"]), "wal", "push", str(s),
                           "--db", "bench"],
    }
    if with_pgbackrest:
        conf = root / "pgbackrest.conf"
        commands["pgbackrest"] = lambda s: ["pgbackrest", f"--config={conf}", "--stanza=bench", "archive-push",
                                            str(s)]
    times: dict[str, list[tuple[float, float]]] = {k: [] for k in commands}
    for seg in segments:
        for name, cmd in commands.items():
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            start = time.perf_counter()
            if name == "pgbackrest":
                as_user(cmd(seg))
            else:
                subprocess.run(cmd(seg), check=True, capture_output=True)
            wall = time.perf_counter() - start
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
            times[name].append((wall, cpu))
    times["lean+ahead"] = ahead_pushes(segments, work, key)
    commands["lean+ahead"] = lambda s: [DBFLEET, "--config", str(work / "dbfleet-ahead.yaml"), "wal", "push",
                                        f"pg_wal/{Path(s).name}", "--db", "bench"]
    out: dict[str, Any] = {"segments": len(segments), "times": times,
                           "commands": {k: " ".join(v(Path("SEGMENT"))) for k, v in commands.items()}}
    for name, rows in times.items():
        out[name] = sum(w for w, _ in rows)
        walls = sorted(w for w, _ in rows)
        print(f"  wal push {name:<11} x{len(rows)}: {out[name]:6.1f} s wall, per segment median "
              f"{walls[len(walls) // 2]:.2f} s (min {walls[0]:.2f}, max {walls[-1]:.2f}), CPU "
              f"{sum(c for _, c in rows) / len(rows):.2f} s each", flush=True)
    return out


def ahead_pushes(segments: list[Path], work: Path, key: Path) -> list[tuple[float, float]]:
    """The same segments as an archiver with a backlog sees them: all in pg_wal, all marked .ready, pushed one
    process each in order (each .ready turned .done after its push, as PostgreSQL does). Push-ahead lets the
    first process push the backlog; the later ones find their file in the ledger."""
    repo, pg_wal = work / "dbfleet-wal-ahead", work / "pg_wal"
    for path in (repo, pg_wal):
        shutil.rmtree(path, ignore_errors=True)
    Repository.init(FilesystemStorage(repo), "bench-key")
    cfg = work / "dbfleet-ahead.yaml"
    cfg.write_text(f"storage:\n  repo:\n    type: filesystem\n    path: {repo}\n    key_file: {key}\n"
                   f"databases:\n  bench:\n    kind: postgresql\n    host: 127.0.0.1\n")
    (pg_wal / "archive_status").mkdir(parents=True)
    for seg in segments:
        shutil.copyfile(seg, pg_wal / seg.name)
        (pg_wal / "archive_status" / f"{seg.name}.ready").touch()
    out = []
    for seg in segments:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        subprocess.run([DBFLEET, "--config", str(cfg), "wal", "push", f"pg_wal/{seg.name}", "--db", "bench"],
                       cwd=work, check=True, capture_output=True)
        wall = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        os.replace(pg_wal / "archive_status" / f"{seg.name}.ready", pg_wal / "archive_status" / f"{seg.name}.done")
        out.append((wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)))
    archived = len(list((repo / "wal" / "bench").iterdir()))
    assert archived == len(segments), f"push-ahead archived {archived} of {len(segments)}"
    return out


def wal_only(root: Path, port: int, count: int) -> None:
    """Enough archived segments for the push comparison, then only that."""
    kw: dict[str, Any] = {"host": "127.0.0.1", "port": port, "user": "postgres", "password": PASSWORD,
                          "dbname": "postgres"}
    have = [p for p in (root / "walcopy").iterdir() if len(p.name) == 24]
    with psycopg.connect(autocommit=True, **kw) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS bench_wal (id bigint, pad text)")
        for _ in range(max(0, count + 1 - len(have))):
            conn.execute("INSERT INTO bench_wal SELECT g, repeat('x', 200) FROM generate_series(1, 20000) g")
            conn.execute("SELECT pg_switch_wal()")
        conn.execute("CHECKPOINT")
    deadline = time.monotonic() + 60
    while len([p for p in (root / "walcopy").iterdir() if len(p.name) == 24]) < count and time.monotonic() < deadline:
        time.sleep(0.5)
    work = root / "work"
    work.mkdir(exist_ok=True)
    own(work)
    rest = None
    if shutil.which("pgbackrest"):
        data = root / "pg15"
        conf = pgbackrest_conf(root, data, port)
        as_user(["pgbackrest", f"--config={conf}", "--stanza=bench", "stanza-create"])
        rest = True
    pushes = wal_pushes(root, work, count, rest is not None)
    report_pushes(pushes)


def report_pushes(pushes: dict[str, Any]) -> None:
    n = pushes["segments"]
    print()
    for name, cmd in pushes["commands"].items():
        print(f"  {name:<10}: {cmd}")
    line = f"WAL push: dbfleet (lean) {pushes['lean'] / n:.2f} s per segment"
    line += f", with a backlog (push-ahead) {pushes['lean+ahead'] / n:.2f} s"
    line += f", full CLI (before) {pushes['full'] / n:.2f} s, lean/full {pushes['lean'] / pushes['full']:.2f}"
    if "pgbackrest" in pushes:
        line += (f"; pgBackRest archive-push {pushes['pgbackrest'] / n:.2f} s, dbfleet lean/pgBackRest "
                 f"{pushes['lean'] / pushes['pgbackrest']:.2f}")
    print(line)
    cpu = {k: sum(c for _, c in v) / len(v) for k, v in pushes["times"].items()}
    print("CPU per segment (user+sys; the machine is shared, wall is noisy): " +
          ", ".join(f"{k} {v:.2f} s" for k, v in cpu.items()))


def report(f: dict[str, float], stored: int, plain: int, res: dict[str, Any], rest: dict[str, Any] | None,
           pushes: dict[str, Any], base_cmd: list[str]) -> None:
    mib = 2**20
    print()
    print("commands:")
    print("  dbfleet: run_physical_backup -> pg_basebackup --format=tar --pgdata=- --wal-method=fetch "
          "--checkpoint=fast | chunker/zstd 3/AES-GCM")
    print(f"  plain:   {' '.join(base_cmd)}")
    print(f"backup: dbfleet {f['dbfleet']:.1f} s vs pg_basebackup -Ft {f['pg_basebackup']:.1f} s  ratio "
          f"{f['dbfleet'] / f['pg_basebackup']:.2f}; stored {stored / mib:,.0f} MiB vs plain tar {plain / mib:,.0f} MiB "
          f"(stream {res['stats']['total_bytes'] / mib:,.0f} MiB)")
    if rest:
        print(f"  pgbackrest: {' '.join(rest['cmd'])} backup|restore  (config {rest['conf']})")
        print(f"backup vs pgBackRest: {f['dbfleet']:.1f} s vs {rest['backup']:.1f} s ratio "
              f"{f['dbfleet'] / rest['backup']:.2f} (target <= 1.2); repository {stored / mib:,.0f} MiB vs "
              f"{rest['size'] / mib:,.0f} MiB ratio {stored / rest['size']:.2f} (target <= 1.1)")
        print(f"restore vs pgBackRest: {f['dbfleet_restore']:.1f} s vs {rest['restore']:.1f} s ratio "
              f"{f['dbfleet_restore'] / rest['restore']:.2f} (target <= 1.0)")
    else:
        print("pgBackRest: not installed (apt-get install pgbackrest) - skipped")
    report_pushes(pushes)


if __name__ == "__main__":
    main()
