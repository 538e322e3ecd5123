"""WAL continuity: which archived segments a recovery from a base backup needs, and the gaps among them."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from engines.backup.wal import names

MAX_LISTED = 20


@dataclass
class Continuity:
    """The run of segments on one timeline from ``start``: where it ends and what is missing after it."""

    timeline: int
    start: str
    last_contiguous: str | None = None  # the last segment of the unbroken run from start
    newest: str | None = None  # the newest segment archived on this timeline
    missing: list[str] = field(default_factory=list)  # between start and newest (first MAX_LISTED)
    missing_count: int = 0

    @property
    def ok(self) -> bool:
        return self.last_contiguous is not None and self.missing_count == 0

    def to_dict(self) -> dict[str, Any]:
        return {"timeline": self.timeline, "start": self.start, "last_contiguous": self.last_contiguous,
                "newest": self.newest, "missing": self.missing, "missing_count": self.missing_count, "ok": self.ok}


def check(archived: list[str], start: str, segment_size: int = names.DEFAULT_SEGMENT_SIZE) -> Continuity:
    """Follow ``start``'s timeline through the archived segment names."""
    tli = names.timeline(start)
    have = {names.segment_number(n, segment_size) for n in archived
            if names.is_segment(n) and names.timeline(n) == tli}
    first = names.segment_number(start, segment_size)
    result = Continuity(tli, start)
    later = [n for n in have if n >= first]
    if not later:
        result.missing, result.missing_count = [start], 1
        return result
    newest = max(later)
    result.newest = names.segment_name(tli, newest, segment_size)
    number = first
    while number in have:
        number += 1
    if number > first:
        result.last_contiguous = names.segment_name(tli, number - 1, segment_size)
    gaps = [n for n in range(first, newest + 1) if n not in have]
    result.missing_count = len(gaps)
    result.missing = [names.segment_name(tli, n, segment_size) for n in gaps[:MAX_LISTED]]
    return result


def first_pushed_after(pushed: dict[str, str], run: Continuity, when: datetime,
                       segment_size: int = names.DEFAULT_SEGMENT_SIZE) -> str | None:
    """The first segment of ``run``'s timeline from its start archived at or after ``when`` (it holds
    everything written before ``when`` together with the segments before it), or None."""
    first = names.segment_number(run.start, segment_size)
    candidates = sorted((names.segment_number(n, segment_size), n) for n in pushed
                        if names.is_segment(n) and names.timeline(n) == run.timeline)
    for number, name in candidates:
        if number >= first and datetime.fromisoformat(pushed[name]) >= when:
            return name
    return None
