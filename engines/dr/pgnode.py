"""PostgreSQL nodes of a DR group: connections, server binaries, pg_ctl, passfiles and standby settings."""

from __future__ import annotations

import glob
import os
import re
import subprocess
import time
from pathlib import Path
from typing import Any

from engines.backup.tools import run_tool, tool_version
from engines.config import DatabaseConfig
from engines.connectors.postgres import PostgresConnector
from engines.errors import ConnectionFailed, ToolFailed, ToolMissingError
from engines.secrets import scrub

_MAJOR = re.compile(r"\)\s*(\d+)")
STANDBY_SETTINGS = ("primary_conninfo", "primary_slot_name", "recovery_target_timeline")


def connect(db: DatabaseConfig, timeout: float | None = None) -> Any:
    """An autocommit psycopg connection to ``db`` (``timeout`` caps the connect timeout)."""
    if timeout is not None:
        db = db.model_copy(update={"connect_timeout": min(db.connect_timeout, timeout)})
    connector = PostgresConnector(db, password=db.password())
    return connector.conn


def query(db: DatabaseConfig, sql: Any, params: Any = None, timeout: float | None = None) -> list[tuple[Any, ...]]:
    """Run one statement on ``db`` and return its rows (empty when it returns none)."""
    conn = connect(db, timeout)
    try:
        cur = conn.execute(sql, params)
        return list(cur.fetchall()) if cur.description else []
    finally:
        conn.close()


def reachable(db: DatabaseConfig, timeout: float = 3.0) -> tuple[bool, str | None]:
    """(True, None) when ``db`` answers ``SELECT 1``, else (False, the scrubbed reason)."""
    try:
        query(db, "SELECT 1", timeout=timeout)
        return True, None
    except ConnectionFailed as exc:
        return False, str(exc)
    except Exception as exc:  # a server that accepts and then dies mid-query
        return False, type(exc).__name__


def data_major(data_dir: str | Path) -> int:
    """The PostgreSQL major version of a data directory (its PG_VERSION file)."""
    return int((Path(data_dir) / "PG_VERSION").read_text().strip().split(".")[0])


def server_bin(tool: str, major: int) -> Path:
    """A server-side binary (pg_ctl, pg_rewind, initdb) of exactly ``major``: they must match the data."""
    candidates = [Path(p) for p in sorted(glob.glob(f"/usr/lib/postgresql/{major}/bin/{tool}"))]
    try:
        from engines.embedded.postgres import bin_dir

        candidates.append(bin_dir() / tool)
    except ImportError:
        pass
    for path in candidates:
        if path.exists():
            match = _MAJOR.search(tool_version(path))
            if match and int(match.group(1)) == major:
                return path
    raise ToolMissingError(f"no {tool} for PostgreSQL {major}: install postgresql-{major} on this worker")


def as_owner(args: list[str], path: str | Path) -> list[str]:
    """Server binaries refuse root: when root, run them as the owner of ``path`` (runuser, no shell)."""
    if os.geteuid() != 0:
        return args
    owner = Path(path).stat().st_uid
    if owner == 0:
        return args
    import pwd

    return ["runuser", "-u", pwd.getpwuid(owner).pw_name, "--", *args]


def chown_like(path: Path, like: str | Path) -> None:
    """When root, give ``path`` to the owner of ``like`` (a passfile the server process must read)."""
    if os.geteuid() == 0:
        st = Path(like).stat()
        os.chown(path, st.st_uid, st.st_gid)


