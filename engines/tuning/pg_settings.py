"""PostgreSQL settings advice from pgtune's published formulas, sized to the host and the workload type.

The host is the database server's, not the worker's: it comes from ``performance_tuning.host``
(memory_bytes, cpus, storage) or, for a database on this machine's loopback, from psutil. Unknown
host: no settings advice, and the report says why.
"""

from __future__ import annotations

import math
from typing import Any

from psycopg import sql

from engines.tuning.base import Change, SettingAdvice

KB, MB, GB = 1024, 1024**2, 1024**3
PROFILES = {"oltp": "oltp", "analytical_queries": "dw", "mixed": "mixed"}
RANDOM_PAGE_COST = {"ssd": 1.1, "san": 1.1, "hdd": 4.0}
IO_CONCURRENCY = {"ssd": 200, "san": 300, "hdd": 2}
WAL_SIZES = {"oltp": (2 * GB, 8 * GB), "dw": (4 * GB, 16 * GB), "mixed": (1 * GB, 4 * GB)}
UNIT_BYTES = {"B": 1, "kB": KB, "8kB": 8 * KB, "MB": MB, "16MB": 16 * MB, "GB": GB}
LOCAL_HOSTS = frozenset({"127.0.0.1", "::1", "localhost", "", None})


def host_facts(db_host: str | None, configured: dict[str, Any]) -> dict[str, Any] | None:
    """Memory, CPUs and storage of the database host: configured, or measured when it is this machine."""
    facts = dict(configured)
    if "memory_bytes" not in facts or "cpus" not in facts:
        if db_host not in LOCAL_HOSTS and not str(db_host).startswith("/"):
            return None
        import psutil

        facts.setdefault("memory_bytes", int(psutil.virtual_memory().total))
        facts.setdefault("cpus", int(psutil.cpu_count() or 1))
    facts.setdefault("storage", "ssd")
    return facts


