"""Benchmarks as an API: sweep backup and migration settings through a real (private) fleet.

    report = await run_backup_benchmark(database_sizes=[100_000, 1_000_000], compression_levels=[1, 6, 9],
                                        encryption_enabled=[True, False])
    report = await run_migration_benchmark(source_size=1_000_000, parallel_workers=[1, 2, 4, 8],
                                           batch_sizes=[10_000, 50_000])

also ``dbfleet bench backup|migration``. A sweep never touches the fleet it is called from: it starts its own
embedded PostgreSQL 18 and Redis and one ``dbfleet worker`` under ``--dir`` (default ``<state>/bench``),
generates the demo's music database at each asked size (kept between runs), sends every setting through that
worker as ordinary tasks (``backups.run`` / ``migrations.plan`` + ``run``), and times the field's tool on the
same data in the same run: ``pg_dump -Fc`` at the same compression (zstd when the server's pg_dump has it) for
backups, ``pg_dump | psql`` for migrations. It prints a table, writes JSON and a self-contained SVG chart of
throughput per setting, and refuses sizes that would not fit on the disk. Times are measurements, not verdicts:
the machine may be shared.

The async API runs the sweep in a child process (``python -m workers.bench``) so the caller's own fleet config
and Celery app are never swapped out; the CLI runs it in its own process.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import yaml

from engines.bench import Cell, Report, check_bools, check_disk, check_ints, check_sizes
from engines.errors import ConfigError, DbfleetError, ScriptFailed

PASSWORD_FILE = "postgres.password"
Progress = Callable[[str, int, int], None]  # (what, done, total)


def _quiet(_: str, __: int, ___: int) -> None:
    return None


def default_dir() -> Path:
    from workers import runtime

    return runtime.config().fleet.state_path() / "bench"


class BenchServers:
    """An embedded PostgreSQL 18 and Redis under ``root`` and, per phase, one ``dbfleet worker``."""

    def __init__(self, root: Path) -> None:
        from engines.embedded import EmbeddedPostgres, EmbeddedRedis
        from engines.secrets import ensure_private_dir, write_private

        self.root = ensure_private_dir(root)
        secrets_dir = ensure_private_dir(self.root / "secrets")
        self.password_file = secrets_dir / PASSWORD_FILE
        if not self.password_file.exists():
            import secrets

            write_private(self.password_file, secrets.token_urlsafe(18) + "\n")
        self.key_file = secrets_dir / "repository.key"
        if not self.key_file.exists():
            import secrets

            write_private(self.key_file, secrets.token_urlsafe(32) + "\n")
        self.password = self.password_file.read_text().strip()
        self.pg = EmbeddedPostgres(self.root / "pg", self.password)
        self.redis = EmbeddedRedis(self.root / "redis")

    def __enter__(self) -> BenchServers:
        self.pg.start()
        self.redis.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self.redis.stop()
        self.pg.stop()

    def conninfo(self, dbname: str) -> dict[str, Any]:
        return {"host": "127.0.0.1", "port": self.pg.port, "user": "postgres", "password": self.password,
                "dbname": dbname}

    def admin(self, statement: Any, params: tuple[Any, ...] | None = None) -> Any:
        import psycopg

        with psycopg.connect(autocommit=True, **self.conninfo("postgres")) as conn:
            cur = conn.execute(statement, params)
            return cur.fetchone() if cur.description else None

    def music(self, events: int) -> dict[str, int]:
        """``bench_music_<events>``: the demo's music database at that size, generated once and kept."""
        import psycopg
        from psycopg import sql

        from engines.embedded.music import generate_music_database

        name, marker = f"bench_music_{events}", f"dbfleet-bench events={events} v1"
        row = self.admin("SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s",
                         (name,))
        if row is None or row[0] != marker:
            if row is not None:
                self.admin(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
            self.admin(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            with psycopg.connect(autocommit=True, **self.conninfo(name)) as conn:
                generate_music_database(conn, events)
            self.admin(sql.SQL("COMMENT ON DATABASE {} IS {}").format(sql.Identifier(name), sql.Literal(marker)))
        with psycopg.connect(autocommit=True, **self.conninfo(name)) as conn:
            size = (conn.execute("SELECT pg_database_size(current_database())").fetchone() or (0,))[0]
            rows = (conn.execute("SELECT sum(n_live_tup)::bigint FROM pg_stat_user_tables").fetchone() or (0,))[0]
            if not rows:  # statistics not in yet: count the large table at least
                rows = (conn.execute("SELECT count(*) FROM play_events").fetchone() or (0,))[0]
        return {"bytes": int(size), "rows": int(rows)}

    def recreate(self, dbname: str) -> None:
        from psycopg import sql

        self.admin(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname)))
        self.admin(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))

    def database(self, dbname: str) -> dict[str, Any]:
        return {"kind": "postgresql", "host": "127.0.0.1", "port": self.pg.port, "dbname": dbname,
                "user": "postgres", "password_file": str(self.password_file), "tags": ["bench"]}

    def fleet_config(self, databases: dict[str, Any], storage: dict[str, Any] | None = None,
                     encryption: bool = True) -> Path:
        """The bench fleet's dbfleet.yaml: this directory's Redis and state, secrets by file reference."""
        from engines.embedded.redis import free_port
        from engines.secrets import write_private

        cfg: dict[str, Any] = {
            "fleet": {"broker_url": f"{self.redis.url}/0", "result_backend": f"{self.redis.url}/1",
                      "cache_url": f"{self.redis.url}/2", "state_dir": str(self.root / "state"),
                      "api": {"port": free_port(), "token_file": str(self.root / "secrets" / "api.token")}},
            "databases": databases,
            "storage": storage or {},
            "database_scripts": {"backup": {"encryption": encryption},
                                 "monitoring": {"enabled": False}},
        }
        path = self.root / "dbfleet.yaml"
        write_private(path, yaml.safe_dump(cfg, sort_keys=False))
        return path

    @contextmanager
    def worker(self, config: Path, queues: list[str], concurrency: int) -> Iterator[Any]:
        """One ``dbfleet worker`` on ``queues``; this process uses the same config while it runs."""
        from workers import runtime
        from workers.migrations import celery_app
        from workers.status import workers_online

        previous = os.environ.get("DBFLEET_CONFIG")
        os.environ["DBFLEET_CONFIG"] = str(config)
        runtime.reset()
        log_path = self.root / "worker.log"
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "workers.cli", "worker", "--queues", ",".join(queues),
                 "--concurrency", str(concurrency), "--name", f"bench-{os.getpid()}@%h"],
                stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "DBFLEET_CONFIG": str(config)})
        try:
            app = celery_app()
            deadline = time.monotonic() + 120
            while not workers_online(app, timeout=1.0):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise ScriptFailed(f"the benchmark worker did not start: see {log_path}")
            yield app
        finally:
            proc.terminate()
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if previous is None:
                os.environ.pop("DBFLEET_CONFIG", None)
            else:
                os.environ["DBFLEET_CONFIG"] = previous
            runtime.reset()