def pg_ctl(data_dir: str | Path, action: str, *extra: str, timeout: float = 120,
           env: dict[str, str] | None = None) -> str:
    """Run ``pg_ctl <action>`` on a data directory with the binaries of its version (``env``: for the server,
    e.g. what a restore_command needs)."""
    binary = server_bin("pg_ctl", data_major(data_dir))
    args = [str(binary), action, "-D", str(data_dir), *extra]
    if action in ("start", "restart"):
        args += ["-w", "-t", str(int(timeout)), "-l", str(Path(data_dir) / "dbfleet-postgres.log")]
    elif action == "stop":
        args += ["-w", "-t", str(int(timeout))]
    try:
        return run_tool(as_owner(args, data_dir), env=env, what=f"pg_ctl {action}", timeout=timeout + 30)
    except ToolFailed as exc:  # "Examine the log output": the log's last lines say why
        log = Path(data_dir) / "dbfleet-postgres.log"
        tail = log.read_text(errors="replace").strip().splitlines()[-4:] if log.exists() else []
        raise ToolFailed(f"{exc}; {log}: {scrub(' | '.join(tail))}" if tail else str(exc)) from None


def running(data_dir: str | Path) -> bool:
    """True when a postmaster runs on ``data_dir`` (pg_ctl status)."""
    binary = server_bin("pg_ctl", data_major(data_dir))
    return subprocess.run(as_owner([str(binary), "status", "-D", str(data_dir)], data_dir), capture_output=True,
                          timeout=30).returncode == 0


def write_passfile(path: Path, user: str, password: str | None) -> Path | None:
    """A 0600 libpq passfile for the replication role's replication connections (None without a password)."""
    if password is None:
        return None
    escaped = [v.replace("\\", "\\\\").replace(":", "\\:") for v in (user, password)]
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        # any upstream (a failover repoints the standby), but only replication connections as this role
        fh.write(f"*:*:replication:{escaped[0]}:{escaped[1]}\n")
    os.replace(tmp, path)
    return path


def primary_conninfo(upstream: DatabaseConfig, user: str, passfile: Path | None, application_name: str) -> str:
    """``primary_conninfo`` text: host, port, user, the passfile path - never a password."""
    from psycopg.conninfo import make_conninfo

    kw: dict[str, Any] = {"host": upstream.host, "port": upstream.port, "user": user,
                          "application_name": application_name, "connect_timeout": 5}
    if passfile is not None:
        kw["passfile"] = str(passfile)
    return make_conninfo("", **kw)


def write_auto_conf(data_dir: str | Path, settings: dict[str, str | None]) -> None:
    """Set (or with None remove) settings in ``postgresql.auto.conf`` of a stopped cluster."""
    path = Path(data_dir) / "postgresql.auto.conf"
    lines = path.read_text().splitlines() if path.exists() else []
    keep = [ln for ln in lines if ln.split("=", 1)[0].strip() not in settings]
    for name, value in settings.items():
        if value is not None:
            keep.append(f"{name} = '{value.replace(chr(39), chr(39) * 2)}'")
    path.write_text("\n".join(keep) + "\n")


def wait_until(predicate: Any, timeout: float, interval: float = 0.1) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return True
        except Exception:  # a node coming up refuses connections for a while
            pass
        time.sleep(interval)
    return False


def lsn_int(lsn: str | None) -> int | None:
    """``'16/B374D848'`` -> a byte position (None stays None)."""
    if not lsn:
        return None
    high, _, low = lsn.partition("/")
    return (int(high, 16) << 32) + int(low, 16)


def controldata(data_dir: str | Path) -> dict[str, str]:
    """``pg_controldata`` of a data directory as a dict (cluster state, checkpoint location, timeline)."""
    binary = server_bin("pg_controldata", data_major(data_dir))
    out = run_tool([str(binary), "-D", str(data_dir)], what="pg_controldata", timeout=60,
                   env={"LC_ALL": "C"})
    return {k.strip(): v.strip() for k, _, v in (ln.partition(":") for ln in out.splitlines()) if v}


def shut_down_cleanly(data_dir: str | Path) -> bool:
    """True when the cluster's last shutdown was clean (pg_rewind needs that)."""
    return controldata(data_dir).get("Database cluster state") in ("shut down", "shut down in recovery")
