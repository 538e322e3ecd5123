"""`dbfleet demo`: the whole fleet on embedded Redis and PostgreSQL 18, nothing installed.

Everything lives under the state directory; every child process is stopped at the end
(or on Ctrl-C) unless --keep-running.
"""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path
from typing import Any

import platformdirs
import yaml

from engines.embedded import EmbeddedPostgres, EmbeddedRedis, free_port
from engines.secrets import ensure_private_dir, write_private
from workers.render import console, err_console, health_table, rows_table, styled

DEMO_DB = "music"
COPY_DB = "music_copy"  # the migration step's target


def state_dir() -> Path:
    """--state-dir / DBFLEET_STATE_DIR, else <user data dir>/dbfleet/demo."""
    env = os.environ.get("DBFLEET_STATE_DIR")
    return Path(env) if env else Path(platformdirs.user_data_dir("dbfleet")) / "demo"


def _secret(path: Path) -> str:
    """Read a generated secret, creating it (mode 0600, in a 0700 directory) on first use."""
    if not path.exists():
        ensure_private_dir(path.parent)
        write_private(path, secrets.token_urlsafe(18) + "\n")
    return path.read_text().strip()


def demo_config(root: Path, redis: EmbeddedRedis, pg: EmbeddedPostgres) -> dict[str, Any]:
    """The generated dbfleet.yaml: secrets by file reference only."""
    sec = root / "secrets"
    return {
        "fleet": {
            "broker_url": f"{redis.url}/0", "result_backend": f"{redis.url}/1",
            "cache_url": f"{redis.url}/2", "state_dir": str(root),
            "history_url": f"sqlite:///{root / 'history.db'}",
            "flower": {"port": free_port(), "user": "admin", "password_env": None,
                       "password_file": str(sec / "flower.password")},
            "exporter": {"port": free_port()},
            "api": {"port": free_port(), "token_env": None, "token_file": str(sec / "api.token")},
        },
        "databases": {
            DEMO_DB: {"kind": "postgresql", "host": "127.0.0.1", "port": pg.port, "dbname": DEMO_DB,
                      "user": "postgres", "password_file": str(sec / "postgres.password"),
                      "tags": ["demo", "pii"], "thresholds": {"long_running_query_seconds": 1}},
            COPY_DB: {"kind": "postgresql", "host": "127.0.0.1", "port": pg.port, "dbname": COPY_DB,
                      "user": "postgres", "password_file": str(sec / "postgres.password"), "tags": ["demo"]},
            "fleet_redis": {"kind": "redis", "host": "127.0.0.1", "port": redis.port, "tags": ["broker"]},
            "history_sqlite": {"kind": "sqlite", "path": str(root / "history.db"), "tags": ["dbfleet"]},
        },
        "storage": {"demo_repo": {"type": "filesystem", "path": str(root / "backups"),
                                  "key_file": str(sec / "repository.key")}},
        "database_scripts": {
            "monitoring": {"enabled": True, "interval_seconds": 30, "alert_channels": ["log"], "alert_rules": [
                {"name": "music_long_queries", "expr": "long_running_queries > 0", "severity": "warning",
                 "databases": [DEMO_DB]}]},
            "backup": {"schedule": "0 2 * * *", "storage": "demo_repo", "backup_type": "incremental",
                       "retention": {"daily": 7, "weekly": 4, "monthly": 12}, "drill_schedule": "0 4 * * 0"},
        },
    }


def _prepare_music(pg: EmbeddedPostgres, password: str, scale: int, fresh: bool) -> dict[str, int] | None:
    """Create the music database at ``scale`` unless it exists at that scale already."""
    import psycopg

    from engines.embedded.music import generate_music_database

    kw: dict[str, Any] = {"host": "127.0.0.1", "port": pg.port, "user": "postgres", "password": password}
    marker = f"dbfleet-demo scale={scale}"
    with psycopg.connect(dbname="postgres", autocommit=True, **kw) as admin:
        row = admin.execute("SELECT shobj_description(oid, 'pg_database') FROM pg_database "
                            "WHERE datname = %s", (DEMO_DB,)).fetchone()
        if row and row[0] == marker and not fresh:
            return None
        if row:
            admin.execute(f"DROP DATABASE {DEMO_DB} WITH (FORCE)")  # constant name, not input
        admin.execute(f"CREATE DATABASE {DEMO_DB}")
        admin.execute(f"COMMENT ON DATABASE {DEMO_DB} IS '{marker}'")  # scale is an int
        admin.execute(f"DROP DATABASE IF EXISTS {COPY_DB} WITH (FORCE)")  # constant name, not input
        admin.execute(f"CREATE DATABASE {COPY_DB}")
    with psycopg.connect(dbname=DEMO_DB, autocommit=True, **kw) as conn:
        return generate_music_database(conn, scale)


