"""ops/prometheus and ops/grafana load, and every dbfleet metric they reference is one the exporter exports."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from engines.config import parse_config
from workers.exporter import FleetCollector

OPS = Path(__file__).resolve().parents[2] / "ops"
NAME = re.compile(r"\bdbfleet_[a-z0-9_]+")


class EmptyCache:
    """Stands in for the cache Redis with nothing cached: the collector still describes every family."""

    def mget(self, keys: list[str]) -> list[None]:
        return [None] * len(keys)

    def hgetall(self, key: str) -> dict[bytes, bytes]:
        return {}

    def scan_iter(self, *a: Any, **kw: Any) -> list[str]:
        return []


class EmptyHistory:
    def counts(self) -> dict[tuple[str, str], int]:
        return {}


def exported() -> set[str]:
    """Every sample name the exporter can produce (counter and histogram suffixes included)."""
    cfg = parse_config("databases:\n  a: {kind: pg, host: h}\nfleet: {broker_url: 'amqp://x'}\n")
    names: set[str] = set()
    for family in FleetCollector(cfg, EmptyCache(), EmptyHistory()).collect():
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}.get(family.type, [""])
        names.update(family.name + s for s in suffixes)
    return names


def test_prometheus_config_and_rules_reference_real_metrics() -> None:
    config = yaml.safe_load((OPS / "prometheus" / "prometheus.yml").read_text())
    assert {j["job_name"] for j in config["scrape_configs"]} >= {"dbfleet", "flower"}
    assert config["rule_files"] == ["alerts.yml"]
    rules = yaml.safe_load((OPS / "prometheus" / "alerts.yml").read_text())
    exprs = [r["expr"] for g in rules["groups"] for r in g["rules"]]
    assert len(exprs) >= 10 and all(r.get("alert") for g in rules["groups"] for r in g["rules"])
    used = {n for e in exprs for n in NAME.findall(e)}
    assert used and used <= exported(), used - exported()


def test_grafana_dashboard_references_real_metrics() -> None:
    dash = json.loads((OPS / "grafana" / "dbfleet.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    titles = {p["title"] for p in dash["panels"] if p["type"] == "row"}
    assert titles == {"Fleet", "Databases", "Backups", "Security"}
    used = {n for e in exprs for n in NAME.findall(e)}
    assert len(used) >= 15 and used <= exported(), used - exported()


def test_exported_names_follow_the_convention() -> None:
    for name in exported():
        assert re.fullmatch(r"dbfleet_[a-z_]+", name), name
        assert not name.endswith("_total_total")
