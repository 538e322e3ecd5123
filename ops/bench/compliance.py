"""Benchmark: PII discovery precision/recall and scan time on the demo's music database (plus decoy
columns in this benchmark's own copy), and in-place anonymisation throughput against a plain
``UPDATE ... SET email = md5(email)`` on the same rows in the same run.

    .venv/bin/python ops/bench/compliance.py [--events 300000] [--mask-rows 100000]

Needs the machine's PostgreSQL 15 on 127.0.0.1:5432 (trust); creates and drops the database
dbfleet_bench_compliance. Prints figures and ratios; asserts nothing about time.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import psycopg  # noqa: E402
from faker import Faker  # noqa: E402

from engines.compliance.anonymize.inplace import anonymize_in_place  # noqa: E402
from engines.compliance.anonymize.postgres import PostgresMaskTarget  # noqa: E402
from engines.compliance.anonymize.rules import Masker  # noqa: E402
from engines.compliance.discovery import run_discovery  # noqa: E402
from engines.compliance.model import PII  # noqa: E402
from engines.config import parse_config  # noqa: E402
from engines.connectors import open_connector  # noqa: E402
from engines.embedded.music import generate_music_database  # noqa: E402

DB = "dbfleet_bench_compliance"
# ground truth: column -> category; columns in IGNORED count neither way (quasi-identifiers)
TRUTH = {"users.email": "email", "users.full_name": "person_name", "users.phone": "phone",
         "users.street_address": "address", "users.birth_date": "dob", "users.iban": "iban",
         "users.support_notes": "free_text_with_pii", "users.last_login_ip": "ip", "users.ssn": "national_id"}
IGNORED = {"users.city", "users.country_code"}
DECOYS = """
ALTER TABLE users ADD COLUMN email_status text, ADD COLUMN card_number_legacy text, ADD COLUMN support_notes text,
    ADD COLUMN comment text, ADD COLUMN contact_email text, ADD COLUMN last_login_ip inet, ADD COLUMN ssn text
