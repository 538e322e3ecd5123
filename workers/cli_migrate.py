"""`dbfleet migrate plan|run|status|resume|rollback|list`: cross-engine migrations through the fleet."""

from __future__ import annotations

import sys
import time
from typing import Any

import click
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from workers.render import console, err_console, key_value_table, rows_table, styled


def _ref(text: str) -> str | dict[str, Any]:
    """A registry id, or inline YAML such as '{kind: postgresql, host: h, dbname: d, password_env: X}'."""
    if text.strip().startswith("{"):
        import yaml

        value = yaml.safe_load(text)
        if not isinstance(value, dict):
            raise click.BadParameter("an inline config must be a mapping")
        return value
    return text


def print_plan(plan: Any) -> None:
    rows = []
    for t in plan.tables:
        n = sum(1 for b in plan.batches if b.table == t.source)
        rows.append([escape(t.source), escape(t.target), escape(", ".join(t.key)) or "(none: " + (
            "CTID ranges" if plan.path == "pg-pg" else "one batch") + ")", t.rows_estimate, n,
                     escape(type_mapping(t)) or "-"])
    console.print(rows_table(f"migration plan {plan.id} ({plan.type}, {plan.path})",
                             ["source table", "target", "key", "rows (estimate)", "batches",
                              "type mapping (columns whose type changes)"], rows))
    built = [f"{escape(t.target_name)}: " + ", ".join(f"{escape(o['name'])} ({o['kind']})" for o in t.schema)
             for t in plan.tables if t.schema]
    if built:
        console.print("built after the load: " + "; ".join(built))
    for t in plan.tables:
        for e in t.embeds:
            console.print(f"embedded: {escape(e.table)} rows -> array {escape(e.field)!r} of {escape(t.target_name)}"
                          f" documents (foreign key {escape(', '.join(e.fk))})")
    console.print(f"{len(plan.batches)} batches of up to {plan.batch_size} rows, {plan.parallel_workers} at a time; "
                  f"validation {'on' if plan.validation else 'off'}; max rejects {plan.max_rejects}; "
                  f"existing target rows: {getattr(plan, 'if_exists', 'fail')}")
    for note in getattr(plan, "notes", None) or []:  # what the target says plainly (type mappings, deletes)
        console.print(f"[yellow]note:[/yellow] {escape(note)}")


def type_mapping(table: Any) -> str:
    """``column: source type -> target type`` for every column whose type changes or is converted."""
    return "\n".join(f"{c.name}: {c.source_type} -> {c.target_type}" + (f" ({c.cast})" if c.cast else "")
                     for c in table.columns if c.cast or c.source_type.lower() != c.target_type.lower())


def print_progress(p: dict[str, Any]) -> None:
    console.print(key_value_table(f"migration {p['id']}", [
        ("status", styled({"completed": "ok", "running": "running", "failed": "failed"}.get(p["status"], p["status"]))
         + f" {p['status']}"), ("source -> target", f"{p['source']} -> {p['target']}"),
        ("batches", f"{p['batches_done']} / {p['batches_total']}"), ("rows", p["rows"]),
        ("rows/s", p["rows_per_second"]), ("elapsed", f"{p['elapsed_seconds']} s"),
        ("ETA", "-" if p["eta_seconds"] is None else f"{p['eta_seconds']} s"), ("error", escape(p["error"] or "-"))]))
    console.print(rows_table("tables", ["table", "batches", "source rows read", "copied", "rejected",
                                        "failed batches"],
                             [[escape(t["table"]), f"{t['batches_done']}/{t['batches_total']}", t["rows"] + t["rejects"],
                               t["rows"], t["rejects"], t["failed"]] for t in p["tables"]]))
    if p.get("rejected"):
        console.print(rows_table(f"rejected rows (fix them in the source, then: dbfleet migrate retry-rejects {p['id']})",
                                 ["table", "key", "column", "reason"],
                                 [[escape(r["table"]), escape(r["key"] or "-"), escape(r["column"] or "-"),
                                   escape(r["reason"])] for r in p["rejected"]]))
    report = p.get("report") or {}
    if report.get("tables"):
        console.print(rows_table("validation", ["table", "source rows", "target rows", "rejects", "result"],
                                 [[escape(t["table"]), t["source_rows"], t["target_rows"], t["rejects"],
                                   styled("ok" if t["ok"] else "failed") + (
                                       "" if t["ok"] else f" ranges {t['mismatched_ranges']}")]
                                  for t in report["tables"]]))
        embedded = [(t, e) for t in report["tables"] for e in t.get("embedded", [])]
        if embedded:
            console.print(rows_table("embedded child tables", ["child table", "into", "rows embedded",
                                                               "found in documents", "not embeddable", "result"],
                                     [[escape(e["table"]), escape(f"{t['target']}.{e['field']}"), e["source_rows"],
                                       e["target_rows"], e["not_embedded"], styled("ok" if e["ok"] else "failed")]
                                      for t, e in embedded]))


