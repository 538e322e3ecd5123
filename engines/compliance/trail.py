"""A tamper-evident trail of compliance actions: each entry carries an HMAC over itself and the previous
entry's HMAC, under a trail key held outside the database. Editing, deleting or reordering entries breaks
the chain at a place :meth:`AuditTrail.verify` names; an exported head (anchor) also catches a cut tail."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import Integer, String, Text, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from engines.history import sql_engine
from engines.secrets import scrub

GENESIS = "0" * 64


class _Base(DeclarativeBase):
    pass


class TrailEntry(_Base):
    """One link of the chain; ``details`` is stored as the exact canonical JSON text that was signed."""

    __tablename__ = "dbfleet_compliance_trail"
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    at: Mapped[str] = mapped_column(String(40))
    action: Mapped[str] = mapped_column(String(64))
    database_id: Mapped[str | None] = mapped_column(String(200))
    actor: Mapped[str] = mapped_column(String(200))
    details: Mapped[str] = mapped_column(Text)
    prev_mac: Mapped[str] = mapped_column(String(64))
    mac: Mapped[str] = mapped_column(String(64))


def _mac(key: bytes, prev: str, seq: int, at: str, action: str, database_id: str | None, actor: str,
         details: str) -> str:
    body = json.dumps([prev, seq, at, action, database_id, actor, details], separators=(",", ":"))
    return hmac.new(key, body.encode(), hashlib.sha256).hexdigest()


class AuditTrail:
    """Append to and verify the chain kept in the history database (SQLite or PostgreSQL)."""

    def __init__(self, url: str, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("the trail key must be at least 16 bytes")
        self.engine = sql_engine(url)
        self._key = key
        _Base.metadata.create_all(self.engine)

    def append(self, action: str, database_id: str | None, details: dict[str, Any],
               actor: str = "dbfleet") -> dict[str, Any]:
        """Add one entry (secrets scrubbed from ``details``); concurrent appenders retry on the sequence."""
        text = scrub(json.dumps(details, sort_keys=True, separators=(",", ":"), default=str))
        for _ in range(20):
            try:
                with Session(self.engine) as s, s.begin():
                    last = s.scalars(select(TrailEntry).order_by(TrailEntry.seq.desc()).limit(1)).first()
                    seq, prev = (last.seq + 1, last.mac) if last else (1, GENESIS)
                    at = datetime.now(timezone.utc).isoformat(timespec="microseconds")
                    mac = _mac(self._key, prev, seq, at, action, database_id, actor, text)
                    s.add(TrailEntry(seq=seq, at=at, action=action, database_id=database_id, actor=actor,
                                     details=text, prev_mac=prev, mac=mac))
                return {"seq": seq, "mac": mac, "at": at}
            except IntegrityError:
                continue
        raise RuntimeError("could not append to the compliance trail (sequence contention)")

    def entries(self, limit: int | None = None) -> list[dict[str, Any]]:
        """Entries in sequence order (the newest ``limit`` when given)."""
        with Session(self.engine) as s:
            stmt = select(TrailEntry).order_by(TrailEntry.seq)
            rows = list(s.scalars(stmt))
        rows = rows[-limit:] if limit else rows
        return [{"seq": r.seq, "at": r.at, "action": r.action, "database_id": r.database_id, "actor": r.actor,
                 "details": json.loads(r.details), "mac": r.mac} for r in rows]

    def head(self) -> dict[str, Any]:
        """The anchor to export: the last entry's sequence number and HMAC."""
        with Session(self.engine) as s:
            last = s.scalars(select(TrailEntry).order_by(TrailEntry.seq.desc()).limit(1)).first()
            count = s.scalar(select(func.count()).select_from(TrailEntry))
        return {"seq": last.seq if last else 0, "mac": last.mac if last else GENESIS, "entries": int(count or 0)}

    def verify(self, anchor: dict[str, Any] | None = None) -> dict[str, Any]:
        """Walk the chain; ``first_broken`` is the sequence number where it first fails, with the problem."""
        with Session(self.engine) as s:
            rows = list(s.scalars(select(TrailEntry).order_by(TrailEntry.seq)))
        prev, expected = GENESIS, 1
        for r in rows:
            problem = None
            if r.seq != expected:
                problem = f"entries {expected}..{r.seq - 1} are missing (deleted)" if r.seq > expected else \
                    f"sequence number {r.seq} out of order"
            elif r.prev_mac != prev:
                problem = "does not link to the entry before it (reordered or an entry was replaced)"
            elif not hmac.compare_digest(r.mac, _mac(self._key, prev, r.seq, r.at, r.action, r.database_id,
                                                     r.actor, r.details)):
                problem = "its content does not match its HMAC (edited)"
            if problem:
                return {"ok": False, "entries": len(rows), "first_broken": expected if r.seq > expected else r.seq,
                        "problem": f"entry {expected if r.seq > expected else r.seq}: {problem}"}
            prev, expected = r.mac, r.seq + 1
        if anchor and anchor.get("seq"):
            seen = {r.seq: r.mac for r in rows}
            if seen.get(int(anchor["seq"])) != anchor.get("mac"):
                first = int(anchor["seq"]) if int(anchor["seq"]) in seen else expected
                return {"ok": False, "entries": len(rows), "first_broken": first,
                        "problem": f"entry {anchor['seq']} of the exported anchor is gone or differs (tail cut?)"}
        return {"ok": True, "entries": len(rows), "first_broken": None, "problem": None,
                "head": prev if rows else GENESIS}