"""


def build(events: int) -> dict[str, int]:
    """The music database plus decoys: columns named like PII holding none, and real PII under odd names."""
    with psycopg.connect("host=127.0.0.1 user=postgres dbname=postgres", autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
        admin.execute(f"CREATE DATABASE {DB}")
    fake = Faker("en_US")
    fake.seed_instance(17)
    with psycopg.connect(f"host=127.0.0.1 user=postgres dbname={DB}", autocommit=True) as conn:
        counts = generate_music_database(conn, events=events, seed=42)
        conn.execute(DECOYS)
        ids = [r[0] for r in conn.execute("SELECT id FROM users ORDER BY id")]
        rows = []
        for i in ids:
            digits = fake.credit_card_number()
            rows.append((fake.random_element(["ok", "bounced", "unverified"]),
                         digits[:-1] + str((int(digits[-1]) + 1) % 10),
                         f"Customer asked to be called back on {fake.phone_number()} about invoice {i}" if i % 3 == 0
                         else f"Ticket {i}: playback stutters on {fake.random_element(['ios', 'web', 'car'])}",
                         fake.sentence(nb_words=9), f"SKU-{fake.bothify('??###').upper()}", fake.ipv4(), fake.ssn(), i))
        with conn.cursor() as cur:
            cur.executemany("UPDATE users SET email_status=%s, card_number_legacy=%s, support_notes=%s, comment=%s,"
                            " contact_email=%s, last_login_ip=%s, ssn=%s WHERE id=%s", rows)
        conn.execute("ANALYZE")
    return counts


def score(findings: list[Any]) -> tuple[float, float, list[str], list[str]]:
    """(precision, recall, false positives, misses) against TRUTH."""
    found = {f.key: f.category for f in findings if f.status == PII and f.key not in IGNORED}
    tp = [k for k, c in found.items() if TRUTH.get(k) == c]
    fp = sorted(f"{k} ({c})" for k, c in found.items() if TRUTH.get(k) != c)
    fn = sorted(f"{k} ({c})" for k, c in TRUTH.items() if found.get(k) != c)
    return len(tp) / max(1, len(found)), len(tp) / len(TRUTH), fp, fn


def bench_discovery(db: Any, runs: int) -> None:
    took = []
    for seed in range(runs):
        start = time.perf_counter()
        report = run_discovery(db, {"sample_size": 100, "sample_seed": seed})
        took.append(time.perf_counter() - start)
        precision, recall, fp, fn = score(report.findings)
        print(f"discovery run {seed + 1}: precision {precision:.3f} recall {recall:.3f} in {took[-1]:.2f} s "
              f"({report.tables_scanned} tables, {report.columns_scanned} columns)"
              + (f"; false positives {fp}" if fp else "") + (f"; missed {fn}" if fn else ""))
    print(f"discovery: median scan {sorted(took)[len(took) // 2]:.2f} s (target < 10 s; recall >= 0.95, precision >= 0.9)")
    import tempfile

    from engines.compliance.scan import scan_database
    from engines.config import Config
    from engines.history import HistoryStore

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        report = scan_database(db, Config(), HistoryStore(f"sqlite:///{tmp}/history.db"), {"sample_size": 100})
        print(f"full compliance scan (discovery + security audit + four standards): {time.perf_counter() - start:.2f} s, "
              + ", ".join(f"{k} {v['status']}" for k, v in report["standards_compliance"].items()))


class ServerCPU:
    """CPU seconds the local PostgreSQL backends serving ``DB`` used inside the block (their /proc stat sampled
    every 20 ms; a backend that exits between two samples loses at most its last 20 ms). On a loaded machine
    CPU per row is steadier than rows per second."""

    def __init__(self) -> None:
        self.seen: dict[str, float] = {}
        self.base: dict[str, float] = {}
        self.cpu = 0.0
        self._stop = threading.Event()
        self._hz = os.sysconf("SC_CLK_TCK")

    def _scan(self) -> None:
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    cmd = f.read()
                if not cmd.startswith(b"postgres: ") or f" {DB} ".encode() not in cmd:
                    continue
                with open(f"/proc/{pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                self.seen[pid] = (int(fields[11]) + int(fields[12])) / self._hz
            except (OSError, IndexError, ValueError):
                continue

    def _loop(self) -> None:
        while not self._stop.wait(0.02):
            self._scan()

    def __enter__(self) -> ServerCPU:
        self._scan()
        self.base = dict(self.seen)
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._scan()
        self.cpu = sum(v - self.base.get(pid, 0.0) for pid, v in self.seen.items())


def prepare_mask_tables(rows: int) -> None:
    with psycopg.connect(f"host=127.0.0.1 user=postgres dbname={DB}", autocommit=True) as conn:
        for t in ("mask_a", "mask_b", "mask_c"):
            conn.execute(f"DROP TABLE IF EXISTS {t}")
            conn.execute(f"CREATE TABLE {t} (id bigint PRIMARY KEY, email text NOT NULL UNIQUE, full_name text,"  # noqa: S608
                         f" phone text, street_address text, iban text)")
            conn.execute(f"INSERT INTO {t} SELECT g, g || '.' || u.email, u.full_name, u.phone, u.street_address,"  # noqa: S608
                         " u.iban FROM generate_series(1, %s) g JOIN users u ON u.id = 1 + g %% (SELECT count(*)"
                         " FROM users)", (rows,))
        conn.execute("VACUUM ANALYZE mask_a, mask_b, mask_c")


def bench_masking(db: Any, rows: int) -> None:
    prepare_mask_tables(rows)
    with psycopg.connect(f"host=127.0.0.1 user=postgres dbname={DB}", autocommit=True) as conn:
        with ServerCPU() as md5_cpu:
            start = time.perf_counter()
            conn.execute("UPDATE mask_b SET email = md5(email)")
            md5_secs = time.perf_counter() - start
        start = time.perf_counter()
        conn.execute("UPDATE mask_b SET email = md5(email), full_name = md5(full_name), phone = md5(phone),"
                     " street_address = md5(street_address), iban = md5(iban)")
        md5_all = time.perf_counter() - start
    rules = {"email": "email", "full_name": "name", "phone": "phone", "street_address": "default", "iban": "iban"}
    with open_connector(db) as conn, ServerCPU() as all_cpu:
        start, cpu = time.perf_counter(), time.process_time()
        result = anonymize_in_place(PostgresMaskTarget(conn), db.id, "mask_a", rules,
                                    Masker(b"bench-key-0123456789abcdef"), batch_size=5000)
        secs, client_all = time.perf_counter() - start, time.process_time() - cpu
    with open_connector(db) as conn, ServerCPU() as email_cpu:
        start, cpu = time.perf_counter(), time.process_time()
        anonymize_in_place(PostgresMaskTarget(conn), db.id, "mask_c", {"email": "email"},
                           Masker(b"bench-key-0123456789abcdef"), batch_size=5000)
        email_secs, client_email = time.perf_counter() - start, time.process_time() - cpu
    ours, base, base5 = rows / secs, rows / md5_secs, rows / md5_all

    def per_row(seconds: float) -> str:
        return f"{seconds / rows * 1e6:.1f} us/row"

    print(f"anonymisation of {rows} rows, email only (unique, checkpointed): {rows / email_secs:,.0f} rows/s"
          f" -> {md5_secs / email_secs:.2f}x the md5(email) UPDATE; CPU: dbfleet {per_row(client_email)} +"
          f" server {per_row(email_cpu.cpu)}")
    print(f"anonymisation of {rows} rows, 5 columns (email/name/phone/default/iban, unique email, batches of 5000, "
          f"checkpointed): {ours:,.0f} rows/s in {secs:.1f} s; CPU: dbfleet {per_row(client_all)} + server "
          f"{per_row(all_cpu.cpu)}")
    print(f"  plain md5(email) UPDATE: {base:,.0f} rows/s (server CPU {per_row(md5_cpu.cpu)}) -> dbfleet "
          f"{ours / base:.2f}x (target >= 0.5x)")
    print(f"  UPDATE of the same 5 columns with md5: {base5:,.0f} rows/s -> dbfleet {ours / base5:.2f}x")
    assert result["rows_masked"] == rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=300_000, help="music play events (users = events / 100)")
    parser.add_argument("--mask-rows", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    args = parser.parse_args()
    counts = build(args.events)
    print(f"music database: {counts}")
    cfg = parse_config(f"databases:\n  music: {{kind: postgresql, host: 127.0.0.1, user: postgres, dbname: {DB}}}\n")
    db = cfg.databases["music"]
    try:
        bench_discovery(db, args.runs)
        bench_masking(db, args.mask_rows)
    finally:
        if not args.keep:
            with psycopg.connect("host=127.0.0.1 user=postgres dbname=postgres", autocommit=True) as admin:
                admin.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")


if __name__ == "__main__":
    main()
