"""Alert channels: Slack (incoming webhook), e-mail (SMTP, optional STARTTLS), generic JSON webhook,
PagerDuty Events v2, and the log. Channel strings are the seed's: ``slack:music-ops``,
``email:ops@example.com``, ``webhook:ops-bus``, ``pagerduty:oncall``, ``log``.

Each channel is tried ``delivery_attempts`` times with exponential backoff; a channel that still
fails is logged (by name: webhook URLs and keys are secrets) and never holds up the others, which
are sent in parallel.
"""

from __future__ import annotations

import json
import logging
import smtplib
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from email.message import EmailMessage
from typing import Any

from engines.config import MonitoringSection
from engines.errors import DbfleetError
from engines.monitoring.alerts import Notification
from engines.secrets import resolve_secret, scrub

log = logging.getLogger("dbfleet.alerts")
TIMEOUT = 10.0
PD_SEVERITY = {"critical": "critical", "warning": "warning", "info": "info"}


class DeliveryFailed(DbfleetError):
    """A channel refused or could not be reached after every attempt."""


def subject(n: Notification) -> str:
    names = ", ".join(sorted({a["rule"] for a in n.alerts}))
    return f"[{n.status.upper()}] {names} on {n.database_id}"


def text(n: Notification) -> str:
    """The human message every text channel sends."""
    lines = [subject(n)]
    for a in n.alerts:
        values = ", ".join(f"{k}={v}" for k, v in a["values"].items())
        when = a["resolved_at"] if a["state"] == "resolved" else a["fired_at"]
        lines.append(f"- {a['state'].upper()} {a['severity']}: {a['rule']} ({a['expr']}) on {a['database_id']}; "
                     f"values {values or 'none'}; since {when}; alert id {a['id']}")
    return "\n".join(lines)


def payload(n: Notification) -> dict[str, Any]:
    """The generic webhook's JSON body (schema version 1)."""
    keys = ("id", "rule", "database_id", "state", "severity", "expr", "labels", "values", "active_since",
            "fired_at", "resolved_at", "notifications", "summary")
    return {"version": 1, "status": n.status, "database_id": n.database_id,
            "alerts": [{k: a.get(k) for k in keys} for a in n.alerts]}


def _post(url: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json", **(headers or {})})
    with urllib.request.urlopen(req, timeout=TIMEOUT) as resp:  # noqa: S310 - URLs come from the config
        if resp.status >= 300:
            raise DeliveryFailed(f"HTTP {resp.status}")


def _slack(section: MonitoringSection, name: str, n: Notification) -> None:
    cfg = section.slack[name]
    url = resolve_secret(f"slack channel {name!r}", env=cfg.webhook_url_env, file=cfg.webhook_url_file)
    if not url:
        raise DeliveryFailed(f"slack channel {name!r} has no webhook URL (webhook_url_env / webhook_url_file)")
    _post(url, {"text": text(n)})


def _email(section: MonitoringSection, address: str, n: Notification) -> None:
    cfg = section.smtp
    assert cfg is not None  # the config loader refuses email channels without smtp
    msg = EmailMessage()
    msg["Subject"], msg["From"], msg["To"] = subject(n), cfg.sender, address
    msg.set_content(text(n))
    if cfg.user and not cfg.starttls and not cfg.plaintext_login_allowed():
        raise DeliveryFailed("smtp: refusing to send the login password without TLS (set starttls: true, or "
                             "starttls: false with allow_plaintext_auth: true)")
    with smtplib.SMTP(cfg.host, cfg.port, timeout=cfg.timeout) as smtp:
        if cfg.starttls:
            smtp.starttls()
        if cfg.user:
            smtp.login(cfg.user, resolve_secret("smtp", env=cfg.password_env, file=cfg.password_file) or "")
        smtp.send_message(msg)


def _webhook(section: MonitoringSection, name: str, n: Notification) -> None:
    cfg = section.webhooks[name]
    token = resolve_secret(f"webhook {name!r}", env=cfg.token_env) if cfg.token_env else None
    _post(cfg.url, payload(n), {"Authorization": f"Bearer {token}"} if token else None)


def _pagerduty(section: MonitoringSection, name: str, n: Notification) -> None:
    cfg = section.pagerduty[name]
    key = resolve_secret(f"pagerduty {name!r}", env=cfg.routing_key_env, file=cfg.routing_key_file)
    for a in n.alerts:  # Events v2 deduplicates by dedup_key: one event per alert
        event: dict[str, Any] = {"routing_key": key, "dedup_key": a["id"],
                                 "event_action": "trigger" if a["state"] == "firing" else "resolve"}
        if a["state"] == "firing":
            event["payload"] = {"summary": f"{a['rule']} on {a['database_id']}: {a['expr']}"[:1024],
                                "source": a["database_id"], "severity": PD_SEVERITY.get(a["severity"], "error"),
                                "custom_details": {"values": a["values"], "labels": a["labels"]}}
        _post(cfg.url, event)


def _log(section: MonitoringSection, target: str, n: Notification) -> None:
    log.warning("alert: %s", text(n))


SENDERS = {"slack": _slack, "email": _email, "webhook": _webhook, "pagerduty": _pagerduty, "log": _log}


def send(section: MonitoringSection, channel: str, n: Notification, sleep: Any = time.sleep) -> bool:
    """Deliver to one channel with retries; False (and a log line) when every attempt failed."""
    kind, _, target = channel.partition(":")
    for attempt in range(1, section.delivery_attempts + 1):
        try:
            SENDERS[kind](section, target, n)
            return True
        except Exception as exc:  # network, HTTP, SMTP, missing secret: retry, then log and give up
            log.warning("alert channel %s: attempt %d of %d failed: %s", channel, attempt, section.delivery_attempts,
                        scrub(f"{type(exc).__name__}: {exc}"))
            if attempt < section.delivery_attempts:
                sleep(section.delivery_backoff_seconds * 2 ** (attempt - 1))
    log.error("alert channel %s: giving up on %s", channel, subject(n))
    return False


def deliver_all(section: MonitoringSection, outgoing: dict[str, Notification]) -> dict[str, bool]:
    """Send every channel's notification in parallel; {channel: delivered}."""
    if not outgoing:
        return {}
    with ThreadPoolExecutor(max_workers=min(8, len(outgoing))) as pool:
        futures = {c: pool.submit(send, section, c, n) for c, n in outgoing.items()}
        return {c: f.result() for c, f in futures.items()}