def _pg_tool(name: str) -> Path:
    from engines.backup.tools import pg_tool

    path, _ = pg_tool(name, 18)
    return Path(path)


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def _run_tool(argv: list[str], env: dict[str, str], **kw: Any) -> None:
    kw.setdefault("stdout", subprocess.DEVNULL)
    proc = subprocess.run(argv, env=env, stderr=subprocess.PIPE, **kw)
    if proc.returncode != 0:
        raise ScriptFailed(f"{Path(argv[0]).name} failed (exit {proc.returncode}): "
                           f"{proc.stderr.decode(errors='replace')[-500:].strip()}")


def _zstd_dump(servers: BenchServers) -> bool:
    """Whether this pg_dump writes zstd (PostgreSQL 16+ built with zstd)."""
    probe = servers.root / "work" / "probe.dump"
    probe.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run([str(_pg_tool("pg_dump")), "-Fc", "-Z", "zstd:1", "-h", "127.0.0.1", "-p",
                           str(servers.pg.port), "-U", "postgres", "-d", "postgres", "-f", str(probe)],
                          env={**os.environ, "PGPASSWORD": servers.password}, capture_output=True)
    probe.unlink(missing_ok=True)
    return proc.returncode == 0


def backup_benchmark(root: Path, database_sizes: list[int], compression_levels: list[int],
                     encryption_enabled: list[bool], progress: Progress = _quiet) -> Report:
    """Every (size, level, encryption) backed up through the fleet into a fresh repository, beside
    ``pg_dump -Fc`` at the same level on the same database."""
    sizes = check_sizes(database_sizes)
    levels = check_ints(compression_levels, "compression_levels", 1, 22)
    encs = check_bools(encryption_enabled, "encryption_enabled")
    disk = check_disk(root, sizes, copies=1.0 + len(levels) * len(encs) * 0.5)
    started = datetime.now(UTC).isoformat()
    cells: list[Cell] = []
    total, done = len(sizes) * len(levels) * len(encs), 0
    with BenchServers(root) as servers:
        facts = {}
        for i, size in enumerate(sizes):
            progress(f"music database, {size:,} play events", i, len(sizes))
            facts[size] = servers.music(size)
        zstd = _zstd_dump(servers)
        env = {**os.environ, "PGPASSWORD": servers.password}
        tool_cache: dict[tuple[int, int], tuple[float, int]] = {}
        work = servers.root / "work"
        for enc in encs:
            storage, names = {}, {}
            for size in sizes:
                for level in levels:
                    name = f"{'enc' if enc else 'plain'}_{size}_z{level}"
                    path = servers.root / "repos" / name
                    shutil.rmtree(path, ignore_errors=True)  # a fresh repository: nothing to deduplicate against
                    storage[name] = {"type": "filesystem", "path": str(path),
                                     **({"key_file": str(servers.key_file)} if enc else {})}
                    names[(size, level)] = name
            databases = {f"music_{s}": servers.database(f"bench_music_{s}") for s in sizes}
            config = servers.fleet_config(databases, storage, encryption=enc)
            with servers.worker(config, ["backups"], concurrency=1) as app:
                for size in sizes:
                    for level in levels:
                        progress(f"backup {size:,} events, zstd {level}, {'encrypted' if enc else 'plain'}",
                                 done, total)
                        wall, result = _timed(partial(_backup, app, f"music_{size}", {
                            "storage": names[(size, level)], "compression_level": level}))
                        if (size, level) not in tool_cache:
                            dump = work / f"music_{size}_z{level}.dump"
                            dump.parent.mkdir(parents=True, exist_ok=True)
                            spec = f"zstd:{level}" if zstd else str(min(level, 9))
                            tool_wall, _ = _timed(partial(_run_tool, [
                                str(_pg_tool("pg_dump")), "-Fc", "-Z", spec, "-h", "127.0.0.1", "-p",
                                str(servers.pg.port), "-U", "postgres", "-d", f"bench_music_{size}", "-f", str(dump)],
                                env))
                            tool_cache[(size, level)] = (tool_wall, dump.stat().st_size)
                            dump.unlink()
                        tool_wall, tool_bytes = tool_cache[(size, level)]
                        stats = result.get("stats") or {}
                        cells.append(Cell(
                            setting={"events": size, "level": level, "encryption": enc},
                            rows=facts[size]["rows"], source_bytes=facts[size]["bytes"], seconds=wall,
                            tool=f"pg_dump -Fc -Z zstd:{level}" if zstd else
                            f"pg_dump -Fc -Z {min(level, 9)} (gzip: this pg_dump has no zstd)",
                            tool_seconds=tool_wall, stored_bytes=stats.get("stored_bytes"), tool_bytes=tool_bytes,
                            task_ids=[result.get("task_id", "")] if result.get("task_id") else [],
                            extra={"backup_id": result.get("backup_id"), "dump_bytes": stats.get("total_bytes")}))
                        done += 1
                        progress("backups", done, total)
    return Report("backup", cells, _machine(disk), started)


