"""The benchmark sweeps' pure parts: grids, the disk-space check, and the reports (table rows, JSON, SVG chart).

`workers/bench.py` runs the sweeps through a private fleet; this module decides nothing about timing, it only
checks inputs and renders what was measured. Sizes are play events of the demo's music database
(engines/embedded/music.py); on disk that is about :data:`BYTES_PER_EVENT` bytes per event with its indexes.
"""

from __future__ import annotations

import html
import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from engines.errors import ConfigError

# measured on the music database (PostgreSQL 18, 1,000,000 events -> ~170 MB with indexes and the catalogue);
# rounded up so the check errs on the side of refusing
BYTES_PER_EVENT = 200
MIN_EVENTS, MAX_EVENTS = 1_000, 2_000_000_000


def check_sizes(sizes: list[int], what: str = "database_sizes") -> list[int]:
    """Sizes as play-event counts: integers in range, no duplicates (order kept)."""
    if not sizes:
        raise ConfigError([(what, "give at least one size (play events, e.g. 100000)")], "benchmark")
    out: list[int] = []
    for size in sizes:
        if isinstance(size, bool) or not isinstance(size, int) or not MIN_EVENTS <= size <= MAX_EVENTS:
            raise ConfigError([(what, f"{size!r}: expected a number of play events between {MIN_EVENTS:,} and "
                                      f"{MAX_EVENTS:,}")], "benchmark")
        if size not in out:
            out.append(size)
    return out


def check_ints(values: list[int], what: str, low: int, high: int) -> list[int]:
    if not values:
        raise ConfigError([(what, "give at least one value")], "benchmark")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int) or not low <= v <= high:
            raise ConfigError([(what, f"{v!r}: expected an integer from {low} to {high}")], "benchmark")
    return list(dict.fromkeys(values))


def check_bools(values: list[bool], what: str) -> list[bool]:
    if not values or any(not isinstance(v, bool) for v in values):
        raise ConfigError([(what, f"{values!r}: expected a list of true/false")], "benchmark")
    return list(dict.fromkeys(values))


def needed_bytes(sizes: list[int], copies: float) -> int:
    """Disk the sweep needs at its peak: the largest database kept with ``copies`` more of its size (dumps,
    repositories, migration targets), plus every smaller database (they stay for the run)."""
    biggest = max(sizes)
    return int(sum(sizes) * BYTES_PER_EVENT + biggest * BYTES_PER_EVENT * copies)


def check_disk(directory: Path, sizes: list[int], copies: float) -> dict[str, int]:
    """Refuse a sweep that would not fit on the disk holding ``directory``, saying how much it needs."""
    directory.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(directory).free
    need = needed_bytes(sizes, copies)
    if need > free * 0.9:
        raise ConfigError([("database_sizes", f"the sweep needs about {_gib(need)} of disk at {directory} and "
                                              f"{_gib(free)} is free: use smaller sizes (largest asked: "
                                              f"{max(sizes):,} play events, ~{_gib(max(sizes) * BYTES_PER_EVENT)} "
                                              "as a database) or --dir on a bigger disk")], "benchmark")
    return {"needed_bytes": need, "free_bytes": free}


def _gib(n: float) -> str:
    return f"{n / 2**30:,.1f} GiB" if n >= 2**30 else f"{n / 2**20:,.0f} MiB"


@dataclass
class Cell:
    """One measured setting: ours, and the field's tool on the same data in the same run."""

    setting: dict[str, Any]
    rows: int
    source_bytes: int
    seconds: float
    tool: str
    tool_seconds: float | None
    stored_bytes: int | None = None
    tool_bytes: int | None = None
    task_ids: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def mb_per_s(self) -> float:
        return self.source_bytes / 2**20 / self.seconds if self.seconds > 0 else 0.0

    @property
    def ratio(self) -> float | None:
        """Our wall time over the tool's (below 1: faster)."""
        return self.seconds / self.tool_seconds if self.tool_seconds else None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(mb_per_s=round(self.mb_per_s, 2), ratio=None if self.ratio is None else round(self.ratio, 3),
                   rows_per_s=round(self.rows / self.seconds) if self.seconds > 0 else None)
        return out


