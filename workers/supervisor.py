"""Run fleet processes (workers, beat, flower, exporter, API) as supervised children."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from engines.config import Config


@dataclass
class Child:
    """One supervised process."""

    name: str
    argv: list[str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    started_at: float = field(default=0.0)

    def start(self, env: dict[str, str]) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as out:
            # a session of its own: Ctrl-C reaches the supervisor, which stops children in order
            self.proc = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT, env=env,
                                         start_new_session=True)
        self.started_at = time.monotonic()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def fleet_children(cfg: Config, config_path: Path, groups: list[str] | None = None) -> list[Child]:
    """One worker per queue group, beat, flower, the exporter and the API, as `dbfleet` subcommands."""
    logs = cfg.fleet.state_path() / "logs"
    base = [sys.executable, "-m", "workers.cli", "--config", str(config_path)]
    out = []
    for group, queues in cfg.fleet.worker_groups.items():
        if groups and group not in groups:
            continue
        out.append(Child(f"worker-{group}", [*base, "worker", "--queues", ",".join(queues),
                                             "--name", f"{group}@%h"], logs / f"worker-{group}.log"))
    out.append(Child("beat", [*base, "beat"], logs / "beat.log"))
    out.append(Child("flower", [*base, "flower"], logs / "flower.log"))
    out.append(Child("exporter", [*base, "exporter"], logs / "exporter.log"))
    out.append(Child("api", [*base, "api"], logs / "api.log"))
    return out


def ensure_api_token(cfg: Config) -> tuple[str, str]:
    """The token the API child will use: the configured one, else one generated into the state directory
    (mode 0600) that the child finds there; (token, where it is)."""
    from workers.api import api_token, generate_token

    ac = cfg.fleet.api
    if ac.token_file or (ac.token_env and ac.token_env in os.environ):
        return api_token(cfg), ac.token_file or ac.token_env or ""  # a wrong configured source stays an error
    path, _ = generate_token(cfg)
    return api_token(cfg), str(path)


class Supervisor:
    """Start children, restart the ones that die (``up``), stop them all cleanly."""

    def __init__(self, children: list[Child], env: dict[str, str] | None = None) -> None:
        self.children = children
        self.env = dict(env or os.environ)
        self._stopping = False

    def start(self) -> None:
        for child in self.children:
            child.start(self.env)

    def check(self, restart: bool) -> list[str]:
        """Names of children that died since the last check (restarted when ``restart``)."""
        dead = [c for c in self.children if not c.alive()]
        for child in dead:
            if restart and not self._stopping:
                child.restarts += 1
                child.start(self.env)
        return [c.name for c in dead]

    def stop(self, grace: float = 20.0) -> None:
        """SIGTERM every child (workers finish their current task), SIGKILL after ``grace``."""
        self._stopping = True
        for child in self.children:
            if child.alive() and child.proc:
                os.killpg(child.proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for child in self.children:
            if child.proc is None:
                continue
            try:
                child.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(child.proc.pid, signal.SIGKILL)
                child.proc.wait()

    def run_forever(self, poll: float = 2.0) -> None:
        """Supervise until SIGINT/SIGTERM, then stop everything."""
        def _term(*_: object) -> None:
            raise KeyboardInterrupt

        signal.signal(signal.SIGTERM, _term)
        try:
            while True:
                time.sleep(poll)
                self.check(restart=True)
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()