def follow(migration_id: str, timeout: float) -> dict[str, Any]:
    """A batch progress bar until the migration ends; returns the final progress."""
    from workers.migrations import MigrationProgress

    progress = MigrationProgress(migration_id)
    deadline = time.monotonic() + timeout
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]}"),
               TimeElapsedColumn(), TimeRemainingColumn()]
    with Progress(*columns, console=err_console) as bar:
        task = bar.add_task(f"migrate {migration_id}", total=None, rate="")
        while True:
            snap = progress.snapshot()
            bar.update(task, total=snap["batches_total"] or None, completed=snap["batches_done"],
                       rate=f"{snap['rows']} rows, {snap['rows_per_second']:.0f} rows/s")
            if snap["status"] in ("completed", "failed", "rolled_back"):
                return snap
            if time.monotonic() > deadline:
                raise TimeoutError(f"migration {migration_id} still {snap['status']} after {timeout:.0f}s "
                                   "(is a worker consuming the migrations queue? dbfleet status)")
            time.sleep(0.5)


@click.group("migrate")
def migrate() -> None:
    """Cross-engine migrations (MySQL/MariaDB -> PostgreSQL, PostgreSQL -> PostgreSQL) in batches."""


_local = click.option("--local", is_flag=True,
                      help="run in this process instead of on a worker of the migrations queue")


def _plan_options(f: Any) -> Any:
    for opt in reversed([
        click.argument("source"), click.argument("target"),
        click.option("--tables", help="comma-separated source tables (default: all)"),
        click.option("--batch-size", type=int, default=10000, show_default=True),
        click.option("--parallel", "parallel_workers", type=int, default=4, show_default=True,
                     help="batches of this migration running at once"),
        click.option("--no-validate", is_flag=True, help="skip the count + checksum comparison"),
        click.option("--incremental", "base_id", default=None, metavar="MIGRATION_ID",
                     help="copy rows changed since that migration's last run (needs --watermark)"),
        click.option("--watermark", default=None, help="incremental: the column that moves on change"),
        click.option("--max-rejects", type=int, default=0, show_default=True),
        click.option("--id", "migration_id", default=None, help="choose the migration id"),
        click.option("--no-indexes", is_flag=True,
                     help="do not rebuild the source's secondary indexes and constraints on the target"),
        click.option("--embed", "embeds", multiple=True, metavar="CHILD=PARENT[:FIELD]",
                     help="MongoDB: put CHILD's rows in an array of their PARENT's document (by foreign key)"),
        click.option("--soft-delete", default=None, metavar="COLUMN",
                     help="incremental: a boolean column marking rows deleted at the source (documents are removed,"
                          " ClickHouse keeps a tombstone)"),
        click.option("--create-target/--no-create-target", default=True, show_default=True,
                     help="create the target database when it is missing (the role must be allowed to)"),
        click.option("--if-exists", type=click.Choice(["fail", "truncate", "append"]), default="fail",
                     show_default=True, help="target tables that already hold rows: refuse at plan time, empty "
                                             "them when the run starts (rollback restores them), or add to them"),
        _local,
    ]):
        f = opt(f)
    return f


