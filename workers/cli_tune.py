"""`dbfleet tune DATABASE_ID` and `dbfleet tune revert CHANGE_ID`: tuning advice as tables, JSON or HTML."""

from __future__ import annotations

import html
import json
import sys
from pathlib import Path
from typing import Any

import click
from rich.markup import escape

from workers.render import console, err_console, human_bytes, rows_table


def _run(script: str, database_id: str, options: dict[str, Any], local: bool, timeout: float) -> dict[str, Any]:
    """Run a tuning script on a worker of the tuning queue, or in this process with ``local``."""
    if local:
        from workers.tuning import analyze_task, apply_task, revert_task

        task = {"performance_tuning": analyze_task, "performance_tuning_apply": apply_task,
                "performance_tuning_revert": revert_task}[script]
        with err_console.status(f"{script} of {database_id} ..."):
            result: dict[str, Any] = task.apply(args=(database_id, options), throw=True).get()
        return result
    from workers.cli_backups import run_script

    return run_script(script, database_id, options, local=False, timeout=timeout)


def print_report(r: dict[str, Any]) -> None:
    """The report as tables: index advice with its proof, hygiene findings, settings, changes, limits."""
    console.print(f"[bold]tuning of {escape(r['database_id'])}[/bold] ({r['kind']} {escape(r.get('server_version') or '?')})"
                  + "".join(f" · {k} {v}" for k, v in (r.get("workload") or {}).items()))
    if r["indexes"]:
        console.print(rows_table("index advice", ["index", "queries", "cost before -> after", "saved", "size",
                                                  "statement"], [_advice_row(a) for a in r["indexes"]]))
    else:
        console.print("index advice: none")
    if r["hygiene"]:
        console.print(rows_table("index hygiene", ["check", "object", "detail", "fix"], [
            [f["check"], escape(f["object"]), escape(f["detail"]), escape(f["statement"] or "")] for f in r["hygiene"]]))
    if r["settings"]:
        console.print(rows_table("settings", ["setting", "current", "advised", "reason", "restart"], [
            [s["name"], s["current"], s["advised"], escape(s["reason"]), "yes" if s["restart"] else "no (reload)"]
            for s in r["settings"]]))
    if r.get("mviews"):
        console.print(rows_table("materialized views", ["view", "query", "calls / time", "statements", "note"], [
            [v["name"], escape(v["query"][:120]), f"{v['calls']} / {v['total_ms']:.0f} ms",
             escape("\n".join(v["statements"])), escape(v["note"] or "")] for v in r["mviews"]]))
    if r.get("partitions"):
        console.print(rows_table("partitioning", ["table", "by", "partitions", "pruning", "statement", "note"], [
            [escape(f"{p['schema']}.{p['table']}"), f"{escape(p['column'])} per {p['interval']}", p["partitions"],
             f"{p['pruning_share_percent']:.0f}% of its time", escape("\n".join(p["statements"])), escape(p["note"])]
            for p in r["partitions"]]))
    if r["changes"]:
        console.print(rows_table("changes", ["change id", "status", "index", "evidence"], [
            [c["change_id"], c["status"], escape(str(_target(c))), escape(_evidence(c["evidence"]))]
            for c in r["changes"]]))
    for line in r["limits"]:
        err_console.print(f"[yellow]limited:[/yellow] {escape(line)}")


def _target(change: dict[str, Any]) -> str:
    """What a change touched: an index, a view, a table (partitioning) or a setting."""
    t = change["target"]
    if change["kind"] == "partition_table":
        return f"{t['schema']}.{t['table']} by {t['column']} per {t['interval']}"
    return str(t.get("index") or t.get("view") or t.get("name") or "")


def _advice_row(a: dict[str, Any]) -> list[Any]:
    where = escape(f"{a['schema']}.{a['table']} ({', '.join(a['columns'])})")
    return [where + ("" if a["proven"] else "\n[yellow]NOT PROVEN (hypopg missing)[/yellow]"),
            escape("\n".join(f"{q['queryid']} ×{q['calls']}: {q['query'][:70]}" for q in a["queries"])),
            f"{a['cost_before']:.0f} -> {a['cost_after']:.0f}", f"{a['savings_percent']:.0f}%",
            human_bytes(a["estimated_bytes"]) if a["estimated_bytes"] else "?", escape(a["statement"])]


def _evidence(e: dict[str, Any]) -> str:
    parts = [f"cost {e['cost_before']} -> {e['cost_after']} ({e.get('savings_percent')}%)"] if "cost_before" in e else []
    if "time_savings_percent" in e:
        parts.append(f"measured time -{e['time_savings_percent']}%")
    if "rows" in e and "state" in e:
        parts.append(f"{e['rows']} rows in {e.get('batches')} batches, {e['state']}")
    return "; ".join(parts + [str(e[k]) for k in ("reason", "cleanup") if e.get(k)])