def _migration_step() -> tuple[list[list[str]], bool]:
    """Migrate the music database into music_copy through the fleet and show the validation report."""
    from engines.errors import DbfleetError
    from workers import migrations
    from workers.cli_migrate import follow, print_plan, print_progress

    start = time.monotonic()
    try:
        plan = migrations.plan(DEMO_DB, COPY_DB, batch_size=50_000, parallel_workers=2, timeout=300)
        print_plan(plan)
        migrations.run(plan.id)
        final = follow(plan.id, timeout=1800)
    except (DbfleetError, TimeoutError) as exc:
        err_console.print(f"[red]migration failed: {exc}[/red]")
        return [["migration", f"{DEMO_DB} -> {COPY_DB}", styled("failed"), f"{time.monotonic() - start:.2f}s", "-"]], False
    print_progress(final)
    ok = final["status"] == "completed"
    return [["migration", f"{DEMO_DB} -> {COPY_DB}", styled("ok" if ok else "failed"),
             f"{time.monotonic() - start:.2f}s", plan.id[-6:]]], ok


def _wait_for_workers(app: Any, expected: int, timeout: float = 90.0) -> dict[str, list[str]]:
    from workers.status import workers_online

    deadline = time.monotonic() + timeout
    online: dict[str, list[str]] = {}
    while time.monotonic() < deadline:
        online = workers_online(app, timeout=1.0)
        if len(online) >= expected:
            return online
        time.sleep(0.5)
    raise TimeoutError(f"only {len(online)} of {expected} workers came online in {timeout:.0f}s; "
                       "see the logs under the state directory")


def _flower_tasks(cfg: Any, task_ids: list[str]) -> int:
    """How many of ``task_ids`` Flower's API reports (with basic auth)."""
    import base64
    import json
    import urllib.request

    fc = cfg.fleet.flower
    token = base64.b64encode(f"{fc.user}:{fc.password()}".encode()).decode()
    req = urllib.request.Request(f"http://{fc.address}:{fc.port}/api/tasks",
                                 headers={"Authorization": f"Basic {token}"})
    deadline = time.monotonic() + 20
    seen: set[str] = set()
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                seen = set(json.load(resp)) & set(task_ids)
        except OSError:
            pass
        if len(seen) == len(task_ids):
            break
        time.sleep(1)
    return len(seen)


def _api_answers(cfg: Any) -> bool:
    """The API refuses a request without the token and answers one with it."""
    import urllib.error
    import urllib.request

    api = cfg.fleet.api
    url = f"http://{api.address}:{api.port}/api/monitoring/databases"
    with_token = urllib.request.Request(url, headers={"Authorization": f"Bearer {_secret(Path(api.token_file))}"})
    for _ in range(40):
        try:
            urllib.request.urlopen(url, timeout=5)
            return False  # answered without a token
        except urllib.error.HTTPError as exc:
            if exc.code != 401:
                return False
            with urllib.request.urlopen(with_token, timeout=5) as resp:
                return resp.status == 200
        except OSError:
            time.sleep(0.5)
    return False


def _scrape(cfg: Any) -> int:
    import urllib.request

    ec = cfg.fleet.exporter
    for _ in range(20):
        try:
            with urllib.request.urlopen(f"http://{ec.address}:{ec.port}/metrics", timeout=5) as r:
                return sum(1 for line in r.read().decode().splitlines()
                           if line.startswith("dbfleet_database_up{"))
        except OSError:
            time.sleep(0.5)
    return 0


