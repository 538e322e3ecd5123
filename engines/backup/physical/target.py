"""Recovery targets of a point-in-time restore: time, LSN, xid, restore point name, latest, immediate."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from engines.backup.wal import names
from engines.errors import RestoreRefused

KINDS = ("time", "lsn", "xid", "name", "latest", "immediate")


@dataclass(frozen=True)
class RecoveryTarget:
    """Where recovery stops; ``settings`` are the postgresql.conf lines that say so."""

    kind: str
    value: str | None = None

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> RecoveryTarget:
        """Exactly one of pitr (a timestamp), lsn, xid, target_name, latest, immediate."""
        given = [(k, options[o]) for k, o in (("time", "pitr"), ("lsn", "lsn"), ("xid", "xid"),
                                                ("name", "target_name"), ("latest", "latest"),
                                                ("immediate", "immediate")) if options.get(o)]
        if len(given) > 1:
            raise RestoreRefused(f"give one recovery target, not {len(given)} ({', '.join(k for k, _ in given)})")
        kind, value = given[0] if given else ("latest", True)
        target = cls(kind, None if kind in ("latest", "immediate") else str(value))
        target.validate()
        return target

    def validate(self) -> None:
        if self.kind not in KINDS:
            raise RestoreRefused(f"unknown recovery target {self.kind!r}; known: {', '.join(KINDS)}")
        try:
            if self.kind == "time":
                self.time()
            elif self.kind == "lsn":
                names.parse_lsn(str(self.value))
            elif self.kind == "xid" and not str(self.value).isdigit():
                raise ValueError(f"{self.value!r} is not a transaction id")
        except ValueError as exc:
            raise RestoreRefused(f"bad recovery target: {exc}") from None

    def time(self) -> datetime:
        """The target timestamp (a time zone is required: naive times are ambiguous)."""
        text = str(self.value).strip().replace(" ", "T", 1)
        when = datetime.fromisoformat(text)
        if when.tzinfo is None:
            raise ValueError(f"{self.value!r} has no time zone; add one, e.g. '+00' or 'Z'")
        return when.astimezone(timezone.utc)

    def settings(self) -> dict[str, str]:
        """recovery_target_* settings (none for latest: replay every archived file)."""
        if self.kind == "time":
            return {"recovery_target_time": self.time().isoformat(sep=" ")}
        if self.kind == "lsn":
            return {"recovery_target_lsn": str(self.value)}
        if self.kind == "xid":
            return {"recovery_target_xid": str(self.value)}
        if self.kind == "name":
            return {"recovery_target_name": str(self.value)}
        if self.kind == "immediate":
            return {"recovery_target": "immediate"}
        return {}

    def describe(self) -> str:
        return self.kind if self.value is None else f"{self.kind} {self.value}"
