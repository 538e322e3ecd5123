"""Pure DR decisions: the RPO gate of a failover, a drill's verdict, hooks without a shell, metrics."""

from __future__ import annotations

from pathlib import Path

import pytest

from engines.dr.context import DRContext, is_local_host
from engines.dr.drill import _judge
from engines.dr.failover import Refused, check_rpo
from engines.dr.fence import run_hook
from engines.dr.models import DRConfiguration, DREvent, DRStatus, NodeStatus
from engines.dr.observe import metrics
from engines.dr.pgnode import lsn_int


def _ctx(**cfg: object) -> DRContext:
    dr = DRConfiguration(dr_id="g", primary_site="p", secondary_sites=["s"], **cfg)
    return DRContext(cfg=dr, resolve=lambda i: None, coord=None, state_dir=Path("/nonexistent"))  # type: ignore[arg-type,return-value]


def _event(**kw: object) -> DREvent:
    return DREvent(dr_id="g", kind="failover", status="failed", **kw)


def test_rpo_gate_refuses_unknown_or_excess_loss_and_passes_within_budget() -> None:
    ctx = _ctx(rpo_minutes=1)
    for event, words in ((_event(), "unknown"), (_event(data_loss_bytes=10), "unknown age"),
                         (_event(data_loss_bytes=10, data_loss_seconds=61.0), "exceeds RPO")):
        with pytest.raises(Refused) as err:
            check_rpo(ctx, event)
        assert words in err.value.detail
    check_rpo(ctx, _event(data_loss_bytes=10, data_loss_seconds=59.0))
    check_rpo(ctx, _event(data_loss_bytes=0, data_loss_seconds=0.0))


def test_a_drill_within_targets_passes_and_a_miss_names_the_target() -> None:
    ctx = _ctx(rto_minutes=1, rpo_minutes=0.5)
    ok = DREvent(dr_id="g", kind="drill", status="failed", measures={"rto_seconds": 12.0, "rpo_seconds": 0.0,
                                                                      "rpo_markers": 0})
    _judge(ctx, ok)
    assert ok.status == "done" and ok.ok and ok.measures["rto_target_seconds"] == 60
    miss = DREvent(dr_id="g", kind="drill", status="failed", measures={"rto_seconds": 12.0, "rpo_seconds": 31.0,
                                                                        "rpo_markers": 620})
    _judge(ctx, miss)
    assert miss.status == "failed" and "RPO 31.0s (620 markers)" in miss.detail


def test_hooks_run_argv_without_a_shell_and_record_the_outcome(tmp_path: Path) -> None:
    hook = run_hook("fence", ["echo", "$DBFLEET_DR_ID;", "rm", "-rf", str(tmp_path)], {"DBFLEET_DR_ID": "g"}, 10)
    assert hook.returncode == 0 and hook.output.startswith("$DBFLEET_DR_ID;") and tmp_path.exists()
    missing = run_hook("fence", ["/nonexistent/fence"], {}, 10)
    assert missing.returncode == 127 and "not found" in missing.output
    assert run_hook("redirect", [], {}, 10).output == "not configured"


def test_lsn_arithmetic_and_local_hosts() -> None:
    assert lsn_int("1/0") == 1 << 32 and lsn_int("0/3000060") == 0x3000060 and lsn_int(None) is None
    assert is_local_host("127.0.0.1") and is_local_host("localhost") and not is_local_host("db9.example.invalid")


def test_metrics_carry_the_documented_names_and_low_cardinality_labels() -> None:
    status = DRStatus(dr_id="g", observed_at=0, observer="w", primary="p", primary_reachable=True, rpo_seconds=60,
                      ok=True, nodes=[NodeStatus(database="p", reachable=True, role="primary"),
                                      NodeStatus(database="s", reachable=True, role="standby", streaming=True,
                                                 lag_seconds=3.0, lag_bytes=100, rpo_budget_ratio=0.05)])
    samples = {(name, labels["database"]): value for name, labels, value in metrics(status)}
    assert samples[("dbfleet_dr_rpo_budget_ratio", "s")] == 0.05
    assert samples[("dbfleet_dr_replay_lag_seconds", "s")] == 3.0 and samples[("dbfleet_dr_primary_up", "p")] == 1.0
    assert all(set(labels) == {"dr_group", "database"} for _n, labels, _v in metrics(status))


def test_the_dr_queue_has_its_tasks_and_the_script_type_routes_there() -> None:
    from engines.config import parse_config
    from workers.app import create_app
    from workers.scripts import ScriptType, resolve

    app = create_app(parse_config("{}", environ={}))
    app.loader.import_default_modules()
    assert {f"dr.{v}" for v in ("observe", "failover", "switchover", "drill", "setup", "rejoin")} <= set(app.tasks)
    assert resolve(ScriptType.DISASTER_RECOVERY)[1:] == ("dr.observe", "dr")
