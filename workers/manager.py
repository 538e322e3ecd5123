"""The seed's facade for application code: execute, schedule, and query script runs.

Every method works synchronously; ``execute_script`` and ``get_script_history`` also
return objects you can ``await`` from asyncio code without blocking the loop.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Callable, Generator
from datetime import datetime
from typing import Any

from celery import Celery
from celery.result import AsyncResult

from engines.config import check_cron
from engines.errors import ConfigError, DbfleetError, ScriptFailed
from engines.history import FAILED
from workers import runtime
from workers.scripts import ScriptType, resolve

_SECRET_KEY = re.compile(r"pass(word)?|secret|token|api[_-]?key|private[_-]?key|credential", re.I)
RUNTIME_PREFIX = "user:"


def check_options(options: dict[str, Any]) -> dict[str, Any]:
    """Refuse options that look like secrets (task arguments are visible in Flower and the backend) and
    inline database configs (a database travels as a registry id; docs/security.md)."""
    problems = [(f"options.{k}", "secrets cannot travel as task options; reference them in dbfleet.yaml "
                                 "(password_env, password_file)") for k in _secret_keys(options)]
    problems += [(f"options.{k}", "an inline database config cannot travel as an option: name a registry id")
                 for k, v in options.items() if isinstance(v, dict) and "kind" in v]
    if problems:
        raise ConfigError(problems)
    return options


def _secret_keys(tree: dict[str, Any], path: str = "") -> list[str]:
    out = []
    for key, value in tree.items():
        where = f"{path}.{key}" if path else str(key)
        if _SECRET_KEY.search(str(key)):
            out.append(where)
        elif isinstance(value, dict):
            out += _secret_keys(value, where)
    return out


def registry_id(database_id: Any) -> str:
    """``database_id`` when it is a registry id of this config; inline configs and unknown ids are refused."""
    if not isinstance(database_id, str):
        raise ConfigError([("database_id", f"expected a registry id, got {type(database_id).__name__}: scripts run "
                                           "only on databases of the registry (inline configs are not accepted)")])
    runtime.config().database(database_id)
    return database_id


class ScriptExecution:
    """A submitted run: ``wait()`` synchronously or ``await`` it."""

    def __init__(self, result: AsyncResult, script: str, database_id: str) -> None:
        self.async_result = result
        self.task_id = result.id
        self.script = script
        self.database_id = database_id

    @property
    def state(self) -> str:
        return str(self.async_result.state)

    def _outcome(self) -> dict[str, Any]:
        if self.async_result.failed():
            raise ScriptFailed(str(self.async_result.result))
        value: dict[str, Any] = self.async_result.result
        return value

    def wait(self, timeout: float | None = None, poll: float = 0.2,
             on_poll: Callable[[str], None] | None = None) -> dict[str, Any]:
        """Block until the run ends; raise ScriptFailed on failure, TimeoutError on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.async_result.ready():
            if on_poll:
                on_poll(self.state)
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"{self.script} on {self.database_id} ({self.task_id}) "
                                   f"still {self.state} after {timeout:.0f}s: is a worker "
                                   "consuming its queue? (dbfleet status)")
            time.sleep(poll)
        return self._outcome()

    async def wait_async(self, timeout: float | None = None, poll: float = 0.2) -> dict[str, Any]:
        """The awaitable form of :meth:`wait`."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not await asyncio.to_thread(self.async_result.ready):
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"{self.script} on {self.database_id} still {self.state}")
            await asyncio.sleep(poll)
        return self._outcome()

    def __await__(self) -> Generator[Any, None, dict[str, Any]]:
        return self.wait_async().__await__()


class HistoryList(list):  # type: ignore[type-arg]
    """A list of history rows that can also be awaited."""

    def __await__(self) -> Generator[Any, None, HistoryList]:
        async def _self() -> HistoryList:
            return self

        return _self().__await__()


class DatabaseScriptManager:
    """Enqueue scripts, schedule them, and read their history."""

    def __init__(self, app: Celery | None = None) -> None:
        if app is None:
            from workers.app import app as default_app

            app = default_app
        self.app = app

    def execute_script(self, script_type: ScriptType | str, database_id: str,
                       config: dict[str, Any] | None = None) -> ScriptExecution:
        """Send one script run to its queue; unknown ids and scripts fail here and are recorded."""
        try:
            name, task, queue = resolve(script_type)
            options = check_options(dict(config or {}))
            registry_id(database_id)
        except DbfleetError as exc:
            name = database_id if isinstance(database_id, str) else "<not a registry id>"  # a mapping may hold secrets
            self._record_refusal(str(getattr(script_type, "value", script_type)), name, exc)
            raise
        result = self.app.send_task(task, args=[database_id], kwargs={"options": options}, queue=queue)
        return ScriptExecution(result, name, database_id)

    def _record_refusal(self, script: str, database_id: str, exc: Exception) -> None:
        run_id = f"refused-{uuid.uuid4()}"
        history = runtime.history()
        history.start(run_id, script, database_id, {}, queue=None, worker="client")
        history.finish(run_id, FAILED, error=f"{type(exc).__name__}: {exc}")

    def schedule_script(self, script_type: ScriptType | str, schedule: str, database_id: str,
                        config: dict[str, Any] | None = None, name: str | None = None) -> dict[str, Any]:
        """Add (or replace) a runtime cron schedule, persisted in Redis through redbeat."""
        from redbeat import RedBeatSchedulerEntry

        from beat_schedule import cron_schedule

        script, task, queue = resolve(script_type)
        registry_id(database_id)
        check_cron(schedule, "schedule")
        options = check_options(dict(config or {}))
        entry_name = RUNTIME_PREFIX + (name or f"{script}:{database_id}")
        entry = RedBeatSchedulerEntry(entry_name, task, cron_schedule(schedule), args=[database_id],
                                      kwargs={"options": options}, options={"queue": queue}, app=self.app)
        entry.save()
        return {"name": entry_name, "script": script, "database_id": database_id,
                "schedule": schedule, "queue": queue}

    def list_schedules(self) -> list[dict[str, Any]]:
        """Every entry redbeat holds: static ones from the config and runtime ones."""
        from redbeat import RedBeatSchedulerEntry
        from redbeat.schedulers import get_redis

        conf = self.app.conf
        client = get_redis(self.app)
        out = []
        for key in client.zrange(conf.redbeat_key_prefix + ":schedule", 0, -1):
            key = key.decode() if isinstance(key, bytes) else key
            try:
                e = RedBeatSchedulerEntry.from_key(key, app=self.app)
            except KeyError:
                continue
            out.append({"name": e.name, "task": e.task, "args": list(e.args or []),
                        "schedule": str(e.schedule), "next_due": _iso(e.due_at),
                        "origin": "runtime" if e.name.startswith(RUNTIME_PREFIX) else "config"})
        return sorted(out, key=lambda r: r["name"])

    def unschedule(self, name: str) -> None:
        """Remove a runtime schedule by name; config schedules are changed in dbfleet.yaml."""
        from redbeat import RedBeatSchedulerEntry

        full = name if name.startswith(RUNTIME_PREFIX) else RUNTIME_PREFIX + name
        try:
            RedBeatSchedulerEntry.from_key(self.app.conf.redbeat_key_prefix + full, app=self.app).delete()
        except KeyError:
            raise ConfigError([("schedule", f"no runtime schedule named {full!r} (dbfleet schedule list)")]) from None

    def get_script_history(self, script_type: ScriptType | str | None = None,
                           database_id: str | None = None, limit: int = 100,
                           since: datetime | None = None, status: str | None = None) -> HistoryList:
        """Past runs, newest first."""
        script = resolve(script_type)[0] if script_type else None
        return HistoryList(runtime.history().query(script, database_id, since, status, limit))


def _iso(ts: Any) -> str | None:
    return ts.isoformat(timespec="seconds") if ts else None
