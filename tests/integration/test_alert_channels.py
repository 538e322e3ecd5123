"""Alert delivery to real receivers on loopback: an SMTP server (aiosmtpd, STARTTLS + AUTH) and an HTTP
server standing in for Slack, a webhook consumer and PagerDuty's Events API. Exact messages, repeats,
acknowledge, resolve, and a broken channel that is retried without holding up the others."""

from __future__ import annotations

import json
import logging
import ssl
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from engines.config import parse_config
from engines.embedded.redis import free_port
from engines.monitoring import AlertStore, Evaluator, compile_rules
from engines.monitoring.channels import deliver_all
from tests.servers import CANARY

pytestmark = pytest.mark.integration


class Receiver(BaseHTTPRequestHandler):
    got: list[dict[str, Any]] = []

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.got.append({"path": self.path, "auth": self.headers.get("Authorization"), "json": json.loads(body)})
        self.send_response(500 if self.path == "/broken" else 202)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def http_receiver() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    Receiver.got = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", Receiver.got
    server.shutdown()


def _tls_context(tmp: Path) -> ssl.SSLContext:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=1)).sign(key, hashes.SHA256()))
    (tmp / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                    serialization.NoEncryption()))
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(tmp / "cert.pem", tmp / "key.pem")
    return ctx