def to_html(r: dict[str, Any]) -> str:
    """A self-contained HTML page of the report (every value escaped)."""
    def table(title: str, rows: list[dict[str, Any]], keys: list[str]) -> str:
        head = "".join(f"<th>{html.escape(k)}</th>" for k in keys)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(json.dumps(x.get(k), default=str).strip(chr(34)))}</td>"
                                        for k in keys) + "</tr>" for x in rows)
        return f"<h2>{html.escape(title)}</h2><table border=1><tr>{head}</tr>{body}</table>"
    parts = [f"<h1>tuning of {html.escape(r['database_id'])}</h1>",
             table("index advice", r["indexes"], ["statement", "cost_before", "cost_after", "savings_percent",
                                                  "estimated_bytes", "proven", "note"]),
             table("index hygiene", r["hygiene"], ["check", "object", "detail", "statement"]),
             table("settings", r["settings"], ["name", "current", "advised", "reason", "restart"]),
             table("materialized views", r.get("mviews", []), ["name", "query", "calls", "statements", "note"]),
             table("partitioning", r.get("partitions", []), ["table", "column", "interval", "partitions",
                                                              "pruning_share_percent", "statements", "note"]),
             table("changes", r["changes"], ["change_id", "status", "statement", "evidence"]),
             "<h2>limits</h2><ul>" + "".join(f"<li>{html.escape(x)}</li>" for x in r["limits"]) + "</ul>"]
    return "<!doctype html><meta charset=utf-8><title>dbfleet tuning</title>" + "".join(parts)


class _TuneGroup(click.Group):
    """``tune DATABASE_ID ...`` runs the analysis; ``tune revert CHANGE_ID`` is the one subcommand."""

    def resolve_command(self, ctx: click.Context, args: list[str]) -> Any:
        if args and args[0] not in self.commands:
            return "analyze", self.commands["analyze"], args
        return super().resolve_command(ctx, args)


@click.group("tune", cls=_TuneGroup)
def tune() -> None:
    """Tuning advice: `dbfleet tune DATABASE_ID [--apply [--now]] [--only indexes,hygiene,settings]
    [--format table|json|html] [--local]` (see `dbfleet tune DATABASE_ID --help`), or
    `dbfleet tune revert CHANGE_ID`."""


@tune.command("analyze", hidden=True)
@click.argument("database_id")
@click.option("--apply", "do_apply", is_flag=True, help="build the proven indexes (one by one, rolled back "
              "when the real planner shows less than min_cost_savings)")
@click.option("--now", is_flag=True, help="with --apply: ignore the maintenance window")
@click.option("--only", default=None, help="areas: indexes,hygiene,settings,mviews,partitions (default: all; "
              "mviews/partitions also need create_materialized_views / partitioning_strategy: time_based)")
@click.option("--verify", type=click.Choice(["plan", "execute"]), default=None,
              help="with --apply: execute also times sampled read-only runs before and after each index, "
              "and decides on measured time")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "html"]), default="table", show_default=True)
@click.option("--output", "-o", type=click.Path(dir_okay=False), help="write the json/html report to a file")
@click.option("--local", is_flag=True, help="run in this process instead of on a worker of the tuning queue")
@click.option("--timeout", default=1800.0, show_default=True, help="seconds to wait for a worker")
def analyze_cmd(database_id: str, do_apply: bool, now: bool, only: str | None, verify: str | None, fmt: str,
                output: str | None, local: bool, timeout: float) -> None:
    """Analyse DATABASE_ID (exit 1 when a change failed). `--apply --only partitions` converts the planned
    tables to partitioned ones online (revertible with `dbfleet tune revert`)."""
    options: dict[str, Any] = {"only": only} if only else {}
    if verify:
        options["verify"] = verify
    if now:
        options["now"] = True
    script = "performance_tuning_apply" if do_apply else "performance_tuning"
    result = _run(script, database_id, options, local, timeout)
    if fmt == "table":
        print_report(result)
    else:
        text = to_html(result) if fmt == "html" else json.dumps(result, indent=2, default=str)
        if output:
            Path(output).write_text(text)
            err_console.print(f"wrote the {fmt} report to {output}")
        else:
            click.echo(text)
    sys.exit(1 if any(c["status"] == "failed" for c in result.get("changes", [])) else 0)


@tune.command("revert")
@click.argument("change_id")
@click.option("--local", is_flag=True, help="run in this process instead of on a worker")
@click.option("--timeout", default=1800.0, show_default=True, help="seconds to wait for a worker")
def revert_cmd(change_id: str, local: bool, timeout: float) -> None:
    """Reverse one applied change (its id is in the apply report and in history)."""
    from workers.tuning import find_change

    found = find_change(change_id)
    if found is None:
        err_console.print(f"[red]no applied change {escape(change_id)} in history[/red]")
        sys.exit(2)
    result = _run("performance_tuning_revert", found[0], {"change_id": change_id}, local, timeout)
    console.print(f"{escape(change_id)} on {escape(found[0])}: {escape(result['result'])} ({escape(result['statement'])})")
