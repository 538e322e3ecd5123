"""`dbfleet demo` and `dbfleet up` as a user runs them: exit status, summary, nothing left running."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import psutil
import pytest

from tests.fleet.procs import child_env, run_cli, wait_for

pytestmark = pytest.mark.fleet


def _procs_mentioning(text: str) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if any(text in part for part in (p.info["cmdline"] or [])) and p.pid != os.getpid():
                found.append(p)
        except psutil.Error:
            continue
    return found


def test_demo_runs_end_to_end_and_leaves_nothing_running(tmp_path) -> None:
    state = tmp_path / "demo-state"
    env = dict(os.environ)
    env.pop("DBFLEET_CONFIG", None)
    out = run_cli(["--state-dir", str(state), "demo", "--scale", "20000"], env, timeout=600, columns=80)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    text = " ".join(out.stdout.split())  # rich wraps long lines
    for words in ("music database", "play_events", "demo summary", "health_check", "Flower:",
                  "│ backup │ music │ ok", "│ backup │ fleet_redis │ ok", "│ backup │ history_sqlite │ ok",
                  "│ backup_verify │ music │ ok", "│ restore_drill │ music │ ok", "measured RTO",
                  "alert rule music_long_queries: fired, then resolved", "│ security_audit │ music │ ok",
                  "│ status │ ok completed │",  # the migration into music_copy, validated
                  "it shows 12/12 tasks", "(4 databases reported)", "401 without it, 200 with it", "demo finished",
                  "security audit of music: failing findings", "full report:"):
        assert words in text, words
    page = state / "reports" / "audit-music.html"  # the audit's findings as one page, not a 150-column table
    assert page.read_text().startswith("<!doctype html>") and "pg." in page.read_text()
    assert max(len(line) for line in out.stdout.splitlines()) <= 80  # the summary fits an 80-column terminal
    assert _procs_mentioning(str(state)) == []
    written = {p.name for p in state.iterdir()}
    assert {"dbfleet.yaml", "history.db", "postgres", "redis", "logs", "secrets", "backups"} <= written
    assert len(list((state / "backups" / "backups").rglob("*"))) >= 6  # 3 database dirs, 3 manifests
    pw = (state / "secrets" / "postgres.password").read_text().strip()
    assert pw not in (state / "dbfleet.yaml").read_text()
    assert oct((state / "secrets" / "postgres.password").stat().st_mode & 0o777) == "0o600"
    assert oct((state / "secrets" / "api.token").stat().st_mode & 0o777) == "0o600"


def test_up_supervises_the_fleet_and_stops_it_on_sigterm(fleet) -> None:
    env = child_env(fleet.config_path)
    env.update({k: v for k, v in fleet.env.items() if k.startswith("DBFLEET_TEST_")})
    proc = subprocess.Popen([sys.executable, "-m", "workers.cli", "up", "--groups", "ops"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(lambda: any(k.startswith("ops@") for k in fleet.ping()), 60, "ops worker from `up`")
        children = psutil.Process(proc.pid).children(recursive=True)
        names = " ".join(" ".join(c.cmdline()) for c in children)
        for sub in ("worker", "beat", "flower", "exporter", "api"):
            assert f"workers.cli --config {fleet.config_path} {sub}" in names
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(60)
    assert not any(c.is_running() and c.status() != psutil.STATUS_ZOMBIE for c in children)
    wait_for(lambda: not any(k.startswith("ops@") for k in fleet.ping()), 30, "ops worker gone")
