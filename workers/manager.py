"""The facade for application code: execute, schedule, and query operations.

``await manager.execute_script(...)`` returns an :class:`~workers.operations.OperationResult`; the same
call without ``await`` returns the submitted run, whose ``wait()`` gives the engine's dict as before.
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
from engines.errors import ConfigError, DbfleetError, NotAvailable, ScriptFailed
from engines.history import FAILED
from workers import runtime
from workers.app import app, create_app
from workers.operation_options import finish_result, prepare_options
from workers.operations import CONTEXT_KEY, OperationContext, OperationResult
from workers.scripts import SCRIPTS, ScriptType, check_keys, resolve, script_name

_SECRET_KEY = re.compile(r"pass(word)?|secret|token|api[_-]?key|private[_-]?key|credential", re.I)
RUNTIME_PREFIX = "user:"
INTERNAL_KEYS = frozenset({CONTEXT_KEY})

__all__ = ["DatabaseScriptManager", "OperationContext", "OperationResult", "ScriptExecution", "ScriptType"]


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
    """A submitted run: ``await`` it for an OperationResult, or ``wait()`` for the engine's dict."""

    def __init__(self, result: AsyncResult, script: str, database_id: str,
                 context: OperationContext | None = None, options: dict[str, Any] | None = None) -> None:
        self.async_result = result
        self.task_id = result.id
        self.script = script
        self.database_id = database_id
        self.context = context
        self.options = dict(options or {})
        self.submitted = time.time()

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

    def result(self, timeout: float | None = None) -> OperationResult:
        """Block until the run ends and return its typed result (failures are a result, not an exception)."""
        timeout = timeout if timeout is not None else (self.context.timeout if self.context else None)
        try:
            self.wait(timeout)
        except ScriptFailed:
            pass
        return self._typed()

    def _typed(self) -> OperationResult:
        row = runtime.history().get(self.task_id)
        if row is not None:
            out = OperationResult.from_history(row)
        else:  # a task without history (or history unreachable): the result backend's view
            failed = self.async_result.failed()
            payload = {} if failed else dict(self.async_result.result or {})
            out = OperationResult(self.script, self.database_id, FAILED if failed else "succeeded",
                                  task_id=self.task_id, payload=payload, context=self.context,
                                  errors=[str(self.async_result.result)] if failed else [])
        if self.async_result.failed() and not out.errors:
            out.errors = [str(self.async_result.result)]
        elif not self.async_result.failed():
            out.payload = dict(self.async_result.result or {})
        out.operation, out.task = self.script, self.async_result.name or out.task
        out.queue = out.queue or SCRIPTS[self.script].queue
        out.duration_seconds = round(time.time() - self.submitted, 3)  # as the caller waited for it
        return finish_result(out, self.options)

    async def wait_async(self, timeout: float | None = None, poll: float = 0.2) -> OperationResult:
        """The awaitable form of :meth:`result`: the typed result, without blocking the loop."""
        timeout = timeout if timeout is not None else (self.context.timeout if self.context else None)
        deadline = None if timeout is None else time.monotonic() + timeout
        while not await asyncio.to_thread(self.async_result.ready):
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"{self.script} on {self.database_id} still {self.state} after {timeout:.0f}s")
            await asyncio.sleep(poll)
        return await asyncio.to_thread(self._typed)

    def __await__(self) -> Generator[Any, None, OperationResult]:
        return self.wait_async().__await__()


class _Ready:
    """An already known result that can be awaited (dry runs)."""

    def __init__(self, result: OperationResult) -> None:
        self.value = result

    def wait(self, timeout: float | None = None, **_: Any) -> dict[str, Any]:
        return self.value.to_dict()

    def result(self, timeout: float | None = None) -> OperationResult:
        return self.value

    def __await__(self) -> Generator[Any, None, OperationResult]:
        async def _value() -> OperationResult:
            return self.value

        return _value().__await__()


class HistoryList(list):  # type: ignore[type-arg]
    """A list of OperationResult that can also be awaited."""

    def __await__(self) -> Generator[Any, None, HistoryList]:
        async def _self() -> HistoryList:
            return self

        return _self().__await__()


def current_app() -> Celery:
    """The process's Celery app, rebuilt when the config changed (another broker) since the app was first used."""
    cfg = runtime.config()
    if app.conf.broker_url == cfg.fleet.broker_url:
        return app
    global _rebuilt
    if _rebuilt is None or _rebuilt.conf.broker_url != cfg.fleet.broker_url:
        _rebuilt = create_app(cfg)
    return _rebuilt


_rebuilt: Celery | None = None


