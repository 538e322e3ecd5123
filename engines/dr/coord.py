"""The coordination store (Redis): a lease with a fencing token, observer reports, the current primary, events.

Keys live under ``<prefix><dr_id>:``. The lease is ``SET NX PX``; taking it increments a counter whose
value is the fencing token. A promotion is allowed only through :meth:`Coordinator.claim_promotion`, a
single Lua script that checks, atomically, that the caller still holds the lease *and* that its token is
the newest one issued - so an observer that paused past its lease (GC, network) cannot promote.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

DEFAULT_PREFIX = "dbfleet:dr:"
EVENTS_KEPT = 100

_ACQUIRE = """
if redis.call('SET', KEYS[1], 'pending', 'NX', 'PX', ARGV[2]) then
  local t = redis.call('INCR', KEYS[2])
  redis.call('SET', KEYS[1], ARGV[1] .. '|' .. t, 'PX', ARGV[2])
  return t
end
return false
"""
_CLAIM = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if tonumber(redis.call('GET', KEYS[2]) or '0') ~= tonumber(ARGV[2]) then return 0 end
if tonumber(redis.call('GET', KEYS[3]) or '0') >= tonumber(ARGV[2]) then return 0 end
redis.call('SET', KEYS[3], ARGV[2])
return 1
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@dataclass(frozen=True)
class Lease:
    """A held lease: who holds it and the fencing token it was issued with."""

    dr_id: str
    holder: str
    token: int

    @property
    def value(self) -> str:
        return f"{self.holder}|{self.token}"


class Coordinator:
    """DR coordination state for every group, in one Redis (the fleet's cache_url)."""

    def __init__(self, client: Any, prefix: str = DEFAULT_PREFIX) -> None:
        self.r = client
        self.prefix = prefix
        self._acquire = client.register_script(_ACQUIRE)
        self._claim = client.register_script(_CLAIM)
        self._release = client.register_script(_RELEASE)

    def key(self, dr_id: str, name: str) -> str:
        return f"{self.prefix}{dr_id}:{name}"

    # --- lease and fencing token ---
    def acquire(self, dr_id: str, holder: str, ttl: float) -> Lease | None:
        """Take the group's lease for ``ttl`` seconds; None when someone else holds it."""
        token = self._acquire(keys=[self.key(dr_id, "lease"), self.key(dr_id, "token")],
                              args=[holder, max(1, int(ttl * 1000))])
        return Lease(dr_id, holder, int(token)) if token else None

    def holder(self, dr_id: str) -> str | None:
        """Who holds the lease now (``holder|token``), or None."""
        raw = self.r.get(self.key(dr_id, "lease"))
        return raw.decode() if isinstance(raw, bytes) else raw

    def claim_promotion(self, lease: Lease) -> bool:
        """Atomically: lease still ours, our token the newest, no promotion with this token yet."""
        ok = self._claim(keys=[self.key(lease.dr_id, "lease"), self.key(lease.dr_id, "token"),
                               self.key(lease.dr_id, "promoted")], args=[lease.value, lease.token])
        return bool(int(ok))

    def release(self, lease: Lease) -> None:
        """Give the lease back (only if still ours)."""
        self._release(keys=[self.key(lease.dr_id, "lease")], args=[lease.value])

    # --- the current primary (also the Redis key a client redirect can read) ---
    def primary(self, dr_id: str) -> str | None:
        raw = self.r.get(self.key(dr_id, "primary"))
        return raw.decode() if isinstance(raw, bytes) else raw

    def set_primary(self, dr_id: str, database_id: str) -> None:
        self.r.set(self.key(dr_id, "primary"), database_id)

    def fenced(self, dr_id: str) -> set[str]:
        return {m.decode() if isinstance(m, bytes) else m for m in self.r.smembers(self.key(dr_id, "fenced"))}

    def set_fenced(self, dr_id: str, database_id: str, fenced: bool = True) -> None:
        (self.r.sadd if fenced else self.r.srem)(self.key(dr_id, "fenced"), database_id)

    # --- observer reports: worker id -> {state, since, seen} ---
    def report(self, dr_id: str, observer: str, primary_up: bool, now: float | None = None) -> None:
        """Record what ``observer`` saw of the primary; ``since`` keeps the time the state began."""
        now = time.time() if now is None else now
        key = self.key(dr_id, "observers")
        state = "up" if primary_up else "down"
        old = self.r.hget(key, observer)
        prev = json.loads(old) if old else {}
        since = prev["since"] if prev.get("state") == state else now
        self.r.hset(key, observer, json.dumps({"state": state, "since": since, "seen": now}))

    def observers(self, dr_id: str) -> dict[str, dict[str, Any]]:
        raw = self.r.hgetall(self.key(dr_id, "observers"))
        return {(k.decode() if isinstance(k, bytes) else k): json.loads(v) for k, v in raw.items()}

    def clear_observers(self, dr_id: str) -> None:
        self.r.delete(self.key(dr_id, "observers"))

    # --- last observation (what failover uses to estimate data loss once the primary is gone) ---
    def save_status(self, dr_id: str, status: dict[str, Any]) -> None:
        self.r.set(self.key(dr_id, "status"), json.dumps(status))
        if status.get("primary_reachable"):
            self.r.set(self.key(dr_id, "last_primary_seen"), json.dumps(
                {"at": status["observed_at"], "primary": status["primary"],
                 "lsn": next((n["lsn"] for n in status["nodes"] if n["database"] == status["primary"]), None),
                 "lag_seconds": {n["database"]: n["lag_seconds"] for n in status["nodes"] if n["role"] == "standby"}}))

    def last_status(self, dr_id: str) -> dict[str, Any] | None:
        raw = self.r.get(self.key(dr_id, "status"))
        return json.loads(raw) if raw else None

    def last_primary_seen(self, dr_id: str) -> dict[str, Any] | None:
        raw = self.r.get(self.key(dr_id, "last_primary_seen"))
        return json.loads(raw) if raw else None

    # --- events ---
    def record_event(self, dr_id: str, event: dict[str, Any]) -> None:
        key = self.key(dr_id, "events")
        self.r.lpush(key, json.dumps(event, default=str))
        self.r.ltrim(key, 0, EVENTS_KEPT - 1)

    def events(self, dr_id: str, limit: int = 20) -> list[dict[str, Any]]:
        return [json.loads(e) for e in self.r.lrange(self.key(dr_id, "events"), 0, limit - 1)]

    def forget(self, dr_id: str) -> None:
        """Drop every key of a group (drills and tests clean up with this)."""
        for key in self.r.scan_iter(match=f"{self.prefix}{dr_id}:*"):
            self.r.delete(key)
