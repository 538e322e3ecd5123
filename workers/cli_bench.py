"""`dbfleet bench backup|migration`: sweep settings through a private fleet beside the field's tools
(workers/bench.py); a progress bar while it runs, a table, and the paths of the JSON report and SVG chart."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from engines.errors import ConfigError
from workers.render import console, err_console, rows_table


def _ints(text: str, option: str) -> list[int]:
    try:
        return [int(v.replace("_", "")) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError([(option, f"{text!r}: expected comma-separated integers, e.g. 100000,1000000")]) from None


def _sweep(kind: str, params: dict[str, Any], directory: Path | None, fmt: str) -> None:
    from workers.bench import run_sweep

    bar_columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*bar_columns, console=err_console, transient=False) as bar:
        task = bar.add_task(f"{kind} benchmark", total=None)

        def progress(what: str, done: int, total: int) -> None:
            bar.update(task, description=what, completed=done, total=total or None)

        report = run_sweep(kind, params, directory, progress)
    if fmt == "json":
        click.echo(json.dumps(report.to_dict(), indent=2, default=str))
        return
    columns, rows = report.table()
    tool = report.cells[0].tool.split(" -Z")[0] if report.cells else "-"
    console.print(rows_table(f"{kind} through the fleet vs {tool}, same data, same run", columns, rows))
    tools = dict.fromkeys(re.sub(r"-Z (zstd:)?\d+", r"-Z \1<level>", c.tool) for c in report.cells)
    console.print(f"tool: {', '.join(tools)}. ratio = dbfleet wall / tool "
                  "wall (below 1: dbfleet is faster); MiB/s of the source database. "
                  f"{report.machine.get('cpus')} CPUs, load {report.machine.get('load_average')}: a shared machine "
                  "makes single runs noisy")
    console.print(f"JSON: {report.json_path}\nchart: {report.chart_path}")


@click.group("bench")
def bench() -> None:
    """Benchmarks: generate the music database, sweep settings through a private fleet, compare."""


@bench.command("backup")
@click.option("--sizes", default="100000", show_default=True, help="play events per database, comma-separated")
@click.option("--levels", default="1,6,9", show_default=True, help="zstd compression levels, comma-separated")
@click.option("--encryption", type=click.Choice(["both", "on", "off"]), default="both", show_default=True)
@click.option("--dir", "directory", type=click.Path(file_okay=False, path_type=Path),
              help="where the bench servers, databases and reports live (default: <state>/bench)")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
def bench_backup(sizes: str, levels: str, encryption: str, directory: Path | None, fmt: str) -> None:
    """Backups at each size x level x encryption, each beside pg_dump -Fc at the same level."""
    encs = {"both": [True, False], "on": [True], "off": [False]}[encryption]
    _sweep("backup", {"database_sizes": _ints(sizes, "--sizes"), "compression_levels": _ints(levels, "--levels"),
                      "encryption_enabled": encs}, directory, fmt)


@bench.command("migration")
@click.option("--size", default=100_000, show_default=True, type=int, help="play events in the source database")
@click.option("--parallel", default="1,2,4,8", show_default=True, help="parallel workers, comma-separated")
@click.option("--batch-sizes", default="10000,50000", show_default=True, help="rows per batch, comma-separated")
@click.option("--dir", "directory", type=click.Path(file_okay=False, path_type=Path),
              help="where the bench servers, databases and reports live (default: <state>/bench)")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
def bench_migration(size: int, parallel: str, batch_sizes: str, directory: Path | None, fmt: str) -> None:
    """PostgreSQL -> PostgreSQL migrations at each parallelism x batch size, each beside pg_dump | psql."""
    _sweep("migration", {"source_size": size, "parallel_workers": _ints(parallel, "--parallel"),
                         "batch_sizes": _ints(batch_sizes, "--batch-sizes")}, directory, fmt)
