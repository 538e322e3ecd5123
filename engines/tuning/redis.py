"""Redis tuner: maxmemory and eviction policy against the role and the keyspace, persistence, and big keys
found by a bounded SCAN sample (MEMORY USAGE per key). Advice only: nothing is changed."""

from __future__ import annotations

from typing import Any

from engines.connectors import open_connector
from engines.tuning.base import Finding, SettingAdvice, Tuner, TuningReport

SAMPLE_KEYS = 2000  # SCAN stops after this many keys: bounded work on a big keyspace
BIG_KEY_BYTES = 1024 * 1024
EVICTING = ("allkeys-lru", "allkeys-lfu", "allkeys-random")


def memory_advice(info: dict[str, Any], config: dict[str, str], host_memory: int | None) -> list[SettingAdvice]:
    """maxmemory unset on a primary, or an eviction policy that does not fit the keyspace."""
    out = []
    maxmemory, policy = int(config.get("maxmemory", 0)), config.get("maxmemory-policy", "noeviction")
    if maxmemory == 0 and info.get("role") == "master":
        advised = f"{int(host_memory * 0.75) // 1024**2}mb" if host_memory else "75% of the host's RAM"
        out.append(SettingAdvice("maxmemory", "0 (unbounded)", advised, "without a limit the kernel's OOM killer "
                                 "decides when memory runs out; leave room for fork (persistence) and buffers", False))
    keys = sum(v.get("keys", 0) for k, v in info.items() if k.startswith("db") and isinstance(v, dict))
    expiring = sum(v.get("expires", 0) for k, v in info.items() if k.startswith("db") and isinstance(v, dict))
    if policy == "noeviction" and keys >= 100 and expiring >= 0.8 * keys:
        out.append(SettingAdvice("maxmemory-policy", policy, "volatile-lru", f"{expiring} of {keys} keys expire: "
                                 "a cache-like keyspace can evict instead of failing writes when full", False))
    return out


def persistence_findings(info: dict[str, Any], config: dict[str, str]) -> list[Finding]:
    """A primary without RDB or AOF loses everything on restart; eviction with AOF may drop durable data."""
    out = []
    rdb, aof = bool(config.get("save", "").strip()), config.get("appendonly") == "yes"
    if info.get("role") == "master" and not rdb and not aof:
        out.append(Finding("persistence", "server", "neither RDB snapshots (save) nor AOF (appendonly) are on: "
                           "a restart loses every key (fine for a pure cache; a store or a broker needs one)",
                           "CONFIG SET appendonly yes", "info"))
    if aof and config.get("maxmemory-policy") in EVICTING:
        out.append(Finding("persistence", "server", f"maxmemory-policy {config['maxmemory-policy']} evicts any key "
                           "while AOF says the data should last: use volatile-* or noeviction"))
    return out


def big_keys(client: Any, limit: int = SAMPLE_KEYS, threshold: int = BIG_KEY_BYTES) -> tuple[list[Finding], int]:
    """Keys over ``threshold`` bytes among at most ``limit`` scanned ones; (findings, keys scanned)."""
    found, scanned = [], 0
    for key in client.scan_iter(count=200):
        scanned += 1
        size = client.memory_usage(key, samples=5) or 0
        if size >= threshold:
            name = key.decode(errors="replace") if isinstance(key, bytes) else str(key)
            found.append(Finding("big_keys", name[:200], f"{size} bytes ({client.type(key).decode()}): big keys block "
                                 "the server on DEL and stall replication; split them or UNLINK"))
        if scanned >= limit:
            break
    return found, scanned


class RedisTuner(Tuner):
    """Memory, persistence and big-key advice, read-only."""

    kind = "redis"

    def analyze(self) -> TuningReport:
        """INFO + CONFIG GET + a bounded SCAN sample."""
        report = TuningReport(self.db.id, self.kind)
        with open_connector(self.db) as connector:
            client = connector.conn
            info = dict(client.info())
            report.server_version = str(info.get("redis_version"))
            try:
                config = {k: str(v) for k, v in client.config_get("*").items()}
            except Exception as exc:  # CONFIG renamed or not permitted (managed Redis)
                report.limits.append(f"CONFIG GET is not allowed ({type(exc).__name__}): settings advice skipped")
                config = {}
            if self.settings.wants("settings") and config:
                report.settings = memory_advice(info, config, self.settings.host.get("memory_bytes"))
            if self.settings.wants("hygiene"):
                report.hygiene = persistence_findings(info, config) if config else []
                found, scanned = big_keys(client)
                report.hygiene.extend(found)
                report.workload = {"keys_sampled": scanned}
                if scanned >= SAMPLE_KEYS:
                    report.limits.append(f"big keys: a sample of {SAMPLE_KEYS} keys was examined, not the whole keyspace")
        return report
