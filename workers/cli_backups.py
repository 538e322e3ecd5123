"""`dbfleet backups ...` and `dbfleet repo ...`: run backup work through the fleet (or --local) and read repositories."""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import click
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn, TransferSpeedColumn

from workers.render import console, err_console, human_bytes, key_value_table, rows_table

ProgressFn = Callable[[int, int | None], None]


@contextmanager
def progress_bar(title: str) -> Iterator[ProgressFn]:
    """A byte progress bar; the yielded function takes (done, total or None)."""
    columns = [TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
               TimeElapsedColumn()]
    with Progress(*columns, console=err_console, transient=False) as bar:
        task = bar.add_task(title, total=None)

        def update(done: int, total: int | None) -> None:
            bar.update(task, completed=done, total=max(total, done) if total else None)

        yield update


def run_script(script: str, database_id: str, options: dict[str, Any], *, local: bool, timeout: float) -> dict[str, Any]:
    """Run a backups- or audits-queue script through a worker (default) or in this process; show progress."""
    if local:
        return _run_local(script, database_id, options)
    from workers.manager import DatabaseScriptManager, current_app
    from workers.scripts import resolve
    from workers.status import require_worker

    require_worker(current_app(), resolve(script)[2])  # says so in seconds instead of waiting for nobody
    execution = DatabaseScriptManager().execute_script(script, database_id, options)
    err_console.print(f"queued {execution.script} for {database_id}: task {execution.task_id}")
    return wait_with_progress(execution, timeout)


def wait_with_progress(execution: Any, timeout: float) -> dict[str, Any]:
    """Wait for a submitted run, drawing the bytes it reports in its PROGRESS state."""
    deadline = time.monotonic() + timeout
    with progress_bar(f"{execution.script} {execution.database_id}") as update:
        while not execution.async_result.ready():
            info = execution.async_result.info
            if execution.state == "PROGRESS" and isinstance(info, dict):
                update(int(info.get("bytes") or 0), info.get("total"))
            if time.monotonic() > deadline:
                raise TimeoutError(f"{execution.script} on {execution.database_id} still {execution.state} after "
                                   f"{timeout:.0f}s (is a worker consuming the backups queue? dbfleet status)")
            time.sleep(0.25)
    result: dict[str, Any] = execution.wait(0)
    return result


def _run_local(script: str, database_id: str, options: dict[str, Any]) -> dict[str, Any]:
    from workers.audits import OPERATIONS as AUDIT_OPERATIONS
    from workers.backups import OPERATIONS
    from workers.common import Run, run_recorded
    from workers.manager import check_options

    check_options(options)
    run = Run(f"local-{uuid.uuid4()}", script, database_id, options, queue="local", worker="cli", local=True)
    if script in ("backup", "restore", "restore_drill"):
        with progress_bar(f"{script} {database_id}") as update:
            return run_recorded(run, lambda db, opts: OPERATIONS[script](db, opts, update))
    operation = {**OPERATIONS, **AUDIT_OPERATIONS}[script]
    return run_recorded(run, lambda db, opts: operation(db, opts, None))  # a failed check (ok: false) exits 1


def print_result(script: str, result: dict[str, Any]) -> None:
    if script == "backup":
        stats = result["stats"]
        console.print(key_value_table(f"backup {result['backup_id']} of {result['database_id']}", [
            ("kind / tool", f"{result['kind']} / {result['dump']['tool_version']}"),
            ("server", result["dump"]["server_version"]),
            ("dumped", human_bytes(stats["total_bytes"])),
            ("new (deduplicated)", f"{human_bytes(stats['new_bytes'])} in {stats['new_chunks']} of "
                                   f"{stats['chunks']} chunks"),
            ("stored (compressed, encrypted)", human_bytes(stats["stored_bytes"])),
            ("tables counted", len(result["dump"]["row_counts"])),
            ("duration", f"{result['duration_seconds']:.1f} s"),
            ("warnings", "; ".join(result["dump"]["warnings"]) or "none")]))
    elif script == "backup_verify":
        verdict = "[green]ok[/green]" if result["ok"] else f"[red]{result['problem_count']} problems[/red]"
        console.print(key_value_table("verify", [
            ("result", verdict), ("backups checked", result["backups_checked"]),
            ("chunks referenced", result["chunks_referenced"]),
            ("chunks read", f"{result['chunks_read']} ({human_bytes(result['bytes_read'])})")]))
        if result["problems"]:
            console.print(rows_table("problems", ["backup", "object", "problem"],
                                     [[p["backup"], p["object"], p["problem"]] for p in result["problems"]]))
    elif script == "restore_drill" and result.get("method") == "pitr":
        verdict = "[green]passed[/green]" if result["ok"] else "[red]FAILED[/red]"
        rpo = "-" if result["rpo_seconds"] is None else f"{result['rpo_seconds']:.3f} s"
        console.print(key_value_table(f"PITR drill of {result['database_id']} ({result['target']})", [
            ("result", verdict), ("base backup", result["backup_id"]),
            ("measured RTO (restore + WAL replay)", f"{result['rto_seconds']:.1f} s"),
            ("measured RPO", rpo), ("newest commit on the source", result["newest_committed_at"] or "-"),
            ("newest commit recovered", result["newest_recovered_at"] or "-"),
            ("RPO measured against", result["rpo_measured_by"]),
            ("reached", f"LSN {result['reached']['lsn']}, timeline {result['reached']['timeline']}")]))
    elif script == "restore_drill":
        verdict = "[green]passed[/green]" if result["ok"] else "[red]FAILED[/red]"
        console.print(key_value_table(f"restore drill of {result['database_id']}", [
            ("result", verdict), ("backup", result["backup_id"]),
            ("measured RTO", f"{result['rto_seconds']:.1f} s"), ("RPO (backup age)", f"{result['rpo_seconds']:.0f} s"),
            ("rows", f"{result['rows_restored']} restored / {result['rows_expected']} in manifest"),
            ("tables compared", result["tables_compared"])]))
        if result["mismatches"]:
            console.print(rows_table("mismatches", ["table", "expected", "restored"],
                                     [[m["table"], m["expected"], m["restored"]] for m in result["mismatches"]]))
    elif script == "backup_prune":
        console.print(key_value_table("prune" + (" (dry run)" if result["dry_run"] else ""), [
            ("backups kept", len(result["kept"])), ("backups forgotten", len(result["forgotten"])),
            ("chunks deleted", result["chunks_deleted"]), ("space freed", human_bytes(result["bytes_freed"])),
            ("chunks remaining", result["chunks_remaining"])]))
        for name in result["forgotten"]:
            console.print(f"  forgot {name}")
    elif script == "security_audit":
        from workers.render_audit import print_audit

        print_audit(result)
    else:
        console.print(key_value_table(script, list(result.items())))


