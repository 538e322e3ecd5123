"""A task module loaded only through fleet.extra_task_modules by tests/unit/test_app_and_schedule.py."""

from __future__ import annotations

from workers.app import app


@app.task(name="health.extra_for_app_test")
def extra() -> str:
    """Does nothing: it only has to be registered."""
    return "ok"
