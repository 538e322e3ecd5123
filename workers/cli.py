"""The `dbfleet` command."""

from __future__ import annotations

import os
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import click

from engines.errors import ConfigError, DbfleetError
from workers.render import console, err_console, health_table, history_table, key_value_table, rows_table


def _fail(message: str, code: int = 2) -> None:
    err_console.print(f"[red]error:[/red] {message}")
    sys.exit(code)


class _Group(click.Group):
    """Turn dbfleet errors into a readable message and a non-zero exit, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except DbfleetError as exc:
            _fail(str(exc))
        except TimeoutError as exc:
            _fail(str(exc), 3)


@click.group(cls=_Group)
@click.option("--config", "config_path", type=click.Path(dir_okay=False), envvar="DBFLEET_CONFIG",
              help="dbfleet.yaml (default: $DBFLEET_CONFIG or ./dbfleet.yaml)")
@click.option("--state-dir", envvar="DBFLEET_STATE_DIR", help="where dbfleet writes its own files")
def cli(config_path: str | None, state_dir: str | None) -> None:
    """dbfleet: database operations run by a fleet of Celery workers."""
    if config_path:
        os.environ["DBFLEET_CONFIG"] = str(Path(config_path).resolve())
    if state_dir:
        os.environ["DBFLEET_STATE_DIR"] = str(Path(state_dir).expanduser().resolve())


def _config() -> Any:
    from workers import runtime

    return runtime.config()


def _parse_sets(pairs: tuple[str, ...]) -> dict[str, Any]:
    import yaml

    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError([("--set", f"{pair!r} is not key=value")])
        out[key.strip()] = yaml.safe_load(value) if value else ""
    return out


@cli.group("config")
def config_group() -> None:
    """Inspect the configuration."""


@config_group.command("check")
def config_check() -> None:
    """Validate dbfleet.yaml and show the registry; errors name their field path."""
    from beat_schedule import build_beat_schedule

    cfg = _config()
    schedule = build_beat_schedule(cfg)
    rows, warnings = [], []
    for db_id, db in cfg.databases.items():
        where = f"{db.host}:{db.port}/{db.dbname or ''}" if db.host else (db.path or "dsn")
        secret = db.password_env and f"env {db.password_env}" or db.password_file and "file" or "-"
        rows.append([db_id, db.kind, where, secret, ", ".join(db.tags)])
        try:
            db.password()
        except DbfleetError as exc:
            warnings.append(str(exc))
    console.print(rows_table(f"databases ({cfg.source})", ["id", "kind", "where", "secret", "tags"], rows))
    console.print(f"broker: {_redact(cfg.fleet.broker_url)}   history: {_redact(cfg.fleet.resolved_history())}")
    console.print(f"beat entries from config: {len(schedule)}")
    warnings += _exposure_warnings(cfg)
    for w in warnings:
        err_console.print(f"[yellow]warning:[/yellow] {w}")
    console.print("[green]config OK[/green]")


def _exposure_warnings(cfg: Any) -> list[str]:
    """What docs/security.md asks an operator to look at: a missing API token, an open /metrics, inline configs."""
    from workers.api import api_token

    out = []
    try:
        api_token(cfg)
    except DbfleetError as exc:
        out.append(f"`dbfleet api` will not start: {exc}")
    if not (cfg.fleet.exporter.user or cfg.fleet.exporter.token_env):
        out.append("/metrics is unauthenticated: set fleet.exporter.user and password_env (docs/security.md)")
    if cfg.fleet.allow_inline_databases:
        out.append("inline database configs are allowed (fleet.allow_inline_databases); secret references in them: "
                   f"env prefix {cfg.fleet.inline_secrets.env_prefix!r}, files in {cfg.fleet.inline_secrets.file_dir!r}")
    return out


def _redact(url: str) -> str:
    from engines.secrets import redact_url

    return redact_url(url)


@cli.command()
@click.argument("script")
@click.argument("database_id")
@click.option("--set", "sets", multiple=True, help="option key=value (repeatable)")
@click.option("--wait/--no-wait", default=False, help="wait for the result and print it")
@click.option("--timeout", default=600.0, show_default=True, help="seconds to wait with --wait")
def run(script: str, database_id: str, sets: tuple[str, ...], wait: bool, timeout: float) -> None:
    """Enqueue SCRIPT (e.g. health-check) for DATABASE_ID."""
    from workers.manager import DatabaseScriptManager

    execution = DatabaseScriptManager().execute_script(script, database_id, _parse_sets(sets))
    console.print(f"queued {execution.script} for {database_id}: task {execution.task_id}")
    if not wait:
        return
    with console.status(f"{execution.script} on {database_id}: waiting") as spinner:
        result = execution.wait(timeout, on_poll=lambda s: spinner.update(
            f"{execution.script} on {database_id}: {_progress_text(s, execution.async_result.info)}"))
    _print_result(result)
    if result.get("status") == "down":
        sys.exit(1)


def _progress_text(state: str, info: Any) -> str:
    """``progress 42% (1.2 GiB)`` for tasks that publish progress, else the state."""
    if state != "PROGRESS" or not isinstance(info, dict):
        return state.lower()
    from workers.render import human_bytes

    percent = f"{info['percent']:.0f}% " if info.get("percent") is not None else ""
    return f"{info.get('phase', 'progress')} {percent}({human_bytes(int(info.get('bytes') or 0))})"


def _print_result(result: dict[str, Any]) -> None:
    if "checks" in result:
        console.print(health_table(result))
        if result.get("error"):
            err_console.print(f"[red]{result['error']}[/red]")
    else:
        console.print(key_value_table("result", list(result.items())))


@cli.command()
def status() -> None:
    """Workers online, queue depths and recent failures."""
    from workers import runtime
    from workers.app import QUEUES, app
    from workers.status import fleet_status

    with console.status("asking the fleet"):
        st = fleet_status(app, runtime.history(), QUEUES)
    workers = st["workers"]
    console.print(rows_table("workers online", ["worker", "queues"],
                             [[w, ", ".join(q)] for w, q in sorted(workers.items())] or [["none", "-"]]))
    console.print(rows_table("queues", ["queue", "waiting"], [[q, n] for q, n in st["queues"].items()]))
    console.print(history_table(st["recent_failures"]) if st["recent_failures"] else "no recent failures")
    if not workers:
        sys.exit(1)


@cli.command()
@click.option("--script", help="only this script type")
@click.option("--db", "database_id", help="only this database id")
@click.option("--since", help="e.g. 2h, 3d, or an ISO timestamp")
@click.option("--status", "state", type=click.Choice(["running", "succeeded", "failed"]))
@click.option("--limit", default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="print JSON")
def history(script: str | None, database_id: str | None, since: str | None, state: str | None,
            limit: int, as_json: bool) -> None:
    """Past script runs, newest first."""
    import json

    from workers.manager import DatabaseScriptManager

    rows = [r.to_row() for r in DatabaseScriptManager().get_script_history(
        script, database_id, limit, _since(since) if since else None, state)]
    if as_json:
        click.echo(json.dumps(rows, indent=2, default=str))
    else:
        console.print(history_table(rows))


def _since(text: str) -> datetime:
    units = {"m": "minutes", "h": "hours", "d": "days"}
    if text[-1:] in units and text[:-1].isdigit():
        return datetime.now(timezone.utc) - timedelta(**{units[text[-1]]: int(text[:-1])})
    try:
        ts = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError([("--since", f"{text!r}: use 30m, 2h, 7d or an ISO timestamp")]) from None
    return ts if ts.tzinfo else ts.replace(tzinfo=timezone.utc)


@cli.command()
@click.option("--queues", "-Q", default=None, help="comma-separated queues (default: all)")
@click.option("--concurrency", "-c", type=int, default=None)
@click.option("--name", "-n", default=None, help="worker node name, e.g. backups@%h")
@click.option("--loglevel", default="INFO")
def worker(queues: str | None, concurrency: int | None, name: str | None, loglevel: str) -> None:
    """Run a Celery worker on some queues (same as celery -A workers.app worker -Q ...)."""
    from workers.app import LONG_QUEUES, QUEUES, app

    chosen = [q.strip() for q in (queues or ",".join(QUEUES)).split(",") if q.strip()]
    unknown = sorted(set(chosen) - set(QUEUES))
    if unknown:
        raise ConfigError([("--queues", f"unknown queue(s) {unknown}; known: {', '.join(QUEUES)}")])
    argv = ["worker", "-Q", ",".join(chosen), f"--loglevel={loglevel}", "-E"]
    # long queues keep prefetch at 1; short-only groups may hold a few messages per process
    argv.append(f"--prefetch-multiplier={1 if set(chosen) & LONG_QUEUES else 4}")
    if concurrency:
        argv.append(f"--concurrency={concurrency}")
    if name:
        argv.append(f"--hostname={name}")
    app.worker_main(argv)


@cli.command()
@click.option("--loglevel", default="INFO")
def beat(loglevel: str) -> None:
    """Run Celery beat with the redbeat scheduler (one active beat per fleet, by lock)."""
    from workers.app import app

    app.start(["beat", "-S", "redbeat.RedBeatScheduler", f"--loglevel={loglevel}"])


@cli.command()
@click.option("--port", type=int, default=None)
@click.option("--address", default=None)
def flower(port: int | None, address: str | None) -> None:
    """Run Flower with basic auth (credentials from fleet.flower in the config)."""
    from workers.app import app

    fc = _config().fleet.flower
    password = fc.password()
    if not password:
        raise ConfigError([("fleet.flower", "Flower runs with basic auth: set "
                            f"{fc.password_env or 'password_env'} or fleet.flower.password_file")])
    os.environ["FLOWER_BASIC_AUTH"] = f"{fc.user}:{password}"  # env, so it never shows in ps
    app.start(["flower", f"--address={address or fc.address}", f"--port={port or fc.port}"])


@cli.command()
@click.option("--port", type=int, default=None)
@click.option("--address", default=None)
def exporter(port: int | None, address: str | None) -> None:
    """Serve Prometheus metrics from cached health results and history."""
    import logging

    from workers.exporter import serve

    logging.basicConfig(level=logging.INFO)
    ec = _config().fleet.exporter
    serve(address or ec.address, port or ec.port)


@cli.command()
@click.option("--port", type=int, default=None)
@click.option("--address", default=None)
@click.option("--generate-token", is_flag=True, help="create <state dir>/secrets/api.token (0600) if absent, print it")
def api(port: int | None, address: str | None, generate_token: bool) -> None:
    """Serve the monitoring REST + WebSocket API (OpenAPI at /docs, dashboard at /); every route needs the token."""
    from workers import api as rest

    cfg = _config()
    if generate_token:
        path, created = rest.generate_token(cfg)
        console.print(f"API token {'written to' if created else 'already in'} {path} (mode 0600): "
                      f"[bold]{rest.api_token(cfg)}[/bold]")
        return
    rest.api_token(cfg)  # no token source: a clear error before anything listens
    serve_address = address or cfg.fleet.api.address
    console.print(f"dashboard: http://{serve_address}:{port or cfg.fleet.api.port}/ (sign in with the API token)")
    rest.serve(serve_address, port or cfg.fleet.api.port)


@cli.command()
@click.option("--groups", default=None, help="only these worker groups (comma-separated)")
def up(groups: str | None) -> None:
    """Run the whole fleet (workers per group, beat, flower, exporter, API) supervised, until Ctrl-C."""
    from engines.config import default_config_path
    from workers.supervisor import Supervisor, ensure_api_token, fleet_children

    cfg = _config()
    path = default_config_path()
    if path is None:
        raise ConfigError([("--config", "dbfleet up needs a config file (--config or DBFLEET_CONFIG)")])
    token, where = ensure_api_token(cfg)
    console.print(f"API token: [bold]{token}[/bold] (from {where}); dashboard: "
                  f"http://{cfg.fleet.api.address}:{cfg.fleet.api.port}/")
    children = fleet_children(cfg, path.resolve(), groups.split(",") if groups else None)
    sup = Supervisor(children)
    sup.start()
    console.print(rows_table("fleet", ["process", "pid", "log"],
                             [[c.name, c.proc.pid if c.proc else "-", c.log] for c in children]))
    console.print("Ctrl-C stops everything")
    sup.run_forever()


@cli.command()
@click.option("--scale", default=300_000, show_default=True, help="play events to generate")
@click.option("--keep-running", is_flag=True, help="leave the fleet up until Ctrl-C")
@click.option("--fresh", is_flag=True, help="regenerate the sample database")
def demo(scale: int, keep_running: bool, fresh: bool) -> None:
    """Run the fleet on embedded Redis + PostgreSQL 18 with a sample music database."""
    from workers.demo import run_demo

    sys.exit(run_demo(scale=scale, keep_running=keep_running, fresh=fresh))


@cli.group()
def schedule() -> None:
    """Runtime schedules, persisted in Redis (celery-redbeat)."""


@schedule.command("add")
@click.argument("script")
@click.argument("database_id")
@click.argument("cron")
@click.option("--name", default=None)
@click.option("--set", "sets", multiple=True)
def schedule_add(script: str, database_id: str, cron: str, name: str | None, sets: tuple[str, ...]) -> None:
    """Run SCRIPT on DATABASE_ID at CRON (five fields, quoted)."""
    from workers.manager import DatabaseScriptManager

    entry = DatabaseScriptManager().schedule_script(script, cron, database_id, _parse_sets(sets), name)
    console.print(f"scheduled [bold]{entry['name']}[/bold]: {entry['script']} on {database_id} at '{cron}'")


@schedule.command("list")
def schedule_list() -> None:
    """Every schedule beat runs: from the config and added at runtime."""
    from workers.manager import DatabaseScriptManager

    rows = DatabaseScriptManager().list_schedules()
    console.print(rows_table("schedules", ["name", "task", "args", "schedule", "next due", "origin"],
                             [[r["name"], r["task"], r["args"], r["schedule"], r["next_due"], r["origin"]]
                              for r in rows]))


@schedule.command("remove")
@click.argument("name")
def schedule_remove(name: str) -> None:
    """Remove a runtime schedule."""
    from workers.manager import DatabaseScriptManager

    DatabaseScriptManager().unschedule(name)
    console.print(f"removed {name}")


def _register() -> None:
    from workers.cli_audit import audit, audit_checks
    from workers.cli_backups import backups
    from workers.cli_bench import bench
    from workers.cli_compliance import compliance
    from workers.cli_dr import dr
    from workers.cli_kinds import kinds
    from workers.cli_migrate import migrate
    from workers.cli_repo import repo
    from workers.cli_tune import tune
    from workers.cli_wal import wal

    cli.add_command(backups)
    cli.add_command(repo)
    cli.add_command(audit)
    cli.add_command(audit_checks)
    cli.add_command(tune)
    cli.add_command(migrate)
    cli.add_command(kinds)
    cli.add_command(wal)
    cli.add_command(compliance)
    cli.add_command(dr)
    cli.add_command(bench)


_register()


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="dbfleet")


if __name__ == "__main__":
    main()
