"""Point-in-time restore into a new data directory: base backup -> recovery settings -> recovery -> report."""

from __future__ import annotations

import os
import pwd
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from engines.backup import tools
from engines.backup.locks import SHARED, RepoLock
from engines.backup.physical import inplace
from engines.backup.physical.backup import physical_backups
from engines.backup.physical.target import RecoveryTarget
from engines.backup.physical.walplan import choose_base, plan_wal
from engines.backup.pipeline import read_stream
from engines.backup.repository import Repository
from engines.config import DatabaseConfig
from engines.connectors.postgres import PostgresConnector
from engines.errors import DbfleetError, RestoreRefused, ToolFailed
from engines.secrets import scrub

LOG_NAME = "dbfleet-recovery.log"
_RECOVERY_SETTINGS = re.compile(r"^\s*(recovery_target\w*|restore_command)\s*=")
_TARGETS = re.compile(r"^\s*recovery_target\w*\s*=")
_REACHED = re.compile(r"(recovery stopping .*|last completed transaction was at log time .*|"
                      r"archive recovery complete|FATAL: .*|redo done at .*)$", re.M)


def fetch_command(database_id: str, storage: str | None) -> str:
    """The restore_command that fetches from this repository (config and keys come from the environment)."""
    exe = shutil.which("dbfleet") or str(Path(sys.executable).with_name("dbfleet"))
    config = os.environ.get("DBFLEET_CONFIG")
    parts = [exe] + (["--config", config] if config else []) + ["wal", "fetch", "--db", database_id]
    parts += ["--storage", storage] if storage else []
    return " ".join(shlex.quote(p) for p in parts) + " %f %p"


