"""Benchmark: automatic failover RTO, dbfleet vs Patroni (Debian's patroni 3.0 + etcd 3.4), same machine, same run.

    .venv/bin/python ops/bench/dr.py [--runs 10] [--faults node-loss,crash] [--tools dbfleet,patroni-tuned,patroni]

Each run builds a fresh two-node PostgreSQL 15 pair, writes marker rows at 20/s to whichever node accepts
them, injects the fault and measures RTO (fault -> first successful write on a node other than the
faulted primary, or on it again after an in-place restart), RPO (acknowledged markers missing on the
survivor), split-brain writes (writes accepted by the old primary after the new one accepted one) and,
after a failover, rejoin time: the old node brought back (dbfleet: ``dr rejoin``, pg_rewind; Patroni: its
agent restarted, pg_rewind by Patroni) until it streams from the new primary as a standby.
Faults: node-loss = kill -9 of the node's agent (Patroni) and its postmaster; crash = kill -9 of the
postmaster alone. dbfleet has no agent on the node: its observers are two worker threads ticking every
``observe_interval_seconds`` with its defaults. Prints median and worst; asserts nothing about time.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import psycopg  # noqa: E402

from engines.config import DatabaseConfig  # noqa: E402
from engines.dr.auto import observe_and_act  # noqa: E402
from engines.dr.context import DRContext  # noqa: E402
from engines.dr.coord import Coordinator  # noqa: E402
from engines.dr.models import DRConfiguration  # noqa: E402
from engines.dr.rejoin import rejoin  # noqa: E402
from engines.dr.setup import setup  # noqa: E402
from engines.embedded.redis import free_port  # noqa: E402

BIN = Path("/usr/lib/postgresql/15/bin")
OWNER = "postgres"
PASSWORD = uuid.uuid4().hex
CONF = {"listen_addresses": "'127.0.0.1'", "unix_socket_directories": "''", "wal_level": "replica",
        "max_wal_senders": 10, "max_replication_slots": 10, "wal_log_hints": "on", "shared_buffers": "16MB",
        "fsync": "off", "hot_standby": "on", "wal_keep_size": "64MB"}
HBA = "host all all 127.0.0.1/32 trust\nhost replication all 127.0.0.1/32 trust\n"


def as_owner(args: list[str]) -> list[str]:
    return ["runuser", "-u", OWNER, "--", *args] if os.geteuid() == 0 else args


def pgsql(port: int, text: str, params: list[Any] | None = None) -> list[Any]:
    with psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres", autocommit=True,
                         connect_timeout=1) as conn:
        cur = conn.execute(text, params)
        return cur.fetchall() if cur.description else []


class Writer:
    """Markers at a fixed rate to whichever node accepts them; records acks per node and the outage."""

    def __init__(self, ports: dict[str, int], old: str, rate: float = 20.0) -> None:
        self.ports, self.old, self.rate = ports, old, rate
        self.acked: dict[int, str] = {}
        self.first_new: float | None = None
        self.first_after_fault: float | None = None
        self.fault_at: float | None = None
        self.split_brain = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        seq = 0
        while not self.stop.is_set():
            for name, port in self.ports.items():
                began = time.monotonic()
                try:
                    pgsql(port, "INSERT INTO bench_markers (seq) VALUES (%s)", [seq + 1])
                except Exception:
                    continue
                seq += 1
                now = time.monotonic()
                self.acked[seq] = name
                if self.fault_at is None or began < self.fault_at:  # a write in flight at the fault proves nothing
                    break
                if self.first_after_fault is None:
                    self.first_after_fault = now
                if name != self.old and self.first_new is None:
                    self.first_new = now
                if name == self.old and self.first_new is not None:
                    self.split_brain += 1
                break
            self.stop.wait(1.0 / self.rate)


def init_node(root: Path, name: str) -> tuple[Path, int]:
    data, port = root / name, free_port()
    subprocess.run(as_owner([str(BIN / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "-N"]),
                   check=True, capture_output=True)
    with open(data / "postgresql.conf", "a") as fh:
        fh.writelines(f"{k} = {v}\n" for k, v in {**CONF, "port": port}.items())
    (data / "pg_hba.conf").write_text(HBA)
    subprocess.run(as_owner([str(BIN / "pg_ctl"), "start", "-w", "-D", str(data), "-l", str(root / f"{name}.log")]),
                   check=True, capture_output=True)
    return data, port


def kill_postmaster(data: Path) -> None:
    pid = int((data / "postmaster.pid").read_text().split()[0])
    os.kill(pid, signal.SIGKILL)


def survivor_markers(port: int) -> set[int]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            return {r[0] for r in pgsql(port, "SELECT seq FROM bench_markers")}
        except Exception:
            time.sleep(0.2)
    return set()


def measure(writer: Writer, fault: Any, survivor_port: Any, timeout: float = 120.0) -> dict[str, Any]:
    """Start writing, inject ``fault``, wait for the first write after it, and measure."""
    writer.thread.start()
    time.sleep(2.0)
    fault()
    writer.fault_at = time.monotonic()  # after the kill returned: a write that began earlier proves nothing
    deadline = time.monotonic() + timeout
    while writer.first_after_fault is None and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)  # a second more: split-brain writes would show here
    writer.stop.set()
    writer.thread.join(5)
    if writer.first_after_fault is None:
        return {"rto": None, "rpo_markers": None, "split_brain": writer.split_brain, "where": "no recovery"}
    where = "failover" if writer.first_new is not None else "restart in place"
    present = survivor_markers(survivor_port())
    lost = [s for s, node in writer.acked.items() if node == writer.old and s not in present] \
        if where == "failover" else []
    return {"rto": writer.first_after_fault - writer.fault_at, "rpo_markers": len(lost),
            "split_brain": writer.split_brain, "where": where}


def run_dbfleet(root: Path, fault: str, coord: Coordinator) -> dict[str, Any]:
    """dbfleet with its defaults: two observer threads, failover_after/observe_interval as configured."""
    pdata, pport = init_node(root, "a")
    pgsql(pport, "CREATE TABLE bench_markers (seq bigint PRIMARY KEY)")
    sdata, sport = root / "b", free_port()
    dbs = {n: DatabaseConfig(id=n, kind="postgresql", host="127.0.0.1", port=p, user="postgres", dbname="postgres",
                             connect_timeout=1) for n, p in (("a", pport), ("b", sport))}
    cfg = DRConfiguration(dr_id=f"bench-{uuid.uuid4().hex[:6]}", replication_user="postgres",
                          primary_site={"database": "a", "data_dir": str(pdata)}, auto_failover_enabled=True,
                          restart_in_place=fault == "crash",  # after node loss no worker is left on that host
                          secondary_sites=[{"database": "b", "data_dir": str(sdata)}])
    ctxs = [DRContext(cfg=cfg, resolve=dbs.__getitem__, coord=coord, state_dir=root / "state", observer=f"w{i}")
            for i in (1, 2)]
    setup(ctxs[0])
    stop = threading.Event()

    def observer(ctx: DRContext) -> None:
        while not stop.is_set():
            try:
                observe_and_act(ctx)
            except Exception as exc:  # keep observing, as a worker would on its next beat
                print(f"  observer {ctx.observer}: {type(exc).__name__}", file=sys.stderr)
            stop.wait(cfg.observe_interval_seconds)

    threads = [threading.Thread(target=observer, args=(c,), daemon=True) for c in ctxs]
    for t in threads:
        t.start()
    try:
        out = measure(Writer({"a": pport, "b": sport}, "a"), lambda: kill_postmaster(pdata), lambda: sport)
        stop.set()
        out["rejoin"] = dbfleet_rejoin(ctxs[0], pdata, pport) if out["where"] == "failover" else None
        return out
    finally:
        stop.set()
        for data in (pdata, sdata):
            subprocess.run(as_owner([str(BIN / "pg_ctl"), "stop", "-m", "immediate", "-D", str(data)]),
                           capture_output=True)
        coord.forget(cfg.dr_id)


def reaped(data: Path) -> None:
    """Wait until the killed postmaster is gone from /proc (this container's init reaps slowly)."""
    pid = int((data / "postmaster.pid").read_text().split()[0]) if (data / "postmaster.pid").exists() else 0
    _wait(lambda: not pid or not Path(f"/proc/{pid}").exists(), 30)


def streams_from(port: int) -> bool:
    return pgsql(port, "SELECT status FROM pg_stat_wal_receiver") == [("streaming",)]


def dbfleet_rejoin(ctx: DRContext, data: Path, port: int) -> float | None:
    """The old primary's host is back: ``dr rejoin`` (pg_rewind) until it streams from the new primary."""
    reaped(data)
    t0 = time.monotonic()
    event = rejoin(ctx, "a")
    if event.status != "done":
        print(f"  rejoin failed: {event.detail}", file=sys.stderr)
        return None
    return time.monotonic() - t0 if _wait(lambda: streams_from(port), 60) else None


def _patroni_yaml(root: Path, scope: str, name: str, ports: dict[str, int], etcd: int, dcs: dict[str, int]) -> Path:
    conf = {
        "scope": scope, "name": name,
        "restapi": {"listen": f"127.0.0.1:{ports['rest']}", "connect_address": f"127.0.0.1:{ports['rest']}"},
        "etcd3": {"hosts": f"127.0.0.1:{etcd}"},
        "bootstrap": {"dcs": {**dcs, "maximum_lag_on_failover": 1 << 30, "postgresql": {
            "use_pg_rewind": True, "parameters": {k: v.strip("'") if isinstance(v, str) else v
                                                  for k, v in CONF.items()}}},
                      "initdb": [{"encoding": "UTF8"}],
                      "pg_hba": HBA.strip().splitlines()},
        "postgresql": {"listen": f"127.0.0.1:{ports['pg']}", "connect_address": f"127.0.0.1:{ports['pg']}",
                       "data_dir": str(root / f"p{name}"), "bin_dir": str(BIN), "pgpass": str(root / f"pgpass{name}"),
                       "authentication": {"superuser": {"username": "postgres", "password": PASSWORD},
                                          "replication": {"username": "replicator", "password": PASSWORD}}},
    }
    path = root / f"{name}.json"  # JSON is YAML
    path.write_text(json.dumps(conf))
    return path


def _rest(port: int, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=1) as resp:  # noqa: S310 - loopback
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return 0


def run_patroni(root: Path, fault: str, dcs: dict[str, int]) -> dict[str, Any]:
    """Patroni with etcd3: two nodes bootstrapped by Patroni itself, then the fault."""
    etcd_c, etcd_p = free_port(), free_port()
    etcd = subprocess.Popen(as_owner(["etcd", "--name", "b", "--data-dir", str(root / "etcd"),
                                      "--listen-client-urls", f"http://127.0.0.1:{etcd_c}",
                                      "--advertise-client-urls", f"http://127.0.0.1:{etcd_c}",
                                      "--listen-peer-urls", f"http://127.0.0.1:{etcd_p}",
                                      "--initial-advertise-peer-urls", f"http://127.0.0.1:{etcd_p}",
                                      "--initial-cluster", f"b=http://127.0.0.1:{etcd_p}"]),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    nodes = {n: {"pg": free_port(), "rest": free_port()} for n in ("a", "b")}
    scope = f"bench{uuid.uuid4().hex[:6]}"
    procs = {}
    try:
        time.sleep(1.0)
        for n, ports in nodes.items():
            conf = _patroni_yaml(root, scope, n, ports, etcd_c, dcs)
            procs[n] = subprocess.Popen(as_owner(["patroni", str(conf)]), stdout=open(root / f"patroni-{n}.log", "w"),
                                        stderr=subprocess.STDOUT)
            if n == "a":
                _wait(lambda rest=ports["rest"]: _rest(rest, "/primary") == 200, 120)
        leader = next(n for n, p in nodes.items() if _rest(p["rest"], "/primary") == 200)
        other = next(n for n in nodes if n != leader)
        pgsql(nodes[leader]["pg"], "CREATE TABLE bench_markers (seq bigint PRIMARY KEY)")
        if not _wait(lambda: pgsql(nodes[other]["pg"], "SELECT count(*) FROM bench_markers") == [(0,)], 120):
            return {"rto": None, "rpo_markers": None, "split_brain": 0, "where": "replica never streamed"}
        data = root / f"p{leader}"

        def inject() -> None:
            if fault == "node-loss":
                agents = subprocess.run(["pgrep", "-P", str(procs[leader].pid)], capture_output=True,
                                        text=True).stdout.split()  # runuser's child: the patroni agent itself
                for pid in [*map(int, agents), procs[leader].pid]:
                    os.kill(pid, signal.SIGKILL)
            kill_postmaster(data)

        ports = {leader: nodes[leader]["pg"], other: nodes[other]["pg"]}
        out = measure(Writer(ports, leader), inject, lambda: nodes[other]["pg"])
        out["rejoin"] = None
        if out["where"] == "failover":  # the node is back: its agent starts and rewinds it
            if fault == "node-loss":
                reaped(data)
                t0 = time.monotonic()
                conf = root / f"{leader}.json"
                procs[leader + "2"] = subprocess.Popen(as_owner(["patroni", str(conf)]), stdout=open(
                    root / f"patroni-{leader}-2.log", "w"), stderr=subprocess.STDOUT)
            else:
                t0 = time.monotonic()  # the agent lived on: it rejoins its node by itself
            rest = nodes[leader]["rest"]
            ok = _wait(lambda: _rest(rest, "/replica") == 200 and streams_from(nodes[leader]["pg"]), 180)
            out["rejoin"] = time.monotonic() - t0 if ok else None
        return out
    finally:
        agents = [int(pid) for p in procs.values() for pid in subprocess.run(
            ["pgrep", "-P", str(p.pid)], capture_output=True, text=True).stdout.split()]
        for pid in agents:  # runuser does not always pass SIGTERM on to the patroni agent
            _signal(pid, signal.SIGTERM)
        for p in procs.values():
            p.terminate()
        for p in procs.values():
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
        for pid in agents:
            _signal(pid, signal.SIGKILL)
        for n in nodes:
            if (root / f"p{n}" / "postmaster.pid").exists():
                subprocess.run(as_owner([str(BIN / "pg_ctl"), "stop", "-m", "immediate", "-D", str(root / f"p{n}")]),
                               capture_output=True)
        etcd.terminate()
        etcd.wait(10)


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _wait(predicate: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return True
        except Exception:
            pass
        time.sleep(0.2)
    return False


TOOLS = {"dbfleet": None, "patroni-tuned": {"ttl": 10, "loop_wait": 2, "retry_timeout": 4},
         "patroni": {"ttl": 30, "loop_wait": 10, "retry_timeout": 10}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--faults", default="node-loss,crash")
    parser.add_argument("--tools", default="dbfleet,patroni-tuned,patroni")
    args = parser.parse_args()
    import redis

    coord = Coordinator(redis.Redis(host="127.0.0.1", port=6379, db=9), f"h9:bench:{uuid.uuid4().hex[:6]}:")
    results: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for fault in args.faults.split(","):
        for tool in args.tools.split(","):
            for i in range(args.runs):
                root = Path(tempfile.mkdtemp(prefix="h9_drbench_"))
                if os.geteuid() == 0:
                    shutil.chown(root, OWNER, OWNER)
                try:
                    dcs = TOOLS[tool]
                    out = run_dbfleet(root, fault, coord) if dcs is None else run_patroni(root, fault, dcs)
                finally:
                    shutil.rmtree(root, ignore_errors=True)
                results.setdefault((fault, tool), []).append(out)
                rto = f"{out['rto']:.2f}s" if out["rto"] is not None else "-"
                rj = f"{out['rejoin']:.2f}s" if out.get("rejoin") is not None else "-"
                print(f"{fault:9} {tool:14} run {i + 1}: RTO {rto} lost {out['rpo_markers']} "
                      f"split-brain {out['split_brain']} rejoin {rj} ({out['where']})", flush=True)
    print("\nfault     tool           median RTO  worst RTO  markers lost  split-brain  median rejoin  "
          "worst rejoin  how")
    for (fault, tool), runs in results.items():
        rtos = [r["rto"] for r in runs if r["rto"] is not None]
        med = f"{statistics.median(rtos):.2f}s" if rtos else "-"
        worst = f"{max(rtos):.2f}s" if len(rtos) == len(runs) else "no recovery"
        how = ", ".join(sorted({r["where"] for r in runs}))
        rejoins = [r["rejoin"] for r in runs if r.get("rejoin") is not None]
        failovers = sum(r["where"] == "failover" for r in runs)
        rj_med = f"{statistics.median(rejoins):.2f}s" if rejoins else "-"
        rj_worst = (f"{max(rejoins):.2f}s" if len(rejoins) == failovers else "not rejoined") if failovers else "-"
        print(f"{fault:9} {tool:14} {med:>10}  {worst:>9}  {sum(r['rpo_markers'] or 0 for r in runs):>12}  "
              f"{sum(r['split_brain'] for r in runs):>11}  {rj_med:>13}  {rj_worst:>12}  {how}")


if __name__ == "__main__":
    main()
