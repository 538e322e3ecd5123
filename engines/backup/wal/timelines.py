"""Timeline history: which timeline holds each WAL segment on the way from a base backup to the newest timeline.

A promotion (end of a point-in-time recovery, a failover) starts timeline N+1 and archives
``0000000N+1.history``: one line per ancestor, ``<parent tli> <switch LSN> <reason>``. Recovery with
``recovery_target_timeline = 'latest'`` reads each segment from the newest timeline of that history that
had begun by then; continuity checks and PITR planning here follow the same path.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from typing import Any

from engines.backup.wal import names

HISTORY = re.compile(r"^([0-9A-F]{8})\.history$")
_LINE = re.compile(r"^\s*(\d+)\s+([0-9A-Fa-f]+/[0-9A-Fa-f]+)")


@dataclass(frozen=True)
class Leg:
    """One timeline of a path: it holds the WAL from ``begin`` (an LSN; 0 for the first) to ``end`` (None: open)."""

    tli: int
    begin: int
    end: int | None

    def to_dict(self) -> dict[str, Any]:
        return {"timeline": self.tli, "begin": names.format_lsn(self.begin),
                "end": None if self.end is None else names.format_lsn(self.end)}


def parse_history(tli: int, text: str) -> list[Leg]:
    """``tli``'s whole path from its history file: ancestors with their switch points, then ``tli`` itself."""
    legs: list[Leg] = []
    begin = 0
    for line in text.splitlines():
        match = _LINE.match(line)
        if not match:
            continue
        end = names.parse_lsn(match.group(2))
        legs.append(Leg(int(match.group(1)), begin, end))
        begin = end
    legs.append(Leg(tli, begin, None))
    return legs


def read_histories(archive: Any, archived: list[str]) -> dict[int, list[Leg]]:
    """Every archived timeline history, parsed: timeline -> its path (a damaged one raises)."""
    from engines.backup.pipeline import read_stream

    out: dict[int, list[Leg]] = {}
    for name in archived:
        match = HISTORY.match(name)
        if not match:
            continue
        record = archive.load(name)
        if record is None:
            continue
        buf = io.BytesIO()
        read_stream(archive.repo, record, buf)
        tli = int(match.group(1), 16)
        out[tli] = parse_history(tli, buf.getvalue().decode(errors="replace"))
    return out


def path_from(tli: int, lsn: int, histories: dict[int, list[Leg]]) -> list[Leg]:
    """The legs recovery follows from ``lsn`` on timeline ``tli`` to the newest timeline that descends from
    that point ('latest'): a timeline whose history leaves ``tli`` at or after ``lsn``. Only legs from ``tli``
    on are returned."""
    best = [Leg(tli, 0, None)]
    for candidate in sorted(histories):  # a timeline without its history file cannot be switched to
        if candidate <= tli:
            continue
        legs = histories[candidate]
        on = next((leg for leg in legs if leg.tli == tli), None)
        if on is not None and (on.end is None or on.end >= lsn):
            best = legs
    start = next(i for i, leg in enumerate(best) if leg.tli == tli)
    return best[start:]


def path_to(tli: int, lsn: int, histories: dict[int, list[Leg]], target: int | None) -> list[Leg] | None:
    """Like :func:`path_from` for an explicit target timeline (``--timeline``: e.g. back to the abandoned future
    of an old timeline); None when ``target`` does not descend from ``lsn`` on ``tli``."""
    if target is None:
        return path_from(tli, lsn, histories)
    if target == tli:
        return [Leg(tli, 0, None)]
    legs = histories.get(target, [])
    start = next((i for i, leg in enumerate(legs) if leg.tli == tli and (leg.end is None or leg.end >= lsn)), None)
    return None if start is None else legs[start:]


def timeline_of(number: int, path: list[Leg], segment_size: int) -> int:
    """The timeline recovery reads segment ``number`` from: the newest leg begun by then."""
    chosen = path[0].tli
    for leg in path:
        if leg.begin // segment_size <= number:
            chosen = leg.tli
    return chosen


def expected_name(number: int, path: list[Leg], segment_size: int) -> str:
    """The file name of segment ``number`` along ``path``."""
    return names.segment_name(timeline_of(number, path, segment_size), number, segment_size)