def _operations(cfg: Any, app: Any) -> tuple[list[list[str]], list[str], bool]:
    """Run every operation that exists so far through the fleet; rows for the summary."""
    from workers.manager import DatabaseScriptManager, ScriptType

    manager = DatabaseScriptManager(app)
    rows, ids, ok = [], [], True
    for db_id in cfg.databases:
        start = time.monotonic()
        execution = manager.execute_script(ScriptType.HEALTH_CHECK, db_id)
        ids.append(execution.task_id)
        with console.status(f"health check of {db_id}"):
            result = execution.wait(timeout=120)
        console.print(health_table(result))
        ok = ok and result["status"] != "down"
        rows.append(["health_check", db_id, styled(result["status"]),
                     f"{time.monotonic() - start:.2f}s", execution.task_id[:8]])
    alert_rows, alert_ids, alert_ok = _alert_step(manager, cfg)
    rows, ids, ok = rows + alert_rows, ids + alert_ids, ok and alert_ok
    migration_rows, migrated = _migration_step()
    rows, ok = rows + migration_rows, ok and migrated
    for script, db_id, opts in BACKUP_STEPS:
        row, task_id, passed = _backup_step(manager, script, db_id, opts)
        rows.append(row)
        ids.append(task_id)
        ok = ok and passed
    return rows, ids, ok


def _alert_step(manager: Any, cfg: Any) -> tuple[list[list[str]], list[str], bool]:
    """A 3-second query makes the music_long_queries rule fire on the next health check, then resolve."""
    import threading

    import psycopg

    from workers import runtime

    db = cfg.databases[DEMO_DB]
    password = db.password()

    def slow_query() -> None:
        with psycopg.connect(host=db.host, port=db.port, dbname=db.dbname, user=db.user, password=password) as c:
            c.execute("SELECT pg_sleep(3) /* dbfleet demo: a long query */")

    start = time.monotonic()
    worker = threading.Thread(target=slow_query)
    worker.start()
    time.sleep(1.5)
    first = manager.execute_script("health_check", DEMO_DB)
    fired = [t for t in first.wait(timeout=120)["alerts"] if t["to"] == "firing"]
    active = runtime.alert_store().active(DEMO_DB)
    console.print(rows_table("alerts firing", ["id", "rule", "database", "state", "values"],
                             [[a["id"], a["rule"], a["database_id"], styled(a["state"]), a["values"]] for a in active]))
    worker.join()
    second = manager.execute_script("health_check", DEMO_DB)
    resolved = [t for t in second.wait(timeout=120)["alerts"] if t["to"] == "resolved"]
    ok = bool(fired) and bool(resolved)
    console.print(f"alert rule music_long_queries: {'fired, then resolved' if ok else 'did NOT fire and resolve'}")
    return [["alert rule", DEMO_DB, styled("ok" if ok else "failed"), f"{time.monotonic() - start:.2f}s",
             first.task_id[:8]]], [first.task_id, second.task_id], ok


# through the fleet: backups of three kinds, a full read-back, a drill, a security audit of the sample database
BACKUP_STEPS: list[tuple[str, str, dict[str, Any]]] = [
    ("backup", DEMO_DB, {}), ("backup", "fleet_redis", {}), ("backup", "history_sqlite", {}),
    ("backup_verify", DEMO_DB, {"read_data": True}), ("restore_drill", DEMO_DB, {}),
    ("security_audit", DEMO_DB, {}),
]


def _backup_step(manager: Any, script: str, db_id: str, opts: dict[str, Any]) -> tuple[list[str], str, bool]:
    from engines.errors import DbfleetError
    from workers.cli_backups import print_result, wait_with_progress

    start = time.monotonic()
    execution = manager.execute_script(script, db_id, opts)
    try:
        result = wait_with_progress(execution, timeout=1800)
    except DbfleetError as exc:
        err_console.print(f"[red]{script} of {db_id} failed: {exc}[/red]")
        return [script, db_id, styled("failed"), f"{time.monotonic() - start:.2f}s", execution.task_id[:8]], \
            execution.task_id, False
    if script == "security_audit":
        _audit_summary(result)  # the full findings table does not fit 80 columns: counts + the HTML page
    else:
        print_result(script, result)
    passed = result.get("ok", True) is not False
    return [script, db_id, styled("ok" if passed else "failed"), f"{time.monotonic() - start:.2f}s",
            execution.task_id[:8]], execution.task_id, passed


def _audit_summary(result: dict[str, Any]) -> None:
    """Failing findings by severity and where the full HTML report was written (under the state dir)."""
    from engines.secrets import write_private
    from engines.security.model import SEVERITIES, AuditReport
    from engines.security.report import to_html

    report = AuditReport.from_dict(result)
    failing = report.failing()
    counts = {sev: sum(1 for f in failing if f.severity == sev) for sev in SEVERITIES}
    page = state_dir().expanduser().resolve() / "reports" / f"audit-{report.database_id}.html"
    page.parent.mkdir(parents=True, exist_ok=True)
    write_private(page, to_html(report))
    console.print(rows_table(f"security audit of {report.database_id}: failing findings", ["severity", "count"],
                             [[sev, str(n)] for sev, n in counts.items()]))
    console.print(f"full report: {page}")