def _go(script: str, database_id: str, options: dict[str, Any], local: bool, timeout: float) -> None:
    result = run_script(script, database_id, options, local=local, timeout=timeout)
    print_result(script, result)
    if result.get("ok") is False:
        sys.exit(1)


_local = click.option("--local", is_flag=True, help="run in this process instead of on a worker")
_timeout = click.option("--timeout", default=6 * 3600.0, show_default=True, help="seconds to wait for a worker")
_storage = click.option("--storage", default=None, help="storage target (default: backup.storage)")


def pitr_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """--pitr/--lsn/--xid/--target-name/--latest/--immediate --data-dir --port (docs/pitr.md)."""
    for opt in reversed([
            click.option("--pitr", default=None, help="PostgreSQL PITR: recover to this time (with a zone)"),
            click.option("--lsn", default=None, help="PITR: recover to this WAL position"),
            click.option("--xid", default=None, help="PITR: recover to this transaction id"),
            click.option("--target-name", default=None, help="PITR: recover to this restore point"),
            click.option("--latest", is_flag=True, help="PITR: replay every archived WAL file"),
            click.option("--immediate", is_flag=True, help="PITR: stop as soon as the base backup is consistent"),
            click.option("--timeline", default=None, help="PITR: recover along this timeline (default: the newest "
                         "one descending from the base backup; an older one recovers its abandoned future)"),
            click.option("--data-dir", default=None, help="PITR: the new data directory"),
            click.option("--in-place", is_flag=True, help="PITR over the cluster's own data directory "
                         "(backup.data_dir; refused while it runs, the old one is moved aside)"),
            click.option("--port", default=None, type=int, help="PITR: port of the recovered server")]):
        func = opt(func)
    return func


@click.group("backups")
def backups() -> None:
    """Back up, verify, restore, drill and prune."""


@backups.command("run")
@click.argument("database_id")
@_storage
@click.option("--no-compression", is_flag=True, help="store chunks uncompressed")
@click.option("--physical", is_flag=True, default=None, help="PostgreSQL: pg_basebackup base backup (docs/pitr.md)")
@click.option("--incremental", is_flag=True, default=None, help="with --physical, PostgreSQL 17+: block-level incremental")
@_local
@_timeout
def backups_run(database_id: str, storage: str | None, no_compression: bool, local: bool, timeout: float,
                physical: bool | None, incremental: bool | None) -> None:
    """Take a backup of DATABASE_ID now."""
    opts: dict[str, Any] = {"storage": storage} if storage else {}
    opts |= {k: True for k, v in (("physical", physical or incremental), ("incremental", incremental)) if v}
    if no_compression:
        opts["compression"] = False
    _go("backup", database_id, opts, local, timeout)


@backups.command("verify")
@click.argument("database_id")
@click.option("--backup", "backup_id", default=None, help="one backup (id or prefix)")
@click.option("--read-data", is_flag=True, help="download, decrypt and re-hash chunks")
@click.option("--subset", default="100%", show_default=True, help="with --read-data: percent of chunks to read")
@_storage
@_local
@_timeout
def backups_verify(database_id: str, backup_id: str | None, read_data: bool, subset: str, storage: str | None,
                   local: bool, timeout: float) -> None:
    """Check DATABASE_ID's backups."""
    opts = {"read_data": read_data, "subset": subset.rstrip("%"), "backup_id": backup_id, "storage": storage}
    _go("backup_verify", database_id, {k: v for k, v in opts.items() if v is not None}, local, timeout)


