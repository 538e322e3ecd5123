"""WAL continuity: which archived segments a recovery from a base backup needs, and the gaps among them.

The run follows the timeline path recovery takes (engines/backup/wal/timelines.py): across a promotion
the segments come from the new timeline, so a switch is no gap, and a gap on the new timeline is one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from engines.backup.wal import names
from engines.backup.wal.timelines import Leg, expected_name
from engines.errors import RestoreRefused

MAX_LISTED = 20


@dataclass
class Continuity:
    """The run of segments along ``path`` from ``start``: where it ends and what is missing after it."""

    timeline: int  # the timeline of the newest segment on the path (the one recovery ends on)
    start: str
    last_contiguous: str | None = None  # the last segment of the unbroken run from start
    newest: str | None = None  # the newest segment archived along the path
    missing: list[str] = field(default_factory=list)  # between start and newest (first MAX_LISTED)
    missing_count: int = 0
    path: list[Leg] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.last_contiguous is not None and self.missing_count == 0

    def expected(self, number: int, segment_size: int = names.DEFAULT_SEGMENT_SIZE) -> str:
        """The file name recovery reads segment ``number`` from."""
        return expected_name(number, self.path, segment_size)

    def to_dict(self) -> dict[str, Any]:
        return {"timeline": self.timeline, "start": self.start, "last_contiguous": self.last_contiguous,
                "newest": self.newest, "missing": self.missing, "missing_count": self.missing_count, "ok": self.ok,
                "timelines": [leg.to_dict() for leg in self.path]}


def check(archived: list[str], start: str, segment_size: int = names.DEFAULT_SEGMENT_SIZE,
          path: list[Leg] | None = None) -> Continuity:
    """Follow ``path`` (default: ``start``'s timeline alone) from ``start`` through the archived names."""
    path = path or [Leg(names.timeline(start), 0, None)]
    have = set(archived)
    first = names.segment_number(start, segment_size)
    result = Continuity(names.timeline(start), start, path=path)
    numbers = sorted({names.segment_number(n, segment_size) for n in archived if names.is_segment(n)})
    on_path = [n for n in numbers if n >= first and expected_name(n, path, segment_size) in have]
    if not on_path:
        result.missing, result.missing_count = [expected_name(first, path, segment_size)], 1
        return result
    newest = on_path[-1]
    result.newest = expected_name(newest, path, segment_size)
    result.timeline = names.timeline(result.newest)
    number = first
    while expected_name(number, path, segment_size) in have:
        number += 1
    if number > first:
        result.last_contiguous = expected_name(number - 1, path, segment_size)
    gaps = [n for n in range(first, newest + 1) if expected_name(n, path, segment_size) not in have]
    result.missing_count = len(gaps)
    result.missing = [expected_name(n, path, segment_size) for n in gaps[:MAX_LISTED]]
    return result


def first_pushed_after(pushed: dict[str, str], run: Continuity, when: datetime,
                       segment_size: int = names.DEFAULT_SEGMENT_SIZE) -> str | None:
    """The first segment along ``run``'s path from its start archived at or after ``when`` (it holds
    everything written before ``when`` together with the segments before it), or None."""
    first = names.segment_number(run.start, segment_size)
    candidates = sorted((names.segment_number(n, segment_size), n) for n in pushed if names.is_segment(n))
    for number, name in candidates:
        if number >= first and name == run.expected(number, segment_size) and \
                datetime.fromisoformat(pushed[name]) >= when:
            return name
    return None


def from_base(archive: Any, archived: list[str], extra: dict[str, Any],
              histories: dict[int, list[Leg]] | None = None, timeline: int | None = None) -> Continuity:
    """Continuity from a base backup (its manifest's ``dump.extra``) along the newest timeline descending
    from its end point, the one recovery_target_timeline = 'latest' would take (or to ``timeline``)."""
    from engines.backup.wal.timelines import path_to, read_histories

    segsize = int(extra.get("wal_segment_size") or names.DEFAULT_SEGMENT_SIZE)
    if histories is None:
        histories = read_histories(archive, archived)
    start = extra["end_segment"]
    path = path_to(names.timeline(start), names.parse_lsn(extra["end_lsn"]), histories, timeline)
    if path is None:
        raise RestoreRefused(f"timeline {timeline} does not descend from the base backup's end ({extra['end_lsn']} on "
                             f"timeline {names.timeline(start)}); known timelines: "
                             f"{', '.join(str(t) for t in sorted({names.timeline(start), *histories}))}")
    return check(archived, start, segsize, path)
