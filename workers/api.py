"""The monitoring REST + WebSocket API (FastAPI): cached health, metrics, alerts, acknowledge, silences,
and a realtime feed of health updates and alert transitions. `dbfleet api` serves it with uvicorn.

It reads what workers cached and the alert store; it never connects to a registered database.
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timezone
from typing import Any

from fastapi import FastAPI, HTTPException, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, model_validator

from engines.config import Config
from engines.errors import ConfigError
from engines.monitoring.metrics import METRICS, from_report
from engines.monitoring.rules import parse_duration
from engines.monitoring.store import silence_end
from workers import runtime
from workers.api_auth import TOKEN_MIN_LENGTH, TokenAuth, api_token, generate_token, token_path
from workers.dashboard import add_dashboard

__all__ = ["create_api", "serve", "api_token", "generate_token", "token_path"]


class AckRequest(BaseModel):
    by: str | None = Field(default=None, max_length=200, description="who acknowledges")
    comment: str | None = Field(default=None, max_length=2000)


class MigrationRequest(BaseModel):
    source: str | dict[str, Any] = Field(description="a database id (inline configs only when the operator allows "
                                                     "them: fleet.allow_inline_databases)")
    target: str | dict[str, Any]
    type: str = Field(default="full", pattern="^(full|incremental)$")
    batch_size: int = Field(default=1000, ge=1)
    parallel_workers: int = Field(default=4, ge=1, le=64)
    validation: bool = True
    tables: list[str] | None = None
    watermark: str | None = None
    max_rejects: int = Field(default=0, ge=0)
    embed: dict[str, str | dict[str, str]] | None = Field(
        default=None, description="MongoDB: child table -> parent table (or {into, as}), by foreign key")
    indexes: bool = Field(default=True, description="PostgreSQL targets: rebuild secondary indexes and constraints")
    if_exists: str = Field(default="fail", pattern="^(fail|truncate|append)$",
                           description="target tables that hold rows: refuse at plan time, empty at run start, add to")
    create_target: bool = Field(default=True, description="create the target database when missing (role permitting)")
    start: bool = Field(default=False, description="start the run right after planning")

    @model_validator(mode="before")
    @classmethod
    def _options(cls, data: Any) -> Any:
        """The documented body nests the plan options in ``options``: lift them, refusing unknown keys."""
        if not isinstance(data, dict) or data.get("options") is None:
            return data
        options, data = data["options"], {k: v for k, v in data.items() if k != "options"}
        if not isinstance(options, dict):
            raise ValueError("options must be an object")
        aliases = {"migration_type": "type", "validation_enabled": "validation", "tables_or_collections": "tables"}
        options = {aliases.get(k, k): v for k, v in options.items()}
        unknown = sorted(set(options) - (set(cls.model_fields) - {"source", "target", "start"}))
        clash = sorted(set(options) & set(data))
        if unknown or clash:
            raise ValueError(f"options: unknown keys {unknown}" if unknown else f"options: {clash} also given at the "
                             "top level; give each once")
        return {**data, **options}


class SilenceRequest(BaseModel):
    rule: str | None = Field(default=None, max_length=200)
    database_id: str | None = Field(default=None, max_length=200)
    duration: str = Field(default="1h", max_length=32, description="30m, 2h, 1d ... (at most monitoring.max_silence)")
    by: str | None = Field(default=None, max_length=200)
    comment: str | None = Field(default=None, max_length=2000)


def create_api(cfg: Config | None = None, cache: Any = None, store: Any = None, token: str | None = None) -> FastAPI:
    """The API app; ``cache`` (Redis) and ``store`` (AlertStore) default to this process's. Without a token
    source (``token`` or the config's, see :func:`api_token`) it refuses to build."""
    cfg = cfg or runtime.config()
    token = token if token is not None else api_token(cfg)
    if len(token.strip()) < TOKEN_MIN_LENGTH:
        raise ConfigError([("fleet.api", f"the API token is empty or shorter than {TOKEN_MIN_LENGTH} characters")])
    cache = cache if cache is not None else runtime.cache()
    store = store if store is not None else runtime.alert_store()
    max_silence = parse_duration(cfg.database_scripts.monitoring.max_silence)
    app = FastAPI(title="dbfleet monitoring API", version="1",
                  description="Health, metrics and alerts of the databases in the dbfleet registry. "
                              "Every route needs Authorization: Bearer <token>.")
    app.add_middleware(TokenAuth, token=token.strip())

    @app.exception_handler(HTTPException)
    async def _json_error(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    def database(db_id: str) -> Any:
        if db_id not in cfg.databases:
            known = ", ".join(sorted(cfg.databases)) or "none configured"
            raise HTTPException(404, f"unknown database id {db_id!r} (known: {known})")
        return cfg.databases[db_id]

    def cached_health(db_id: str) -> dict[str, Any]:
        database(db_id)
        raw = cache.get(runtime.HEALTH_KEY.format(db_id))
        if raw is None:
            raise HTTPException(404, f"no health result for {db_id!r} yet: dbfleet run health-check {db_id}")
        report: dict[str, Any] = json.loads(raw)
        return report

    @app.get("/api/monitoring/databases")
    def databases() -> list[dict[str, Any]]:
        """Every registered database with the status of its last health check."""
        raw = cache.mget([runtime.HEALTH_KEY.format(i) for i in cfg.databases]) if cfg.databases else []
        out = []
        for (db_id, db), blob in zip(cfg.databases.items(), raw, strict=True):
            report = json.loads(blob) if blob else None
            out.append({"id": db_id, "kind": db.kind, "tags": db.tags,
                        "status": report["status"] if report else None,
                        "checked_at": report["checked_at"] if report else None})
        return out

    @app.get("/api/monitoring/databases/{db_id}/health")
    def health(db_id: str) -> dict[str, Any]:
        """The last health report of a database (checks with status, value, threshold, hint)."""
        return cached_health(db_id)

    @app.get("/api/monitoring/databases/{db_id}/metrics")
    def metrics(db_id: str) -> dict[str, Any]:
        """The metrics alert rules can use, from the last health report, with their units."""
        report = cached_health(db_id)
        values = from_report(report)
        return {"database_id": db_id, "checked_at": report["checked_at"],
                "metrics": {k: {"value": v, "unit": METRICS.get(k, "number")} for k, v in sorted(values.items())}}

    @app.get("/api/monitoring/alerts/active")
    def active(database_id: str | None = None) -> list[dict[str, Any]]:
        """Pending and firing alerts, firing first."""
        if database_id:
            database(database_id)
        rows: list[dict[str, Any]] = store.active(database_id)
        return rows

    @app.post("/api/monitoring/alerts/{alert_id}/acknowledge")
    def acknowledge(alert_id: str, body: AckRequest | None = None) -> dict[str, Any]:
        """Stop repeat notifications of an alert until it resolves."""
        body = body or AckRequest()
        try:
            row: dict[str, Any] = store.acknowledge(alert_id, body.by, body.comment, datetime.now(timezone.utc))
        except KeyError:
            raise HTTPException(404, f"unknown alert id {alert_id!r}") from None
        except ValueError as exc:
            raise HTTPException(409, str(exc)) from None
        runtime.publish({"type": "alert", "id": alert_id, "rule": row["rule"], "database_id": row["database_id"],
                         "from": row["state"], "to": row["state"], "acknowledged_by": body.by})
        return row

    @app.post("/api/monitoring/silences", status_code=201)
    def silence(body: SilenceRequest) -> dict[str, Any]:
        """Mute notifications for a rule and/or a database for a while."""
        if body.database_id:
            database(body.database_id)
        try:
            ends = silence_end(body.duration, datetime.now(timezone.utc), max_silence)
            row: dict[str, Any] = store.silence(body.rule, body.database_id, ends, body.by, body.comment)
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None
        return row

    @app.get("/api/monitoring/silences")
    def silences() -> list[dict[str, Any]]:
        """Silences that have not expired."""
        return [s.to_dict() for s in store.silences(datetime.now(timezone.utc))]

    @app.post("/api/migration/plan")
    def migration_plan(body: MigrationRequest) -> dict[str, Any]:
        """Plan a migration on a worker of the migrations queue (and start it with ``start: true``)."""
        from engines.errors import DbfleetError
        from workers import migrations
        from workers.operation_refs import registry_ref

        options = body.model_dump(exclude={"source", "target", "start"}, exclude_none=True)
        try:
            source, target = (registry_ref(r, cfg) for r in (body.source, body.target))
            plan = migrations.plan(source, target, **options)
        except DbfleetError as exc:
            raise HTTPException(422, str(exc)) from None
        if body.start:
            migrations.run(plan.id)
        return {"migration_id": plan.id, "started": body.start, "plan": plan.to_dict()}

    @app.get("/api/migration/{migration_id}/progress")
    def migration_progress(migration_id: str) -> dict[str, Any]:
        """Batches done/total, rows, rows/s, ETA, per table; the validation report when finished."""
        return _progress(migration_id)

    @app.websocket("/migration/{migration_id}/progress")
    async def migration_feed(ws: WebSocket, migration_id: str) -> None:
        """Progress snapshots each time they change, until the migration ends."""
        await ws.accept()
        last = None
        while True:
            try:
                snap = await asyncio.to_thread(_progress, migration_id)
            except HTTPException as exc:
                await ws.send_json({"error": exc.detail})
                break
            if snap != last:
                await ws.send_json(snap)
                last = snap
            if snap["status"] in ("completed", "failed", "rolled_back"):
                break
            await asyncio.sleep(1.0)
        await ws.close()

    @app.websocket("/monitoring/realtime")
    async def realtime(ws: WebSocket) -> None:
        """Health updates and alert transitions as JSON messages, as workers publish them."""
        await ws.accept()
        await _forward(ws, cfg.fleet.resolved_cache())

    add_dashboard(app, cfg, cache, store)
    return app


def _progress(migration_id: str) -> dict[str, Any]:
    from engines.errors import DbfleetError
    from workers.migrations import store

    try:
        return store().progress(migration_id)
    except DbfleetError as exc:
        raise HTTPException(404, str(exc)) from None


async def _forward(ws: WebSocket, cache_url: str) -> None:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(cache_url)
    pubsub = client.pubsub()
    await pubsub.subscribe(runtime.EVENTS)
    await ws.send_json({"type": "hello", "channel": "realtime"})
    # the client closing (a browser tab, or the server shutting down) ends the loop at once, not at the next
    # event: before, a connected dashboard held `dbfleet api` open on SIGTERM until it was killed
    closed = asyncio.ensure_future(_until_closed(ws))
    try:
        while not closed.done():
            msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            if msg is not None:
                await ws.send_text(msg["data"].decode() if isinstance(msg["data"], bytes) else str(msg["data"]))
            await asyncio.sleep(0)
    except (WebSocketDisconnect, RuntimeError):
        pass
    finally:
        closed.cancel()
        await pubsub.aclose()
        await client.aclose()


async def _until_closed(ws: WebSocket) -> None:
    """Read (and ignore) what the client sends until it disconnects."""
    while (await ws.receive())["type"] != "websocket.disconnect":
        continue


def serve(address: str, port: int) -> None:
    """Serve the API with uvicorn until interrupted."""
    import uvicorn

    # no access log: a WebSocket client may pass its token as ?token=, which must not reach a log
    # a bound on the wait for open connections at shutdown (Ctrl-C, SIGTERM)
    uvicorn.run(create_api(), host=address, port=port, log_level="warning", access_log=False,
                timeout_graceful_shutdown=5)