def pgtune(memory: int, cpus: int, connections: int, optimize_for: str, storage: str) -> dict[str, tuple[float, str]]:
    """Advised values (bytes for sizes) with the reason, by pgtune's formulas."""
    profile = PROFILES.get(optimize_for, "mixed")
    shared = memory // 4
    gather = max(1, math.ceil(cpus / 2))
    if profile == "oltp":
        gather = min(gather, 4)
    work_div = 1 if profile == "oltp" else 2
    work_mem = max(64 * KB, (memory - shared) // ((connections + cpus) * 3) // gather // work_div)
    maint = min(2 * GB, memory // (8 if profile == "dw" else 16))
    wal_min, wal_max = WAL_SIZES[profile]
    out: dict[str, tuple[float, str]] = {
        "shared_buffers": (shared, "25% of RAM"),
        "effective_cache_size": (memory * 3 // 4, "75% of RAM (what the OS cache can hold)"),
        "maintenance_work_mem": (maint, f"RAM/{8 if profile == 'dw' else 16}, at most 2 GB"),
        "work_mem": (work_mem, f"(RAM - shared_buffers) / ((max_connections {connections} + cpus) x 3) / "
                               f"parallel workers per gather {gather}" + (" / 2" if work_div == 2 else "")),
        "wal_buffers": (min(16 * MB, max(32 * KB, shared * 3 // 100)), "3% of shared_buffers, at most 16 MB"),
        "min_wal_size": (wal_min, f"{optimize_for} workload"),
        "max_wal_size": (wal_max, f"{optimize_for} workload"),
        "checkpoint_completion_target": (0.9, "spread checkpoint writes"),
        "default_statistics_target": (500 if profile == "dw" else 100, f"{optimize_for} workload"),
        "random_page_cost": (RANDOM_PAGE_COST.get(storage, 1.1), f"{storage} storage"),
        "effective_io_concurrency": (IO_CONCURRENCY.get(storage, 200), f"{storage} storage"),
    }
    for name in ("shared_buffers", "effective_cache_size", "maintenance_work_mem", "work_mem", "wal_buffers"):
        value, reason = out[name]
        out[name] = (value // MB * MB if value >= MB else value, reason)  # whole MB, as pgtune prints them
    if cpus >= 4:
        out |= {"max_worker_processes": (cpus, f"{cpus} CPUs"), "max_parallel_workers": (cpus, f"{cpus} CPUs"),
                "max_parallel_workers_per_gather": (gather, f"half of {cpus} CPUs"),
                "max_parallel_maintenance_workers": (min(gather, 4), f"half of {cpus} CPUs, at most 4")}
    return out


def to_number(setting: str, unit: str | None) -> float:
    """A pg_settings value in bytes (memory units) or as a plain number."""
    return float(setting) * UNIT_BYTES.get(unit or "", 1)


def show(value: float, unit: str | None) -> str:
    """A value as postgresql.conf would spell it (sizes in kB/MB/GB)."""
    if unit not in UNIT_BYTES:
        return f"{value:g}"
    for name, size in (("GB", GB), ("MB", MB), ("kB", KB)):
        if value >= size and value % size == 0:
            return f"{int(value // size)}{name}"
    return f"{int(value // KB)}kB"


def advise_settings(conn: Any, facts: dict[str, Any], optimize_for: str, tolerance: float = 0.2) -> list[SettingAdvice]:
    """Settings more than ``tolerance`` away from pgtune's value: current -> advised, why, restart or not."""
    current = {name: (setting, unit, context) for name, setting, unit, context in conn.execute(
        "SELECT name, setting, unit, context FROM pg_settings").fetchall()}
    connections = int(current["max_connections"][0])
    advised = pgtune(int(facts["memory_bytes"]), int(facts["cpus"]), connections, optimize_for, str(facts["storage"]))
    out = []
    for name, (value, reason) in advised.items():
        if name not in current:
            continue
        setting, unit, context = current[name]
        now = to_number(setting, unit)
        if value == now or (value and abs(now - value) / value <= tolerance):
            continue
        out.append(SettingAdvice(name, show(now, unit), show(value, unit), reason, context == "postmaster"))
    return out


def apply_reloadable(conn: Any, advice: list[SettingAdvice], database_id: str) -> list[Change]:
    """``apply_settings: reload_only``: ALTER SYSTEM + pg_reload_conf() for the advice needing no restart.

    Each change records how to undo it: RESET when the setting came from postgresql.conf or a default,
    the previous ALTER SYSTEM value when it came from postgresql.auto.conf."""
    changes = []
    for item in advice:
        if item.restart:
            continue
        source, sourcefile, previous = conn.execute(
            "SELECT source, coalesce(sourcefile, ''), current_setting(name) FROM pg_settings WHERE name = %s",
            (item.name,)).fetchone()
        reverse: dict[str, Any] = {"action": "reset_setting", "name": item.name}
        if source == "configuration file" and sourcefile.endswith("postgresql.auto.conf"):
            reverse = {"action": "set_setting", "name": item.name, "value": previous}
        reverse["statement"] = _reverse_sql(reverse).as_string(conn)  # for people; revert rebuilds it from the data
        stmt = sql.SQL("ALTER SYSTEM SET {} = {}").format(sql.Identifier(item.name), sql.Literal(item.advised))
        change = Change("setting", database_id, {"name": item.name}, "kept",
                        {"before": previous, "advised": item.advised, "reason": item.reason}, reverse,
                        stmt.as_string(conn))
        try:
            conn.execute(stmt)
        except Exception as exc:  # ALTER SYSTEM needs superuser or GRANT ALTER SYSTEM ON PARAMETER (15+)
            change.status = "failed"
            change.evidence["reason"] = str(exc).strip().splitlines()[0][:300]
        changes.append(change)
    if any(c.status == "kept" for c in changes):
        conn.execute("SELECT pg_reload_conf()")
    return changes


def revert_setting(conn: Any, reverse: dict[str, Any]) -> str:
    """Undo one setting change (ALTER SYSTEM RESET or the previous value) and reload; the statement run."""
    stmt = _reverse_sql(reverse)
    conn.execute(stmt)
    conn.execute("SELECT pg_reload_conf()")
    return str(stmt.as_string(conn))


def _reverse_sql(reverse: dict[str, Any]) -> sql.Composed:
    name = sql.Identifier(reverse["name"])
    if reverse["action"] == "set_setting":
        return sql.SQL("ALTER SYSTEM SET {} = {}").format(name, sql.Literal(reverse["value"]))
    return sql.SQL("ALTER SYSTEM RESET {}").format(name)
