"""The alert rule language: ``avg_response_time > 50ms``, ``cpu_usage > 75% AND active_users > 1000000``.

A hand-written tokenizer and recursive-descent parser build an AST; nothing is ever evaluated as
Python. Grammar (keywords case-insensitive)::

    expr       := or
    or         := and ("OR" and)*
    and        := not ("AND" not)*
    not        := "NOT" not | "(" expr ")" | comparison
    comparison := METRIC (">" | ">=" | "<" | "<=" | "==" | "=" | "!=") NUMBER [UNIT]
    UNIT       := ms | s | m | h | % | B | KB | MB | GB | TB

Literals are converted to the metric's own unit when the rule is parsed (``2m`` against a metric in
milliseconds is 120000). Evaluation uses three-valued logic: a metric without data makes its
comparison unknown, and an unknown rule does not fire.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

# unit kinds: how a metric's values are measured
TIME_MS, TIME_S, PERCENT, BYTES, NUMBER = "ms", "s", "%", "bytes", "number"
_TIME = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_BYTES = {"b": 1, "kb": 1024, "mb": 1024 ** 2, "gb": 1024 ** 3, "tb": 1024 ** 4}
_OPS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le,
    "==": operator.eq, "=": operator.eq, "!=": operator.ne}
_TOKEN = re.compile(r"""\s*(?:
    (?P<number>\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)(?P<unit>ms|s|m|h|%|[kKmMgGtT]?[bB](?![A-Za-z0-9_]))?(?![A-Za-z0-9_.])
  | (?P<op>>=|<=|==|!=|>|<|=)
  | (?P<paren>[()])
  | (?P<word>[A-Za-z_][A-Za-z0-9_.:]*)
)""", re.VERBOSE)
MAX_LENGTH = 2000
MAX_DEPTH = 50


class RuleError(ValueError):
    """A rule that cannot be used; ``position`` is the 0-based offset of the problem in the text."""

    def __init__(self, message: str, text: str, position: int) -> None:
        self.message, self.text, self.position = message, text, position
        super().__init__(f"{message} at position {position + 1}: {text!r}")

    def caret(self) -> str:
        """The rule with a caret under the problem (for CLI and config errors)."""
        return f"{self.text}\n{' ' * self.position}^ {self.message}"


@dataclass(frozen=True)
class Compare:
    metric: str
    op: str
    value: float  # already in the metric's unit
    text: str  # the literal as written, for messages

    def evaluate(self, metrics: Mapping[str, float | None]) -> bool | None:
        seen = metrics.get(self.metric)
        if seen is None or (isinstance(seen, float) and math.isnan(seen)):
            return None
        return _OPS[self.op](float(seen), self.value)

    def __str__(self) -> str:
        return f"{self.metric} {self.op} {self.text}"


@dataclass(frozen=True)
class Not:
    operand: Node

    def evaluate(self, metrics: Mapping[str, float | None]) -> bool | None:
        v = self.operand.evaluate(metrics)
        return None if v is None else not v

    def __str__(self) -> str:
        return f"NOT ({self.operand})"


@dataclass(frozen=True)
class BoolOp:
    op: str  # AND | OR
    operands: tuple[Node, ...]

    def evaluate(self, metrics: Mapping[str, float | None]) -> bool | None:
        values = [o.evaluate(metrics) for o in self.operands]
        decisive = self.op == "OR"  # OR: any True wins; AND: any False wins
        if decisive in values:
            return decisive
        return None if None in values else not decisive

    def __str__(self) -> str:
        return f" {self.op} ".join(f"({o})" if isinstance(o, BoolOp) else str(o) for o in self.operands)


Node = Compare | Not | BoolOp


def metric_names(node: Node) -> set[str]:
    """Every metric a rule reads."""
    if isinstance(node, Compare):
        return {node.metric}
    if isinstance(node, Not):
        return metric_names(node.operand)
    return set().union(*(metric_names(o) for o in node.operands))


@dataclass
class _Tok:
    kind: str
    text: str
    pos: int
    unit: str | None = None


def _tokens(text: str) -> list[_Tok]:
    out, pos = [], 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            start = pos + len(text[pos:]) - len(text[pos:].lstrip())
            raise RuleError(f"unexpected character {text[start]!r}", text, start)
        start = m.start(m.lastgroup or 0) if m.lastgroup else pos
        kind = "number" if m.group("number") else str(m.lastgroup)
        value = m.group(kind)
        start = m.start(kind)
        if kind == "word" and value.upper() in ("AND", "OR", "NOT"):
            kind, value = "kw", value.upper()
        out.append(_Tok(kind, value, start, m.group("unit") if kind == "number" else None))
        pos = m.end()
    out.append(_Tok("end", "", len(text)))
    return out


class _Parser:
    def __init__(self, text: str, units: Mapping[str, str]) -> None:
        self.text, self.units = text, units
        self.toks = _tokens(text)
        self.i = 0
        self.depth = 0

    def peek(self) -> _Tok:
        return self.toks[self.i]

    def take(self) -> _Tok:
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def fail(self, message: str, tok: _Tok | None = None) -> RuleError:
        return RuleError(message, self.text, (tok or self.peek()).pos)

    def parse(self) -> Node:
        node = self.or_()
        if self.peek().kind != "end":
            raise self.fail(f"expected AND, OR or the end of the rule, found {self.peek().text!r}")
        return node

    def or_(self) -> Node:
        return self._chain("OR", self.and_)

    def and_(self) -> Node:
        return self._chain("AND", self.not_)

    def _chain(self, kw: str, sub: Callable[[], Node]) -> Node:
        items = [sub()]
        while self.peek().kind == "kw" and self.peek().text == kw:
            self.take()
            items.append(sub())
        return items[0] if len(items) == 1 else BoolOp(kw, tuple(items))

    def not_(self) -> Node:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.fail(f"nested deeper than {MAX_DEPTH} levels")
        try:
            tok = self.peek()
            if tok.kind == "kw" and tok.text == "NOT":
                self.take()
                return Not(self.not_())
            if tok.kind == "paren" and tok.text == "(":
                self.take()
                node = self.or_()
                if self.peek().text != ")":
                    raise self.fail("expected ')'")
                self.take()
                return node
            return self.compare()
        finally:
            self.depth -= 1

    def compare(self) -> Compare:
        name = self.take()
        if name.kind != "word":
            raise self.fail(f"expected a metric name, found {name.text or 'the end of the rule'!r}", name)
        if name.text not in self.units:
            known = ", ".join(sorted(self.units))
            raise self.fail(f"unknown metric {name.text!r} (known: {known})", name)
        op = self.take()
        if op.kind != "op":
            raise self.fail(f"expected a comparison (>, >=, <, <=, ==, !=) after {name.text}, "
                            f"found {op.text or 'the end of the rule'!r}", op)
        lit = self.take()
        if lit.kind != "number":
            raise self.fail(f"expected a number after {op.text}, found {lit.text or 'the end of the rule'!r}", lit)
        value = _convert(float(lit.text), lit.unit, self.units[name.text])
        if value is None:
            raise self.fail(f"{name.text} is measured in {self.units[name.text]}; {lit.text}{lit.unit or ''} "
                            "does not compare with it", lit)
        return Compare(name.text, op.text, value, f"{lit.text}{lit.unit or ''}")


def _convert(number: float, unit: str | None, kind: str) -> float | None:
    """A literal in the metric's unit, or None when the units do not match."""
    if unit is None:
        return number  # a bare number is in the metric's own unit
    if unit in _TIME and kind in (TIME_MS, TIME_S):
        seconds = number * _TIME[unit]
        return seconds * 1000 if kind == TIME_MS else seconds
    if unit == "%" and kind == PERCENT:
        return number
    if unit.lower() in _BYTES and kind == BYTES:
        return number * _BYTES[unit.lower()]
    return None


def parse(text: str, units: Mapping[str, str]) -> Node:
    """Parse ``text`` against the known metrics (name -> unit kind); raise RuleError with the position."""
    if not isinstance(text, str) or not text.strip():
        raise RuleError("empty rule", str(text), 0)
    if len(text) > MAX_LENGTH:
        raise RuleError(f"longer than {MAX_LENGTH} characters", text[:40] + "...", 0)
    return _Parser(text, units).parse()


def parse_duration(text: str | int | float) -> float:
    """``30s``, ``2m``, ``4h``, ``500ms`` or a number of seconds -> seconds."""
    if isinstance(text, (int, float)):
        return float(text)
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*", str(text))
    if not m:
        raise ValueError(f"{text!r} is not a duration (examples: 30s, 2m, 4h)")
    return float(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2) or "s"]