@backups.command("restore")
@click.argument("database_id")
@click.option("--backup", "backup_id", default=None, help="backup id or prefix (default: latest)")
@click.option("--target", default=None, help="database id to restore into (default: DATABASE_ID)")
@click.option("--target-dbname", default=None, help="database name on the target server")
@click.option("--target-path", default=None, help="sqlite: file to restore into")
@click.option("--tables", default=None, help="comma-separated tables (PostgreSQL)")
@click.option("--clean", is_flag=True, help="drop existing objects instead of refusing a non-empty target")
@click.option("--jobs", default=2, show_default=True, help="pg_restore parallel jobs")
@click.option("--no-owner", is_flag=True, help="PostgreSQL: do not restore ownership and grants")
@pitr_options
@_storage
@_local
@_timeout
def backups_restore(database_id: str, local: bool, timeout: float, **kw: Any) -> None:
    """Restore a backup of DATABASE_ID (verified first; nothing is written if it is damaged)."""
    opts = {k: v for k, v in kw.items() if v not in (None, False)}
    _go("restore", database_id, opts, local, timeout)


@backups.command("drill")
@click.argument("database_id")
@click.option("--backup", "backup_id", default=None)
@click.option("--pitr", default=None, help="PostgreSQL physical backups: drill a recovery to this time (with a zone)")
@click.option("--latest", is_flag=True, help="PostgreSQL physical backups: drill a recovery of every archived WAL file")
@_storage
@_local
@_timeout
def backups_drill(database_id: str, backup_id: str | None, storage: str | None, local: bool, timeout: float,
                  pitr: str | None, latest: bool) -> None:
    """Restore into a scratch target, compare row counts (or recover a physical backup), report RTO and RPO."""
    opts = {k: v for k, v in {"backup_id": backup_id, "storage": storage, "pitr": pitr, "latest": latest}.items() if v}
    _go("restore_drill", database_id, opts, local, timeout)


@backups.command("prune")
@click.argument("database_id")
@click.option("--dry-run", is_flag=True, help="only show what would go")
@_storage
@_local
@_timeout
def backups_prune(database_id: str, dry_run: bool, storage: str | None, local: bool, timeout: float) -> None:
    """Apply backup.retention / retention_days and delete unreferenced chunks."""
    opts: dict[str, Any] = {"dry_run": dry_run, **({"storage": storage} if storage else {})}
    _go("backup_prune", database_id, opts, local, timeout)


@backups.command("list")
@click.argument("database_id", required=False)
@_storage
def backups_list(database_id: str | None, storage: str | None) -> None:
    """Backups in the repository (all databases, or one)."""
    from rich.table import Table

    from engines.backup.engine import open_repository
    from engines.errors import DbfleetError
    from workers import runtime

    repo = open_repository(runtime.config(), storage)
    table = Table(title=f"backups in {repo.storage.describe()}", title_justify="left")
    table.add_column("backup", no_wrap=True)
    for col in ("database", "size", "new", "stored", "took"):
        table.add_column(col, justify="left" if col == "database" else "right")
    damaged = []
    for db_id, b_id in repo.backup_ids(database_id):
        try:
            m = repo.load_manifest(db_id, b_id)
        except DbfleetError as exc:
            damaged.append(f"{db_id}/{b_id}: {exc}")
            table.add_row(b_id, db_id, "[red]DAMAGED[/red]", "", "", "")
            continue
        s = m["stats"]
        table.add_row(b_id, db_id, human_bytes(s["total_bytes"]), human_bytes(s["new_bytes"]),
                      human_bytes(s["stored_bytes"]), f"{m['duration_seconds']:.1f}s")
    console.print(table)
    for line in damaged:  # listed and marked; exit 0 so the good backups stay usable from scripts
        err_console.print(f"[yellow]warning:[/yellow] damaged backup {line} (run `dbfleet backups verify`)")


@backups.command("show")
@click.argument("database_id")
@click.argument("backup_id", default="latest")
@_storage
def backups_show(database_id: str, backup_id: str, storage: str | None) -> None:
    """One backup's manifest: tool, versions, streams, row counts."""
    from engines.backup.engine import find_backup, open_repository, summarize
    from workers import runtime

    m = summarize(find_backup(open_repository(runtime.config(), storage), database_id, backup_id))
    print_result("backup", m)
    console.print(rows_table("streams", ["name", "format", "size", "sha256", "new chunks"],
                             [[s["name"], s["format"], human_bytes(s["size"]), s["sha256"][:16], s["new_chunks"]]
                              for s in m["streams"]]))
    counts = m["dump"]["row_counts"]
    exact = "exact" if m["dump"]["row_counts_exact"] else "approximate"
    console.print(rows_table("row counts", ["table", f"rows ({exact})"], [[t, n] for t, n in counts.items()]))
