"""``optimization_targets``: which workload statements advice is computed for.

Each target is one string ``kind:value``:

* ``table:[schema.]name`` — statements that read the table (any schema when none is given);
* ``queryid:N`` — one statement by its pg_stat_statements queryid (MariaDB: its digest);
* ``query:GLOB`` — statements whose normalized text matches the shell-style pattern (``*`` any text,
  case-insensitive), e.g. ``query:*FROM orders*``;
* ``mean_ms>=N`` — a latency target: only statements whose mean time per call is at least N ms.

Selectors (table, queryid, query) are alternatives: a statement matching any of them is analysed;
``mean_ms>=`` narrows what they select (or the whole workload when it is the only target). No target:
the whole workload, as before. Nothing here imports the config (the config's validator calls
:func:`parse_targets`).
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field

KINDS = ("table", "queryid", "query", "mean_ms>=")
_LATENCY = re.compile(r"mean_ms\s*>=\s*(\d+(?:\.\d+)?)")
_QUERYID = re.compile(r"-?\d{1,20}|[0-9a-f]{32,64}")  # PostgreSQL queryid, or a MariaDB/MySQL digest


class BadTarget(ValueError):
    """An optimization target that cannot be read; the message shows the accepted forms."""


@dataclass
class Targets:
    """Parsed ``optimization_targets``."""

    tables: list[tuple[str | None, str]] = field(default_factory=list)
    queryids: set[str] = field(default_factory=set)
    patterns: list[str] = field(default_factory=list)
    min_mean_ms: float | None = None

    @property
    def empty(self) -> bool:
        """True when nothing narrows the workload."""
        return not (self.tables or self.queryids or self.patterns) and self.min_mean_ms is None

    def selects(self, queryid: str, text: str, tables: set[tuple[str, str]], calls: int, total_ms: float) -> bool:
        """True when one statement is among the targets."""
        if self.min_mean_ms is not None and total_ms / max(calls, 1) < self.min_mean_ms:
            return False
        if not (self.tables or self.queryids or self.patterns):
            return True
        if queryid in self.queryids:
            return True
        if any(fnmatch.fnmatchcase(" ".join(text.lower().split()), p) for p in self.patterns):
            return True
        return any((schema is None or schema == s) and name == t for schema, name in self.tables for s, t in tables)


def _hint() -> str:
    return ("expected one of table:[schema.]name, queryid:N, query:GLOB (e.g. query:*FROM orders*), "
            "mean_ms>=N")


def parse_targets(items: list[str] | str | None) -> Targets:
    """Read ``optimization_targets`` (a list of strings, or one comma-free string); BadTarget says which is wrong."""
    if items is None:
        return Targets()
    if isinstance(items, str):
        items = [items]
    if not isinstance(items, list):
        raise BadTarget(f"optimization_targets must be a list of strings, got {type(items).__name__}; {_hint()}")
    out = Targets()
    for n, raw in enumerate(items):
        if not isinstance(raw, str) or not raw.strip():
            raise BadTarget(f"optimization_targets[{n}] {raw!r}: not a non-empty string; {_hint()}")
        _add(out, n, raw.strip())
    return out


def _add(out: Targets, n: int, item: str) -> None:
    latency = _LATENCY.fullmatch(item)
    if latency:
        ms = float(latency.group(1))
        if ms <= 0:
            raise BadTarget(f"optimization_targets[{n}] {item!r}: the latency must be above 0 ms")
        out.min_mean_ms = ms if out.min_mean_ms is None else max(out.min_mean_ms, ms)
        return
    kind, sep, value = item.partition(":")
    value = value.strip()
    if not sep or not value:
        raise BadTarget(f"optimization_targets[{n}] {item!r}: {_hint()}")
    if kind == "table":
        schema, dot, name = value.partition(".")
        out.tables.append((schema, name) if dot and schema and name else (None, value))
    elif kind == "queryid":
        if not _QUERYID.fullmatch(value.lower()):
            raise BadTarget(f"optimization_targets[{n}] {item!r}: a queryid is an integer "
                            "(pg_stat_statements.queryid) or a hex digest")
        out.queryids.add(value.lower())
    elif kind == "query":
        out.patterns.append(" ".join(value.lower().split()))
    else:
        raise BadTarget(f"optimization_targets[{n}] {item!r}: unknown kind {kind!r}; {_hint()}")