def _backup(app: Any, database_id: str, options: dict[str, Any]) -> dict[str, Any]:
    async_result = app.send_task("backups.run", args=[database_id, options], queue="backups")
    try:
        result = async_result.get(timeout=6 * 3600)
    except DbfleetError:
        raise
    except Exception as exc:
        from engines.secrets import scrub

        raise ScriptFailed(f"backup of {database_id} failed: {scrub(str(exc))}") from None
    result = dict(result)
    result["task_id"] = async_result.id
    return result


def migration_benchmark(root: Path, source_size: int, parallel_workers: list[int], batch_sizes: list[int],
                        progress: Progress = _quiet) -> Report:
    """Every (parallel workers, batch size) migrating the music database PostgreSQL -> PostgreSQL through the
    fleet with validation, beside ``pg_dump | psql`` of the same database."""
    size = check_sizes([source_size], "source_size")[0]
    workers = check_ints(parallel_workers, "parallel_workers", 1, 64)
    batches = check_ints(batch_sizes, "batch_sizes", 100, 10_000_000)
    disk = check_disk(root, [size], copies=2.5)
    started = datetime.now(UTC).isoformat()
    cells: list[Cell] = []
    total, done = len(workers) * len(batches), 0
    with BenchServers(root) as servers:
        progress(f"music database, {size:,} play events", 0, 1)
        facts = servers.music(size)
        env = {**os.environ, "PGPASSWORD": servers.password}
        conn = ["-h", "127.0.0.1", "-p", str(servers.pg.port), "-U", "postgres"]

        def pipe() -> None:
            servers.recreate("bench_dump_target")
            dump = subprocess.Popen([str(_pg_tool("pg_dump")), *conn, "-d", f"bench_music_{size}"], env=env,
                                    stdout=subprocess.PIPE)
            _run_tool([str(_pg_tool("psql")), "-q", "-v", "ON_ERROR_STOP=1", *conn, "-d", "bench_dump_target"],
                      env, stdin=dump.stdout)
            if dump.wait() != 0:
                raise ScriptFailed("pg_dump failed in the pg_dump | psql baseline")

        databases = {"source": servers.database(f"bench_music_{size}"),
                     "target": servers.database("bench_migration_target")}
        config = servers.fleet_config(databases)
        with servers.worker(config, ["migrations"], concurrency=max(workers)):
            from workers import migrations

            tool_walls = []
            for pw in workers:
                for bs in batches:
                    progress(f"migration, {pw} workers, batches of {bs:,}", done, total)
                    servers.recreate("bench_migration_target")
                    wall, final = _timed(partial(_migrate, migrations, bs, pw))
                    tool_wall, _ = _timed(pipe)  # interleaved: the baseline sees the same machine state
                    tool_walls.append(tool_wall)
                    cells.append(Cell(
                        setting={"events": size, "parallel_workers": pw, "batch_size": bs},
                        rows=int(final.get("rows_copied") or facts["rows"]), source_bytes=facts["bytes"],
                        seconds=wall, tool="pg_dump | psql", tool_seconds=tool_wall,
                        extra={"migration_id": final.get("id"), "validation": final.get("validation_status")}))
                    done += 1
                    progress("migrations", done, total)
    return Report("migration", cells, _machine(disk), started)