def parse_embeds(embeds: tuple[str, ...]) -> dict[str, Any]:
    """``CHILD=PARENT[:FIELD]`` options -> the plan's ``embed`` mapping."""
    out: dict[str, Any] = {}
    for spec in embeds:
        child, eq, parent = spec.partition("=")
        if not eq or not child or not parent:
            raise click.BadParameter(f"{spec!r}: write CHILD=PARENT or CHILD=PARENT:FIELD", param_hint="--embed")
        parent, colon, field = parent.rpartition(":") if ":" in parent else (parent, "", "")
        out[child] = {"into": parent, "as": field} if colon else parent
    return out


def _need_worker(local: bool) -> None:
    """The migrations queue's steps run on workers: say at once when none is online (unless ``--local``)."""
    if local:
        return
    from workers.manager import current_app
    from workers.status import require_worker

    require_worker(current_app(), "migrations")


def _make_plan(source: str, target: str, tables: str | None = None, batch_size: int = 10000,
               parallel_workers: int = 4, no_validate: bool = False, base_id: str | None = None,
               watermark: str | None = None, max_rejects: int = 0, migration_id: str | None = None,
               embeds: tuple[str, ...] = (), no_indexes: bool = False, create_target: bool = True,
               if_exists: str = "fail", local: bool = False, soft_delete: str | None = None) -> Any:
    from workers.migrations import plan

    options: dict[str, Any] = {"type": "incremental" if base_id or watermark else "full", "batch_size": batch_size,
                               "parallel_workers": parallel_workers, "validation": not no_validate,
                               "max_rejects": max_rejects, "indexes": not no_indexes,
                               "create_target": create_target, "if_exists": if_exists}
    for key, value in (("tables", tables.split(",") if tables else None), ("base_id", base_id),
                       ("watermark", watermark), ("migration_id", migration_id), ("embed", parse_embeds(embeds)),
                       ("soft_delete", soft_delete)):
        if value:
            options[key] = value
    if local:
        from engines.migration.model import MigrationPlan
        from workers import migration_steps
        from workers.manager import check_options

        check_options(options)
        with console.status("planning"):
            return MigrationPlan.from_dict(migration_steps.plan(_ref(source), _ref(target), options))
    _need_worker(local)
    with console.status("planning on a worker of the migrations queue"):
        return plan(_ref(source), _ref(target), **options)


@migrate.command("plan")
@_plan_options
def migrate_plan(**kw: Any) -> None:
    """Discover SOURCE, map types, split into batches; store and show the plan (writes nothing but a missing
    target database)."""
    plan = _make_plan(**kw)
    print_plan(plan)
    console.print(f"run it: dbfleet migrate run {plan.id}" + (" --local" if kw["local"] else ""))


@migrate.command("run")
@click.argument("migration_id_or_source")
@click.argument("target", required=False)
@click.option("--timeout", default=24 * 3600.0, show_default=True)
@_local
def migrate_run(migration_id_or_source: str, target: str | None, timeout: float, local: bool) -> None:
    """Run a planned migration (MIGRATION_ID), or plan and run SOURCE TARGET with default options."""
    migration_id = migration_id_or_source
    _need_worker(local)
    if target:
        plan = _make_plan(migration_id_or_source, target, local=local)
        print_plan(plan)
        migration_id = plan.id
    _start(migration_id, timeout, local)


def _start(migration_id: str, timeout: float, local: bool) -> None:
    if local:
        _finish(run_local(migration_id))
        return
    from workers.migrations import run

    run(migration_id)
    _finish(follow(migration_id, timeout))


