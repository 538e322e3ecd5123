"""``restore --in-place``: recover over the cluster's own data directory, never while it runs, losing nothing.

The old data directory is renamed aside (``<dir>.before-restore-<UTC time>``), not deleted: its
unarchived WAL, its logs and its configuration stay there until the operator removes it. A failure
before the recovered server starts puts it back.
"""

from __future__ import annotations

import os
import pwd
import shutil
from datetime import datetime, timezone
from pathlib import Path

from engines.config import DatabaseConfig
from engines.connectors.postgres import PostgresConnector
from engines.errors import DbfleetError, RestoreRefused

ASIDE = ".before-restore-"


def _live_pid(pid_file: Path) -> int | None:
    """The postmaster's pid when ``postmaster.pid`` names a live process, else None."""
    try:
        pid = int(pid_file.read_text().split("\n", 1)[0].strip())
    except (OSError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:  # alive, owned by another account
        return pid
    return pid


def refuse_if_running(data_dir: Path, db: DatabaseConfig) -> None:
    """Refuse when the cluster runs: a live postmaster.pid, or the database answers a connection."""
    if not data_dir.is_dir():
        raise RestoreRefused(f"{data_dir} (databases.{db.id}.backup.data_dir) is not a directory; --in-place "
                             "restores over the cluster's existing data directory")
    if os.geteuid() not in (0, data_dir.stat().st_uid):
        raise RestoreRefused(f"{data_dir} belongs to {owner(data_dir)}: run the in-place restore as that account "
                             "(or as root), as the cluster's own files are moved and rewritten")
    pid = _live_pid(data_dir / "postmaster.pid")
    if pid is not None:
        raise RestoreRefused(f"{db.id} is running (postmaster.pid in {data_dir} names live process {pid}): stop it "
                             f"first (pg_ctl -D {data_dir} stop -m fast); --in-place never restores over a running "
                             "cluster. If no server runs, that pid belongs to another process: remove the stale "
                             "postmaster.pid")
    try:
        with PostgresConnector(db, db.password()) as conn:
            conn.ping()
    except DbfleetError:
        return  # nothing answers: stopped
    raise RestoreRefused(f"{db.id} answers connections on {db.host}:{db.port} although {data_dir} has no live "
                         "postmaster.pid: is backup.data_dir the directory of this server? Stop the server first")


def owner(data_dir: Path) -> str:
    """The OS account that owns the cluster's data directory (the recovered server runs as it)."""
    return pwd.getpwuid(data_dir.stat().st_uid).pw_name


def move_aside(data_dir: Path) -> Path:
    """Rename ``data_dir`` aside and create it again, empty, with the same owner and mode 0700."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    aside = data_dir.with_name(f"{data_dir.name}{ASIDE}{stamp}")
    if aside.exists():
        raise RestoreRefused(f"{aside} already exists; wait a second and retry")
    st = data_dir.stat()
    os.rename(data_dir, aside)
    data_dir.mkdir(mode=0o700)
    if os.geteuid() == 0:
        os.chown(data_dir, st.st_uid, st.st_gid)
    return aside


def put_back(data_dir: Path, aside: Path) -> None:
    """Undo ``move_aside`` after a failure before the recovered server started."""
    shutil.rmtree(data_dir, ignore_errors=True)
    os.rename(aside, data_dir)


def push_histories(archive: object, data_dir: Path) -> list[str]:
    """Archive the timeline history files of the promoted cluster (its archiver does too; pushing is
    idempotent), so that a later PITR can follow the new timeline at once."""
    pushed = []
    for path in sorted((data_dir / "pg_wal").glob("*.history")):
        try:
            result = archive.push(path)  # type: ignore[attr-defined]
        except OSError:
            continue  # not readable by this account: the server's archive_command pushes it
        pushed.append(f"{result.name}: {result.status}")
    return pushed
