"""Which backups a retention policy keeps (restic's ``forget --keep-*`` semantics)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, timezone

from engines.config import RetentionPolicy

BUCKETS: dict[str, Callable[[datetime], tuple[int, ...]]] = {
    "daily": lambda t: (t.year, t.month, t.day),
    "weekly": lambda t: tuple(t.isocalendar()[:2]),
    "monthly": lambda t: (t.year, t.month),
    "yearly": lambda t: (t.year,),
}


def backup_time(backup_id: str) -> datetime:
    """The start time encoded in a backup id (``20261124T101500123Z-1a2b3c``; the milliseconds are optional)."""
    stamp = backup_id.split("Z", 1)[0]
    moment = datetime.strptime(stamp[:15], "%Y%m%dT%H%M%S").replace(tzinfo=timezone.utc)
    return moment.replace(microsecond=int(stamp[15:18] or 0) * 1000)


def plan(backup_ids: list[str], policy: RetentionPolicy | None, retention_days: int | None,
         now: datetime | None = None) -> dict[str, list[str]]:
    """backup id -> reasons to keep it; ids absent from the result are to be forgotten.

    For each rule, walk from newest to oldest and keep the newest backup of each new
    day/week/month/year until the rule has kept N. ``retention_days`` keeps everything newer
    than N days. The newest backup is always kept. With no rule at all, everything is kept.
    """
    ordered = sorted(backup_ids, key=backup_time, reverse=True)
    keep: dict[str, list[str]] = {}
    if not ordered:
        return keep
    rules = policy.model_dump() if policy else {}
    if not any(rules.values()) and not retention_days:
        return {b: ["no retention rule"] for b in ordered}
    keep.setdefault(ordered[0], []).append("newest")
    for b in ordered[: rules.get("last", 0)]:
        keep.setdefault(b, []).append("last")
    for rule, bucket in BUCKETS.items():
        wanted = rules.get(rule, 0)
        seen: set[tuple[int, ...]] = set()
        for b in ordered:
            if len(seen) >= wanted:
                break
            key = bucket(backup_time(b))
            if key not in seen:
                seen.add(key)
                keep.setdefault(b, []).append(rule)
    if retention_days:
        cutoff = (now or datetime.now(timezone.utc)) - timedelta(days=retention_days)
        for b in ordered:
            if backup_time(b) >= cutoff:
                keep.setdefault(b, []).append(f"within {retention_days}d")
    return keep