def _migrate(migrations: Any, batch_size: int, parallel: int) -> dict[str, Any]:
    plan = migrations.plan("source", "target", batch_size=batch_size, parallel_workers=parallel, validation=True)
    migrations.run(plan.id)
    final = migrations.MigrationProgress(plan.id).wait_sync(timeout=6 * 3600, poll=0.1)
    if final.get("status") != "completed":
        raise ScriptFailed(f"migration {plan.id} ended {final.get('status')}: {final.get('error')}")
    final.setdefault("id", plan.id)
    final["rows_copied"] = int(final.get("rows") or 0)
    report = final.get("report") or {}
    if isinstance(report, dict) and "ok" in report:
        final["validation_status"] = "passed" if report["ok"] else "FAILED"
    return final


def _machine(disk: dict[str, int]) -> dict[str, Any]:
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    return {"cpus": os.cpu_count(), "load_average": [round(v, 2) for v in load], **disk}


# the async API: the sweep runs in a child process ------------------------------------------------------------


async def _child(kind: str, params: dict[str, Any], directory: Path | None) -> dict[str, Any]:
    argv = [sys.executable, "-m", "workers.bench", kind, json.dumps(params)]
    if directory is not None:
        argv.append(str(directory))
    proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE, env=os.environ.copy())
    out, err = await proc.communicate()
    text = out.decode(errors="replace").strip().splitlines()
    answer = json.loads(text[-1]) if text else {}
    if proc.returncode != 0 or "error" in answer:
        problem = answer.get("error") or err.decode(errors="replace")[-800:].strip()
        if answer.get("config_error"):
            raise ConfigError([(p, m) for p, m in answer["config_error"]], "benchmark")
        raise ScriptFailed(f"the {kind} benchmark failed: {problem}")
    return dict(answer)


