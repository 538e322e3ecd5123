"""The dashboard's browser sign-in does not weaken the API: the token is exchanged once for an HttpOnly,
SameSite=Strict session cookie (never the token itself), the cookie opens reads and the WebSocket from our own
origin, a state-changing request by cookie also needs the page's CSRF header, forged/expired/foreign cookies
are 401, every new route is guarded, and no answer or log line ever echoes a token that was sent."""

from __future__ import annotations

import logging
import re
from typing import Any

import pytest
from fastapi import WebSocket
from fastapi.routing import APIRoute, APIWebSocketRoute
from fastapi.testclient import TestClient
from starlette.testclient import WebSocketDenialResponse

from engines.config import parse_config
from workers import api_session
from workers.api import create_api

TOKEN = "h15a-unit-dashboard-token-5e1f"
CANARY = "h15a-canary-token-never-echoed-7731"
ACK = "/api/monitoring/alerts/a1/acknowledge"


class Unreachable:
    """Stands in for the cache and the alert store: a refused request must never get as far as using them."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"a refused request reached the backend ({name})")


def client() -> TestClient:
    cfg = parse_config("databases:\n  music: {kind: postgresql, host: 127.0.0.1}\n")
    return TestClient(create_api(cfg, Unreachable(), Unreachable(), token=TOKEN), follow_redirects=False)


def signed_in() -> tuple[TestClient, str]:
    c = client()
    answer = c.post("/login", data={"token": TOKEN})
    assert answer.status_code == 303, answer.text
    return c, c.cookies[api_session.COOKIE]


def test_the_login_form_sets_an_httponly_strict_cookie_that_is_not_the_token() -> None:
    c = client()
    answer = c.post("/login", data={"token": TOKEN})
    assert answer.status_code == 303 and answer.headers["location"] == "/"
    set_cookie = answer.headers["set-cookie"]
    assert set_cookie.startswith(f"{api_session.COOKIE}=")
    assert {"HttpOnly", "SameSite=Strict", "Path=/", f"Max-Age={api_session.SESSION_SECONDS}"} <= {
        p.strip() for p in set_cookie.split(";")}
    assert "Secure" not in set_cookie  # plain http (loopback): a Secure cookie would never come back
    assert TOKEN not in set_cookie and answer.headers["cache-control"] == "no-store"
    page = c.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")


def test_a_token_link_is_exchanged_for_a_cookie_and_leaves_the_address_bar() -> None:
    c = client()
    answer = c.get(f"/?token={TOKEN}")
    assert answer.status_code == 303 and answer.headers["location"] == "/"
    assert answer.headers["referrer-policy"] == "no-referrer"
    assert api_session.valid(TOKEN, c.cookies[api_session.COOKIE])
    assert c.get("/api/added-later-nowhere").status_code == 404  # signed in: the route table answers, not 401
    # the query token is only accepted at / (as a sign-in), not on other HTTP routes
    assert client().get(f"/api/dashboard?token={TOKEN}").status_code == 401


def test_the_session_cookie_opens_the_page_with_its_csrf_token_and_strict_headers() -> None:
    c, session = signed_in()
    page = c.get("/")
    meta = re.search(r'<meta name="dbfleet-csrf" content="([0-9a-f]+)">', page.text)
    assert meta and meta.group(1) == api_session.csrf_for(TOKEN, session)
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
    assert page.headers["x-frame-options"] == "DENY" and page.headers["cache-control"] == "no-store"
    assert not re.search(r"https?://|cdn", page.text, re.I)  # nothing from elsewhere: works offline
    script = c.get("/static/dashboard.js")
    assert script.status_code == 200 and "text/javascript" in script.headers["content-type"]
    # text is set with textContent: alert names cannot inject markup
    assert ".innerHTML" not in script.text and "insertAdjacentHTML" not in script.text
    assert c.get("/static/dashboard.css").status_code == 200
    assert c.get("/static/..%2Fapi.py").status_code == 404 and c.get("/static/api.py").status_code == 404


@pytest.mark.parametrize("cookie", [
    "wrong",
    TOKEN,  # the token itself is not a session
    api_session.issue("another-token-of-another-fleet"),  # a rotated token ends every session
    api_session.issue(TOKEN, now=0),  # expired
    "9999999999.nonce." + "0" * 64,  # forged mac
    "",
], ids=["wrong", "the-token", "other-token", "expired", "forged-mac", "empty"])
def test_a_wrong_forged_or_expired_cookie_is_401(cookie: str) -> None:
    c = client()
    c.cookies.set(api_session.COOKIE, cookie)
    for path in ("/", "/api/dashboard", "/static/dashboard.js", "/api/monitoring/alerts/active"):
        answer = c.get(path)
        assert answer.status_code == 401 and answer.headers["www-authenticate"] == "Bearer", (path, cookie)
    assert c.post(ACK, headers={"X-Dbfleet-CSRF": "x"}).status_code == 401


def test_acknowledge_by_cookie_needs_the_csrf_header_and_our_origin() -> None:
    c, session = signed_in()
    csrf = api_session.csrf_for(TOKEN, session)
    for headers in ({}, {"X-Dbfleet-CSRF": ""}, {"X-Dbfleet-CSRF": "wrong"},
                    {"X-Dbfleet-CSRF": api_session.csrf_for(TOKEN, api_session.issue(TOKEN))},  # another session's
                    {"X-Dbfleet-CSRF": csrf, "Origin": "https://evil.example"}):
        answer = c.post(ACK, json={"by": "x"}, headers=headers)  # Unreachable: a refused ack never reaches the store
        assert answer.status_code == 403 and "X-Dbfleet-CSRF" in answer.json()["error"], headers
    # a cross-site form: urlencoded body, no custom header
    assert c.post(ACK, data={"by": "x"}).status_code == 403
    assert c.post("/logout").status_code == 403
    out = c.post("/logout", headers={"X-Dbfleet-CSRF": csrf, "Origin": "http://testserver"})
    assert out.status_code == 204 and "Max-Age=0" in out.headers["set-cookie"]


def test_bearer_clients_need_no_csrf_header() -> None:
    c = client()
    c.headers["Authorization"] = f"Bearer {TOKEN}"
    page = c.get("/")
    assert page.status_code == 200 and '<meta name="dbfleet-csrf" content="">' in page.text
    with pytest.raises(AssertionError, match="reached the backend"):  # past the gate, into the (absent) store
        c.post(ACK, json={"by": "x"})


def test_the_websocket_takes_the_cookie_only_from_our_origin() -> None:
    c, _ = signed_in()

    @c.app.websocket("/ws-added-later")  # type: ignore[attr-defined]
    async def added(ws: WebSocket) -> None:
        await ws.accept()
        await ws.send_json({"hello": "cookie"})
        await ws.close()

    for origin in ("https://evil.example", "http://testserver.evil.example", "null"):
        for path in ("/monitoring/realtime", "/ws-added-later"):
            with pytest.raises(WebSocketDenialResponse) as denied:
                with c.websocket_connect(path, headers={"Origin": origin}) as ws:
                    ws.receive_json()
            assert denied.value.status_code == 403, origin
            assert "opened by this host's page" in denied.value.json()["error"]
    with c.websocket_connect("/ws-added-later", headers={"Origin": "http://testserver"}) as ws:
        assert ws.receive_json() == {"hello": "cookie"}
    with pytest.raises(WebSocketDenialResponse) as denied:
        with client().websocket_connect("/ws-added-later", headers={"Origin": "http://testserver"}) as ws:
            ws.receive_json()
    assert denied.value.status_code == 401  # no cookie


def test_browsers_without_credentials_get_the_login_page_and_api_clients_json() -> None:
    c = client()
    page = c.get("/", headers={"Accept": "text/html,application/xhtml+xml"})
    assert page.status_code == 401 and page.headers["www-authenticate"] == "Bearer"
    assert '<form method="post" action="/login">' in page.text and "<script" not in page.text
    assert "unsafe-inline" not in page.headers["content-security-policy"]
    api = c.get("/api/dashboard")
    assert api.status_code == 401 and api.json()["error"].startswith("missing or wrong token")
    assert c.post("/login").status_code == 401
    assert c.post("/login", data={"token": TOKEN + "x" * 5000}).status_code == 401  # a body over 4 kB
    for origin in ("https://evil.example", "null"):  # null: a sandboxed frame, or a no-referrer page elsewhere
        assert c.post("/login", data={"token": TOKEN}, headers={"Origin": origin}).status_code == 403
    # our own pages send "Referrer-Policy: same-origin": with no-referrer, Chromium's form POST says "Origin: null"
    assert page.headers["referrer-policy"] == "same-origin"
    assert api_session.COOKIE not in c.cookies


def test_a_sent_token_is_never_echoed_into_answers_or_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    c = client()
    answers = [c.post("/login", data={"token": CANARY}), c.get(f"/?token={CANARY}"),
               c.get("/", headers={"Authorization": f"Bearer {CANARY}", "Accept": "text/html"}),
               c.get("/api/dashboard", headers={"Authorization": f"Bearer {CANARY}"})]
    assert [a.status_code for a in answers] == [401] * 4
    ok = client()
    answers += [ok.post("/login", data={"token": TOKEN}), ok.get(f"/?token={TOKEN}"), ok.get("/")]
    for a in answers:
        text = a.text + str(a.headers)
        assert CANARY not in text and TOKEN not in text
    assert "That is not the API token" in answers[0].text
    server_side = "\n".join(r.getMessage() for r in caplog.records if r.name != "httpx")  # httpx: the test's client
    assert CANARY not in server_side and TOKEN not in server_side


def test_the_route_walk_covers_the_dashboard_routes() -> None:
    """tests/unit/test_api_auth.py walks app.routes for the 401s; the dashboard's routes are in that table."""
    app = client().app
    http = {r.path for r in app.routes if isinstance(r, APIRoute)}
    assert {"/", "/api/dashboard", "/static/{name}", "/logout"} <= http
    assert "/monitoring/realtime" in {r.path for r in app.routes if isinstance(r, APIWebSocketRoute)}
    c = client()
    c.cookies.set(api_session.COOKIE, api_session.issue("not-this-fleets-token"))
    for route in app.routes:
        if isinstance(route, APIRoute):
            for method in route.methods:
                assert c.request(method, re.sub(r"\{[^}]+\}", "x", route.path)).status_code == 401, route.path
