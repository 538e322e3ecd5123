"""The realtime dashboard in a real browser: Debian's headless Chromium driven by Selenium through Debian's
chromedriver (no browser download), against `dbfleet api` and a worker on their own broker, cache and
history (the session fleet's alert store and repository are left alone).

Sign-in through the login form, an alert fired by a real health check (a database on a closed port, rule
``up == 0``) appears without a reload, the acknowledge button changes the API's state, the page reconnects
when the API restarts, and a screenshot is kept: under ``$DBFLEET_TEST_ARTIFACTS`` when set, else under the
pytest basetemp (the path is printed).
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from engines.embedded import free_port
from tests.fleet.conftest import API_TOKEN, Fleet
from tests.fleet.procs import Proc, wait_for, write_config
from tests.servers import CANARY, CANARY_WRONG

pytestmark = pytest.mark.fleet
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
RULE = "h15a_dash_down"
WRONG = "h15a-wrong-token-for-the-login-page"


def _skip_or_fail(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI must not skip: {reason}")
    pytest.skip(reason)


@pytest.fixture
def browser() -> Iterator[Any]:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    if missing:
        _skip_or_fail(f"{' and '.join(missing)} not installed: Debian's chromium and chromium-driver "
                      "(ops/scripts/ensure-services.sh installs them)")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _skip_or_fail("selenium is not installed: pip install -e '.[test]'")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1400,1250", "--no-first-run", "--disable-extensions"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


@pytest.fixture
def dash_fleet(fleet: Fleet) -> Iterator[Fleet]:
    """The session fleet's databases plus a SQLite one, a rule on the closed-port database, its own broker
    (Redis dbs 11-13), history, repository and API port, and a worker on health + backups."""
    from engines.config import load_config
    from workers.app import create_app

    root = fleet.root / "h15a_dash"
    root.mkdir(exist_ok=True)
    data = yaml.safe_load(fleet.config_path.read_text())
    url = fleet.redis.url
    data["fleet"].update({"broker_url": f"{url}/11", "result_backend": f"{url}/12", "cache_url": f"{url}/13",
                          "history_url": f"sqlite:///{root / 'history.db'}",
                          "api": {"port": free_port(), "token_file": str(fleet.root / "api.token")}})
    data["databases"]["h15a_lite"] = {"kind": "sqlite", "path": str(root / "lite.db")}
    data["storage"]["repo"]["path"] = str(root / "repo")
    data["database_scripts"]["monitoring"]["alert_rules"].append(
        {"name": RULE, "expr": "up == 0", "databases": ["ghost"], "severity": "critical",
         "summary": "the database does not answer"})
    import sqlite3

    with sqlite3.connect(root / "lite.db") as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS plays (id INTEGER PRIMARY KEY, track TEXT)")
        conn.executemany("INSERT INTO plays (track) VALUES (?)", [(f"track {i}",) for i in range(50)])
    path = write_config(root / "dbfleet.yaml", data)
    cfg = load_config(path)
    dash = Fleet(root, path, cfg, create_app(cfg), dict(fleet.env, DBFLEET_CONFIG=str(path)), fleet.redis,
                 fleet.procs)
    worker = dash.start_worker("h15a_dash_worker", "health,backups", concurrency=1)
    yield dash
    worker.stop()


def _run(dash: Fleet, task: str, db_id: str, queue: str) -> Any:
    """A task through the broker to the worker; failures (the closed port's health check) are results here."""
    res = dash.app.send_task(task, args=[db_id], kwargs={"options": {}}, queue=queue)
    return res.get(timeout=120, propagate=False)


def _start_api(dash: Fleet, name: str) -> Proc:
    import urllib.error
    import urllib.request

    proc = dash.start("h15a_dash_" + name, "api")
    base = f"http://127.0.0.1:{dash.config.fleet.api.port}"

    def listening() -> bool:
        try:
            urllib.request.urlopen(base + "/api/dashboard", timeout=2)
        except urllib.error.HTTPError as exc:
            return exc.code == 401
        except OSError:
            return False
        return False

    wait_for(listening, 60, f"dbfleet api ({name}) listening")
    return proc


def _artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    where = os.environ.get("DBFLEET_TEST_ARTIFACTS")
    path = Path(where) if where else tmp_path_factory.getbasetemp() / "artifacts"
    path.mkdir(parents=True, exist_ok=True)
    return path


def test_the_dashboard_shows_a_real_alert_live_and_acknowledges_it(
        dash_fleet: Fleet, browser: Any, tmp_path_factory: pytest.TempPathFactory) -> None:
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from engines.monitoring.store import AlertStore

    dash = dash_fleet
    for db_id in ("pg18", "h15a_lite", "pg18_badpw"):  # real checks: the table has states to show
        _run(dash, "health.check", db_id, "health")
    assert _run(dash, "backups.run", "h15a_lite", "backups")["backup_id"]
    assert _run(dash, "backups.drill", "h15a_lite", "backups")["ok"] is True
    api = _start_api(dash, "api")
    base = f"http://127.0.0.1:{dash.config.fleet.api.port}"
    # the page re-renders its tables on every update: an element found a moment ago may be gone
    wait = WebDriverWait(browser, 60, poll_frequency=0.2, ignored_exceptions=[StaleElementReferenceException,
                                                                              NoSuchElementException])

    # sign in: a wrong token link shows the form again, the form with the right token opens the page
    browser.get(f"{base}/?token={WRONG}")
    assert "That is not the API token" in browser.find_element(By.CSS_SELECTOR, "[role=alert]").text
    browser.find_element(By.ID, "token").send_keys(API_TOKEN)
    browser.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    wait.until(lambda d: d.find_elements(By.ID, "databases"))
    assert browser.current_url == base + "/"  # no token in the address bar
    session = {c["name"]: c for c in browser.get_cookies()}["dbfleet_session"]
    assert session["httpOnly"] is True and session["sameSite"] == "Strict" and API_TOKEN not in session["value"]
    assert browser.execute_script("return document.cookie") == ""  # HttpOnly: not readable by scripts

    wait.until(lambda d: d.find_element(By.ID, "connection").text == "Live")
    rows = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#databases tbody tr"))
    assert len(rows) == len(dash.config.databases)
    def text(css: str) -> str:
        return str(wait.until(lambda d: d.find_element(By.CSS_SELECTOR, css).text))

    lite = text('#databases tr[data-database="h15a_lite"]')
    assert "up" in lite and "RTO" in lite and "ago" in lite
    assert not browser.find_elements(By.CSS_SELECTOR, f'tr[data-rule="{RULE}"]')
    browser.execute_script("window.h15aNoReload = true")

    # a real health check of the closed-port database fires the rule; the row appears without a reload
    _run(dash, "health.check", "ghost", "health")
    fired = f'tr[data-rule="{RULE}"][data-database="ghost"]'
    alert_id, shown = wait.until(lambda d: (lambda r: (r.get_attribute("data-alert-id"), r.text))(
        d.find_element(By.CSS_SELECTOR, fired)))
    assert browser.execute_script("return window.h15aNoReload") is True
    assert "firing" in shown and "critical" in shown and "up = 0" in shown
    assert "down" in text('#databases tr[data-database="ghost"]')

    # acknowledge from the page: the API's state changes and the page shows it
    store = AlertStore(dash.config.fleet.resolved_history())
    assert store.get(alert_id)["acknowledged"] is False
    browser.find_element(By.ID, "ackby").send_keys("h15a-browser")
    wait.until(lambda d: d.find_element(By.CSS_SELECTOR, fired + " button.ack").click() or True)
    wait_for(lambda: store.get(alert_id)["acknowledged_by"] == "h15a-browser", 60, "the acknowledgement stored")
    wait.until(lambda d: "by h15a-browser" in d.find_element(By.CSS_SELECTOR, f'tr[data-rule="{RULE}"]').text)

    # the API restarts: the page says so, reconnects by itself, and catches up with what it missed
    api.stop()
    assert api.proc.returncode != -signal.SIGKILL  # SIGTERM was enough, though the page was connected
    wait.until(lambda d: "reconnecting" in d.find_element(By.ID, "connection").text)
    assert "not checked yet" in text('#databases tr[data-database="lite"]')
    _run(dash, "health.check", "lite", "health")  # its event is published while no API listens
    api = _start_api(dash, "api_again")
    wait.until(lambda d: d.find_element(By.ID, "connection").text == "Live")
    wait.until(lambda d: "up" in d.find_element(By.CSS_SELECTOR, '#databases tr[data-database="lite"]').text)
    assert browser.execute_script("return window.h15aNoReload") is True

    page = browser.page_source  # pg18's password and pg18_badpw's wrong one: neither reaches the page
    assert CANARY not in page and CANARY_WRONG not in page and API_TOKEN not in page
    shot = _artifacts(tmp_path_factory) / "dashboard.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    print(f"dashboard screenshot: {shot}")
    logs = "".join(p.text() for n, p in dash.procs.items() if n.startswith("h15a_dash"))
    assert API_TOKEN not in logs and WRONG not in logs
    api.stop()