def extract(repo: Repository, manifest: dict[str, Any], data_dir: Path, progress: Any = None) -> None:
    """Unpack the ``base`` stream (every chunk authenticated, the stream's sha256 checked) into ``data_dir``."""
    from engines.backup.engine import _ticker

    stream = next(s for s in manifest["streams"] if s["name"] == "base")
    tick = _ticker(progress, int(stream["size"]))
    proc = subprocess.Popen(["tar", "-x", "-f", "-", "-C", str(data_dir)], stdin=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    assert proc.stdin is not None and proc.stderr is not None
    try:
        read_stream(repo, stream, proc.stdin, progress=tick)  # type: ignore[arg-type]
    finally:
        proc.stdin.close()
        err = proc.stderr.read().decode(errors="replace")
        rc = proc.wait()
    if rc != 0:
        raise ToolFailed(f"tar -x exited with status {rc}: {scrub(err.strip()[-800:])}")


def chain(backups: list[dict[str, Any]], base: dict[str, Any]) -> list[dict[str, Any]]:
    """``base`` preceded by the backups it is incremental to, full backup first."""
    by_id = {m["backup_id"]: m for m in backups}
    out = [base]
    while parent := out[0]["dump"]["extra"].get("incremental_of"):
        if parent not in by_id:
            raise RestoreRefused(f"incremental base backup {out[0]['backup_id']} needs {parent}, which is gone")
        out.insert(0, by_id[parent])
    return out


def materialize(repo: Repository, backups: list[dict[str, Any]], data_dir: Path, major: int,
                progress: Any = None) -> None:
    """Extract one full backup, or a full + incremental chain combined with ``pg_combinebackup`` (17+)."""
    if len(backups) == 1:
        extract(repo, backups[0], data_dir, progress)
        return
    tool, _version = tools.pg_tool("pg_combinebackup", major)
    with tempfile.TemporaryDirectory(prefix=f".{data_dir.name}-chain-", dir=data_dir.parent) as tmp:
        parts = []
        for i, manifest in enumerate(backups):
            part = Path(tmp) / f"{i:03d}-{manifest['backup_id']}"
            part.mkdir(mode=0o700)
            extract(repo, manifest, part, progress)
            parts.append(str(part))
        data_dir.rmdir()
        tools.run_tool([str(tool), "-o", str(data_dir), *parts], what="pg_combinebackup", timeout=6 * 3600)


def verify_manifest(data_dir: Path, major: int) -> str:
    """``pg_verifybackup`` against the restored backup_manifest (files, sizes, CRC32C, WAL)."""
    tool, _version = tools.pg_tool("pg_verifybackup", major)
    return tools.run_tool([str(tool), "--quiet", str(data_dir)], what="pg_verifybackup", timeout=3600) or "ok"


def configure(data_dir: Path, target: RecoveryTarget, port: int, restore_command: str, *,
              timeline: int | None = None, in_place: bool = False) -> None:
    """recovery.signal plus restore_command, the target, the timeline to follow and promote; a copy (not
    ``in_place``) runs on a private port without archiving, the cluster itself keeps its own settings."""
    settings = {"restore_command": restore_command, **target.settings(), "recovery_target_action": "promote"}
    if timeline is not None:  # the newest timeline descending from the base backup, not just the newest one
        settings["recovery_target_timeline"] = str(timeline)
    if not in_place:  # the copy must never archive into the source's WAL archive
        settings |= {"port": str(port), "listen_addresses": "127.0.0.1", "archive_mode": "off"}
    if target.kind not in ("latest", "immediate"):
        settings["recovery_target_inclusive"] = "on"
    comment_out(data_dir, _RECOVERY_SETTINGS, "replaced by dbfleet backups restore")  # an earlier restore's
    lines = ["", "# written by dbfleet backups restore (point-in-time recovery)"]
    lines += [f"{k} = '{v.replace(chr(39), chr(39) * 2)}'" for k, v in settings.items()]
    with open(data_dir / "postgresql.auto.conf", "a") as fh:
        fh.write("\n".join(lines) + "\n")
    (data_dir / "recovery.signal").touch()
    for stale in ("postmaster.pid", "postmaster.opts", "standby.signal"):
        (data_dir / stale).unlink(missing_ok=True)


def comment_out(data_dir: Path, keys: re.Pattern[str], why: str) -> None:
    """Comment out the postgresql.auto.conf lines setting ``keys`` (as pgBackRest does): a target left by an
    earlier recovery would stop the next one (a later restore, a standby built from a backup) at that point."""
    path = data_dir / "postgresql.auto.conf"
    if not path.exists():
        return
    lines = path.read_text().splitlines()
    kept = [f"# {line}  # {why}" if keys.match(line) else line for line in lines]
    if kept != lines:
        path.write_text("\n".join(kept) + "\n")  # same inode: owner and mode stay


def _server_bin(major: int) -> Path:
    tool, version = tools.pg_tool("pg_ctl", major)
    if tools._major(version) != major:
        raise RestoreRefused(f"PostgreSQL {major} server binaries are needed to recover this backup; found {version}")
    return tool.parent


def _run_as(data_dir: Path, os_user: str | None) -> str | None:
    """As root, PostgreSQL runs as ``os_user`` (default postgres); the data directory is handed to it."""
    if os.geteuid() != 0:
        return None
    user = os_user or "postgres"
    entry = pwd.getpwnam(user)
    for root, dirs, files in os.walk(data_dir):
        for name in dirs + files:
            os.lchown(os.path.join(root, name), entry.pw_uid, entry.pw_gid)
    os.chown(data_dir, entry.pw_uid, entry.pw_gid)
    return user


def start_and_wait(bindir: Path, data_dir: Path, server: DatabaseConfig, *, env: dict[str, str],
                   user: str | None, timeout: float) -> dict[str, Any]:
    """Start the server, wait until recovery has ended (promoted), report the point reached."""
    log_path = data_dir / LOG_NAME
    proc = subprocess.run([str(bindir / "pg_ctl"), "-D", str(data_dir), "-l", str(log_path), "-w", "-t",
                           str(int(timeout)), "start"], user=user, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RestoreRefused(f"recovery failed: {_log_summary(log_path) or scrub(proc.stderr.strip()[-800:])}")
    deadline = time.monotonic() + timeout
    row = _promoted(server, server.password())
    while row is None:
        if not (data_dir / "postmaster.pid").exists() or time.monotonic() > deadline:
            raise RestoreRefused(f"recovery did not finish: {_log_summary(log_path) or 'server stopped'}")
        time.sleep(0.3)
        row = _promoted(server, server.password())
    last_tx, lsn, tli = row
    return {"last_transaction_at": last_tx.isoformat() if last_tx else None, "lsn": lsn, "timeline": tli,
            "recovery_log": _log_summary(log_path)}


def stop_server(data_dir: Path) -> None:
    """Stop the server running on ``data_dir`` (a drill's scratch copy), as the account that owns it."""
    major = int((data_dir / "PG_VERSION").read_text().strip())
    user = inplace.owner(data_dir) if os.geteuid() == 0 else None
    subprocess.run([str(_server_bin(major) / "pg_ctl"), "-D", str(data_dir), "-w", "-t", "120", "-m", "fast", "stop"],
                   user=user, capture_output=True, check=False)


def _promoted(db: DatabaseConfig, password: str | None) -> tuple[Any, ...] | None:
    """(last replayed commit time, WAL position, timeline) once recovery has ended, else None."""
    try:
        with PostgresConnector(db, password) as c:
            if c.conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]:
                return None
            return tuple(c.conn.execute("SELECT pg_last_xact_replay_timestamp(), pg_current_wal_lsn()::text, "
                                        "(SELECT timeline_id FROM pg_control_checkpoint())").fetchone())
    except DbfleetError:
        return None


def _log_summary(path: Path) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return scrub("; ".join(m.group(1).strip() for m in _REACHED.finditer(text))[-1500:])


def _histories(repo: Repository, database_id: str) -> dict[int, list[Any]]:
    from engines.backup.wal.archive import WalArchive
    from engines.backup.wal.timelines import read_histories

    archive = WalArchive(repo, database_id)
    return read_histories(archive, archive.names())


def pitr_restore(repo: Repository, db: DatabaseConfig, target: RecoveryTarget, data_dir: Path, port: int, *,
                 backup_id: str | None = None, storage: str | None = None, env: dict[str, str] | None = None,
                 os_user: str | None = None, timeout: float = 3600.0, progress: Any = None,
                 in_place: bool = False, timeline: int | None = None) -> dict[str, Any]:
    """Restore the newest base backup before ``target`` into ``data_dir`` and recover to ``target`` (on
    ``timeline``; default: the newest timeline descending from the base backup).

    Refuses before writing anything when the archive cannot take recovery to the target (a gap,
    a target after the newest archived WAL, missing chunks). ``data_dir`` must not exist or be empty;
    on any failure before the server starts it is removed again. ``in_place``: ``data_dir`` is the
    cluster's own directory; refused while it runs, moved aside (engines/backup/physical/inplace.py)."""
    t0 = time.monotonic()
    if not in_place and data_dir.exists() and any(data_dir.iterdir()):
        raise RestoreRefused(f"{data_dir} is not empty; restore into a new directory, or over the cluster's own "
                             "directory with --in-place")
    if in_place:
        inplace.refuse_if_running(data_dir, db)
        os_user = inplace.owner(data_dir) if os.geteuid() == 0 else None
    with RepoLock(repo.storage, SHARED, f"pitr restore {db.id}", wait=600):
        backups = physical_backups(repo, db.id)
        base = choose_base(backups, target, backup_id, _histories(repo, db.id), timeline)
        plan = plan_wal(repo, db.id, base, target, timeline)
        major = int(base["dump"]["extra"]["server_major"])
        bindir = _server_bin(major)
        aside = inplace.move_aside(data_dir) if in_place else None
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            os.chmod(data_dir, 0o700)
            materialize(repo, chain(backups, base), data_dir, major, progress)
            verified = verify_manifest(data_dir, major)
            configure(data_dir, target, port, fetch_command(db.id, storage), timeline=plan["target_timeline"],
                      in_place=in_place)
            user = _run_as(data_dir, os_user)
        except BaseException:
            if aside is not None:
                inplace.put_back(data_dir, aside)
            else:
                shutil.rmtree(data_dir, ignore_errors=True)
            raise
        # the maintenance database: the configured one may not exist at the recovered point
        server = db.model_copy(update={"dbname": "postgres"}) if in_place else \
            db.model_copy(update={"host": "127.0.0.1", "port": port, "dsn": None, "dbname": "postgres"})
        reached = start_and_wait(bindir, data_dir, server, env=env or dict(os.environ), user=user, timeout=timeout)
        comment_out(data_dir, _TARGETS, "recovery done by dbfleet backups restore")  # promoted: targets are spent
    out = {"database_id": db.id, "backup_id": base["backup_id"], "target": target.describe(),
           "data_dir": str(data_dir), "port": server.port, "wal": plan, "pg_verifybackup": verified.strip(),
           "reached": reached, "duration_seconds": round(time.monotonic() - t0, 3)}
    if aside is not None:
        from engines.backup.wal.archive import WalArchive

        out["moved_aside"] = str(aside)
        out["histories_pushed"] = inplace.push_histories(WalArchive(repo, db.id), data_dir)
    return out
