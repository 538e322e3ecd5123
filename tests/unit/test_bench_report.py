"""The benchmark sweeps' pure parts: input checks, the disk-space refusal, the table, JSON and SVG chart."""

from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from engines.bench import BYTES_PER_EVENT, Cell, Report, check_bools, check_disk, check_ints, check_sizes
from engines.errors import ConfigError


def test_sizes_and_grids_are_checked_with_the_option_named() -> None:
    assert check_sizes([100_000, 100_000, 5_000]) == [100_000, 5_000]
    for bad in ([], [0], [-5], [True], ["10k"], [10**12]):
        with pytest.raises(ConfigError, match="database_sizes"):
            check_sizes(bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="compression_levels.*23"):
        check_ints([1, 23], "compression_levels", 1, 22)
    with pytest.raises(ConfigError, match="parallel_workers"):
        check_ints([0], "parallel_workers", 1, 64)
    with pytest.raises(ConfigError, match="encryption_enabled"):
        check_bools(["yes"], "encryption_enabled")  # type: ignore[list-item]


def test_a_sweep_beyond_the_disk_is_refused_with_the_space_it_needs(tmp_path: Path) -> None:
    free = shutil.disk_usage(tmp_path).free
    events = free // BYTES_PER_EVENT + 1
    if events > 2_000_000_000:
        pytest.skip(f"{free / 2**30:.0f} GiB free: more than the largest size the bench accepts needs")
    with pytest.raises(ConfigError) as err:
        check_disk(tmp_path, [events], copies=1.0)
    text = str(err.value)
    assert "GiB of disk" in text and "free" in text and f"{events:,} play events" in text
    assert check_disk(tmp_path, [1_000], copies=2.0)["needed_bytes"] > 1_000 * BYTES_PER_EVENT


def _report() -> Report:
    cells = [Cell({"events": 1000, "level": lv, "encryption": enc}, rows=1200, source_bytes=8 * 2**20,
                  seconds=2.0 * lv, tool="pg_dump -Fc -Z 1", tool_seconds=1.0, stored_bytes=2**20, tool_bytes=2**19)
             for lv in (1, 3) for enc in (True, False)]
    return Report("backup", cells, {"cpus": 2}, "2026-11-29T00:00:00+00:00")


def test_the_report_writes_json_and_a_self_contained_svg(tmp_path: Path) -> None:
    report = _report().write(tmp_path, "backup-x")
    data = json.loads(Path(report.json_path or "").read_text())
    assert [c["ratio"] for c in data["cells"]] == [2.0, 2.0, 6.0, 6.0]
    assert data["cells"][0]["mb_per_s"] == 4.0 and data["cells"][0]["rows_per_s"] == 600
    svg = Path(report.chart_path or "").read_text()
    root = ET.fromstring(svg)  # well-formed XML
    bars = [e for e in root.iter("{http://www.w3.org/2000/svg}rect") if e.get("class") == "bar"]
    assert len(bars) == 8  # ours and the tool's per setting
    assert "http" not in svg.replace("http://www.w3.org/2000/svg", "")  # nothing fetched from elsewhere
    columns, rows = report.table()
    assert columns[:3] == ["events", "zstd", "encrypted"] and rows[1][:3] == ["1,000", "1", "no"]
    assert rows[3][-2] == "6.00"