def run_local(migration_id: str) -> dict[str, Any]:
    """The run in this process with a batch progress bar; the final progress."""
    from workers import migration_steps

    total = len(migration_steps.store().plan(migration_id).batches)
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]}"),
               TimeElapsedColumn(), TimeRemainingColumn()]
    with Progress(*columns, console=err_console) as bar:
        task = bar.add_task(f"migrate {migration_id} (local)", total=total or None, rate="")

        def update(snap: dict[str, Any]) -> None:
            bar.update(task, completed=snap["batches_done"],
                       rate=f"{snap['rows']} rows, {snap['rows_per_second']:.0f} rows/s")

        return migration_steps.run_local(migration_id, update)


@migrate.command("resume")
@click.argument("migration_id")
@click.option("--timeout", default=24 * 3600.0, show_default=True)
@_local
def migrate_resume(migration_id: str, timeout: float, local: bool) -> None:
    """Continue a failed or interrupted migration: completed batches are skipped."""
    _need_worker(local)
    _start(migration_id, timeout, local)


@migrate.command("status")
@click.argument("migration_id")
def migrate_status(migration_id: str) -> None:
    """Progress per table (rows read, copied, rejected), the rejected rows, rows/s, ETA, validation report."""
    from workers.migrations import store

    p = store().progress(migration_id)
    print_progress(p)
    sys.exit(0 if p["status"] in ("completed", "running", "planned", "rolled_back") else 1)


@migrate.command("rollback")
@click.argument("migration_id")
@click.option("--timeout", default=3600.0, show_default=True)
@_local
def migrate_rollback(migration_id: str, timeout: float, local: bool) -> None:
    """Drop the tables the migration created, restore tables it wrote into from their snapshots; its progress
    starts over (`run` copies everything again)."""
    result = _step("rollback", migration_id, timeout, local)
    for obj in result["undone"]:
        console.print(f"undone: {escape(obj)}")
    console.print(f"migration {migration_id} rolled back: `dbfleet migrate run {migration_id}` starts it over")


@migrate.command("retry-rejects")
@click.argument("migration_id")
@click.option("--timeout", default=3600.0, show_default=True)
@_local
def migrate_retry_rejects(migration_id: str, timeout: float, local: bool) -> None:
    """After fixing the source: read the rows the target refused again (by key), write them, validate again."""
    result = _step("retry_rejects", migration_id, timeout, local)
    for batch, counts in sorted(result.get("retried", {}).items(), key=lambda kv: int(kv[0])):
        console.print(f"batch {batch}: {counts['retried']} rows read again, {counts['copied']} copied, "
                      f"{counts['rejects']} still refused")
    _finish(result)


def _step(name: str, migration_id: str, timeout: float, local: bool) -> dict[str, Any]:
    """A one-task step (rollback, retry_rejects), in this process or on a worker."""
    from engines.errors import ScriptFailed
    from workers import migration_steps

    if local:
        result: dict[str, Any] = getattr(migration_steps, name)(migration_id)
        return result
    _need_worker(local)
    from workers.manager import current_app

    migration_steps.store().plan(migration_id)  # an unknown id fails here, clearly
    try:
        with console.status(f"{name.replace('_', '-')} on a worker of the migrations queue"):
            result = current_app().send_task(f"migrations.{name}", args=[migration_id]).get(timeout=timeout)
    except ScriptFailed:
        raise
    except Exception as exc:
        raise ScriptFailed(str(exc)) from None
    return result


@migrate.command("list")
def migrate_list() -> None:
    """Recent migrations."""
    from workers.migrations import store

    console.print(rows_table("migrations", ["id", "status", "source", "target", "created", "error"],
                             [[m["id"], styled(m["status"]), m["source"], m["target"], m["created_at"],
                               escape((m["error"] or "")[:80])] for m in store().recent()]))


def _finish(p: dict[str, Any]) -> None:
    print_progress(p)
    if p["status"] != "completed":
        err_console.print(f"[red]migration {p['id']} {p['status']}[/red]: {escape(p['error'] or '')} "
                          f"(fix the cause, then: dbfleet migrate resume {p['id']})")
        sys.exit(1)
