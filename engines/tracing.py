"""Engine phases as OpenTelemetry spans: ``with phase("backup.dump", database_id=db.id): ...`` or
``@traced("migration.copy_batch")``.

Costs nothing when tracing is off: without the ``opentelemetry-api`` package, or before a tracer provider is set
(``workers/tracing.py`` sets one when ``fleet.tracing.otlp_endpoint`` is configured), spans are no-ops.
Attributes are ids, names and counts only: never a password, a DSN or row data (the caller passes them; values
that are not str/int/float/bool are dropped).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

try:
    from opentelemetry import trace as _trace
except ImportError:  # pragma: no cover - the package is a dependency; a slim install may lack it
    _trace = None  # type: ignore[assignment]

F = TypeVar("F", bound=Callable[..., Any])
TRACER = "dbfleet"


def _clean(attributes: dict[str, Any]) -> dict[str, Any]:
    return {f"dbfleet.{k}": v for k, v in attributes.items() if isinstance(v, (str, int, float, bool))}


@contextmanager
def phase(name: str, **attributes: Any) -> Iterator[Any]:
    """A span named ``name`` around the block (the current span's child); yields the span (or None)."""
    if _trace is None:
        yield None
        return
    with _trace.get_tracer(TRACER).start_as_current_span(name, attributes=_clean(attributes)) as span:
        yield span


def traced(name: str, attributes: Callable[..., dict[str, Any]] | None = None) -> Callable[[F], F]:
    """Decorate a function so each call is a span named ``name``; ``attributes(*args, **kwargs)`` may name ids."""

    def wrap(fn: F) -> F:
        @functools.wraps(fn)
        def inner(*args: Any, **kwargs: Any) -> Any:
            attrs: dict[str, Any] = {}
            if attributes is not None and _trace is not None:
                try:
                    attrs = attributes(*args, **kwargs)
                except Exception:  # an attribute is never worth failing the call
                    attrs = {}
            with phase(name, **attrs):
                return fn(*args, **kwargs)

        return inner  # type: ignore[return-value]

    return wrap


def annotate(**attributes: Any) -> None:
    """Add attributes to the current span (a no-op without one)."""
    if _trace is not None:
        span = _trace.get_current_span()
        if span.is_recording():
            span.set_attributes(_clean(attributes))
