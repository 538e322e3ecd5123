"""docker-compose.yml and ops/Dockerfile, checked by reading (no Docker engine here)."""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest
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


def _compose_env(service: str) -> dict[str, str]:
    """A service's environment as the container sees it, with .env values standing in for ${VAR...}."""
    dotenv = {"REDIS_PASSWORD": "redis-pw-h1", "MUSIC_DB_PASSWORD": "music-pw-h1"}

    def interpolate(value: str) -> str:
        return re.sub(r"\$\{([A-Z_]+)[^}]*\}", lambda m: dotenv.get(m.group(1), f"<{m.group(1)}>"), value)

    return {k: interpolate(str(v)) for k, v in SERVICES[service]["environment"].items()}


def test_compose_config_is_valid_and_redis_never_evicts(monkeypatch: pytest.MonkeyPatch) -> None:
    env = _compose_env("worker-ops")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    cfg = load_config(ROOT / "ops" / "compose" / "dbfleet.yaml")
    assert cfg.fleet.broker_url == "redis://:redis-pw-h1@redis:6379/0"
    assert cfg.fleet.resolved_backend().startswith("redis://:redis-pw-h1@redis:")
    assert cfg.fleet.resolved_cache().startswith("redis://:redis-pw-h1@redis:")
    assert cfg.fleet.resolved_history() == "postgresql://dbfleet:music-pw-h1@postgres:5432/dbfleet_history"
    command = " ".join(SERVICES["redis"]["command"])
    assert "--maxmemory-policy noeviction" in command and "requirepass" in command
    assert "$$REDIS_PASSWORD" in command and "${REDIS_PASSWORD" in str(SERVICES["redis"]["environment"])
    assert "REDISCLI_AUTH" in " ".join(SERVICES["redis"]["healthcheck"]["test"])


def test_no_password_sits_in_the_yaml_files() -> None:
    compose_config = (ROOT / "ops" / "compose" / "dbfleet.yaml").read_text()
    assert not re.search(r"://[^/\s]*@", compose_config), "a URL with credentials in ops/compose/dbfleet.yaml"
    for line in (ROOT / "docker-compose.yml").read_text().splitlines():
        for url in re.findall(r"\w+://[^\s\"']+", line):
            userinfo = url.split("://", 1)[1].split("@", 1)[0] if "@" in url else ""
            if ":" in userinfo:
                assert userinfo.split(":", 1)[1].startswith("${"), f"a password in docker-compose.yml: {line}"
    assert "PGPASSWORD" not in (ROOT / "docker-compose.yml").read_text()  # no ambient libpq password


def test_only_flower_is_published_and_on_loopback_by_default() -> None:
    published = {name for name, s in SERVICES.items() if s.get("ports")}
    assert published == {"flower"}
    assert SERVICES["flower"]["ports"] == ["${DBFLEET_FLOWER_BIND:-127.0.0.1}:5555:5555"]
    assert SERVICES["api"]["expose"] == ["8088"] and SERVICES["exporter"]["expose"] == ["9808"]


def test_api_exporter_and_flower_run_with_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in _compose_env("api").items():
        monkeypatch.setenv(name, value)
    cfg = load_config(ROOT / "ops" / "compose" / "dbfleet.yaml")
    assert cfg.fleet.allow_inline_databases is False
    assert cfg.fleet.api.token_env == "DBFLEET_API_TOKEN"
    assert SERVICES["api"]["environment"]["DBFLEET_API_TOKEN"].startswith("${DBFLEET_API_TOKEN:?")
    assert cfg.fleet.exporter.user == "prometheus" and cfg.fleet.exporter.password_env == "DBFLEET_EXPORTER_PASSWORD"
    assert SERVICES["exporter"]["environment"]["DBFLEET_EXPORTER_PASSWORD"].startswith("${DBFLEET_EXPORTER_PASSWORD:?")
    assert SERVICES["flower"]["environment"]["DBFLEET_FLOWER_PASSWORD"].startswith("${DBFLEET_FLOWER_PASSWORD:?")
    prometheus = yaml.safe_load((ROOT / "ops" / "prometheus" / "prometheus.yml").read_text())
    jobs = {j["job_name"]: j for j in prometheus["scrape_configs"]}
    files = {jobs[j]["basic_auth"]["password_file"] for j in ("dbfleet", "flower")}
    assert jobs["dbfleet"]["basic_auth"]["username"] == cfg.fleet.exporter.user
    assert files == {f"/run/secrets/{s}" for s in SERVICES["prometheus"]["secrets"]}
    assert {n: s["environment"] for n, s in COMPOSE["secrets"].items()} == {
        "flower_password": "DBFLEET_FLOWER_PASSWORD", "exporter_password": "DBFLEET_EXPORTER_PASSWORD"}


def test_dockerfile_copies_paths_that_exist() -> None:
    for line in (ROOT / "ops" / "Dockerfile").read_text().splitlines():
        if line.startswith("COPY "):
            for src in line.split()[1:-1]:
                assert (ROOT / src).exists(), f"Dockerfile copies missing {src}"
    assert SERVICES["worker-ops"]["build"]["dockerfile"] == "ops/Dockerfile"


def test_env_example_lists_every_required_variable() -> None:
    required = set(re.findall(r"\$\{([A-Z_]+):\?", (ROOT / "docker-compose.yml").read_text()))
    listed = {line.split("=", 1)[0] for line in (ROOT / "ops" / "compose" / "env.example").read_text().splitlines()
              if line and not line.startswith("#")}
    assert required == listed and "DBFLEET_API_TOKEN" in required and "REDIS_PASSWORD" in required
