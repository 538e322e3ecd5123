"""Host CPU, memory and disk use of a database's machine: node_exporter's text format, or psutil locally.

``cpu_usage`` is the busy share of CPU time between two readings (the previous health check's, kept in
its memory, or a second reading 0.5 s later); ``memory_usage`` is 1 - MemAvailable/MemTotal;
``disk_usage`` the used share of the filesystem holding ``data_directory`` (default ``/``).
Defaults: warning above 80 % CPU, 85 % memory, 90 % disk (``thresholds.cpu_percent`` ...).
"""

from __future__ import annotations

import re
import time
import urllib.request
from typing import Any

from engines.config import DatabaseConfig, HostMetrics
from engines.health.model import OK, UNKNOWN, WARNING, CheckResult

_SAMPLE = re.compile(r'^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>[^}]*)\})?\s+(?P<value>\S+)')
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')
WANTED = ("node_cpu_seconds_total", "node_memory_MemAvailable_bytes", "node_memory_MemTotal_bytes",
          "node_filesystem_avail_bytes", "node_filesystem_size_bytes")


def parse_text(text: str) -> list[tuple[str, dict[str, str], float]]:
    """The samples of Prometheus text exposition format that this module reads."""
    out = []
    for line in text.splitlines():
        if not line.startswith(WANTED):
            continue
        m = _SAMPLE.match(line)
        if m:
            out.append((m["name"], dict(_LABEL.findall(m["labels"] or "")), float(m["value"])))
    return out


def scrape(url: str, timeout: float) -> list[tuple[str, dict[str, str], float]]:
    """One reading of node_exporter's /metrics."""
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"node_exporter_url must be http(s)://, got {url[:40]!r}")
    with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - scheme checked above
        return parse_text(resp.read().decode("utf-8", "replace"))


def _cpu_times(samples: list[tuple[str, dict[str, str], float]]) -> tuple[float, float]:
    cpu = [(labels.get("mode"), v) for n, labels, v in samples if n == "node_cpu_seconds_total"]
    total = sum(v for _, v in cpu)
    idle = sum(v for mode, v in cpu if mode in ("idle", "iowait"))
    return idle, total


def _busy(before: tuple[float, float], after: tuple[float, float]) -> float | None:
    d_total = after[1] - before[1]
    return None if d_total <= 0 else round(100.0 * (1 - (after[0] - before[0]) / d_total), 2)


def _disk(samples: list[tuple[str, dict[str, str], float]], directory: str) -> float | None:
    sizes = {lab.get("mountpoint", ""): v for n, lab, v in samples if n == "node_filesystem_size_bytes"}
    avail = {lab.get("mountpoint", ""): v for n, lab, v in samples if n == "node_filesystem_avail_bytes"}
    mounts = [m for m in sizes if m and (directory == m or directory.startswith(m.rstrip("/") + "/"))]
    if not mounts:
        return None
    mount = max(mounts, key=len)
    return None if not sizes[mount] else round(100.0 * (1 - avail.get(mount, 0.0) / sizes[mount]), 2)


def from_node_exporter(spec: HostMetrics, memory: dict[str, Any]) -> dict[str, float | None]:
    """cpu/memory/disk percentages from node_exporter; ``memory`` carries the last CPU reading."""
    url = str(spec.node_exporter_url)
    samples = scrape(url, spec.timeout)
    now = _cpu_times(samples)
    before = memory.get("host_cpu")
    if not before:
        time.sleep(0.5)
        samples = scrape(url, spec.timeout)
        before, now = now, _cpu_times(samples)
    memory["host_cpu"] = list(now)
    values = {n: v for n, _, v in samples if n.startswith("node_memory_")}
    total = values.get("node_memory_MemTotal_bytes")
    mem = round(100.0 * (1 - values.get("node_memory_MemAvailable_bytes", 0.0) / total), 2) if total else None
    return {"cpu_usage": _busy(tuple(before), now), "memory_usage": mem,  # type: ignore[arg-type]
            "disk_usage": _disk(samples, spec.data_directory or "/")}


def from_psutil(spec: HostMetrics) -> dict[str, float | None]:
    """cpu/memory/disk percentages of the worker's own host."""
    import psutil

    return {"cpu_usage": float(psutil.cpu_percent(interval=0.5)),
            "memory_usage": float(psutil.virtual_memory().percent),
            "disk_usage": float(psutil.disk_usage(spec.data_directory or "/").percent)}


def collect(db: DatabaseConfig, memory: dict[str, Any]) -> list[CheckResult]:
    """The three host checks of ``db`` (warning above its thresholds), or unknown with the reason."""
    spec = db.host_metrics
    if spec is None:
        return []
    limits = {"cpu_usage": db.thresholds.cpu_percent, "memory_usage": db.thresholds.memory_percent,
              "disk_usage": db.thresholds.disk_percent}
    try:
        values = from_node_exporter(spec, memory) if spec.node_exporter_url else from_psutil(spec)
    except Exception as exc:  # the exporter is down or answers nonsense: unknown, the health check goes on
        reason = f"host metrics unavailable: {type(exc).__name__}: {str(exc)[:200]}"
        return [CheckResult(name, UNKNOWN, None, "%", limit, reason) for name, limit in limits.items()]
    out = []
    for name, limit in limits.items():
        value = values.get(name)
        if value is None:
            out.append(CheckResult(name, UNKNOWN, None, "%", limit, "no reading (see data_directory)"))
        else:
            status = WARNING if value > limit else OK
            hint = None if status == OK else f"{name.replace('_', ' ')} above {limit:g}%"
            out.append(CheckResult(name, status, value, "%", limit, hint))
    return out