async def run_backup_benchmark(database_sizes: list[int], compression_levels: list[int] | None = None,
                               encryption_enabled: list[bool] | None = None,
                               directory: str | Path | None = None) -> dict[str, Any]:
    """Sweep backups over sizes x compression levels x encryption through a private fleet; returns the report
    (``cells`` with seconds, MiB/s, the pg_dump baseline and ratio; ``json_path``; ``chart_path``)."""
    params: dict[str, Any] = {
        "database_sizes": check_sizes(database_sizes),
        "compression_levels": check_ints(compression_levels or [1, 6, 9], "compression_levels", 1, 22),
        "encryption_enabled": check_bools([True, False] if encryption_enabled is None else encryption_enabled,
                                          "encryption_enabled")}
    return await _child("backup", params, Path(directory) if directory else None)


async def run_migration_benchmark(source_size: int, parallel_workers: list[int] | None = None,
                                  batch_sizes: list[int] | None = None,
                                  directory: str | Path | None = None) -> dict[str, Any]:
    """Sweep PostgreSQL -> PostgreSQL migrations over parallel workers x batch sizes through a private fleet,
    each beside ``pg_dump | psql``; returns the report like :func:`run_backup_benchmark`."""
    params: dict[str, Any] = {
        "source_size": check_sizes([source_size], "source_size")[0],
        "parallel_workers": check_ints(parallel_workers or [1, 2, 4, 8], "parallel_workers", 1, 64),
        "batch_sizes": check_ints(batch_sizes or [10_000, 50_000], "batch_sizes", 100, 10_000_000)}
    return await _child("migration", params, Path(directory) if directory else None)


def run_sweep(kind: str, params: dict[str, Any], directory: Path | None, progress: Progress = _quiet) -> Report:
    root = (directory or default_dir()).resolve()
    if kind == "backup":
        report = backup_benchmark(root, params["database_sizes"], params["compression_levels"],
                                  params["encryption_enabled"], progress)
    elif kind == "migration":
        report = migration_benchmark(root, params["source_size"], params["parallel_workers"],
                                     params["batch_sizes"], progress)
    else:
        raise ConfigError([("kind", f"{kind!r}: expected backup or migration")], "benchmark")
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return report.write(root / "reports", f"{kind}-{stamp}")


def _main(argv: list[str]) -> int:
    """``python -m workers.bench KIND PARAMS_JSON [DIR]``: one JSON line on stdout, the report or the error."""
    kind, params = argv[0], json.loads(argv[1])
    directory = Path(argv[2]) if len(argv) > 2 else None
    try:
        report = run_sweep(kind, params, directory)
    except ConfigError as exc:
        print(json.dumps({"error": str(exc), "config_error": exc.problems}))
        return 2
    except DbfleetError as exc:
        from engines.secrets import scrub

        print(json.dumps({"error": scrub(str(exc))}))
        return 1
    print(json.dumps(report.to_dict(), default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