@pytest.fixture
def smtp_receiver(tmp_path: Path) -> Iterator[tuple[int, list[Any]]]:
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult

    mails: list[Any] = []

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
            mails.append(envelope)
            return "250 OK"

    def authenticate(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        ok = data.login == b"alerts" and data.password == CANARY.encode()
        return AuthResult(success=ok)

    port = free_port()
    controller = Controller(Handler(), hostname="127.0.0.1", port=port, tls_context=_tls_context(tmp_path),
                            require_starttls=True, authenticator=authenticate, auth_require_tls=True)
    controller.start()
    yield port, mails
    controller.stop()


def _section(base: str, smtp_port: int) -> Any:
    return parse_config(f"""
database_scripts:
  monitoring:
    repeat_interval: 10m
    delivery_attempts: 3
    delivery_backoff_seconds: 0.01
    alert_channels: [slack:ops, webhook:bus, webhook:broken, pagerduty:oncall, email:dba@example.com]
    alert_rules:
      - {{name: slow, expr: "avg_response_time > 50ms", severity: warning, labels: {{team: music}}}}
    slack: {{ops: {{webhook_url_env: T_SLACK_URL}}}}
    webhooks:
      bus: {{url: "{base}/hook", token_env: T_HOOK_TOKEN}}
      broken: {{url: "{base}/broken"}}
    pagerduty: {{oncall: {{routing_key_env: T_PD_KEY, url: "{base}/pd"}}}}
    smtp: {{host: 127.0.0.1, port: {smtp_port}, starttls: true, user: alerts, password_env: T_SMTP_PW,
           sender: dbfleet@example.com}}
""").database_scripts.monitoring


def _parse(envelope: Any) -> Any:
    import email
    from email import policy

    return email.message_from_bytes(envelope.content, policy=policy.default)


def _report(ms: float) -> dict[str, Any]:
    return {"database_id": "music", "status": "up",
            "checks": [{"check": "response_time", "status": "ok", "value": ms, "unit": "ms"}]}


def test_every_channel_receives_exact_messages_and_ack_stops_repeats(
        http_receiver: Any, smtp_receiver: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    base, got = http_receiver
    smtp_port, mails = smtp_receiver
    monkeypatch.setenv("T_SLACK_URL", f"{base}/slack")
    monkeypatch.setenv("T_HOOK_TOKEN", "hook-token-1234")
    monkeypatch.setenv("T_PD_KEY", "pd-routing-key-42")
    monkeypatch.setenv("T_SMTP_PW", CANARY)
    section = _section(base, smtp_port)
    now = [datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)]
    store = AlertStore(f"sqlite:///{tmp_path / 'alerts.db'}")
    ev = Evaluator(store, compile_rules(section), notify=lambda out: deliver_all(section, out), clock=lambda: now[0])

    with caplog.at_level(logging.WARNING, logger="dbfleet.alerts"):
        ev.evaluate(_report(73.5))
    alert = store.active()[0]
    aid = alert["id"]
    by_path = {p: [g for g in got if g["path"] == p] for p in ("/slack", "/hook", "/broken", "/pd")}
    assert by_path["/slack"][0]["json"] == {"text": (
        "[FIRING] slow on music\n"
        f"- FIRING warning: slow (avg_response_time > 50ms) on music; values avg_response_time=73.5; "
        f"since 2026-11-25T12:00:00+00:00; alert id {aid}")}
    hook = by_path["/hook"][0]
    assert hook["auth"] == "Bearer hook-token-1234"
    assert hook["json"]["version"] == 1 and hook["json"]["status"] == "firing"
    assert hook["json"]["alerts"] == [{
        "id": aid, "rule": "slow", "database_id": "music", "state": "firing", "severity": "warning",
        "expr": "avg_response_time > 50ms", "labels": {"team": "music"}, "values": {"avg_response_time": 73.5},
        "active_since": "2026-11-25T12:00:00+00:00", "fired_at": "2026-11-25T12:00:00+00:00", "resolved_at": None,
        "notifications": 1, "summary": "slow: avg_response_time > 50ms"}]
    assert by_path["/pd"][0]["json"] == {
        "routing_key": "pd-routing-key-42", "dedup_key": aid, "event_action": "trigger",
        "payload": {"summary": "slow on music: avg_response_time > 50ms", "source": "music", "severity": "warning",
                    "custom_details": {"values": {"avg_response_time": 73.5}, "labels": {"team": "music"}}}}
    assert len(by_path["/broken"]) == 3  # retried, then given up: the others were delivered regardless
    assert "giving up" in caplog.text and "webhook:broken" in caplog.text
    assert len(mails) == 1 and mails[0].rcpt_tos == ["dba@example.com"]
    mail = _parse(mails[0])
    assert mail["Subject"] == "[FIRING] slow on music" and mail["From"] == "dbfleet@example.com"
    assert mail.get_content().replace("\r\n", "\n").strip() == by_path["/slack"][0]["json"]["text"]
    assert CANARY not in caplog.text

    now[0] += timedelta(minutes=11)  # repeat_interval passed: everyone hears again
    ev.evaluate(_report(80))
    assert len([g for g in got if g["path"] == "/slack"]) == 2 and len(mails) == 2
    store.acknowledge(aid, "ana", "on it", now[0])
    now[0] += timedelta(hours=2)
    ev.evaluate(_report(80))
    assert len([g for g in got if g["path"] == "/slack"]) == 2 and len(mails) == 2  # acknowledged: silence

    ev.evaluate(_report(12))
    slack = [g for g in got if g["path"] == "/slack"]
    assert len(slack) == 3 and slack[-1]["json"]["text"].startswith("[RESOLVED] slow on music\n- RESOLVED warning")
    assert [g for g in got if g["path"] == "/pd"][-1]["json"] == {
        "routing_key": "pd-routing-key-42", "dedup_key": aid, "event_action": "resolve"}
    assert len(mails) == 3 and _parse(mails[-1])["Subject"] == "[RESOLVED] slow on music"


def test_wrong_smtp_password_is_logged_without_the_password(smtp_receiver: Any, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    from engines.monitoring.alerts import Notification
    from engines.monitoring.channels import send
    from engines.secrets import remember

    smtp_port, mails = smtp_receiver
    wrong = "wrong-smtp-Pw-77d1"
    remember(wrong)
    monkeypatch.setenv("T_SMTP_PW", wrong)
    cfg = parse_config(f"database_scripts:\n  monitoring:\n    delivery_attempts: 2\n"
                       f"    delivery_backoff_seconds: 0\n    smtp: {{host: 127.0.0.1, port: {smtp_port}, "
                       "starttls: true, user: alerts, password_env: T_SMTP_PW, timeout: 2}\n")
    section = cfg.database_scripts.monitoring
    alert = {"id": "x", "rule": "r", "database_id": "d", "state": "firing", "severity": "warning", "expr": "up == 0",
             "values": {}, "fired_at": "t", "resolved_at": None, "labels": {}}
    with caplog.at_level(logging.WARNING, logger="dbfleet.alerts"):
        assert send(section, "email:a@example.com", Notification("d", [alert])) is False
    assert mails == [] and "attempt 2 of 2 failed: SMTP" in caplog.text and "giving up" in caplog.text
    assert wrong not in caplog.text


@pytest.fixture
def plaintext_smtp() -> Iterator[tuple[int, list[Any], list[bytes]]]:
    """An SMTP server without TLS that accepts a login in clear (what an attacker on the path would read)."""
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult

    mails: list[Any] = []
    logins: list[bytes] = []

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
            mails.append(envelope)
            return "250 OK"

    def authenticate(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        logins.append(data.password)
        return AuthResult(success=True)

    port = free_port()
    controller = Controller(Handler(), hostname="127.0.0.1", port=port, authenticator=authenticate,
                            auth_require_tls=False)
    controller.start()
    yield port, mails, logins
    controller.stop()


def _smtp_config(port: int, extra: str) -> str:
    return (f"database_scripts:\n  monitoring:\n    delivery_attempts: 1\n    alert_channels: [email:a@example.com]\n"
            f"    smtp: {{host: 127.0.0.1, port: {port}, user: alerts, password_env: T_SMTP_PW, timeout: 5{extra}}}\n")


def _notification() -> Any:
    from engines.monitoring.alerts import Notification

    alert = {"id": "x", "rule": "r", "database_id": "d", "state": "firing", "severity": "warning", "expr": "up == 0",
             "values": {}, "fired_at": "t", "resolved_at": None, "labels": {}}
    return Notification("d", [alert])


@pytest.mark.parametrize("extra", ["", ", starttls: false", ", allow_plaintext_auth: true"])
def test_smtp_login_without_tls_is_refused_unless_written_explicitly(extra: str) -> None:
    from engines.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        parse_config(_smtp_config(25, extra))
    assert "database_scripts.monitoring.smtp" in str(err.value) and "allow_plaintext_auth: true" in str(err.value)


def test_smtp_plaintext_login_only_when_the_operator_accepted_it(plaintext_smtp: Any,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from engines.monitoring.channels import send

    port, mails, logins = plaintext_smtp
    monkeypatch.setenv("T_SMTP_PW", CANARY)
    section = parse_config(_smtp_config(port, ", starttls: false, allow_plaintext_auth: true")
                           ).database_scripts.monitoring
    assert send(section, "email:a@example.com", _notification()) is True
    assert logins == [CANARY.encode()] and len(mails) == 1
    section.smtp.allow_plaintext_auth = False  # a config built around the loader: the channel still refuses
    assert send(section, "email:a@example.com", _notification()) is False
    assert logins == [CANARY.encode()] and len(mails) == 1  # no second login in clear
