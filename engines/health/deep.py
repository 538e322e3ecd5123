"""The frame every kind's deep health checks share: a context, a registry, and guarded execution.

One small function per check around one query (PgHero's grain). A check returns one
:class:`CheckResult` or a list; a check that cannot run (missing privilege or extension, an old
server) becomes ``unknown`` with the reason instead of failing the report.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from engines.config import DatabaseConfig
from engines.health.model import CRITICAL, OK, UNKNOWN, WARNING, CheckResult
from engines.secrets import scrub

CheckFn = Callable[["HealthContext"], "CheckResult | list[CheckResult]"]


class CannotCheck(Exception):
    """The check cannot look (privilege, extension, version); the message says what to do."""


@dataclass
class HealthContext:
    """What a check sees: the connector, the registry entry, thresholds, and memory of the last run.

    ``memory`` survives between runs (the worker keeps it in the cache): counters for deltas and
    the query-performance baseline live there.
    """

    conn: Any
    db: DatabaseConfig
    memory: dict[str, Any] = field(default_factory=dict)
    now: float = field(default_factory=time.time)
    scratch: dict[str, Any] = field(default_factory=dict)  # this run only (one SHOW STATUS / INFO for all checks)

    def once(self, name: str, read: Callable[[], Any]) -> Any:
        """``read()`` the first time a check of this run asks for ``name``; the same answer afterwards."""
        if name not in self.scratch:
            self.scratch[name] = read()
        return self.scratch[name]

    def threshold(self, name: str, default: float) -> float:
        """A threshold from the database's ``thresholds`` (the seed's table gives the defaults)."""
        value = getattr(self.db.thresholds, name, None)
        if value is None:
            value = (self.db.thresholds.model_extra or {}).get(name, default)
        return float(value)

    def delta(self, name: str, value: float) -> float | None:
        """Change of a cumulative counter since the previous run (None on the first run or after a reset)."""
        counters = self.memory.setdefault("counters", {})
        previous = counters.get(name)
        counters[name] = value
        if previous is None or value < previous:
            return None
        return value - previous


def level(value: float | None, warn: float, crit: float, higher_is_worse: bool = True) -> str:
    """ok / warning / critical for a value against two thresholds."""
    if value is None:
        return OK
    if not higher_is_worse:
        value, warn, crit = -value, -warn, -crit
    return CRITICAL if value > crit else WARNING if value > warn else OK


def result(check: str, value: Any, unit: str | None, warn: float, crit: float, hint: str,
           higher_is_worse: bool = True) -> CheckResult:
    """A CheckResult whose status comes from the thresholds; the hint only when not ok."""
    status = level(value, warn, crit, higher_is_worse)
    return CheckResult(check, status, value, unit, warn, None if status == OK else hint)


class HealthChecks:
    """The deep checks of one kind, in registration order."""

    def __init__(self) -> None:
        self.checks: list[tuple[str, CheckFn]] = []

    def check(self, name: str) -> Callable[[CheckFn], CheckFn]:
        def register(fn: CheckFn) -> CheckFn:
            self.checks.append((name, fn))
            return fn
        return register

    def run(self, ctx: HealthContext) -> list[CheckResult]:
        out: list[CheckResult] = []
        for name, fn in self.checks:
            try:
                got = fn(ctx)
            except Exception as exc:  # one check that cannot run never sinks the report
                reason = str(exc) if isinstance(exc, CannotCheck) else f"{type(exc).__name__}: {exc}"
                out.append(CheckResult(name, UNKNOWN, hint=scrub(reason.strip().splitlines()[0][:300])))
                continue
            out.extend(got if isinstance(got, list) else [got])
        return out


__all__ = ["CRITICAL", "OK", "UNKNOWN", "WARNING", "CannotCheck", "CheckResult", "HealthChecks", "HealthContext",
           "level", "result"]