def _summary(cfg: Any, root: Path, rows: list[list[str]], ids: list[str], started: float) -> bool:
    """Print the summary table and where to look; True when Flower and the exporter saw everything."""
    in_flower = _flower_tasks(cfg, ids)
    metrics = _scrape(cfg)
    console.print(rows_table("demo summary", ["operation", "database", "result", "wall", "task"], rows))
    fc, ec = cfg.fleet.flower, cfg.fleet.exporter
    console.print(f"Flower:   http://{fc.address}:{fc.port}  user [bold]{fc.user}[/bold] password "
                  f"[bold]{fc.password()}[/bold] (from {fc.password_file}); it shows {in_flower}/{len(ids)} tasks")
    console.print(f"Exporter: http://{ec.address}:{ec.port}/metrics  ({metrics} databases reported)")
    api, api_ok = cfg.fleet.api, _api_answers(cfg)
    console.print(f"API:      http://{api.address}:{api.port}/api/monitoring/databases  header "
                  f"[bold]Authorization: Bearer {_secret(Path(api.token_file))}[/bold] (from {api.token_file}); "
                  f"{'401 without it, 200 with it' if api_ok else 'did NOT answer as expected'}")
    console.print(f"State:    {root}   history: dbfleet --config {root / 'dbfleet.yaml'} history")
    ok = in_flower == len(ids) and metrics == len(cfg.databases) and api_ok
    console.print(f"demo {'finished' if ok else 'FAILED'} in {time.monotonic() - started:.1f}s")
    return ok


def _start_servers(root: Path, redis: EmbeddedRedis, pg: EmbeddedPostgres, scale: int, fresh: bool) -> Path:
    """Start Redis and PostgreSQL 18, fill the music database, write the config; returns its path."""
    with console.status("starting embedded Redis and PostgreSQL 18"):
        redis.start()
        pg.start()
    with console.status(f"generating the music database ({scale:,} play events)"):
        counts = _prepare_music(pg, pg.password, scale, fresh)
    if counts:
        console.print(rows_table("music database", ["table", "rows"], [[t, f"{n:,}"] for t, n in counts.items()]))
    cfg_path = root / "dbfleet.yaml"
    cfg_path.write_text(yaml.safe_dump(demo_config(root, redis, pg), sort_keys=False))
    return cfg_path


def run_demo(scale: int, keep_running: bool, fresh: bool) -> int:
    """The demo; returns the exit status."""
    from engines.config import load_config
    from workers import runtime
    from workers.app import create_app
    from workers.supervisor import Supervisor, fleet_children

    started = time.monotonic()
    root = state_dir().expanduser().resolve()
    ensure_private_dir(root)
    _secret(root / "secrets" / "flower.password")
    _secret(root / "secrets" / "repository.key")
    _secret(root / "secrets" / "api.token")
    redis = EmbeddedRedis(root / "redis")
    pg = EmbeddedPostgres(root / "postgres", _secret(root / "secrets" / "postgres.password"))
    sup: Supervisor | None = None
    try:
        cfg_path = _start_servers(root, redis, pg, scale, fresh)
        os.environ["DBFLEET_CONFIG"] = str(cfg_path)
        runtime.reset()
        cfg = load_config(cfg_path)
        app = create_app(cfg)
        sup = Supervisor(fleet_children(cfg, cfg_path))
        sup.start()
        with console.status("waiting for workers, beat, flower and the exporter"):
            online = _wait_for_workers(app, len(cfg.fleet.worker_groups))
        console.print(rows_table("workers online", ["worker", "queues"], [[w, ", ".join(q)] for w, q in online.items()]))
        rows, ids, ok = _operations(cfg, app)
        ok = _summary(cfg, root, rows, ids, started) and ok
        if keep_running:
            console.print("fleet is running; Ctrl-C stops it")
            sup.run_forever()
            sup = None
        return 0 if ok else 1
    except KeyboardInterrupt:
        err_console.print("interrupted: stopping the fleet")
        return 130
    finally:
        with console.status("stopping the fleet"):
            if sup:
                sup.stop()
            pg.stop()
            redis.stop()
