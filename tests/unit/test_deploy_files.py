"""docker-compose.yml and ops/Dockerfile, checked by reading (no Docker engine here)."""

from __future__ import annotations

from pathlib import Path

import click
import yaml

from engines.config import load_config
from workers.app import QUEUES
from workers.cli import cli

ROOT = Path(__file__).parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]


def _parse(argv: list[str]) -> tuple[str, click.Context]:
    """Parse a dbfleet command line exactly as the console script would, without running it."""
    assert argv[0] == "dbfleet"
    ctx = click.Context(cli, info_name="dbfleet")  # compose commands set no group options
    name, sub, rest = cli.resolve_command(ctx, list(argv[1:]))
    assert sub is not None, f"no dbfleet command {name!r}"
    return str(name), sub.make_context(str(name), rest, parent=ctx)


def test_compose_has_the_whole_fleet() -> None:
    assert {"redis", "postgres", "mongo", "elasticsearch", "minio", "beat", "flower", "exporter", "api",
            "prometheus"} <= set(SERVICES)


def test_every_fleet_command_is_a_real_invocation_and_every_queue_is_consumed() -> None:
    consumed: set[str] = set()
    fleet = {n: s for n, s in SERVICES.items() if s.get("image") == "dbfleet:latest"}
    assert len(fleet) >= 6
    for name, service in fleet.items():
        sub, ctx = _parse(service["command"])
        if sub == "worker":
            queues = set(ctx.params["queues"].split(","))
            assert queues <= set(QUEUES), f"{name} names unknown queues {queues - set(QUEUES)}"
            consumed |= queues
        assert "./ops/compose/dbfleet.yaml:/etc/dbfleet/dbfleet.yaml:ro" in service["volumes"]
    assert consumed == set(QUEUES), f"no worker consumes {set(QUEUES) - consumed}"
    assert {_parse(s["command"])[0] for s in fleet.values()} >= {"worker", "beat", "flower", "exporter", "api"}


def test_compose_holds_no_secret_values() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    for line in text.splitlines():
        if "PASSWORD:" in line:
            assert "${" in line, f"inline secret in docker-compose.yml: {line.strip()}"


def test_compose_config_is_valid_and_redis_never_evicts() -> None:
    cfg = load_config(ROOT / "ops" / "compose" / "dbfleet.yaml")
    assert cfg.fleet.broker_url.startswith("redis://redis:")
    assert "noeviction" in SERVICES["redis"]["command"]


def test_dockerfile_copies_paths_that_exist() -> None:
    for line in (ROOT / "ops" / "Dockerfile").read_text().splitlines():
        if line.startswith("COPY "):
            for src in line.split()[1:-1]:
                assert (ROOT / src).exists(), f"Dockerfile copies missing {src}"
    assert SERVICES["worker-ops"]["build"]["dockerfile"] == "ops/Dockerfile"