@dataclass
class Report:
    kind: str  # backup | migration
    cells: list[Cell]
    machine: dict[str, Any]
    started_at: str
    json_path: str | None = None
    chart_path: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "started_at": self.started_at, "machine": self.machine,
                "cells": [c.to_dict() for c in self.cells], "json_path": self.json_path,
                "chart_path": self.chart_path}

    def table(self) -> tuple[list[str], list[list[str]]]:
        """Columns and rows for people: one column per setting key, then ours, the tool's, the ratio."""
        keys = list(self.cells[0].setting) if self.cells else []
        columns = [SETTING_LABELS.get(k, k) for k in keys] + ["dbfleet", "MiB/s", "tool", "ratio"]
        if any(c.stored_bytes is not None for c in self.cells):
            columns.append("stored / tool's")
        rows = []
        for c in self.cells:
            row = [_cell(c.setting[k]) for k in keys]
            row += [f"{c.seconds:.2f} s", f"{c.mb_per_s:,.1f}",
                    f"{c.tool_seconds:.2f} s" if c.tool_seconds is not None else "-",
                    f"{c.ratio:.2f}" if c.ratio is not None else "-"]
            if "stored / tool's" in columns:
                row.append(f"{_mib(c.stored_bytes)} / {_mib(c.tool_bytes)}")
            rows.append(row)
        return columns, rows

    def write(self, directory: Path, stem: str) -> Report:
        directory.mkdir(parents=True, exist_ok=True)
        self.json_path, self.chart_path = str(directory / f"{stem}.json"), str(directory / f"{stem}.svg")
        Path(self.json_path).write_text(json.dumps(self.to_dict(), indent=2, default=str) + "\n")
        Path(self.chart_path).write_text(svg_chart(self))
        return self


SETTING_LABELS = {"events": "events", "level": "zstd", "encryption": "encrypted", "parallel_workers": "workers",
                  "batch_size": "batch"}


def _cell(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    return f"{value:,}" if isinstance(value, int) else str(value)


def _mib(n: int | None) -> str:
    return "-" if n is None else f"{n / 2**20:,.1f}M"


def svg_chart(report: Report, width: int = 860) -> str:
    """A self-contained SVG bar chart: throughput (MiB/s of source data) per setting, ours and the tool's."""
    cells = report.cells
    bar_h, gap, left, top = 16, 10, 330, 40
    height = top + len(cells) * (2 * bar_h + gap) + 40
    tool_rates = [c.source_bytes / 2**20 / c.tool_seconds if c.tool_seconds else 0.0 for c in cells]
    peak = max([c.mb_per_s for c in cells] + tool_rates + [1e-9])
    scale = (width - left - 90) / peak
    title = f"dbfleet {report.kind} benchmark: throughput per setting (MiB/s of source data; longer is faster)"
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
           f"<title>{html.escape(title)}</title>",
           f'<rect width="{width}" height="{height}" fill="#ffffff"/>',
           f'<text x="10" y="20" font-size="14" font-weight="bold">{html.escape(title)}</text>',
           f'<rect x="{left}" y="{height - 28}" width="12" height="12" fill="#2b6cb0"/>'
           f'<text x="{left + 16}" y="{height - 18}">dbfleet</text>',
           f'<rect x="{left + 90}" y="{height - 28}" width="12" height="12" fill="#a0aec0"/>'
           f'<text x="{left + 106}" y="{height - 18}">'
           f'{html.escape(cells[0].tool.split(" -Z")[0] if cells else "field tool")}, same setting, same run</text>']
    for i, (cell, tool_rate) in enumerate(zip(cells, tool_rates, strict=True)):
        y = top + i * (2 * bar_h + gap)
        label = ", ".join(f"{k}={v}" for k, v in cell.setting.items())
        out.append(f'<text x="{left - 8}" y="{y + bar_h + 4}" text-anchor="end">{html.escape(label)}</text>')
        for j, (rate, color) in enumerate(((cell.mb_per_s, "#2b6cb0"), (tool_rate, "#a0aec0"))):
            yy = y + j * bar_h
            w = max(1.0, rate * scale)
            out.append(f'<rect class="bar" x="{left}" y="{yy}" width="{w:.1f}" height="{bar_h - 2}" '
                       f'fill="{color}"><title>{rate:,.1f} MiB/s</title></rect>')
            out.append(f'<text x="{left + w + 4:.1f}" y="{yy + bar_h - 4}">{rate:,.1f}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"
