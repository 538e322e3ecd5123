"""Fencing an old primary and running the configured hooks (argv lists, never a shell)."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from engines.config import DatabaseConfig
from engines.dr.models import HookRun
from engines.dr.pgnode import connect, write_auto_conf
from engines.secrets import scrub

_TERMINATE = """
SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()
"""


def fence_sql(db: DatabaseConfig, timeout: float = 3.0) -> bool:
    """Make a reachable node read-only: ``default_transaction_read_only = on``, reload, end client sessions."""
    try:
        conn = connect(db, timeout)
    except Exception:
        return False
    try:
        conn.execute("ALTER SYSTEM SET default_transaction_read_only = on")
        conn.execute("SELECT pg_reload_conf()")
        conn.execute(_TERMINATE)
        return True
    except Exception:
        return False
    finally:
        conn.close()


def unfence_sql(db: DatabaseConfig) -> None:
    """Undo :func:`fence_sql` on a node that is now the primary (or about to rejoin as a standby)."""
    conn = connect(db)
    try:
        conn.execute("ALTER SYSTEM RESET default_transaction_read_only")
        conn.execute("SELECT pg_reload_conf()")
    finally:
        conn.close()


def fence_data_dir(data_dir: str | Path) -> bool:
    """On a node whose data directory this worker holds: a restart comes up in recovery and read-only.

    ``standby.signal`` with no ``primary_conninfo`` keeps it a standby of nobody until it rejoins.
    """
    path = Path(data_dir)
    if not (path / "PG_VERSION").exists():
        return False
    (path / "standby.signal").touch()
    write_auto_conf(path, {"default_transaction_read_only": "on", "primary_conninfo": None,
                           "primary_slot_name": None})
    return True


def run_hook(what: str, argv: list[str], env: dict[str, str], timeout: float) -> HookRun:
    """Run a configured command (no shell) with DBFLEET_DR_* variables; record argv, status, output tail."""
    start = time.monotonic()
    if not argv:
        return HookRun(what=what, argv=[], returncode=None, output="not configured")
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, shell=False,
                              env={**os.environ, **env}, stdin=subprocess.DEVNULL)
        code, out = proc.returncode, (proc.stdout + proc.stderr)[-500:]
    except FileNotFoundError:
        code, out = 127, f"{argv[0]}: not found"
    except subprocess.TimeoutExpired:
        code, out = None, f"timed out after {timeout:.0f}s"
    return HookRun(what=what, argv=[scrub(a) for a in argv], returncode=code, output=scrub(out.strip()),
                   seconds=round(time.monotonic() - start, 3))
