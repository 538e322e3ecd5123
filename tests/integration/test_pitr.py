"""Physical backups, WAL archiving and point-in-time recovery on real PostgreSQL 15 clusters.

The test creates its own cluster with initdb (wal_level=replica, archive_mode=on, archive_command
= the real `dbfleet wal push` of this venv), writes marker rows continuously with commit
timestamps (track_commit_timestamp), takes a base backup mid-write, keeps writing, and restores.
Every dbfleet command runs as a separate process, as the cluster's OS user (PostgreSQL refuses
root), exactly as an operator would run it. As root, that user cannot enter /root, where this
venv's interpreter lives: the command is then this venv's `workers.entry:main` (the `dbfleet`
entry point, same installed packages) started by the system's Python 3.11 from a wrapper on PATH.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from engines.backup.repository import Repository
from engines.backup.wal import names
from engines.backup.wal.archive import WalArchive
from engines.embedded.redis import free_port
from engines.storage.filesystem import FilesystemStorage
from tests.servers import CANARY

pytestmark = pytest.mark.integration
PG15 = Path("/usr/lib/postgresql/15/bin")
VENV_DBFLEET = str(Path(sys.executable).with_name("dbfleet"))
DB_ID = "h6_src"
KEY = "h6-pitr-repository-key"
RUN_AS = "postgres" if os.geteuid() == 0 else None


@dataclass
class Env:
    """One test world: a directory owned by the cluster's OS user, a config, a cluster, every output seen."""

    root: Path
    port: int
    bindir: Path = PG15
    db_id: str = DB_ID
    outputs: list[str] = field(default_factory=list)
    backup_done_at: datetime | None = None
    killed: dict[str, Any] = field(default_factory=dict)

    @property
    def dbfleet(self) -> str:
        return str(self.root / "bin" / "dbfleet") if RUN_AS else VENV_DBFLEET

    @property
    def config(self) -> Path:
        return self.root / "dbfleet.yaml"

    @property
    def data(self) -> Path:
        return self.root / "src"

    def env(self) -> dict[str, str]:
        return {"PATH": f"{self.root / 'bin'}:{os.environ['PATH']}", "HOME": str(self.root), "LANG": "C.UTF-8",
                "COLUMNS": "200"}

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """`dbfleet --config ... <args>` as the cluster's OS user; output kept for the canary check."""
        proc = subprocess.run([self.dbfleet, "--config", str(self.config), *args], user=RUN_AS, env=self.env(),
                              capture_output=True, text=True, timeout=300)
        self.outputs += [proc.stdout, proc.stderr]
        if check and proc.returncode != 0:
            raise AssertionError(f"dbfleet {' '.join(args)} exited {proc.returncode}: {proc.stderr[-3000:]}")
        return proc

    def pg(self, *args: str, data: Path | None = None) -> None:
        subprocess.run([str(self.bindir / "pg_ctl"), "-D", str(data or self.data), "-w", "-t", "60", *args], user=RUN_AS,
                       check=True, capture_output=True)

    def sql(self, query: str, port: int | None = None) -> list[tuple[Any, ...]]:
        with psycopg.connect(host="127.0.0.1", port=port or self.port, user="postgres", password=CANARY,
                             dbname="postgres", autocommit=True) as conn:
            cur = conn.execute(query)
            return cur.fetchall() if cur.description else []

    def markers(self, port: int | None = None) -> dict[int, datetime]:
        rows = self.sql("SELECT n, pg_xact_commit_timestamp(xmin) FROM markers", port)
        return {n: ts for n, ts in rows}

    def repo(self) -> Repository:
        return Repository.open(FilesystemStorage(self.root / "repo"), KEY)


def _own(path: Path) -> None:
    if RUN_AS:
        shutil.chown(path, RUN_AS, RUN_AS)


