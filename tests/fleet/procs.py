"""Real fleet processes for the tests: start, wait for, stop, kill."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, poll: float = 0.3) -> Any:
    """Poll until ``predicate`` is truthy; fail naming ``what`` (a bound, not a timing assertion)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"gave up waiting for {what} after {timeout:.0f}s")


class Proc:
    """A dbfleet subcommand in its own session, logging to a file."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], logdir: Path) -> None:
        self.name = name
        self.log = logdir / f"{name}.log"
        logdir.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "workers.cli", *args], env=env,
                                         stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def kill9(self) -> None:
        """SIGKILL the whole process group: main process and pool children at once."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def write_config(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def child_env(config: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["DBFLEET_CONFIG"] = str(config)
    env.update(extra)
    return env


def run_cli(args: list[str], env: dict[str, str], timeout: float = 120,
            columns: int = 200) -> subprocess.CompletedProcess[str]:
    """Run `dbfleet ARGS` to completion, capturing output (uncoloured tables, ``columns`` wide)."""
    env = dict(env, COLUMNS=str(columns), NO_COLOR="1", TERM="dumb")
    return subprocess.run([sys.executable, "-m", "workers.cli", *args], env=env, capture_output=True,
                          text=True, timeout=timeout)


def leak_haystack(fleet: Any) -> dict[str, str]:
    """Everything a secret could leak into: worker logs, the result backend, the history database."""
    import sqlite3

    import redis

    haystack = {"logs": "".join(p.text() for p in fleet.procs.values())}
    backend = redis.Redis.from_url(fleet.config.fleet.resolved_backend())
    haystack["result backend"] = "".join(str(backend.dump(k)) for k in backend.keys("*"))
    with sqlite3.connect(fleet.root / "history.db") as conn:
        haystack["history"] = "\n".join(conn.iterdump())
    return haystack