class DatabaseScriptManager:
    """Enqueue operations, schedule them, and read their history."""

    def __init__(self, app: Celery | None = None) -> None:
        self.app = app if app is not None else current_app()
        self._ready: dict[str, Any] | None = None

    async def initialize(self, timeout: float = 10.0) -> dict[str, Any]:
        """Load the config, register the task modules and check the broker; instant once done."""
        if self._ready is None:
            self._ready = await asyncio.to_thread(self._initialize, timeout)
        return self._ready

    def _initialize(self, timeout: float) -> dict[str, Any]:
        cfg = runtime.config()
        self.app.loader.import_default_modules()
        try:
            with self.app.connection_for_write() as conn:
                conn.ensure_connection(max_retries=1, timeout=timeout)
        except Exception as exc:
            raise ConfigError([("fleet.broker_url", f"the broker does not answer ({type(exc).__name__}): "
                                                    "start it, or check fleet.broker_url")], cfg.source) from None
        runtime.history()
        from workers import tracing

        traced = tracing.configure(cfg)  # spans for the tasks this process sends, when fleet.tracing is set
        available = sorted(n for n, s in SCRIPTS.items() if self.available(s.task))
        return {"config": cfg.source, "databases": len(cfg.databases), "available": available, "tracing": traced}

    def available(self, task: str) -> bool:
        """True when ``task`` is registered in this app (its engine's module is installed)."""
        if task in self.app.tasks:
            return True
        base = app  # task modules register on it (an app finalized earlier may lack them)
        self.app.loader.import_default_modules()
        base.loader.import_default_modules()
        return task in self.app.tasks or task in base.tasks

    def execute_script(self, script_type: ScriptType | str, database_id: str,
                       config: dict[str, Any] | None = None,
                       context: OperationContext | None = None) -> Any:
        """Send one operation to its queue; refusals (unknown id, option, engine) raise here and are recorded.

        Returns the submitted run (ScriptExecution; a migration's MigrationExecution; a dry run's ready value):
        ``await`` it for an OperationResult, or ``wait()`` for the engine's dict."""
        name = str(getattr(script_type, "value", script_type))
        try:
            name = script_name(script_type)
            options = check_options(dict(config or {}))
            check_keys(name, options)
            registry_id(database_id)
            script = SCRIPTS[name]
            task = script.task_for(options)
            if not self.available(task):
                raise NotAvailable(name, task, f"{script.engine} registers it on the {script.queue} queue"
                                   if script.engine else "no worker module registers it")
            options = prepare_options(name, runtime.config(), runtime.config().database(database_id), options)
        except DbfleetError as exc:
            shown = database_id if isinstance(database_id, str) else "<not a registry id>"  # a mapping may hold secrets
            self._record_refusal(name, shown, exc, context)
            raise
        if context is not None:
            options[CONTEXT_KEY] = context.to_dict()
        if context is not None and context.dry_run:
            return _Ready(self._dry_run(name, database_id, task, options, context))
        if name == ScriptType.MIGRATION.value:
            from workers.operation_migration import start_migration

            return start_migration(self.app, database_id, options, context)
        result = self.app.send_task(task, args=[database_id], kwargs={"options": options}, queue=script.queue)
        return ScriptExecution(result, name, database_id, context, options)

    def _dry_run(self, name: str, database_id: str, task: str, options: dict[str, Any],
                 context: OperationContext) -> OperationResult:
        run_id = f"dry-run-{uuid.uuid4()}"
        history = runtime.history()
        history.start(run_id, name, database_id, options, queue=SCRIPTS[name].queue, worker="client")
        history.finish(run_id, "dry_run", summary={"would_send": task, "queue": SCRIPTS[name].queue})
        row = history.get(run_id)
        return OperationResult.from_history(row) if row else OperationResult(name, database_id, "dry_run")

    def _record_refusal(self, script: str, database_id: str, exc: Exception,
                        context: OperationContext | None = None) -> None:
        run_id = f"refused-{uuid.uuid4()}"
        history = runtime.history()
        options = {CONTEXT_KEY: context.to_dict()} if context else {}
        history.start(run_id, script, database_id, options, queue=None, worker="client")
        history.finish(run_id, FAILED, error=f"{type(exc).__name__}: {exc}")

    def schedule_script(self, script_type: ScriptType | str, schedule: str, config: Any = None,
                        *args: Any, database_id: str | None = None, name: str | None = None) -> Any:
        """Add (or replace) a runtime cron schedule, persisted in Redis through redbeat.

        ``schedule_script(type, cron, {"database_id": id, ...})`` or ``(..., database_id=id)`` return the
        schedule id, and are awaitable; the older ``(type, cron, database_id, config, name)`` returns the entry.
        """
        if isinstance(config, str):  # the older positional form
            legacy_config = args[0] if args else None
            legacy_name = args[1] if len(args) > 1 else name
            return self._schedule(script_type, schedule, config, legacy_config, legacy_name)
        options = dict(config or {})
        db_id = database_id or options.pop("database_id", None)
        if not db_id:
            raise ConfigError([("database_id", "name the database: in config ({'database_id': ...}) or as "
                                               "database_id=")], "schedule")
        return _ScheduleId(self._schedule(script_type, schedule, db_id, options, name)["name"])

    def _schedule(self, script_type: ScriptType | str, schedule: str, database_id: str,
                  config: dict[str, Any] | None, name: str | None) -> dict[str, Any]:
        from redbeat import RedBeatSchedulerEntry

        from beat_schedule import cron_schedule

        script, _, queue = resolve(script_type)
        registry_id(database_id)
        check_cron(schedule, "schedule")
        options = check_options(dict(config or {}))
        check_keys(script, options)
        task = SCRIPTS[script].task_for(options)
        if not self.available(task):
            raise NotAvailable(script, task, SCRIPTS[script].engine)
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
        """Past runs as OperationResult, newest first (awaitable too)."""
        script = resolve(script_type)[0] if script_type else None
        rows = runtime.history().query(script, database_id, since, status, limit)
        return HistoryList(OperationResult.from_history(r) for r in rows)


class _ScheduleId(str):
    """A schedule id (``user:backup:spotify_prod``) that can also be awaited."""

    def __await__(self) -> Generator[Any, None, str]:
        async def _self() -> str:
            return str(self)

        return _self().__await__()


def _iso(ts: Any) -> str | None:
    return ts.isoformat(timespec="seconds") if ts else None