def _write_private(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(0o600)
    _own(path)


def _config(env: Env) -> str:
    return json.dumps({
        "fleet": {"state_dir": str(env.root / "state")},
        "storage": {"repo": {"type": "filesystem", "path": str(env.root / "repo"),
                             "key_file": str(env.root / "repo.key")}},
        "database_scripts": {"backup": {"storage": "repo", "restore_dirs": [str(env.root)]}},
        "databases": {env.db_id: {"kind": "postgresql", "host": "127.0.0.1", "port": env.port, "dbname": "postgres",
                              "user": "postgres", "password_file": str(env.root / "pw"),
                              "backup": {"method": "physical"}}},
    })


def _wrapper(env: Env) -> None:
    """As root: a `dbfleet` the cluster's OS user can run (see the module docstring)."""
    import sysconfig

    (env.root / "bin").mkdir()
    site = sysconfig.get_paths()["purelib"]
    script = env.root / "bin" / "dbfleet"
    script.write_text(f"#!/bin/sh\nexec /usr/bin/python3 -c 'import site, sys; site.addsitedir(\"{site}\"); "
                      f"sys.argv[0] = \"dbfleet\"; from workers.entry import main; main()' \"$@\"\n")
    script.chmod(0o755)


def _init_cluster(env: Env, **extra: Any) -> None:
    pw = env.root / "initpw"
    _write_private(pw, CANARY + "\n")
    subprocess.run([str(env.bindir / "initdb"), "-D", str(env.data), "-U", "postgres", "--auth-host=scram-sha-256",
                    "--auth-local=trust", f"--pwfile={pw}", "--no-instructions"], user=RUN_AS, check=True,
                   capture_output=True)
    pw.unlink()
    archive = f"{env.dbfleet} --config {env.config} wal push %p --db {env.db_id}"
    conf = {"port": env.port, "listen_addresses": "127.0.0.1", "unix_socket_directories": str(env.root),
            "wal_level": "replica", "archive_mode": "on", "archive_command": archive, "fsync": "off",
            "track_commit_timestamp": "on", "max_wal_senders": 4, **extra}
    with open(env.data / "postgresql.conf", "a") as fh:
        fh.writelines(f"{k} = '{v}'\n" for k, v in conf.items())


class Writer(threading.Thread):
    """Inserts one marker per transaction until stopped; switches WAL segments every ``switch_every`` s."""

    def __init__(self, env: Env, start_at: int, switch_every: float | None = None) -> None:
        super().__init__(daemon=True)
        self.env, self.n, self.switch_every = env, start_at, switch_every
        self.stop = threading.Event()

    def run(self) -> None:
        last = time.monotonic()
        with psycopg.connect(host="127.0.0.1", port=self.env.port, user="postgres", password=CANARY,
                             dbname="postgres", autocommit=True) as conn:
            while not self.stop.is_set():
                self.n += 1
                conn.execute("INSERT INTO markers (n) VALUES (%s)", (self.n,))
                if self.switch_every and time.monotonic() - last > self.switch_every:
                    conn.execute("SELECT pg_switch_wal()")
                    last = time.monotonic()
                time.sleep(0.005)


def _archive_everything(env: Env) -> str:
    """Switch to a new segment and wait until the archiver has pushed the one it closed."""
    closed = env.sql("SELECT pg_walfile_name(pg_switch_wal())")[0][0]
    deadline = time.monotonic() + 300  # one process per segment on a shared 2-core machine
    while time.monotonic() < deadline:
        last, failed = env.sql("SELECT last_archived_wal, failed_count FROM pg_stat_archiver")[0]
        if last and last >= closed:
            return str(closed)
        time.sleep(0.1)
    raise AssertionError(f"the archiver did not push {closed} (failed_count {failed}); see {env.root}/src.log")


def _kill_backup_midway(env: Env) -> dict[str, Any]:
    """Start a physical backup, SIGKILL it (and its pg_basebackup) once its first chunk is stored."""
    proc = subprocess.Popen([env.dbfleet, "--config", str(env.config), "backups", "run", DB_ID, "--local"],
                            user=RUN_AS, env=env.env(), start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    data = env.root / "repo" / "data"
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline and not (data.is_dir() and any(data.rglob("*"))):
        time.sleep(0.02)
    running = proc.poll() is None
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    manifests = [p.name for p in (env.root / "repo" / "backups").rglob("*") if p.is_file()]
    return {"killed_while_running": running, "manifests": manifests, "chunks": sum(1 for _ in data.rglob("*"))}


def _require(bindir: Path) -> None:
    missing = [str(bindir / "initdb")] if not (bindir / "initdb").exists() else []
    if RUN_AS and not Path("/usr/bin/python3").exists():
        missing.append("/usr/bin/python3 (to run dbfleet as the cluster's OS user)")
    if missing:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI must not skip: missing {', '.join(missing)}")
        pytest.skip(f"missing {', '.join(missing)}")


def _new_world(bindir: Path, db_id: str, **conf: Any) -> Env:
    _require(bindir)
    root = Path(tempfile.mkdtemp(prefix="h6_pitr_", dir="/tmp"))
    env = Env(root, free_port(), bindir, db_id)
    _own(root)
    for path, text in ((root / "repo.key", KEY), (root / "pw", CANARY)):
        _write_private(path, text)
    _write_private(env.config, _config(env))
    if RUN_AS:
        _wrapper(env)
    _init_cluster(env, **conf)
    env.pg("-l", str(root / "src.log"), "start")
    return env


@pytest.fixture(scope="module")
def world() -> Iterator[Env]:
    env = _new_world(PG15, DB_ID)
    root = env.root
    try:
        env.sql("CREATE TABLE markers (n int PRIMARY KEY)")
        writer = Writer(env, 0)
        writer.start()
        time.sleep(0.3)
        env.killed = _kill_backup_midway(env)  # backup.method: physical in the config
        env.run("backups", "run", DB_ID, "--physical", "--local")  # mid-write
        env.backup_done_at = env.sql("SELECT now()")[0][0]
        writer.stop.set()
        writer.join()
        after = Writer(env, writer.n, switch_every=1.0)  # keep writing across a few segments
        after.start()
        time.sleep(2.2)
        after.stop.set()
        after.join()
        _archive_everything(env)
        yield env
    finally:
        env.pg("-m", "immediate", "stop")
        shutil.rmtree(root, ignore_errors=True)


def _restore(env: Env, name: str, *target: str, check: bool = True) -> tuple[subprocess.CompletedProcess[str], int]:
    port = free_port()
    proc = env.run("backups", "restore", env.db_id, *target, "--data-dir", str(env.root / name), "--port", str(port),
                   "--local", check=check)
    return proc, port


def test_a_backup_killed_midway_leaves_no_visible_backup_and_the_next_one_succeeds(world: Env) -> None:
    assert world.killed["killed_while_running"], "the backup finished before it could be killed"
    assert world.killed["chunks"] > 0  # it had started writing
    assert world.killed["manifests"] == []
    listing = world.run("backups", "list", DB_ID)
    assert listing.stdout.count(DB_ID) >= 1
    assert len([p for p in (world.root / "repo" / "backups").rglob("*") if p.is_file()]) == 1


def _time_target(world: Env, committed: dict[int, datetime]) -> datetime:
    """Halfway between two markers committed well after the base backup."""
    assert world.backup_done_at is not None
    later = sorted(ts for ts in committed.values() if ts > world.backup_done_at + timedelta(seconds=0.3))
    assert len(later) > 50, "the writer should have committed markers well after the base backup"
    i = len(later) // 2
    return later[i] + (later[i + 1] - later[i]) / 2


@pytest.fixture(scope="module")
def restored(world: Env) -> Iterator[dict[str, Any]]:
    """Two restores run side by side (each is mostly process start-ups): to a time, and --latest."""
    committed = world.markers()
    target = _time_target(world, committed)
    runs = {"r_time": ("--pitr", target.isoformat()), "r_latest": ("--latest",)}
    started = {}
    for name, args in runs.items():
        port = free_port()
        cmd = [world.dbfleet, "--config", str(world.config), "backups", "restore", DB_ID, *args,
               "--data-dir", str(world.root / name), "--port", str(port), "--local"]
        started[name] = (subprocess.Popen(cmd, user=RUN_AS, env=world.env(), stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE, text=True), port)
    out: dict[str, Any] = {"committed": committed, "target": target}
    for name, (proc, port) in started.items():
        stdout, stderr = proc.communicate(timeout=600)
        world.outputs += [stdout, stderr]
        out[name] = {"rc": proc.returncode, "stdout": stdout, "stderr": stderr, "port": port}
    yield out
    for name in runs:
        if (world.root / name / "postmaster.pid").exists():
            world.pg("-m", "fast", "stop", data=world.root / name)


def test_restore_to_a_time_recovers_exactly_the_markers_committed_before_it(world: Env, restored: dict[str, Any]) -> None:
    run = restored["r_time"]
    assert run["rc"] == 0, run["stderr"][-3000:]
    expected = {n for n, ts in restored["committed"].items() if ts <= restored["target"]}
    assert set(world.markers(run["port"])) == expected
    assert len(expected) < len(restored["committed"])  # the target really cut the history short
    assert "last_transaction_at" in run["stdout"]  # the reached point is reported
    assert "recovery stopping before commit" in (world.root / "r_time" / "dbfleet-recovery.log").read_text()


def test_latest_recovers_every_archived_marker(world: Env, restored: dict[str, Any]) -> None:
    run = restored["r_latest"]
    assert run["rc"] == 0, run["stderr"][-3000:]
    assert set(world.markers(run["port"])) == set(restored["committed"])
    assert world.sql("SELECT pg_is_in_recovery()", run["port"])[0][0] is False


def test_wal_push_is_idempotent_and_refuses_a_different_file_under_the_same_name(world: Env) -> None:
    name = sorted(n for n in WalArchive(world.repo(), DB_ID).names() if names.is_segment(n))[-1]
    spool = world.root / "spool"
    spool.mkdir(exist_ok=True)
    _own(spool)
    world.run("wal", "fetch", "--db", DB_ID, name, str(spool / name))
    again = world.run("wal", "push", "--db", DB_ID, str(spool / name))
    assert "already archived" in again.stderr
    data = bytearray((spool / name).read_bytes())
    data[100] ^= 0xFF
    (spool / name).write_bytes(bytes(data))
    refused = world.run("wal", "push", "--db", DB_ID, str(spool / name), check=False)
    assert refused.returncode != 0
    assert "different file is already archived" in refused.stderr


def test_restoring_a_base_backup_without_a_data_dir_is_refused_with_the_way_to_do_it(world: Env) -> None:
    proc = world.run("backups", "restore", DB_ID, "--local", check=False)
    assert proc.returncode != 0
    assert "needs --data-dir" in proc.stderr


def test_wal_fetch_of_a_missing_file_exits_1(world: Env) -> None:
    proc = world.run("wal", "fetch", "--db", DB_ID, "00000001000000FF000000FE", str(world.root / "nope"),
                     check=False)
    assert proc.returncode == 1
    assert not (world.root / "nope").exists()


def _segment_after_backup(world: Env) -> str:
    archive = WalArchive(world.repo(), DB_ID)
    segments = sorted(n for n in archive.names() if names.is_segment(n))
    return segments[len(segments) - 2]  # inside the run the recoveries above needed


def test_a_missing_segment_is_found_by_verify_and_refuses_a_pitr_past_it(world: Env) -> None:
    name = _segment_after_backup(world)
    index = world.root / "repo" / "wal" / DB_ID / name
    saved = index.read_bytes()
    index.unlink()
    try:
        verify = world.run("backups", "verify", DB_ID, "--local", check=False)
        assert verify.returncode == 1
        assert "WAL gap" in verify.stdout and name in verify.stdout
        proc, _port = _restore(world, "r_gap", "--latest", check=False)
        assert proc.returncode != 0
        assert "WAL gap" in proc.stderr and name in proc.stderr
        assert not (world.root / "r_gap").exists()  # nothing restored, no server started
    finally:
        index.write_bytes(saved)
    assert world.run("backups", "verify", DB_ID, "--local").returncode == 0


def test_a_corrupted_wal_chunk_is_detected_by_verify_and_fetch(world: Env) -> None:
    repo = world.repo()
    name = _segment_after_backup(world)
    record = WalArchive(repo, DB_ID).load(name)
    assert record is not None
    chunk = world.root / "repo" / repo.chunk_key(record["chunks"][0][0])
    saved = chunk.read_bytes()
    damaged = bytearray(saved)
    damaged[len(damaged) // 2] ^= 0x10
    chunk.write_bytes(bytes(damaged))
    try:
        verify = world.run("backups", "verify", DB_ID, "--read-data", "--local", check=False)
        assert verify.returncode == 1
        assert name in verify.stdout and "authentication failed" in verify.stdout
        fetch = world.run("wal", "fetch", "--db", DB_ID, name, str(world.root / "damaged"), check=False)
        assert fetch.returncode == 126  # above 125: PostgreSQL aborts recovery instead of ending it early
        assert not (world.root / "damaged").exists()
    finally:
        chunk.write_bytes(saved)


def test_the_canary_password_appears_in_no_output_log_or_history(world: Env) -> None:
    status = world.run("wal", "status", "--db", DB_ID)
    assert "newest segment" in status.stdout and "continuity from each base backup" in status.stdout
    seen = "\n".join(world.outputs)
    assert "base backup" in seen or "pg_basebackup" in seen  # the outputs were captured
    assert CANARY not in seen
    for directory in ("state", "repo"):
        for path in (world.root / directory).rglob("*"):
            if path.is_file():
                assert CANARY.encode() not in path.read_bytes(), path
    for log in [world.root / "src.log", *world.root.glob("r_*/dbfleet-recovery.log")]:
        if log.exists():
            assert CANARY not in log.read_text(errors="replace"), log


def _embedded_bin() -> Path:
    try:
        from engines.embedded.postgres import bin_dir

        return bin_dir()
    except ImportError:
        return Path("/nonexistent/embedded-postgres")


def test_postgresql_18_incremental_base_backup_is_combined_on_restore() -> None:
    env = _new_world(_embedded_bin(), "h6_src18", summarize_wal="on")
    try:
        env.sql("CREATE TABLE markers (n int PRIMARY KEY)")
        env.sql("INSERT INTO markers SELECT generate_series(1, 100)")
        env.run("backups", "run", env.db_id, "--physical", "--local")
        env.sql("INSERT INTO markers SELECT generate_series(101, 200)")
        env.run("backups", "run", env.db_id, "--incremental", "--local")
        env.sql("INSERT INTO markers SELECT generate_series(201, 300)")
        _archive_everything(env)
        repo = env.repo()
        manifests = [repo.load_manifest(d, b) for d, b in repo.backup_ids(env.db_id)]
        assert [m["options"]["backup_type"] for m in manifests] == ["full", "incremental"]
        assert manifests[1]["dump"]["extra"]["incremental_of"] == manifests[0]["backup_id"]
        assert manifests[1]["stats"]["total_bytes"] < manifests[0]["stats"]["total_bytes"]
        proc, port = _restore(env, "r18", "--latest")
        try:
            assert manifests[1]["backup_id"] in proc.stdout
            assert set(env.markers(port)) == set(range(1, 301))
        finally:
            env.pg("-m", "fast", "stop", data=env.root / "r18")
        assert CANARY not in "\n".join(env.outputs)
    finally:
        env.pg("-m", "immediate", "stop")
        shutil.rmtree(env.root, ignore_errors=True)
