"""A tamper-evident trail of compliance actions: each entry carries an HMAC over itself and the previous
entry's HMAC, under a trail key held outside the database. Editing, deleting or reordering entries breaks
the chain at a place :meth:`AuditTrail.verify` names; an exported head (anchor) also catches a cut tail."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable
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


# --- every history row: the hook engines.history.HistoryStore calls after each committed write -------------

RUN_ACTION = "run."  # trail actions of history rows: run.running, run.succeeded, run.failed, run.dry_run


def _content_mac(key: bytes, data: Any) -> str | None:
    """An HMAC of a history field's canonical JSON: binds the row to the trail without copying its content
    (options and summaries can hold subjects, errors can quote values; none of it enters the trail)."""
    if data is None:
        return None
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hmac.new(key, b"history:" + text.encode(), hashlib.sha256).hexdigest()


def run_details(key: bytes, row: dict[str, Any]) -> dict[str, Any]:
    """What the trail keeps of a history row: ids, status, times and MACs of the content, never the content."""
    return {"run_id": row["id"], "script_type": row["script_type"], "database_id": row.get("database_id"),
            "status": row["status"],
            "queue": row.get("queue"), "worker": row.get("worker"), "attempts": row.get("attempts"),
            "started_at": row.get("started_at"), "finished_at": row.get("finished_at"),
            "option_keys": sorted((row.get("options") or {}).keys()),
            "options_mac": _content_mac(key, row.get("options") or {}),
            "summary_mac": _content_mac(key, row.get("summary")), "error_mac": _content_mac(key, row.get("error"))}


class HistoryRecorder:
    """The history store's recorder: appends each committed run row to the trail. The key is resolved and the
    trail opened on first use, so a process that cannot read the key (a client) still works: the store logs
    that the row is not in the trail, and ``trail verify`` names it."""

    def __init__(self, url: str, key: Callable[[], bytes]) -> None:
        self.url, self._key_fn = url, key
        self._trail: AuditTrail | None = None

    def __call__(self, event: str, row: dict[str, Any]) -> None:
        if self._trail is None:
            self._trail = AuditTrail(self.url, self._key_fn())
        self._trail.append(RUN_ACTION + str(row["status"]), row.get("database_id"),
                           run_details(self._trail._key, row), actor=str(row.get("worker") or "dbfleet"))


def check_history(trail: AuditTrail, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Cross-check history rows against their last trail entries: a row edited after it was recorded, or
    deleted from history, or written while the trail was bypassed is named (oldest first)."""
    last: dict[str, tuple[int, dict[str, Any]]] = {}
    with Session(trail.engine) as s:
        for seq, details in s.execute(select(TrailEntry.seq, TrailEntry.details).where(
                TrailEntry.action.startswith(RUN_ACTION)).order_by(TrailEntry.seq)):
            d = json.loads(details)
            last[d["run_id"]] = (seq, d)
    problems: list[dict[str, Any]] = []
    first_at = min((d["started_at"] or "" for _, d in last.values()), default=None)
    for row in sorted(rows, key=lambda r: str(r.get("started_at"))):
        entry = last.pop(row["id"], None)
        if entry is None:
            if first_at is not None and str(row.get("started_at")) >= first_at:
                problems.append({"run_id": row["id"], "problem": "not in the trail (written around it)"})
            continue
        seq, recorded = entry
        now = run_details(trail._key, row)
        changed = [k for k in ("status", "script_type", "database_id", "options_mac", "summary_mac", "error_mac",
                               "finished_at") if k in now and now[k] != recorded.get(k)]
        if changed:
            problems.append({"run_id": row["id"], "seq": seq,
                             "problem": f"edited after trail entry {seq} ({', '.join(changed)} differ)"})
    for run_id, (seq, _) in sorted(last.items(), key=lambda kv: kv[1][0]):
        problems.append({"run_id": run_id, "seq": seq, "problem": f"deleted from history (trail entry {seq})"})
    return {"checked": len(rows), "ok": not problems, "problems": problems}


def history_recorder(cfg: Any) -> HistoryRecorder | None:
    """The recorder for this fleet's history store, or None when no trail key is configured. A key that is
    configured but unreadable in this process makes each write log a warning (and ``trail verify`` fail)."""
    section = cfg.database_scripts.compliance
    if not (section.trail_key_env or section.trail_key_file):
        return None
    return HistoryRecorder(cfg.fleet.resolved_history(), section.trail_key)
