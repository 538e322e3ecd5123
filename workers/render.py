"""Tables people can read: the CLI renders engine results here, engines never print."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from rich.console import Console
from rich.table import Table

STATUS_STYLE = {"ok": "green", "up": "green", "succeeded": "green", "warning": "yellow",
                "degraded": "yellow", "running": "cyan", "critical": "red", "down": "red",
                "failed": "red", "unknown": "magenta"}

console = Console()
err_console = Console(stderr=True)


def styled(status: str) -> str:
    """A status word in its colour."""
    style = STATUS_STYLE.get(str(status).lower(), "white")
    return f"[{style}]{status}[/{style}]"


def _fmt(value: Any, unit: str | None = None) -> str:
    if value is None:
        return "-"
    if unit == "bytes" and isinstance(value, (int, float)):
        return human_bytes(value)
    return f"{value} {unit}" if unit else str(value)


def human_bytes(n: float) -> str:
    """1536 -> '1.5 KiB'."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def health_table(report: dict[str, Any]) -> Table:
    """One health report as a table of checks."""
    title = f"{report['database_id']} ({report['kind']}): {styled(report['status'])}"
    table = Table(title=title, title_justify="left")
    for col in ("check", "status", "value", "threshold", "hint"):
        table.add_column(col)
    for c in report["checks"]:
        table.add_row(c["check"], styled(c["status"]), _fmt(c["value"], c.get("unit")),
                      _fmt(c.get("threshold"), "ms" if c["check"] == "response_time" else None),
                      c.get("hint") or "")
    return table


def history_table(rows: list[dict[str, Any]]) -> Table:
    """History rows, newest first."""
    table = Table(title="script runs", title_justify="left")
    for col in ("started", "script", "database", "status", "secs", "worker", "error / summary"):
        table.add_column(col, overflow="fold")
    for r in rows:
        secs = "-"
        if r.get("finished_at"):
            elapsed = datetime.fromisoformat(r["finished_at"]) - datetime.fromisoformat(r["started_at"])
            secs = f"{elapsed.total_seconds():.1f}"
        detail = r.get("error") or _summary(r.get("summary"))
        table.add_row(r["started_at"], r["script_type"], r.get("database_id") or "-",
                      styled(r["status"]), secs, r.get("worker") or "-", detail[:120])
    return table


def _summary(summary: dict[str, Any] | None) -> str:
    if not summary:
        return ""
    if "status" in summary and "checks" in summary:
        rt = next((c["value"] for c in summary["checks"] if c["check"] == "response_time"), None)
        return f"{summary['status']}" + (f", {rt} ms" if rt is not None else "")
    return ", ".join(f"{k}={v}" for k, v in list(summary.items())[:4])


def key_value_table(title: str, rows: list[tuple[str, Any]]) -> Table:
    """A two-column table."""
    table = Table(title=title, title_justify="left", show_header=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for k, v in rows:
        table.add_row(k, str(v))
    return table


def rows_table(title: str, columns: list[str], rows: list[list[Any]]) -> Table:
    """A plain table from rows."""
    table = Table(title=title, title_justify="left")
    for col in columns:
        table.add_column(col, overflow="fold")
    for row in rows:
        table.add_row(*[str(v) for v in row])
    return table
