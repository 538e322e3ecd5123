"""Check declarations: each check is a small function registered with its id, title, severity and fix.

A check function receives the engine's probe for its kind and returns a :class:`Verdict`. It raises
:class:`Unknowable` (or lets a driver's privilege error escape) when it cannot look; the engine turns
that into an ``unknown`` finding with the reason, so one missing privilege never stops the audit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from engines.security.model import FAIL, PASS, SEVERITIES


class Unknowable(Exception):
    """A check cannot see what it needs (privilege, version, visibility); the message says why."""


@dataclass
class Verdict:
    """What a check saw: pass or fail, the evidence, and optionally a remediation for exactly this case."""

    status: str
    evidence: dict[str, Any] = field(default_factory=dict)
    remediation: str | None = None


def passed(**evidence: Any) -> Verdict:
    """A passing verdict with its evidence."""
    return Verdict(PASS, evidence)


def failed(remediation: str | None = None, **evidence: Any) -> Verdict:
    """A failing verdict, with a remediation specific to what was seen when there is one."""
    return Verdict(FAIL, evidence, remediation)


def verdict(ok: bool, remediation: str | None = None, **evidence: Any) -> Verdict:
    """Pass when ``ok``, else fail."""
    return passed(**evidence) if ok else failed(remediation, **evidence)


@dataclass(frozen=True)
class Check:
    """One registered check."""

    id: str
    title: str
    severity: str
    remediation: str
    run: Callable[[Any], Verdict]
    cis: str | None = None


class CheckSet:
    """The checks of one database kind, in registration order; ids are unique."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.checks: dict[str, Check] = {}

    def add(self, check: Check) -> None:
        if check.id in self.checks:
            raise ValueError(f"duplicate check id {check.id}")
        if check.severity not in SEVERITIES:
            raise ValueError(f"{check.id}: unknown severity {check.severity!r}")
        self.checks[check.id] = check

    def check(self, id: str, title: str, severity: str, remediation: str,
              cis: str | None = None) -> Callable[[Callable[[Any], Verdict]], Callable[[Any], Verdict]]:
        """Decorator registering a check function."""
        def register(fn: Callable[[Any], Verdict]) -> Callable[[Any], Verdict]:
            self.add(Check(id, title, severity, remediation, fn, cis))
            return fn
        return register

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.checks.values())

    def __len__(self) -> int:
        return len(self.checks)
