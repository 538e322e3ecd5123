"""The realtime dashboard of `dbfleet api`: a page at ``/`` (plain HTML, one script, one stylesheet, no
build step, nothing from a CDN) and its data at ``/api/dashboard``.

The page renders exactly what :func:`workers.monitoring.dashboard_data` returns (the facade's
``get_dashboard_data()``), fetches it again whenever the realtime WebSocket announces a health update or an
alert transition, and acknowledges alerts through the API's acknowledge route. The token middleware
guards every route here; browsers sign in with a session cookie (:mod:`workers.api_session`).
"""

from __future__ import annotations

import html
from functools import cache
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, Response

from workers import api_session as browser

STATIC = Path(__file__).parent / "static"
ASSETS = {"dashboard.js": "text/javascript; charset=utf-8", "dashboard.css": "text/css; charset=utf-8"}
PAGE_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
            "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
PAGE_HEADERS = {**browser.PAGE_NO_STORE, "Content-Security-Policy": PAGE_CSP, "X-Frame-Options": "DENY"}


@cache
def _asset(name: str) -> str:
    return (STATIC / name).read_text(encoding="utf-8")


def page(csrf: str | None) -> str:
    """The dashboard's HTML with the session's CSRF token (empty for a Bearer client, which needs none)."""
    return _asset("dashboard.html").replace("{{csrf}}", html.escape(csrf or "", quote=True))


def add_dashboard(router: FastAPI, cfg: Any, cache: Any, store: Any) -> None:
    """Add the page, its two assets, its JSON and sign-out to the app; ``cache`` and ``store`` as
    :func:`workers.api.create_api`'s. Added to the app itself, not through an included router, so that
    ``app.routes`` lists each route (the auth test walks it)."""

    @router.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index(request: Request) -> Response:
        """The dashboard page."""
        return HTMLResponse(page(request.scope.get(browser.CSRF_SCOPE_KEY)), headers=PAGE_HEADERS)

    @router.get("/static/{name}", include_in_schema=False)
    def asset(name: str) -> Response:
        """The page's script and stylesheet (only these two names)."""
        if name not in ASSETS:
            return Response(status_code=404)
        return Response(_asset(name), media_type=ASSETS[name], headers=browser.NO_STORE)

    @router.get("/api/dashboard")
    def dashboard() -> dict[str, Any]:
        """Every database's health, active alerts, last backup and drill (age, RTO), recent migrations with
        progress: what the page at / shows, and what ``monitoring_engine.get_dashboard_data()`` returns."""
        from workers.monitoring import dashboard_data

        return dashboard_data(list(cfg.databases), cfg=cfg, cache=cache, store=store)

    @router.post("/logout", status_code=204, include_in_schema=False)
    def logout(request: Request) -> Response:
        """Clear the browser's session cookie."""
        return browser.signed_out(request.scope)
