"""`dbfleet kinds`: the capability matrix of the kinds registry (engines/kinds.py) as a table or JSON."""

from __future__ import annotations

import json

import click
from rich.markup import escape
from rich.table import Table

from engines.kinds import CAPABILITIES, KINDS, LABELS, matrix
from workers.render import console

YES, NO = "[green]yes[/green]", "[dim]-[/dim]"


def _cell(row: dict[str, object], capability: str) -> str:
    if capability == "health":
        if not row["basic_health"]:
            return NO
        return "[green]basic + deep[/green]" if row["health"] else "[green]basic[/green]"
    return YES if row[capability] else NO


def kinds_table(rows: list[dict[str, object]]) -> Table:
    """One line per kind: aliases, default port, one column per capability, the optional driver."""
    table = Table(title="database kinds and what dbfleet can do with them", title_justify="left")
    for col in ("kind", "aliases", "port", *(LABELS[c] for c in CAPABILITIES), "driver"):
        table.add_column(col, overflow="fold")
    for row in rows:
        driver = row["driver"]
        if isinstance(driver, dict):
            note = f"{driver['package']} (installed)" if driver["installed"] else \
                f"[yellow]missing: pip install 'dbfleet[{driver['extra']}]'[/yellow]"
        else:
            note = "included"
        aliases = row["aliases"]
        table.add_row(str(row["kind"]), escape(", ".join(aliases) if isinstance(aliases, list) else ""),
                      str(row["default_port"] or "-"), *(_cell(row, c) for c in CAPABILITIES), note)
    return table


@click.command("kinds")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
def kinds(fmt: str) -> None:
    """The database kinds dbfleet knows and what it can do with each (backup, health, audit, migrate, ...)."""
    rows = matrix()
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2))
        return
    console.print(kinds_table(rows))
    console.print(f"{len(KINDS)} kinds; health 'basic' = reachability, response time, version, role, size; "
                  "'deep' adds the kind's own checks (docs/adding-a-kind.md adds a kind)")
