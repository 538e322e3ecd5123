"""``verify: execute`` on a real PostgreSQL 15 cluster: timed read-only executions of sampled parameters decide
(decisions asserted, never durations)."""

from __future__ import annotations

import pytest

from engines.tuning.base import TuningSettings
from engines.tuning.pg_apply import IndexApplier
from tests.integration.test_tuning_support import (
    admin,
    advice_for,
    indexes,
    make_db,
    tuning_cluster,  # noqa: F401 - a session fixture
)

EXECUTE = TuningSettings(verify="execute")


@pytest.fixture(scope="module")
def cluster(tuning_cluster: int) -> int:  # noqa: F811 - the session's cluster under a short name
    """The port of the tuning tests' PostgreSQL 15 cluster."""
    return tuning_cluster


def test_timed_executions_keep_a_helpful_index_and_roll_back_a_useless_one(cluster: int) -> None:
    db = make_db(cluster, "h16_tuning_verify")
    with admin(cluster, db.dbname or "") as c:
        applier = IndexApplier(c, db.id, EXECUTE, local=True)
        helpful = applier.apply(advice_for("events", ["a", "b"], "SELECT id, note FROM events WHERE a = $1 AND b = $2",
                                           "ev_ab_timed"))
        useless = applier.apply(advice_for("events", ["note"], "SELECT count(*) FROM events WHERE a = $1",
                                           "ev_note_timed"))
    assert helpful.status == "kept", helpful.evidence
    assert helpful.evidence["decided_by"] == "measured time"
    assert helpful.evidence["timed_queries"] == 1 and helpful.evidence["parameter_sets"] == 5
    assert useless.status == "rolled_back", useless.evidence
    # the planner never uses it: no timing can speak for it (a cold "before" run once made noise look like 30 %)
    assert useless.evidence["decided_by"].startswith("plan (index unused")
    assert useless.evidence["reason"].startswith("the planner does not use the index")
    assert indexes(db).get("ev_ab_timed") is True and "ev_note_timed" not in indexes(db)


def test_a_query_that_writes_is_refused_by_the_read_only_transaction_and_never_runs(cluster: int) -> None:
    db = make_db(cluster, "h16_tuning_verify_ro")
    with admin(cluster, db.dbname or "") as c:
        applier = IndexApplier(c, db.id, EXECUTE, local=True)
        change = applier.apply(advice_for("accounts", ["email"], "DELETE FROM accounts WHERE email = $1",
                                          "acc_email_timed"))
        left = c.execute("SELECT count(*) FROM accounts").fetchone()[0]
    assert left == 10000
    assert change.evidence["decided_by"] == "plan cost (no query could be timed)"
    assert "read-only transaction" in change.evidence["not_timed"]["1"]


def test_a_parameter_tied_to_no_column_is_not_timed_and_says_which(cluster: int) -> None:
    db = make_db(cluster, "h16_tuning_verify_np")
    with admin(cluster, db.dbname or "") as c:
        applier = IndexApplier(c, db.id, EXECUTE, local=True)
        change = applier.apply(advice_for("accounts", ["email"], "SELECT id FROM accounts WHERE email = lower($1)",
                                          "acc_email_np"))
    assert change.status == "kept" and change.evidence["decided_by"] == "plan cost (no query could be timed)"
    assert change.evidence["not_timed"]["1"] == "parameter(s) $1 compare to no table column: no value to sample"
